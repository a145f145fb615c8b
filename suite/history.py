"""The gate's memory between runs: one JSON line per run in a history file, and what changed.

Each run appends its line (`--history PATH`, default `<report dir>/history.jsonl`): verdict,
counts, stage medians, alert delays, worst probe latency, server versions, the manifest's hash and
each scenario's outcome. A run is then compared with the runs before it:

- a stage median or an alert delay above REGRESSION_FACTOR x its rolling median (over the last
  WINDOW runs that measured it, at least MIN_RUNS of them), and at least MIN_INCREASE_S slower:
  a stage of a millisecond that takes two is noise, not a regression;
- a scenario whose verdict flipped since the last run that ran it (skips are not verdicts);
- a new version of a server (Triton, MLflow, Prometheus, Alertmanager).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

SCHEMA = "triton-gate-history/1"
FILE_NAME = "history.jsonl"
REGRESSION_FACTOR = 1.5
WINDOW = 10
MIN_RUNS = 3
MIN_INCREASE_S = 0.25
CHART_RUNS = 30  # how many runs report.html plots
SERVERS = ("Triton", "MLflow", "Prometheus", "Alertmanager")
VERDICTS = ("passed", "failed", "error", "flaky", "xpassed", "xfailed")  # outcomes a flip is judged on


class HistoryError(ValueError):
    """The history file cannot be read as a history."""


@dataclass(frozen=True)
class Regression:
    kind: str  # stage | alert | verdict | version
    subject: str
    detail: str
    worse: bool = True  # False: a change worth a look, not a step back (a new version, a fix)

    def __str__(self) -> str:
        return f"{'REGRESSION' if self.worse else 'CHANGED'} {self.kind} {self.subject}: {self.detail}"


def manifest_hash(path: Optional[Path]) -> str:
    """sha256 of the platform manifest's bytes, so a run can be tied to the manifest it verified."""
    if path is None or not Path(path).is_file():
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def alert_key(alert: dict) -> str:
    return f"{alert.get('alert')} → {alert.get('receiver')} ({alert.get('env')})"


def entry(summary: Dict[str, Any], manifest_sha256: str = "", report: str = "") -> Dict[str, Any]:
    """The history line of one run, from its summary.json content."""
    delays: Dict[str, float] = {}
    for alert in summary.get("alerts", []):
        if isinstance(alert.get("delay_s"), (int, float)):
            key = alert_key(alert)
            delays[key] = max(delays.get(key, 0.0), round(alert["delay_s"], 3))
    latencies = [
        run["probe"]["worst_latency_s"]
        for scenario in summary.get("scenarios", [])
        for run in scenario.get("fault_runs", [])
        if isinstance((run.get("probe") or {}).get("worst_latency_s"), (int, float))
    ]
    return {
        "schema": SCHEMA,
        "run_id": summary["run_id"],
        "started_at": summary["started_at"],
        "duration_s": summary["duration_s"],
        "verdict": summary["verdict"],
        "exit_status": summary["exit_status"],
        "counts": summary["counts"],
        "target": summary.get("target", ""),
        "platform": summary.get("platform", ""),
        "manifest_sha256": manifest_sha256,
        "versions": summary.get("stack", {}).get("versions", {}),
        "stage_medians": {name: s["median_s"] for name, s in summary.get("stage_statistics", {}).items()},
        "alert_delays": delays,
        "worst_probe_latency_s": round(max(latencies), 4) if latencies else None,
        "scenarios": {s["nodeid"]: s["outcome"] for s in summary.get("scenarios", [])},
        "report": report,
    }


# -- the file ------------------------------------------------------------------------------------


def append(path: Path, line: Dict[str, Any]) -> None:
    """One line, written whole under a lock: concurrent sessions sharing a history interleave lines,
    never bytes of lines. The file is only ever appended to."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # on the file itself: no lock file left beside it
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def load(path: Path) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Every run of the file, oldest first, and a note per line that is not a run (a line cut short
    by a killed writer, an edit): those are skipped and named, never rewritten."""
    path = Path(path)
    if not path.exists():
        return [], []
    if not path.is_file():
        raise HistoryError(
            f"expected a history file (JSON lines) at {path}; it is not a file. Give --history a file path."
        )
    runs, skipped = [], []
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            run = json.loads(text)
        except ValueError as exc:
            skipped.append(f"{path}:{number}: not JSON ({exc.msg}); line skipped")
            continue
        if not isinstance(run, dict) or run.get("schema") != SCHEMA:
            seen = run.get("schema") if isinstance(run, dict) else type(run).__name__
            skipped.append(f"{path}:{number}: expected a run with schema {SCHEMA!r}, saw {seen!r}; line skipped")
            continue
        runs.append(run)
    return runs, skipped


def unwritable(path: Path) -> Optional[str]:
    """Why the history file cannot be appended to, or None: checked before the gate runs."""
    path = Path(path)
    if path.exists() and not path.is_file():
        return f"expected a history file (JSON lines) at {path}; it is not a file. Give --history a file path."
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    target = path if path.exists() else folder
    if target is None or not os.access(target, os.W_OK):
        return (
            f"expected to append to the history file {path}; {target} is not writable by this user. "
            f"Give --history a file on a writable volume."
        )
    return None


