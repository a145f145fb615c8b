"""Checks of what an environment serves, shared by scenarios and the deploy path's tests.

Each check returns the list of problems it found (empty = passed), so callers can report
every violation at once rather than the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from suite.errors import GateError
from suite.golden import GoldenSet
from suite.model_repo import LOCK_FILE, ModelFolder, tree_digest
from suite.triton_client import TritonControl
from suite.waiting import WaitTimeout


def check_serves_committed(
    triton: TritonControl, folder: ModelFolder, golden: GoldenSet, expected_version: Optional[int] = None
) -> List[str]:
    """current.json names the version, Triton has exactly it READY, and it answers golden."""
    problems: List[str] = []
    try:
        current = folder.read_current()
    except GateError as exc:
        return [str(exc)]
    if current is None:
        return [f"{folder.current_path} does not exist: nothing is committed"]
    version = current.active_version
    if expected_version is not None and version != expected_version:
        problems.append(f"current.json names version {version}, expected {expected_version}")
    try:
        ready = triton.ready_versions(folder.model)
    except GateError as exc:
        return problems + [str(exc)]
    if ready != [version]:
        problems.append(
            f"Triton has versions {ready} of {folder.model} READY; current.json says exactly [{version}] should be"
        )
    if not triton.model_ready(folder.model, version):
        problems.append(f"Triton says {folder.model} version {version} is not ready")
    try:
        outputs = triton.infer(folder.model, golden.inputs, list(golden.expected), version=version)
        problems += [f"version {version}: {p}" for p in golden.compare(outputs)]
    except GateError as exc:
        problems.append(str(exc))
    return problems


def check_server_ready(triton: TritonControl, timeout_s: float, explain: Callable[[], str] = str) -> List[str]:
    """/v2/health/ready answers 200 within `timeout_s`. Judged at once when a version whose load
    failed shows: it keeps the server unready until the model loads or Triton restarts.
    `explain()` says why, when the wait ran out."""
    try:
        failed = triton.wait_ready_or_failed(timeout_s)
    except WaitTimeout:
        why = explain()
        return [
            f"Triton's /v2/health/ready still answers not-ready after {timeout_s:.0f} s" + (f" {why}" if why else "")
        ]
    if not failed:
        return []
    reasons = "; ".join(f.splitlines()[0][:300] for f in failed)  # Triton's reason ends in a traceback
    return [
        "Triton's /v2/health/ready answers not-ready, and will until these load or Triton restarts (a "
        f"version whose load failed keeps the whole server unready): {reasons}"
    ]


@dataclass(frozen=True)
class EnvironmentSnapshot:
    """Everything a deploy elsewhere must leave untouched in an environment."""

    files: Dict[str, str]
    ready: Dict[str, List[int]]

    def differences(self, other: "EnvironmentSnapshot") -> List[str]:
        problems = []
        for path in sorted(set(self.files) | set(other.files)):
            before, after = self.files.get(path), other.files.get(path)
            if before != after:
                state = "appeared" if before is None else "disappeared" if after is None else "changed"
                problems.append(f"{path} {state}")
        if self.ready != other.ready:
            problems.append(f"served versions changed from {self.ready} to {other.ready}")
        return problems


def snapshot(repository: Path, triton: TritonControl) -> EnvironmentSnapshot:
    files = {k: v for k, v in tree_digest(repository).items() if k != LOCK_FILE}
    ready: Dict[str, List[int]] = {}
    for entry in triton.index():
        if entry.state == "READY" and entry.version is not None:
            ready.setdefault(entry.name, []).append(entry.version)
    return EnvironmentSnapshot(files, {k: sorted(v) for k, v in ready.items()})
