"""The one-page HTML report: verdict first, then what broke and why, then the detail."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jinja2

from reports.collect import as_written
from suite.deploy import ROLLBACK_STEPS, STAGES

TEMPLATES = Path(__file__).parent / "templates"
CHART_WIDTH = 520  # px for the longest bar
STAGE_ORDER = ["recover", "precheck", "lock", *STAGES, *(f"rollback:{step}" for step in ROLLBACK_STEPS)]


def bars(items: Sequence[Tuple[str, float, str]], width: int = CHART_WIDTH) -> List[Dict[str, Any]]:
    """(label, value, css class) -> rows with a bar width on a common scale."""
    top = max((value for _, value, _ in items), default=0) or 1.0
    return [
        {"label": label, "value": value, "cls": cls, "width": max(1.0, width * value / top)}
        for label, value, cls in items
    ]


def _stage_rank(name: str) -> int:
    return STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER)


def stage_chart(statistics: Dict[str, dict]) -> List[Dict[str, Any]]:
    names = sorted(statistics, key=_stage_rank)
    return bars(
        [(f"{name} (median of {statistics[name]['count']})", statistics[name]["median_s"], "stage") for name in names]
    )


def alert_chart(alerts: List[dict]) -> List[Dict[str, Any]]:
    measured = [a for a in alerts if isinstance(a.get("delay_s"), (int, float))]
    return bars([(f"{a.get('alert')} → {a.get('receiver')} ({a.get('env')})", a["delay_s"], "alert") for a in measured])


def timelines(scenarios: List[dict], width: int = CHART_WIDTH) -> List[Dict[str, Any]]:
    """Each deploy's stages laid end to end, on one scale shared by every deploy of the run."""
    rows = []
    for scenario in scenarios:
        for deploy in scenario["deploys"]:
            records = (
                [dict(s, part="recover") for s in deploy.get("recovered", [])]
                + [dict(s, part="deploy") for s in deploy.get("stages", [])]
                + [dict(s, part="rollback") for s in deploy.get("rollback", [])]
            )
            records = [r for r in records if r.get("outcome") != "not run"]
            rows.append(
                {
                    "scenario": scenario["nodeid"],
                    "env": deploy.get("env"),
                    "deployer": deploy.get("deployer", "builtin"),
                    "requested": deploy.get("requested"),
                    "ok": deploy.get("ok"),
                    "failed_stage": deploy.get("failed_stage"),
                    "stages": records,
                    "total_s": sum(r["duration_s"] for r in records),
                }
            )
    longest = max((row["total_s"] for row in rows), default=0) or 1.0
    for row in rows:
        x = 0.0
        for record in row["stages"]:
            record["x"] = x
            record["width"] = max(0.5, width * record["duration_s"] / longest)
            x += record["width"]
    return rows


# -- trends over the last runs (history) ---------------------------------------------------------------

PLOT_WIDTH, PLOT_HEIGHT, PLOT_LEFT = 640, 150, 60
PALETTE = ["#4f7cac", "#e08a00", "#1a7f37", "#8e5ea2", "#c62828", "#00838f", "#6d4c41", "#9e9d24", "#5c6bc0"]
VERDICT_COLOURS = {"pass": "#1a7f37", "fail": "#c62828", "error": "#8a6d00"}


def line_chart(runs: List[dict], series: Dict[str, List[Optional[float]]], unit: str = "s") -> Dict[str, Any]:
    """Lines on one scale, one point per run (a run that did not measure a series leaves a gap)."""
    top = max((v for values in series.values() for v in values if v is not None), default=0) or 1.0
    step = PLOT_WIDTH / max(1, len(runs) - 1)

    def y(value: float) -> float:
        return round(PLOT_HEIGHT - PLOT_HEIGHT * value / top, 1)

    lines = []
    for index, (name, values) in enumerate(series.items()):
        points = [
            {"x": round(PLOT_LEFT + i * step, 1), "y": y(v), "value": v, "run": runs[i]["run_id"]}
            for i, v in enumerate(values)
            if v is not None
        ]
        lines.append({"name": name, "colour": PALETTE[index % len(PALETTE)], "points": points})
    return {"lines": lines, "top": top, "unit": unit, "runs": len(runs)}


def trends(shown: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The charts of the History section: duration and verdict, scenario counts, stage medians, alert delays."""
    runs = shown["runs"]
    if not runs:
        return []

    def series(field: str) -> Dict[str, List[Optional[float]]]:
        names = sorted({name for run in runs for name in run.get(field, {})}, key=_stage_rank)
        return {name: [run.get(field, {}).get(name) for run in runs] for name in names}

    duration = line_chart(runs, {"run duration": [run.get("duration_s") for run in runs]})
    duration["verdicts"] = [
        dict(point, colour=VERDICT_COLOURS.get(run.get("verdict"), "#888"), verdict=run.get("verdict"))
        for point, run in zip(duration["lines"][0]["points"], runs)
    ]
    counts = {k: [run.get("counts", {}).get(k, 0) for run in runs] for k in ("passed", "failed", "flaky", "skipped")}
    charts = [
        {"id": "trend-duration", "title": "Run duration (points coloured by verdict)", **duration},
        {"id": "trend-counts", "title": "Scenarios per outcome", **line_chart(runs, counts, unit="")},
        {"id": "trend-stages", "title": "Deploy stage medians", **line_chart(runs, series("stage_medians"))},
    ]
    if any(run.get("alert_delays") for run in runs):
        charts.append(
            {"id": "trend-alerts", "title": "Fault → alert delays", **line_chart(runs, series("alert_delays"))}
        )
    return charts


def deployer_label(command: Optional[str], platform: str = "") -> str:
    """The deployer as the manifest names it, shortened: paths inside the platform's folder relative
    to it, an interpreter by its name (`/opt/venv/bin/python3` -> `python3`)."""
    if not command:
        return "builtin"
    base = str(Path(platform).parent) + "/" if platform else None
    words = []
    for word in command.split(" "):
        if base and word.startswith(base):
            word = word[len(base) :]
        elif word.startswith("/") and Path(word).name.startswith("python"):
            word = Path(word).name
        words.append(word)
    return " ".join(words)


def render(summary: Dict[str, Any], path: Optional[Path] = None) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["as_written"] = as_written
    environment.filters["deployer"] = lambda command: deployer_label(command, summary.get("platform", ""))
    scenarios = summary["scenarios"]
    failures = [s for s in scenarios if s["outcome"] in ("failed", "error", "xpassed")]
    flaky = [s for s in scenarios if s["outcome"] == "flaky"]
    shown = summary.get("history") or {"runs": [], "flake_rates": {}}
    page = environment.get_template("report.html.j2").render(
        s=summary,
        failures=failures,
        flaky=flaky,
        shown=shown,
        trends=trends(shown),
        plot={"width": PLOT_WIDTH, "height": PLOT_HEIGHT, "left": PLOT_LEFT},
        stage_chart=stage_chart(summary["stage_statistics"]),
        alert_chart=alert_chart(summary["alerts"]),
        timelines=timelines(scenarios),
        chart_width=CHART_WIDTH,
    )
    if path is not None:
        Path(path).write_text(page)
    return page
