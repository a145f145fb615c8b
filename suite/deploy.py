"""The deploy path: Register -> Materialize -> Load -> Ready -> Smoke infer -> Commit.

On failure after materialize: Rollback. The contract (DESIGN.md section 4): registry version N
becomes version folder N; the new config only reaches Triton as a load-time override and reaches
the disk at commit, pinned to N; `current.json` is written last, atomically, after every check
passed; a failed version is renamed `N.failed_<UTC>`, never deleted; one deploy per environment.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from suite import model_config
from suite.errors import GateError, RepositoryError
from suite.golden import GoldenSet
from suite.model_repo import Current, ModelFolder, environment_lock, utc_stamp
from suite.registry import RegisteredVersion, Registry
from suite.triton_client import TritonControl

STAGES = ("register", "materialize", "load", "ready", "smoke", "commit")


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

    def stage(self, name: str) -> StageRecord:
        return next(s for s in self.stages + self.rollback if s.name == name)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        lines = [f"deploy {self.model} {self.requested} -> {self.env}: "
                 + ("OK" if self.ok else f"FAILED at {self.failed_stage}")]
        for record in self.stages + self.rollback:
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
    smoke_timeout: float = 5.0


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
        self.folder = ModelFolder(target.repository, model)
        # Called with ("before"|"after", stage) at every stage boundary: the crash-consistency
        # sweep kills the deployer there.
        self.on_stage = on_stage or (lambda when, stage: None)

    def deploy(self, alias: Optional[str] = None, version: Optional[int] = None) -> DeployResult:
        requested = f"alias {alias}" if alias is not None else f"version {version}"
        result = DeployResult(env=self.target.env, model=self.model, requested=requested)
        result.stages = [StageRecord(s) for s in STAGES]
        try:
            with environment_lock(self.target.repository, self.settings.lock_timeout):
                self._run(result, alias, version)
        except GateError as exc:  # the lock itself
            result.failed_stage = result.failed_stage or "lock"
            result.error = result.error or str(exc)
        return result

    # -- the path ---------------------------------------------------------------------------

    def _run(self, result: DeployResult, alias: Optional[str], version: Optional[int]) -> None:
        before_current = self.folder.current_bytes()
        before_config = self._read_config_bytes()
        committed = self.folder.read_current()
        result.previous_version = committed.active_version if committed else None
        state = {"materialized": False}
        try:
            registered = self._stage(result, "register", lambda: self._register(alias, version))
            result.version, result.run_id = registered.version, registered.run_id
            config = self._stage(result, "materialize", lambda: self._materialize(registered, state))
            self._stage(result, "load", lambda: self._load(config, registered.version))
            self._stage(result, "ready", lambda: self._ready(registered.version))
            self._stage(result, "smoke", lambda: self._smoke(registered.version))
            self._stage(result, "commit", lambda: self._commit(config, registered, committed))
            result.ok = True
        except _StageFailed:
            if state["materialized"]:
                self._rollback(result, committed, before_current, before_config)

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

    def _materialize(self, registered: RegisteredVersion, state: dict):
        version = registered.version
        self.folder.materialize(
            version, lambda d: self.registry.download_model_file(self.model, version, d))
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

    def _load(self, config, version: int) -> None:
        # The override makes Triton load N without touching config.pbtxt on disk, so a crash
        # here leaves the disk pinned to the committed version.
        self.target.triton.load(self.model, model_config.to_json(config))

    def _ready(self, version: int) -> None:
        self.target.triton.wait_version_ready(self.model, version, self.settings.ready_timeout)

    def _smoke(self, version: int) -> None:
        outputs = self.target.triton.infer(self.model, self.golden.inputs, list(self.golden.expected),
                                           version=version, timeout=self.settings.smoke_timeout)
        self.golden.check(outputs, f"{self.model} version {version} on {self.target.env}")

    def _commit(self, config, registered: RegisteredVersion, committed: Optional[Current]) -> None:
        self.folder.write_config(model_config.render(config))
        self.folder.write_current(Current(
            active_version=registered.version, run_id=registered.run_id, alias=registered.alias,
            updated_at_utc=utc_stamp(),
            extra={"model": self.model, "env": self.target.env,
                   "previous_version": committed.active_version if committed else None,
                   "deployed_by": "triton-gate"}))

    # -- rollback -----------------------------------------------------------------------------

    def _rollback(self, result: DeployResult, committed: Optional[Current],
                  before_current: Optional[bytes], before_config: Optional[bytes]) -> None:
        """Return to the committed state: disk first (cannot fail on Triton), then the server."""
        steps = [
            ("restore", lambda: self._restore_files(before_current, before_config)),
            ("quarantine", lambda: self._quarantine(result, committed)),
            ("reload", lambda: self._reload(committed)),
            ("verify", lambda: self._verify(committed)),
        ]
        for name, action in steps:
            record = StageRecord(f"rollback:{name}")
            result.rollback.append(record)
            start = time.perf_counter()
            try:
                record.detail = action() or ""
                record.outcome = "passed"
            except Exception as exc:  # keep going: every later step still narrows the damage
                record.outcome, record.detail = "failed", _message(exc)
            record.duration_s = time.perf_counter() - start

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
        version = result.version
        if version is None or not self.folder.version_path(version).exists():
            return "no version folder to quarantine"
        if committed and committed.active_version == version:
            return f"version {version} is the committed one: kept in place"
        moved = self.folder.quarantine(version)
        result.quarantined = str(moved)
        return f"moved to {moved.name}"

    def _reload(self, committed: Optional[Current]) -> str:
        if committed is None:
            self.target.triton.unload(self.model)
            return "no committed version: model unloaded"
        self.target.triton.load(self.model)  # the on-disk config pins the committed version
        return f"reloaded committed version {committed.active_version}"

    def _verify(self, committed: Optional[Current]) -> str:
        if committed is None:
            return "nothing committed to verify"
        version = committed.active_version
        self.target.triton.wait_version_ready(self.model, version, self.settings.ready_timeout)
        self._smoke(version)
        return f"version {version} serves golden outputs"

    def _read_config_bytes(self) -> Optional[bytes]:
        try:
            return self.folder.config_path.read_bytes()
        except FileNotFoundError:
            return None


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, GateError):
        text = f"{type(exc).__name__}: {text}"
        frame = traceback.extract_tb(exc.__traceback__)[-1:]  # where, for unexpected errors
        if frame:
            text += f" (at {Path(frame[0].filename).name}:{frame[0].lineno})"
    return text
