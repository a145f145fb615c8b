"""The rollback invariants, checked after every deploy attempt by one reusable checker.

After a failed deploy of version N into an environment whose committed version is C:
  1. current.json and config.pbtxt say what they said (content compared, types included; a
     rewrite with the same content is a note, not a violation), and current.json parses;
  2. Triton serves exactly C (index, version readiness) and C gives the golden outputs;
  3. N is gone from the numeric versions and kept, complete, where the platform's quarantine
     layout says (or, when the deploy failed before N was materialized, the model's versions,
     quarantine and committed files are untouched); nothing beside the versions reads as one;
  4. nothing new is left in the repository or loaded in Triton but the deploy's own result;
  5. the other environments are untouched;
  6. the deploy reported failure, naming the stage (or exit status) and why.
After a successful deploy the mirror holds: current.json = N, N serves golden, no leftovers.
Every violated invariant is reported, not only the first; an invariant that cannot be checked
in the state at hand is reported "not applicable" with the reason, never as held.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Set, Union

from suite import model_config
from suite.checks import EnvironmentSnapshot, check_server_ready, check_serves_committed, snapshot
from suite.environment import Environment
from suite.errors import GateError
from suite.file_identity import FileIdentity, file_identity
from suite.golden import GoldenSet
from suite.model_repo import (
    CONFIG_PBTXT,
    CURRENT_JSON,
    LOCK_FILE,
    ModelFolder,
    json_content,
    parse_current,
    tree_digest,
)
from suite.quarantine import QuarantineLayout, read_as_versions
from suite.timings import DRAIN_S, SERVER_READY_S

if TYPE_CHECKING:
    from suite.deployers import DeployOutcome

INVARIANTS = {
    1: "current.json and config.pbtxt unchanged",
    2: "committed version serves golden",
    3: "failed version quarantined complete",
    4: "no leftovers",
    5: "other environment untouched",
    6: "failure reported with its reason",
}
# Checks beside the invariants, reported the same way (a scenario's verdict names them all).
CHECKS = {
    "traffic": "users saw no failure",
    "stage": "the builtin path failed at the fault's stage",
    "fault": "the fault really happened",
}


@dataclass(frozen=True)
class Violation:
    invariant: Union[int, str]  # 1..6, or a key of CHECKS
    detail: str

    @property
    def name(self) -> str:
        return INVARIANTS.get(self.invariant) or CHECKS.get(self.invariant, str(self.invariant))  # type: ignore[arg-type]

    def __str__(self) -> str:
        kind = "invariant" if isinstance(self.invariant, int) else "check"
        return f"{kind} {self.invariant} ({self.name}): {self.detail}"


@dataclass
class Judgement:
    """What the checker found: violations, notes worth reporting, invariants it could not check."""

    violations: List[Violation] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    not_applicable: Dict[int, str] = field(default_factory=dict)

    def add(self, invariant: Union[int, str], detail: str) -> None:
        self.violations.append(Violation(invariant, detail))

    def extend(self, invariant: int, details: Iterable[str]) -> None:
        self.violations.extend(Violation(invariant, d) for d in details)

    @property
    def checked(self) -> List[int]:
        return [n for n in INVARIANTS if n not in self.not_applicable]

    @property
    def ids(self) -> List[str]:
        """The violated invariants and checks, as a scenario's verdict names them ("1", "traffic")."""
        return sorted({str(v.invariant) for v in self.violations}, key=lambda i: (not i.isdigit(), i))


@dataclass(frozen=True)
class EnvironmentState:
    """One environment captured before an attempt."""

    name: str
    repository: Path
    current_bytes: Optional[bytes]
    committed: Optional[int]
    config_bytes: Optional[bytes]
    versions: Dict[str, str]  # the model's versions and quarantine: relative path -> sha256
    quarantined: List[str]
    entries: Set[str]  # top-level names of the repository and of the model's folder
    loaded: Set[str]  # models Triton has loaded (any name: candidates too)
    snapshot: EnvironmentSnapshot
    current_identity: Optional[FileIdentity] = None  # to tell a rewrite in place from temp file + os.replace


class EnvironmentView:
    """One environment as the checker sees it: the environment and its model's folder in it."""

    def __init__(self, environment: Environment, model: str, layout: Optional[QuarantineLayout] = None):
        if environment.repository is None:
            raise GateError(
                f"{environment.name} has no model repository the gate can read; the invariants "
                f"compare its files, so the manifest must name one (cluster.model_repository)"
            )
        self.environment = environment
        self.name = environment.name
        self.repository = environment.repository
        self.triton = environment.triton
        self.folder = ModelFolder(self.repository, model, layout)

    def capture(self) -> EnvironmentState:
        current = self.folder.current_bytes()
        committed = parse_current(current).active_version if current is not None else None
        return EnvironmentState(
            self.name,
            self.repository,
            current,
            committed,
            _read(self.folder.config_path),
            _model_state(self.folder),
            [_rel(self.folder, p) for p in self.folder.quarantined()],
            _entries(self.folder),
            self.triton.loaded_models(),
            snapshot(self.repository, self.triton),
            file_identity(self.folder.current_path),
        )


