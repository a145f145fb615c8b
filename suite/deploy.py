"""The deploy path: Register -> Materialize -> Load -> Ready -> Smoke infer -> Commit.

On failure after materialize: Rollback. The contract (DESIGN.md section 4): registry version N
becomes version folder N; load, ready and smoke run on a *candidate* (N loaded under another
name) so users keep getting the committed version until N has proved itself; commit switches the
live model to N with a load-time config override, checks it again, then writes config.pbtxt
(pinned to N) and `current.json` last, atomically. A failed version is renamed `N.failed_<UTC>`,
never deleted. One deploy per environment at a time.
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from suite import model_config
from suite.errors import DeployLockedError, GateError, RepositoryError
from suite.golden import GoldenSet
from suite.model_repo import Current, ModelFolder, environment_lock, utc_stamp
from suite.quarantine import DEFAULT_LAYOUT, QuarantineLayout
from suite.registry import RegisteredVersion, Registry
from suite.triton_client import TritonControl

STAGES = ("register", "materialize", "load", "ready", "smoke", "commit")
CANDIDATE_SUFFIX = "__candidate"


def mc_copy(config):
    copy = type(config)()
    copy.CopyFrom(config)
    return copy


@dataclass
class StageRecord:
    name: str
    outcome: str = "not run"  # passed | failed | not run
    duration_s: float = 0.0
    detail: str = ""


@dataclass
class DeployResult:
    env: str
    model: str
    requested: str
    version: Optional[int] = None
    run_id: str = ""
    ok: bool = False
    failed_stage: Optional[str] = None
    error: str = ""
    stages: List[StageRecord] = field(default_factory=list)
    rollback: List[StageRecord] = field(default_factory=list)
    quarantined: Optional[str] = None
    previous_version: Optional[int] = None
    recovered: List[StageRecord] = field(default_factory=list)
    started_at: float = 0.0  # epoch seconds, to place the deploy on the run's timeline

    def stage(self, name: str) -> StageRecord:
        return next(s for s in self.stages + self.rollback if s.name == name)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        lines = [f"deploy {self.model} {self.requested} -> {self.env}: "
                 + ("OK" if self.ok else f"FAILED at {self.failed_stage}")]
        for record in self.recovered + self.stages + self.rollback:
            lines.append(f"  {record.name:<11} {record.outcome:<8} {record.duration_s * 1000:8.1f} ms"
                         + (f"  {record.detail}" if record.detail else ""))
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


@dataclass
class DeployTarget:
    """Where a deploy goes: one environment's repository and Triton server."""

    env: str
    repository: Path
    triton: TritonControl


@dataclass
class DeploySettings:
    lock_timeout: float = 120.0
    ready_timeout: float = 30.0
    smoke_timeout: float = 2.0
    quarantine: str = DEFAULT_LAYOUT  # where a failed version goes (suite/quarantine.py)


class _StageFailed(Exception):
    pass