# -- what changed ----------------------------------------------------------------------------------


def _rolling(previous: Sequence[Dict[str, Any]], field: str, key: str) -> List[float]:
    values = [run.get(field, {}).get(key) for run in previous]
    return [v for v in values if isinstance(v, (int, float))][-WINDOW:]


def _slower(kind: str, field: str, current: Dict[str, Any], previous: Sequence[Dict[str, Any]]) -> List[Regression]:
    found = []
    for key, value in sorted(current.get(field, {}).items()):
        before = _rolling(previous, field, key)
        if len(before) < MIN_RUNS or not isinstance(value, (int, float)):
            continue
        median = statistics.median(before)
        if value > REGRESSION_FACTOR * median and value - median >= MIN_INCREASE_S:
            found.append(
                Regression(
                    kind,
                    key,
                    f"{value:.3f} s, expected at most {REGRESSION_FACTOR} x the rolling median {median:.3f} s "
                    f"of the last {len(before)} runs ({value / median if median else float('inf'):.1f} x)",
                )
            )
    return found


def _flips(current: Dict[str, Any], previous: Sequence[Dict[str, Any]]) -> List[Regression]:
    found = []
    for nodeid, outcome in sorted(current.get("scenarios", {}).items()):
        if outcome not in VERDICTS:
            continue
        last = next(
            (r["scenarios"][nodeid] for r in reversed(previous) if r.get("scenarios", {}).get(nodeid) in VERDICTS), None
        )
        if last is not None and last != outcome:
            detail = f"{last} in the run before, {outcome} now"
            found.append(Regression("verdict", nodeid, detail, worse=outcome not in ("passed", "xfailed")))
    return found


def _new_versions(current: Dict[str, Any], previous: Sequence[Dict[str, Any]]) -> List[Regression]:
    if not previous:
        return []
    found = []
    for server in SERVERS:
        now, before = current.get("versions", {}).get(server), previous[-1].get("versions", {}).get(server)
        if now and before and now != before:
            found.append(Regression("version", server, f"{before} in the run before, {now} now", worse=False))
    return found


def regressions(current: Dict[str, Any], previous: Sequence[Dict[str, Any]]) -> List[Regression]:
    """What got worse or changed in `current` against the runs before it (oldest first)."""
    return (
        _slower("stage", "stage_medians", current, previous)
        + _slower("alert", "alert_delays", current, previous)
        + _flips(current, previous)
        + _new_versions(current, previous)
    )


def flake_rates(runs: Iterable[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per scenario that was ever flaky: in how many of the runs that ran it (not skipped) it was."""
    ran: Dict[str, int] = {}
    flaky: Dict[str, int] = {}
    for run in runs:
        for nodeid, outcome in run.get("scenarios", {}).items():
            if outcome in VERDICTS:
                ran[nodeid] = ran.get(nodeid, 0) + 1
                flaky[nodeid] = flaky.get(nodeid, 0) + (outcome == "flaky")
    return {
        nodeid: {"flaky": count, "runs": ran[nodeid], "rate": round(count / ran[nodeid], 3)}
        for nodeid, count in sorted(flaky.items())
        if count
    }


def with_regressions(runs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Each run with the regressions it showed against the runs before it."""
    return [
        dict(run, regressions=[asdict(r) for r in regressions(run, runs[:index])]) for index, run in enumerate(runs)
    ]


def view(runs: Sequence[Dict[str, Any]], last: int = CHART_RUNS) -> Dict[str, Any]:
    """What report.html and `python -m suite history` show: the last runs, each with its
    regressions, and the flake rates over them."""
    judged = with_regressions(runs)[-last:]
    return {"runs": judged, "flake_rates": flake_rates(judged)}


# -- as text ------------------------------------------------------------------------------------------


COLUMNS = ("run", "started", "verdict", "passed", "failed", "flaky", "skipped", "duration s", "regressions")


def _row(run: Dict[str, Any]) -> List[str]:
    counts = run.get("counts", {})
    return [
        run.get("run_id", ""),
        run.get("started_at", ""),
        run.get("verdict", ""),
        str(counts.get("passed", 0)),
        str(counts.get("failed", 0) + counts.get("error", 0)),
        str(counts.get("flaky", 0)),
        str(counts.get("skipped", 0)),
        f"{run.get('duration_s', 0):.1f}",
        "; ".join(str(Regression(**r)) for r in run.get("regressions", [])) or "-",
    ]


def table(shown: Dict[str, Any], markdown: bool = False) -> str:
    rows = [_row(run) for run in shown["runs"]]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    else:
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    rates = shown["flake_rates"]
    if rates:
        lines.append("")
        lines.append("flaky scenarios (flaky / runs that ran them):")
        lines += [f"  {nodeid}: {r['flaky']}/{r['runs']} ({r['rate']:.0%})" for nodeid, r in rates.items()]
    return "\n".join(lines)