def _read(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _rel(folder: ModelFolder, path: Path) -> str:
    return path.relative_to(folder.path).as_posix()


def _model_state(folder: ModelFolder) -> Dict[str, str]:
    """Digest of what a deploy may change: version folders, quarantine, the committed files."""
    digest = {}
    roots = [folder.version_path(v) for v in folder.versions()] + folder.quarantined()
    for root in roots:
        for rel, sha in tree_digest(root).items():
            digest[f"{_rel(folder, root)}/{rel}"] = sha
        digest[_rel(folder, root)] = "<dir>"
    for name in (CURRENT_JSON, CONFIG_PBTXT):
        data = _read(folder.path / name)
        if data is not None:
            digest[name] = hashlib.sha256(data).hexdigest()
    return digest


def _entries(folder: ModelFolder) -> Set[str]:
    names = {f"{p.name}" for p in folder.repository.iterdir()} if folder.repository.is_dir() else set()
    names |= {f"{folder.model}/{name}" for name in folder.entries()}
    return names - {LOCK_FILE}


class InvariantChecker:
    def __init__(self, model: str, golden: GoldenSet):
        self.model = model
        self.golden = golden

    # -- the judgements --------------------------------------------------------------------

    def after_failure(
        self,
        view: EnvironmentView,
        before: EnvironmentState,
        others: Dict[EnvironmentView, EnvironmentState],
        version: Optional[int],
        expected_files: Optional[Dict[str, str]],
        outcome: "DeployOutcome",
        materialized: bool,
    ) -> Judgement:
        """After a deploy of `version` that had to fail.

        `expected_files` is what the version folder holds when materialized (relative path ->
        sha256), to prove the quarantined copy is complete. `materialized` says whether the
        failure came after the version folder was made.
        """
        found = Judgement()
        self._committed_files_unchanged(view, before, found)
        found.extend(2, self._serves(view, before.committed))
        if version is not None and version == before.committed:
            found.not_applicable[3] = f"v{version} is the committed version: nothing to quarantine"
        elif not materialized or version is None:
            self._untouched(view, before, found)
        else:
            self._quarantined(view, before, version, expected_files, found)
        self._no_leftovers(view, before, found)
        self._others(others, found)
        self._reported_failure(outcome, found)
        return found

    def after_success(
        self,
        view: EnvironmentView,
        before: EnvironmentState,
        others: Dict[EnvironmentView, EnvironmentState],
        version: int,
        outcome: "DeployOutcome",
    ) -> Judgement:
        """After a deploy of `version` that had to succeed (current.json = N, N serves golden)."""
        found = Judgement()
        try:
            current = view.folder.read_current()
        except GateError as exc:
            current = None
            found.add(1, str(exc))
        if current is None or current.active_version != version:
            found.add(
                1, f"current.json names version {current.active_version if current else None}, expected {version}"
            )
        found.extend(1, self._written_atomically(view, before))
        found.extend(2, self._serves(view, version))
        found.not_applicable[3] = "the deploy was good: nothing to quarantine"
        self._no_leftovers(view, before, found)
        self._others(others, found)
        if not outcome.ok:
            found.add(6, f"the deploy of a good version failed: {outcome.message[:500]}")
        return found

    def after_recovery(
        self,
        view: EnvironmentView,
        before: EnvironmentState,
        others: Dict[EnvironmentView, EnvironmentState],
        version: int,
        outcome: "DeployOutcome",
    ) -> Judgement:
        """After a deployer died deploying `version` and the platform's recovery ran: either the
        deploy was finished (current.json = N) or undone (the state before it), never a mix."""
        try:
            current = view.folder.read_current()
        except GateError as exc:
            found = Judgement()
            found.add(1, str(exc))
            return found
        if current is not None and current.active_version == version and version != before.committed:
            found = self.after_success(view, before, others, version, outcome)
            found.notes.append(f"recovery finished the deploy of v{version}")
            found.violations = [v for v in found.violations if v.invariant != 6]
        else:
            found = Judgement()
            self._committed_files_unchanged(view, before, found)
            found.extend(2, self._serves(view, before.committed))
            if version in view.folder.versions() and version != before.committed:
                found.add(
                    3,
                    f"version folder {version} of the interrupted deploy is still among the numeric "
                    f"versions {view.folder.versions()} after recovery: a restart or the next "
                    f"deploy may take it as a good version",
                )
            self._beside_versions(view, before, found)
            self._no_leftovers(view, before, found)
            self._others(others, found)
            found.notes.append(f"recovery undid the deploy of v{version}")
        if not outcome.ok:
            found.add(6, f"the recovery did not succeed: {outcome.message[:500]}")
        return found

    # -- the parts ---------------------------------------------------------------------------

    def _committed_files_unchanged(self, view: EnvironmentView, before: EnvironmentState, found: Judgement) -> None:
        now = view.folder.current_bytes()
        if now != before.current_bytes:
            try:
                same = (
                    now is not None
                    and before.current_bytes is not None
                    and json_content(now) == json_content(before.current_bytes)
                )
            except ValueError:
                same = False
            if same:
                found.notes.append(
                    "current.json was rewritten with the same content (formatting or "
                    "byte-level change only): not a violation"
                )
            else:
                found.add(1, f"current.json changed from {_show(before.current_bytes)} to {_show(now)}")
        if now is not None:
            try:
                parse_current(now)
            except GateError as exc:
                found.add(1, str(exc))
        config_now = _read(view.folder.config_path)
        if config_now != before.config_bytes:
            difference = _config_difference(before.config_bytes, config_now)
            if difference:
                found.add(
                    1,
                    f"config.pbtxt is not the committed one any more: {difference}; a restarted Triton would load that",
                )
            else:
                found.notes.append("config.pbtxt was rewritten with the same content: not a violation")

    @staticmethod
    def _written_atomically(view: EnvironmentView, before: EnvironmentState) -> List[str]:
        """A changed current.json on the same inode was truncated and rewritten in place: a reader
        (Triton's start-up, the next deploy) or a crash in between sees a torn or empty file."""
        if before.current_identity is None or view.folder.current_bytes() == before.current_bytes:
            return []
        now = file_identity(view.folder.current_path)
        same = now.same_file_as(before.current_identity) if now is not None else False
        if same is False:
            return []
        # Without birth times a new file that reused the inode number looks the same: say so.
        how = (
            f"is the same file (inode {now.inode}, same birth time)"
            if same
            else f"kept its inode {now.inode} (this filesystem records no birth times, so a new file that "
            "reused the number would look the same)"
        )
        return [
            f"current.json changed but {how}: it was rewritten in place, so a reader or a crash mid-write "
            "sees a torn file; write a temporary file in the same folder and os.replace() it"
        ]

    def _serves(self, view: EnvironmentView, version: Optional[int]) -> List[str]:
        if version is None:
            try:
                ready = view.triton.ready_versions(self.model)
            except GateError as exc:
                return [str(exc)]
            return [f"nothing is committed but Triton serves versions {ready}"] if ready else []
        problems = check_serves_committed(view.triton, view.folder, self.golden, expected_version=version)
        draining = view.triton.wait_drained(DRAIN_S)

        def explain() -> str:
            # A readiness probe on /v2/health/ready would take the pod out of its Service.
            if not view.triton.live():
                return "(it does not answer /v2/health/live either: the server died or hangs; see its log)"
            if draining:
                return f"(versions Triton still held without serving them after {DRAIN_S:.0f} s: {', '.join(draining)})"
            # A failed version with a folder is judged at once (check_server_ready); one loaded
            # through the API has none, so the index cannot name it.
            return (
                "(a model in a failed state keeps the whole server unready; the repository index lists none, "
                "so it was likely loaded through the API, outside the repository)"
            )

        return problems + check_server_ready(view.triton, SERVER_READY_S, explain)

    def _untouched(self, view: EnvironmentView, before: EnvironmentState, found: Judgement) -> None:
        """Failed before materializing: versions, quarantine and committed files as they were."""
        after = _model_state(view.folder)
        changed = sorted(k for k in set(after) | set(before.versions) if after.get(k) != before.versions.get(k))
        if changed:
            found.add(
                3,
                f"this fault strikes before a complete version can exist (a cut download, a refused "
                f"write, an unknown version), so the model's versions, quarantine and committed files "
                f"must be as they were; they changed: {changed}",
            )

    def _quarantined(
        self,
        view: EnvironmentView,
        before: EnvironmentState,
        version: int,
        expected_files: Optional[Dict[str, str]],
        found: Judgement,
    ) -> None:
        folder = view.folder
        if version in folder.versions():
            found.add(
                3,
                f"version folder {version} is still among the numeric versions {folder.versions()}: "
                f"Triton could serve it after a restart",
            )
        new = [p for p in folder.quarantined(version) if _rel(folder, p) not in before.quarantined]
        if len(new) != 1:
            found.add(
                3,
                f"expected exactly one new quarantined copy of v{version} at "
                f"{folder.layout.template!r} (the platform's quarantine layout), found "
                f"{[_rel(folder, p) for p in new]}; a failed version must be kept, never deleted. "
                f"Model folder now: {folder.entries()}",
            )
        elif expected_files is not None:
            kept = tree_digest(new[0])
            missing = sorted(set(expected_files.values()) - set(kept.values()))
            if missing:
                found.add(
                    3,
                    f"{_rel(folder, new[0])} is not the complete version: no file in it has the "
                    f"registry's bytes (sha256 {missing[0][:12]}...); it holds {sorted(kept)}",
                )
        self._beside_versions(view, before, found)

    def _beside_versions(self, view: EnvironmentView, before: EnvironmentState, found: Judgement) -> None:
        """A quarantined folder named `3.failed_<ts>` beside the versions is read by Triton as
        version 3 unless config.pbtxt pins the versions (measured on 2.51: NoSuchFile on 3/)."""
        names = [
            n.split("/", 1)[1] for n in _entries(view.folder) - before.entries if n.startswith(view.folder.model + "/")
        ]
        readable = read_as_versions(names)
        if not readable:
            return
        config = _read(view.folder.config_path)
        try:
            pinned = (
                config is not None
                and model_config.parse(config.decode()).version_policy.WhichOneof("policy_choice") == "specific"
            )
        except GateError:
            pinned = False
        if not pinned:
            found.add(
                3,
                f"{readable} sit beside the version folders and config.pbtxt has no version_policy: "
                f"Triton reads such a folder as the version its name begins with (measured on 2.51: the "
                f"next load fails with NoSuchFile for that version); quarantine outside the version "
                f"folders or pin the versions",
            )

    def _no_leftovers(self, view: EnvironmentView, before: EnvironmentState, found: Judgement) -> None:
        """Nothing new but the committed files, version folders (invariants 2 and 3 judge those)
        and the quarantine; no model left loaded in Triton but the model itself."""
        folder = view.folder
        allowed = {f"{folder.model}/{name}" for name in (CURRENT_JSON, CONFIG_PBTXT)}
        allowed |= {f"{folder.model}/{v}" for v in folder.versions()}
        allowed |= {f"{folder.model}/{p.relative_to(folder.path).parts[0]}" for p in folder.quarantined()}
        if folder.layout.top_folder:
            allowed.add(f"{folder.model}/{folder.layout.top_folder}")
        allowed.add(folder.model)
        new = sorted(_entries(folder) - before.entries - allowed)
        if new:
            found.add(4, f"left in the repository {view.repository}: {new}")
        stray = sorted(view.triton.loaded_models() - before.loaded - {self.model})
        if stray:
            found.add(4, f"left loaded in Triton: {stray} (a candidate or staging model never unloaded)")

    def _others(self, others: Dict[EnvironmentView, EnvironmentState], found: Judgement) -> None:
        if not others:
            found.not_applicable[5] = "the platform has no other environment"
            return
        for view, state in others.items():
            if state.committed is None:
                found.not_applicable[5] = (
                    f"{view.name} has nothing committed, so a change to its served state could not be seen"
                )
            differences = state.snapshot.differences(snapshot(view.repository, view.triton))
            if differences:
                found.add(5, f"{view.name} changed: " + "; ".join(differences))
                found.not_applicable.pop(5, None)

    @staticmethod
    def _reported_failure(outcome: "DeployOutcome", found: Judgement) -> None:
        if outcome.ok:
            found.add(6, "the deployer reported success for a deploy that had to fail")
        elif not outcome.message.strip():
            found.add(6, "the deployer failed without saying why (empty message)")
        elif outcome.exit_code is None and not outcome.failed_stage:
            found.add(6, "the deploy result does not name the stage that failed")


def _config_difference(before: Optional[bytes], after: Optional[bytes]) -> str:
    """'' when both configs say the same; otherwise what changed, in words."""
    if before is None or after is None:
        return "it appeared" if before is None else "it was removed"
    try:
        old, new = model_config.parse(before.decode()), model_config.parse(after.decode())
    except GateError as exc:
        return f"it does not parse any more ({exc})"
    if old == new:
        return ""
    fields = sorted(
        {f.name for f, _ in old.ListFields()} ^ {f.name for f, _ in new.ListFields()}
        | {f.name for f, v in old.ListFields() if getattr(new, f.name) != v}
    )
    return f"fields {fields} differ (version_policy was {_policy(old)}, is {_policy(new)})"


def _policy(config) -> str:
    pinned = model_config.pinned_version(config)
    return (
        f"pinned to v{pinned}" if pinned is not None else (config.version_policy.WhichOneof("policy_choice") or "none")
    )


def _show(data: Optional[bytes]) -> str:
    if data is None:
        return "(absent)"
    text = data.decode(errors="replace").replace("\n", " ")
    return text[:200]
