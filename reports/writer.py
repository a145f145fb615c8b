"""Write a run's reports into <report dir>/<run id>/ and point <report dir>/latest at it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

from reports import html

LATEST = "latest"


def write_reports(base_dir: Path, run_dir: Path, summary: Dict[str, Any], formats: List[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    # The machine-readable verdict first: it must exist even if the HTML page fails to render.
    if "json" in formats:
        _write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    if summary.get("monitoring_changes"):
        _write_atomic(run_dir / "monitoring-changes.txt", "\n".join(summary["monitoring_changes"]) + "\n")
    point_latest(base_dir, run_dir)
    if "html" in formats:
        _write_atomic(run_dir / "report.html", html.render(summary))


def _write_atomic(path: Path, text: str) -> None:
    """A CI job reading the report while the gate writes it sees the old file or the new one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


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
    line = (f"GATE {summary['verdict'].upper()}: {c['passed']} passed, {c['failed']} failed, {c['error']} errors, "
            f"{c['skipped']} skipped in {summary['duration_s']:.1f} s")
    stages = slowest_stages(summary)
    if stages:
        line += "; slowest stages: " + ", ".join(stages)
    return line + f"; report: {run_dir / 'report.html'}"
