"""Write a run's reports into <report dir>/<run id>/ and point <report dir>/latest at it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from suite.files import atomic_write

LATEST = "latest"


def _json(summary: Dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, default=str) + "\n"


def _html(summary: Dict[str, Any]) -> str:
    from reports import html  # jinja2 only when the page is written

    return html.render(summary)


# `--report-format` name -> (file in the run folder, render(summary) -> text). A new format is one
# render function and one line here. The machine-readable verdict first: it must exist even if
# the HTML page fails to render. (junit is pytest's own junitxml, pointed into the run folder.)
WRITERS: Dict[str, Tuple[str, Callable[[Dict[str, Any]], str]]] = {
    "json": ("summary.json", _json),
    "html": ("report.html", _html),
}


def write_reports(base_dir: Path, run_dir: Path, summary: Dict[str, Any], formats: List[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    if summary.get("monitoring_changes"):
        atomic_write(run_dir / "monitoring-changes.txt", "\n".join(summary["monitoring_changes"]) + "\n")
    # Atomic writes: a CI job reading the reports while the gate writes them sees the old file or the new one.
    try:
        for name, (file_name, render) in WRITERS.items():
            if name in formats:
                atomic_write(run_dir / file_name, render(summary))
    finally:
        point_latest(base_dir, run_dir)


def point_latest(base_dir: Path, run_dir: Path) -> None:
    """Replace the `latest` symlink atomically, relative so the folder can be moved or archived."""
    link = base_dir / LATEST
    fresh = base_dir / f".{LATEST}.{os.getpid()}"
    if fresh.is_symlink() or fresh.exists():
        fresh.unlink()
    fresh.symlink_to(os.path.relpath(run_dir, base_dir))
    os.replace(fresh, link)


def slowest_stages(summary: Dict[str, Any], count: int = 3) -> List[str]:
    stats = summary.get("stage_statistics", {})
    ranked = sorted(stats.items(), key=lambda item: item[1]["max_s"], reverse=True)[:count]
    return [f"{name} {s['max_s']:.2f} s (median {s['median_s']:.2f} s)" for name, s in ranked]


def summary_line(summary: Dict[str, Any], run_dir: Path) -> str:
    c = summary["counts"]
    line = (
        f"GATE {summary['verdict'].upper()}: {c['passed']} passed, {c['failed']} failed, {c['error']} errors, "
        f"{c['skipped']} skipped"
        + (f", {c['flaky']} flaky{' (accepted)' if summary.get('flaky_ok') else ''}" if c.get("flaky") else "")
        + f" in {summary['duration_s']:.1f} s"
    )
    if summary.get("regressions"):
        line += f"; {len(summary['regressions'])} regressions against the history"
    stages = slowest_stages(summary)
    if stages:
        line += "; slowest stages: " + ", ".join(stages)
    return line + f"; report: {run_dir / 'report.html'}"
