"""The rollback invariants, checked after every deploy attempt by one reusable checker.

After a failed deploy of version N into an environment whose committed version is C:
  1. current.json is byte-for-byte what it was, and parses;
  2. Triton serves exactly C (index, version readiness) and C gives the golden outputs;
  3. N is gone from the numeric versions and kept, complete, as N.failed_<UTC>
     (or, when the deploy failed before N was materialized, the repository is untouched);
  4. no staging, temporary or journal entry is left in the repository;
  5. the other environment is untouched;
  6. the deploy reported failure, naming the stage (or exit status) and why.
After a successful deploy the mirror holds: current.json = N, N serves golden, no leftovers.
Every violated invariant is reported, not only the first.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from suite.checks import EnvironmentSnapshot, check_serves_committed, snapshot
from suite.errors import GateError
from suite.golden import GoldenSet
from suite.model_repo import LOCK_FILE, ModelFolder, parse_current, tree_digest
from suite.triton_client import TritonControl

INVARIANTS = {
    1: "current.json unchanged",
    2: "committed version serves golden",
    3: "failed version quarantined complete",
    4: "no leftovers in the repository",
    5: "other environment untouched",
    6: "failure reported with its reason",
}

# Stages before which the version folder does not exist yet: a failure there must leave the
# repository as it was, with nothing to quarantine.
PRE_MATERIALIZE_STAGES = ("lock", "register", "materialize")
# Triton answers not-ready while any model loads or unloads (issue #7014), ~1.5 s after a deploy.
SERVER_READY_WITHIN_S = 10.0


@dataclass(frozen=True)
class Violation:
    invariant: int
    detail: str

    @property
    def name(self) -> str:
        return INVARIANTS[self.invariant]

    def __str__(self) -> str:
        return f"invariant {self.invariant} ({self.name}): {self.detail}"


@dataclass
class DeployOutcome:
    """What a deployer reported: the builtin path's result, or a command's exit status and output."""

    ok: bool
    failed_stage: Optional[str] = None
    message: str = ""
    exit_code: Optional[int] = None
    result: Optional[dict] = None  # the builtin path's stage records (DeployResult.to_dict())


@dataclass(frozen=True)
class EnvironmentState:
    """One environment captured before an attempt."""

    name: str
    repository: Path
    current_bytes: Optional[bytes]
    committed: Optional[int]
    model_files: Dict[str, str]
    quarantined: List[str]
    snapshot: EnvironmentSnapshot
    current_inode: Optional[int] = None  # to tell a rewrite in place from temp file + os.replace


class EnvironmentView:
    """How the checker reaches one environment: its repository and its Triton."""

    def __init__(self, name: str, repository: Path, triton: TritonControl, model: str):
        self.name = name
        self.repository = Path(repository)
        self.triton = triton
        self.folder = ModelFolder(self.repository, model)

    def capture(self) -> EnvironmentState:
        current = self.folder.current_bytes()
        committed = parse_current(current).active_version if current is not None else None
        return EnvironmentState(self.name, self.repository, current, committed,
                                _model_files(self.folder), [p.name for p in self.folder.quarantined()],
                                snapshot(self.repository, self.triton), _inode(self.folder.current_path))


def _inode(path: Path) -> Optional[int]:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _model_files(folder: ModelFolder) -> Dict[str, str]:
    return {k: v for k, v in tree_digest(folder.path).items() if not k.startswith(LOCK_FILE)}


class InvariantChecker:
    def __init__(self, model: str, golden: GoldenSet):
        self.model = model
        self.golden = golden

    def after_failure(self, target: EnvironmentView, before: EnvironmentState, others: Dict[EnvironmentView, EnvironmentState],
                      version: Optional[int], expected_files: Optional[Dict[str, str]], outcome: DeployOutcome,
                      materialized: bool) -> List[Violation]:
        """Violations after a deploy of `version` that had to fail.

        `expected_files` is what the version folder held when materialized (relative path ->
        sha256), to prove the quarantined copy is complete. `materialized` says whether the
        failure came after the version folder was made.
        """
        found: List[Violation] = []
        folder = target.folder
        # 1. current.json byte-for-byte
        now = folder.current_bytes()
        if now != before.current_bytes:
            found.append(Violation(1, f"current.json changed from {_show(before.current_bytes)} to {_show(now)}"))
        elif now is not None:
            try:
                parse_current(now)
            except GateError as exc:
                found.append(Violation(1, str(exc)))
        # 2. Triton serves exactly the committed version, correctly
        found += self._serves(target, before.committed, invariant=2)
        # 3. quarantine (or untouched repository when nothing was materialized)
        if version is not None and version != before.committed:
            found += self._quarantine(folder, before, version, expected_files, materialized)
        # 4. leftovers
        found += self._leftovers(target)
        # 5. other environments
        found += self._others(others)
        # 6. the deployer said it failed, and why
        if outcome.ok:
            found.append(Violation(6, "the deployer reported success for a deploy that had to fail"))
        elif not outcome.message.strip():
            found.append(Violation(6, "the deployer failed without saying why (empty message)"))
        elif outcome.exit_code is None and not outcome.failed_stage:
            found.append(Violation(6, "the deploy result does not name the stage that failed"))
        return found

    def after_success(self, target: EnvironmentView, others: Dict[EnvironmentView, EnvironmentState],
                      version: int, outcome: DeployOutcome,
                      before: Optional[EnvironmentState] = None) -> List[Violation]:
        """Violations after a deploy of `version` that had to succeed; with `before`, also how
        current.json was written."""
        found: List[Violation] = []
        try:
            current = target.folder.read_current()
        except GateError as exc:
            current = None
            found.append(Violation(1, str(exc)))
        if current is None or current.active_version != version:
            found.append(Violation(1, f"current.json names version "
                                      f"{current.active_version if current else None}, expected {version}"))
        if before is not None:
            found += self._written_atomically(target, before)
        found += self._serves(target, version, invariant=2)
        found += self._leftovers(target)
        found += self._others(others)
        if not outcome.ok:
            found.append(Violation(6, f"the deploy of a good version failed: {outcome.message[:500]}"))
        return found

    # -- the parts ---------------------------------------------------------------------------

    @staticmethod
    def _written_atomically(target: EnvironmentView, before: EnvironmentState) -> List[Violation]:
        """A changed current.json on the same inode was truncated and rewritten in place: a reader
        (Triton's start-up, the next deploy) or a crash in between sees a torn or empty file."""
        if before.current_inode is None or target.folder.current_bytes() == before.current_bytes:
            return []
        if _inode(target.folder.current_path) == before.current_inode:
            return [Violation(1, f"current.json changed but kept its inode {before.current_inode}: it was "
                                 "rewritten in place, so a reader or a crash mid-write sees a torn file; write "
                                 "a temporary file in the same folder and os.replace() it")]
        return []

    def _serves(self, target: EnvironmentView, version: Optional[int], invariant: int) -> List[Violation]:
        if version is None:
            try:
                ready = target.triton.ready_versions(self.model)
            except GateError as exc:
                return [Violation(invariant, str(exc))]
            return [Violation(invariant, f"nothing is committed but Triton serves versions {ready}")] if ready else []
        problems = check_serves_committed(target.triton, target.folder, self.golden, expected_version=version)
        if not target.triton.wait_server_ready(SERVER_READY_WITHIN_S):
            # A readiness probe on /v2/health/ready would take the pod out of its Service.
            problems.append(f"Triton's /v2/health/ready still answers not-ready after {SERVER_READY_WITHIN_S:.0f} s "
                            f"(a model in a failed state keeps the whole server unready)")
        return [Violation(invariant, p) for p in problems]

    def _quarantine(self, folder: ModelFolder, before: EnvironmentState, version: int,
                    expected_files: Optional[Dict[str, str]], materialized: bool) -> List[Violation]:
        found = []
        if version in folder.versions():
            found.append(Violation(3, f"version folder {version} is still among the numeric versions "
                                      f"{folder.versions()}: Triton could serve it after a restart"))
        new = [p for p in folder.quarantined(version) if p.name not in before.quarantined]
        if not materialized:
            if new:
                found.append(Violation(3, f"the deploy failed before materializing, yet {[p.name for p in new]} appeared"))
            after = _model_files(folder)
            if after != before.model_files:
                changed = sorted(k for k in set(after) | set(before.model_files)
                                 if after.get(k) != before.model_files.get(k))
                found.append(Violation(3, f"the repository changed although nothing was materialized: {changed}"))
            return found
        if len(new) != 1:
            found.append(Violation(3, f"expected exactly one new {version}.failed_<UTC> folder, found "
                                      f"{[p.name for p in new]} (a failed version must be kept, never deleted)"))
            return found
        if expected_files is not None:
            kept = tree_digest(new[0])
            if kept != expected_files:
                found.append(Violation(3, f"{new[0].name} is not the complete materialized version: "
                                          f"holds {sorted(kept)}, expected {sorted(expected_files)} "
                                          f"with the registry's bytes"))
        return found

    def _leftovers(self, target: EnvironmentView) -> List[Violation]:
        leftovers = [p.name for p in target.folder.leftovers()]
        leftovers += [p.name for p in target.repository.iterdir()
                      if p.name.endswith(".tmp") or p.name.startswith(".staging")] if target.repository.is_dir() else []
        return [Violation(4, f"left in {target.folder.path}: {leftovers}")] if leftovers else []

    def _others(self, others: Dict[EnvironmentView, EnvironmentState]) -> List[Violation]:
        found = []
        for view, state in others.items():
            differences = state.snapshot.differences(snapshot(view.repository, view.triton))
            if differences:
                found.append(Violation(5, f"{view.name} changed: " + "; ".join(differences)))
        return found


def _show(data: Optional[bytes]) -> str:
    if data is None:
        return "(absent)"
    text = data.decode(errors="replace").replace("\n", " ")
    return text[:200]
