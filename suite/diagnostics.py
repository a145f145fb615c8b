"""Evidence gathered when a scenario fails: server logs, repository state, monitoring state."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import requests

from suite.processes import log_tail

LOG_LINES = 30
LISTING_LIMIT = 200


def repository_listing(repository: Path, limit: int = LISTING_LIMIT) -> List[str]:
    """Every file and folder under the repository, with sizes, as `ls -R` would show it."""
    if not repository.exists():
        return [f"(no repository folder at {repository})"]
    lines = []
    for path in sorted(repository.rglob("*")):
        relative = path.relative_to(repository)
        lines.append(f"{relative}/" if path.is_dir() else f"{relative}  ({path.stat().st_size} bytes)")
        if len(lines) >= limit:
            lines.append(f"... (listing cut at {limit} entries)")
            break
    return lines or ["(empty)"]


def current_json(repository: Path, model: str) -> str:
    path = repository / model / "current.json"
    try:
        return path.read_text()
    except FileNotFoundError:
        return f"(absent: {path})"
    except OSError as exc:
        return f"(unreadable: {path}: {exc})"


def _guarded(call, *args) -> Any:
    """A diagnostic that cannot be gathered says why, instead of hiding the real failure."""
    try:
        return call(*args)
    except Exception as exc:  # the server may be the thing that broke
        return f"(could not be gathered: {type(exc).__name__}: {exc})"


def environment_evidence(
    name: str, repository: Path, model: str, triton=None, log_path: Optional[Path] = None
) -> Dict[str, Any]:
    evidence: Dict[str, Any] = {
        "repository": str(repository),
        "repository_listing": repository_listing(repository),
        "current_json": current_json(repository, model),
    }
    if triton is not None:
        evidence["repository_index"] = _guarded(lambda: [asdict(e) if is_dataclass(e) else e for e in triton.index()])
    if log_path is not None:
        evidence["triton_log_tail"] = log_tail(Path(log_path), LOG_LINES)
    return evidence


def _prometheus_targets(url: str) -> List[dict]:
    targets = requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return [
        {
            "scrapeUrl": t.get("scrapeUrl"),
            "health": t.get("health"),
            "lastError": t.get("lastError"),
            "labels": t.get("labels"),
        }
        for t in targets
    ]


def _alertmanager_alerts(url: str) -> List[dict]:
    alerts = requests.get(f"{url}/api/v2/alerts", timeout=5).json()
    return [
        {
            "labels": a.get("labels"),
            "status": (a.get("status") or {}).get("state"),
            "receivers": [r.get("name") for r in a.get("receivers", [])],
        }
        for a in alerts
    ]


def monitoring_evidence(prometheus_url: Optional[str], alertmanager_url: Optional[str]) -> Dict[str, Any]:
    evidence: Dict[str, Any] = {}
    if prometheus_url:
        evidence["prometheus_targets"] = _guarded(_prometheus_targets, prometheus_url)
    if alertmanager_url:
        evidence["alertmanager_alerts"] = _guarded(_alertmanager_alerts, alertmanager_url)
    return evidence