class Deployer:
    """Runs the deploy path for one model into one environment."""

    def __init__(self, registry: Registry, target: DeployTarget, model: str, golden: GoldenSet,
                 settings: Optional[DeploySettings] = None,
                 on_stage: Optional[Callable[[str, str], None]] = None):
        self.registry = registry
        self.target = target
        self.model = model
        self.golden = golden
        self.settings = settings or DeploySettings()
        self.folder = ModelFolder(target.repository, model, QuarantineLayout(self.settings.quarantine))
        # Called with ("before"|"after", stage) at every stage boundary: the crash-consistency
        # sweep kills the deployer there.
        self.on_stage = on_stage or (lambda when, stage: None)
        self._candidate_failed = False

    def deploy(self, alias: Optional[str] = None, version: Optional[int] = None) -> DeployResult:
        requested = f"alias {alias}" if alias is not None else f"version {version}"
        result = DeployResult(env=self.target.env, model=self.model, requested=requested, started_at=time.time())
        result.stages = [StageRecord(s) for s in STAGES]
        try:
            with environment_lock(self.target.repository, self.settings.lock_timeout):
                if self.folder.read_journal() is not None:
                    # A previous deploy died half-way: finish or undo it before starting anew.
                    result.recovered = self._recover_locked()
                self._run(result, alias, version)
        except DeployLockedError as exc:
            result.failed_stage, result.error = "lock", str(exc)
        except GateError as exc:  # e.g. an unreadable current.json: nothing was touched
            result.failed_stage = result.failed_stage or "precheck"
            result.error = result.error or str(exc)
        return result

    # -- the path ---------------------------------------------------------------------------

    def _run(self, result: DeployResult, alias: Optional[str], version: Optional[int]) -> None:
        before_current = self.folder.current_bytes()
        before_config = self._read_config_bytes()
        committed = self.folder.read_current()
        result.previous_version = committed.active_version if committed else None
        state = {"materialized": False, "journal": False}
        try:
            registered = self._stage(result, "register", lambda: self._register(alias, version))
            result.version, result.run_id = registered.version, registered.run_id
            journal = {"version": registered.version, "run_id": registered.run_id,
                       "previous_version": result.previous_version,
                       "previous_config": before_config.decode() if before_config is not None else None,
                       "started_utc": utc_stamp(), "pid": os.getpid()}
            config = self._stage(result, "materialize", lambda: self._materialize(registered, state, journal))
            self._stage(result, "load", lambda: self._load(config, registered.version))
            self._stage(result, "ready", lambda: self._ready(registered.version))
            self._stage(result, "smoke", lambda: self._smoke(registered.version))
            self._stage(result, "commit", lambda: self._commit(config, registered, committed))
            result.ok = True
            self.folder.clear_journal()
        except _StageFailed:
            if state["materialized"]:
                self._rollback(result, committed, before_current, before_config)
            if state.get("journal") and _disk_restored(result.rollback):
                # The journal guards the disk. Once files are restored and N quarantined, a
                # server restarted later loads the committed version from disk; whether the
                # running server serves it is the rollback's reload/verify result, reported.
                self.folder.clear_journal()

    def _stage(self, result: DeployResult, name: str, action: Callable):
        record = result.stage(name)
        self.on_stage("before", name)
        start = time.perf_counter()
        try:
            value = action()
        except Exception as exc:
            record.duration_s = time.perf_counter() - start
            record.outcome = "failed"
            record.detail = _message(exc)
            result.failed_stage, result.error = name, f"{name}: {_message(exc)}"
            raise _StageFailed() from exc
        record.duration_s = time.perf_counter() - start
        record.outcome = "passed"
        self.on_stage("after", name)
        return value

    def _register(self, alias: Optional[str], version: Optional[int]) -> RegisteredVersion:
        return self.registry.resolve(self.model, alias=alias, version=version)

    def _materialize(self, registered: RegisteredVersion, state: dict, journal: dict):
        version = registered.version
        # The journal first: if we die from here on, `recover` knows what to finish or undo.
        self.folder.write_journal(journal)
        state["journal"] = True
        created = self.folder.materialize(
            version, lambda d: self.registry.download_model_file(self.model, version, d))
        if created:  # recover() quarantines only a folder this deploy made
            self.folder.write_journal({**journal, "created": True})
        state["materialized"] = True
        if self.folder.config_path.exists():
            base = model_config.read(self.folder.config_path)
        else:  # first deploy of this model here: derive the config from the graph
            base = model_config.from_onnx(self.model, self.folder.version_path(version) / "model.onnx")
        if base.name and base.name != self.model:
            raise RepositoryError(f"{self.folder.config_path} names model {base.name!r}, but its "
                                  f"folder is {self.model!r}; Triton refuses such a model. Fix the name.")
        base.name = self.model
        return model_config.pinned(base, version)

    # The candidate: N is loaded under another name, from the materialized files, and proved
    # there (ready, golden) while the committed version keeps serving users. Triton sends
    # unversioned requests to the highest loaded version, so loading N beside C in the live
    # model would expose users to an unproven version.

    @property
    def candidate(self) -> str:
        return f"{self.model}{CANDIDATE_SUFFIX}"

    def _load(self, config, version: int) -> None:
        try:
            self._load_candidate(config, version)
        except GateError:
            self._candidate_failed = True
            raise

    def _load_candidate(self, config, version: int, source: Optional[int] = None) -> None:
        """Load the candidate as `version` from the files of version folder `source` (default: the same)."""
        candidate = mc_copy(config)
        candidate.name = self.candidate
        folder = self.folder.version_path(version if source is None else source)
        files = {f"file:{version}/{p.relative_to(folder)}": p.read_bytes()
                 for p in sorted(folder.rglob("*")) if p.is_file()}
        self.target.triton.load(self.candidate, model_config.to_json(candidate), files=files)

    def _ready(self, version: int) -> None:
        self.target.triton.wait_model_ready(self.candidate, version, self.settings.ready_timeout)

    def _smoke(self, version: int) -> None:
        self._golden(self.candidate, version)

    def _golden(self, model: str, version: int) -> None:
        outputs = self.target.triton.infer(model, self.golden.inputs, list(self.golden.expected),
                                           version=version, timeout=self.settings.smoke_timeout)
        self.golden.check(outputs, f"{model} version {version} on {self.target.env}")

    def _commit(self, config, registered: RegisteredVersion, committed: Optional[Current]) -> None:
        version = registered.version
        # Switch the live model to N (the override leaves config.pbtxt on disk pinned to C
        # until N has proved itself live too), then write the disk: config, current.json last.
        self.target.triton.load(self.model, model_config.to_json(config))
        self.target.triton.wait_version_ready(self.model, version, self.settings.ready_timeout)
        self._golden(self.model, version)
        self._unload_candidate()
        self.folder.write_config(model_config.render(config))
        self.on_stage("mid", "commit")  # config pinned to N, current.json not yet: the riskiest point
        self.folder.write_current(Current(
            active_version=version, run_id=registered.run_id, alias=registered.alias,
            updated_at_utc=utc_stamp(),
            extra={"model": self.model, "env": self.target.env,
                   "previous_version": committed.active_version if committed else None,
                   "deployed_by": "triton-gate"}))

    def _unload_candidate(self) -> None:
        try:
            self.target.triton.unload(self.candidate)
        except GateError:
            pass  # not loaded (any more): nothing to do

    # -- rollback -----------------------------------------------------------------------------

    def _rollback(self, result: DeployResult, committed: Optional[Current],
                  before_current: Optional[bytes], before_config: Optional[bytes]) -> None:
        """Return to the committed state: disk first (cannot fail on Triton), then the server."""
        steps = [
            ("restore", lambda: self._restore_files(before_current, before_config)),
            ("quarantine", lambda: self._quarantine(result, committed)),
            ("reload", lambda: self._reload(committed, result.version)),
            ("verify", lambda: self._verify(committed)),
        ]
        result.rollback = self._steps("rollback", steps)

    def _steps(self, kind: str, steps) -> List[StageRecord]:
        records = []
        for name, action in steps:
            record = StageRecord(f"{kind}:{name}")
            records.append(record)
            start = time.perf_counter()
            try:
                record.detail = action() or ""
                record.outcome = "passed"
            except Exception as exc:  # keep going: every later step still narrows the damage
                record.outcome, record.detail = "failed", _message(exc)
            record.duration_s = time.perf_counter() - start
            self.on_stage("after", record.name)
        return records

    # -- recovery after a deployer that died --------------------------------------------------

    def recover(self) -> List[StageRecord]:
        """Bring the environment back to a committed state after an interrupted deploy."""
        with environment_lock(self.target.repository, self.settings.lock_timeout):
            return self._recover_locked()

    def _recover_locked(self) -> List[StageRecord]:
        journal = self.folder.read_journal()
        committed = self.folder.read_current()
        if journal is None:
            steps = [("clean", self._clean_leftovers)]
            if not self.target.triton.ready():  # e.g. a failed candidate left by a dead deployer
                steps = [("reload", lambda: self._reload(committed))] + steps
            return self._steps("recover", steps)
        version = journal.get("version")
        if committed is not None and version is not None and committed.active_version == version:
            # It died after writing current.json: the deploy was complete but for the journal.
            steps = [("finish", lambda: self._finish_commit(committed)),
                     ("verify", lambda: self._verify(committed))]
        else:
            previous_config = journal.get("previous_config")
            steps = [("restore", lambda: self._restore_files(None, previous_config.encode()
                                                             if previous_config is not None else None)),
                     ("quarantine", lambda: self._quarantine_version(version, committed)
                      if journal.get("created") else "the version folder predates this deploy: kept"),
                     ("reload", lambda: self._reload(committed, version)),
                     ("verify", lambda: self._verify(committed))]
        records = self._steps("recover", steps + [("clean", self._clean_leftovers)])
        if _disk_restored(records):
            self.folder.clear_journal()
        return records

    def _finish_commit(self, committed: Current) -> str:
        self._unload_candidate()
        self.target.triton.load(self.model)  # disk config is pinned to the committed version
        return f"version {committed.active_version} was committed; reloaded it"

    def _clean_leftovers(self) -> str:
        removed = self.folder.remove_staging_leftovers()
        return f"removed {removed}" if removed else "no leftovers"

    def _restore_files(self, before_current: Optional[bytes], before_config: Optional[bytes]) -> str:
        restored = []
        if before_current is not None and self.folder.current_bytes() != before_current:
            self.folder.write_current_bytes(before_current)
            restored.append("current.json")
        if before_config is not None and self._read_config_bytes() != before_config:
            self.folder.write_config(before_config.decode())
            restored.append("config.pbtxt")
        return "restored " + ", ".join(restored) if restored else "nothing to restore"

    def _quarantine(self, result: DeployResult, committed: Optional[Current]) -> str:
        detail = self._quarantine_version(result.version, committed)
        if detail.startswith("moved to "):
            result.quarantined = str(self.folder.path / detail[len("moved to "):])
        return detail

    def _quarantine_version(self, version: Optional[int], committed: Optional[Current]) -> str:
        if version is None or not self.folder.version_path(version).exists():
            return "no version folder to quarantine"
        if committed and committed.active_version == version:
            return f"version {version} is the committed one: kept in place"
        moved = self.folder.quarantine(version)
        return f"moved to {moved.relative_to(self.folder.path).as_posix()}"

    def _reload(self, committed: Optional[Current], failed_version: Optional[int] = None) -> str:
        detail = ""
        # After a crash we cannot know whether a candidate failed: an unready server says so.
        failed = self._candidate_failed or not self.target.triton.ready()
        if failed and committed is not None and failed_version is not None:
            # Triton keeps a version whose load failed as UNAVAILABLE, and with it
            # /v2/health/ready answers 400 (pods leave their Service) until that name and version
            # load successfully once: load the committed files as that version, then unload.
            version = committed.active_version
            self._load_candidate(model_config.pinned(model_config.read(self.folder.config_path), failed_version),
                                 failed_version, source=version)
            detail = f"cleared the failed candidate v{failed_version}; "
        elif failed:
            detail = ("nothing committed to clear the failed candidate with: server readiness stays "
                      "false until Triton restarts; ")
        self._unload_candidate()
        if committed is None:
            self.target.triton.unload(self.model)
            return detail + "no committed version: model unloaded"
        self.target.triton.load(self.model)  # the on-disk config pins the committed version
        return detail + f"reloaded committed version {committed.active_version}"

    def _verify(self, committed: Optional[Current]) -> str:
        if committed is None:
            return "nothing committed to verify"
        version = committed.active_version
        self.target.triton.wait_version_ready(self.model, version, self.settings.ready_timeout)
        self._golden(self.model, version)
        return f"version {version} serves golden outputs"

    def _read_config_bytes(self) -> Optional[bytes]:
        try:
            return self.folder.config_path.read_bytes()
        except FileNotFoundError:
            return None


def _disk_restored(records: List[StageRecord]) -> bool:
    """Whether the steps that put the repository back in order all passed."""
    return all(r.outcome == "passed" for r in records
               if r.name.split(":")[-1] in ("restore", "quarantine", "finish", "clean"))


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, GateError):
        text = f"{type(exc).__name__}: {text}"
        frame = traceback.extract_tb(exc.__traceback__)[-1:]  # where, for unexpected errors
        if frame:
            text += f" (at {Path(frame[0].filename).name}:{frame[0].lineno})"
    return text
