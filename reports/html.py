"""The one-page HTML report: verdict first, then what broke and why, then the detail."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jinja2

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


def render(summary: Dict[str, Any], path: Optional[Path] = None) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    scenarios = summary["scenarios"]
    failures = [s for s in scenarios if s["outcome"] in ("failed", "error", "xpassed")]
    page = environment.get_template("report.html.j2").render(
        s=summary,
        failures=failures,
        stage_chart=stage_chart(summary["stage_statistics"]),
        alert_chart=alert_chart(summary["alerts"]),
        timelines=timelines(scenarios),
        chart_width=CHART_WIDTH,
    )
    if path is not None:
        Path(path).write_text(page)
    return page
