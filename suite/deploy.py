"""The deploy path: Register -> Materialize -> Load -> Ready -> Smoke infer -> Commit.

On failure after materialize: Rollback. The contract (README, "The builtin deploy path"): registry version N
becomes version folder N; load, ready and smoke run on a *candidate* (N loaded under another
name) so users keep getting the committed version until N has proved itself; commit switches the
live model to N with a load-time config override, checks it again, then writes config.pbtxt
(pinned to N) and `current.json` last, atomically. A failed version is renamed `N.failed_<UTC>`,
never deleted. One deploy per environment at a time.

Extension point: every stage and every rollback step is a plain function of the deploy's
`DeployContext`, collected in `DeploySteps`. A platform team (or a test) replaces one of them:

    from dataclasses import replace
    from suite.deploy import DEFAULT_STEPS, Deployer

    def smoke_and_page(ctx):                 # a stage: raise to fail it
        DEFAULT_STEPS.smoke(ctx)
        page_on_call(f"{ctx.model} v{ctx.version} passed smoke on {ctx.environment.name}")

    Deployer(registry, environment, model, golden, steps=replace(DEFAULT_STEPS, smoke=smoke_and_page))
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional

from suite import model_config
from suite.environment import Environment
from suite.errors import DeployLockedError, GateError, RepositoryError
from suite.golden import GoldenSet
from suite.model_repo import Current, ModelFolder, environment_lock, utc_stamp
from suite.quarantine import DEFAULT_LAYOUT, QuarantineLayout
from suite.registry import RegisteredVersion, Registry

# The one definition of the stage names: records, reports, the bench and the CLI's output use these.
STAGES = ("register", "materialize", "load", "ready", "smoke", "commit")
ROLLBACK_STEPS = ("restore", "quarantine", "reload", "verify")
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
        lines = [
            f"deploy {self.model} {self.requested} -> {self.env}: "
            + ("OK" if self.ok else f"FAILED at {self.failed_stage}")
        ]
        for record in self.recovered + self.stages + self.rollback:
            lines.append(
                f"  {record.name:<11} {record.outcome:<8} {record.duration_s * 1000:8.1f} ms"
                + (f"  {record.detail}" if record.detail else "")
            )
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


@dataclass
class DeploySettings:
    lock_timeout: float = 120.0
    ready_timeout: float = 30.0
    smoke_timeout: float = 2.0
    quarantine: str = DEFAULT_LAYOUT  # where a failed version goes (suite/quarantine.py)


# -- the extension point ----------------------------------------------------------------------


@dataclass
class DeployContext:
    """What the steps of one deploy (or one recovery) share.

    The first block is given; the second is read before the first stage (by `recover`: from the
    deploy journal); the third is filled in by the stages, in order. A replacement step reads
    what it needs and fills in what the default step it replaces would have.
    """

    registry: Registry
    environment: Environment  # where the deploy goes: its repository and its Triton
    model: str
    golden: GoldenSet
    settings: DeploySettings
    folder: ModelFolder
    steps: "DeploySteps"
    on_stage: Callable[[str, str], None]  # commit calls ("mid", "commit"): a crash-sweep point

    committed: Optional[Current] = None  # what current.json named: the version to return to
    before_current: Optional[bytes] = None  # current.json before the deploy (None: restore leaves it)
    before_config: Optional[bytes] = None  # config.pbtxt before the deploy (None: restore leaves it)
    alias: Optional[str] = None  # what was asked for: an alias ...
    requested_version: Optional[int] = None  # ... or a registry version

    registered: Optional[RegisteredVersion] = None  # register
    version: Optional[int] = None  # register: N (recovery: the journal's N)
    config: Any = None  # materialize: N's ModelConfig, pinned to N
    journal_written: bool = False  # materialize: from here on the journal guards the disk
    materialized: bool = False  # materialize: folder N exists, a failure rolls back
    candidate_failed: bool = False  # load: Triton keeps a failed load UNAVAILABLE
    failed_stage: Optional[str] = None  # set before the rollback steps run
    quarantined: Optional[Path] = None  # quarantine: where failed version N went

    @property
    def candidate(self) -> str:
        """The name N is proven under while the committed version keeps serving users."""
        return f"{self.model}{CANDIDATE_SUFFIX}"


Stage = Callable[[DeployContext], None]
RollbackStep = Callable[[DeployContext], str]


def register(ctx: DeployContext) -> None:
    """Resolve the alias or version in the registry. Sets ctx.registered and ctx.version."""
    ctx.registered = ctx.registry.resolve(ctx.model, alias=ctx.alias, version=ctx.requested_version)
    ctx.version = ctx.registered.version


def materialize(ctx: DeployContext) -> None:
    """Make version folder N from the registry, complete or not at all, and derive N's config.

    Sets ctx.journal_written, ctx.materialized and ctx.config (pinned to N).
    """
    journal = start_journal(ctx)
    download = partial(ctx.registry.download_model_file, ctx.model, ctx.version)  # (folder) -> model file
    if ctx.folder.materialize(ctx.version, download):  # recover() quarantines only a folder this deploy made
        ctx.folder.write_journal({**journal, "created": True})
    ctx.materialized = True
    ctx.config = model_config.pinned(_base_config(ctx), ctx.version)


def start_journal(ctx: DeployContext) -> dict:
    """Write the deploy journal, before anything on disk changes: if the deployer dies from here on,
    `recover` knows what to finish or undo. Sets ctx.journal_written; returns the journal."""
    journal = {
        "version": ctx.version,
        "run_id": ctx.registered.run_id,
        "previous_version": ctx.committed.active_version if ctx.committed else None,
        "previous_config": ctx.before_config.decode() if ctx.before_config is not None else None,
        "started_utc": utc_stamp(),
        "pid": os.getpid(),
    }
    ctx.folder.write_journal(journal)
    ctx.journal_written = True
    return journal


def _base_config(ctx: DeployContext):
    if ctx.folder.config_path.exists():
        base = model_config.read(ctx.folder.config_path)
    else:  # first deploy of this model here: derive the config from the graph
        base = model_config.from_onnx(ctx.model, ctx.folder.version_path(ctx.version) / "model.onnx")
    if base.name and base.name != ctx.model:
        raise RepositoryError(
            f"{ctx.folder.config_path} names model {base.name!r}, but its "
            f"folder is {ctx.model!r}; Triton refuses such a model. Fix the name."
        )
    base.name = ctx.model
    return base


# The candidate: N is loaded under another name, from the materialized files, and proved there
# (ready, golden) while the committed version keeps serving users. Triton sends unversioned
# requests to the highest loaded version, so loading N beside C in the live model would expose
# users to an unproven version.


def load(ctx: DeployContext) -> None:
    """Load N as the candidate. Sets ctx.candidate_failed when Triton refuses it."""
    try:
        load_version(ctx, ctx.candidate, ctx.config, ctx.version)
    except GateError:
        ctx.candidate_failed = True  # Triton keeps it UNAVAILABLE: reload must clear it
        raise


def ready(ctx: DeployContext) -> None:
    """Wait until the candidate's version N is ready."""
    ctx.environment.triton.wait_model_ready(ctx.candidate, ctx.version, ctx.settings.ready_timeout)


def smoke(ctx: DeployContext) -> None:
    """The candidate gives the golden outputs within the smoke timeout."""
    ctx.steps.golden_check(ctx, ctx.candidate, ctx.version)


def commit(ctx: DeployContext) -> None:
    """Switch the live model to N, prove it there, then write config.pbtxt and current.json (last)."""
    version, triton = ctx.version, ctx.environment.triton
    # The override leaves config.pbtxt on disk pinned to C until N has proved itself live too.
    triton.load(ctx.model, model_config.to_json(ctx.config))
    triton.wait_version_ready(ctx.model, version, ctx.settings.ready_timeout)
    ctx.steps.golden_check(ctx, ctx.model, version)
    unload_candidate(ctx)
    ctx.folder.write_config(model_config.render(ctx.config))
    ctx.on_stage("mid", "commit")  # config pinned to N, current.json not yet: the riskiest point
    ctx.folder.write_current(
        Current(
            active_version=version,
            run_id=ctx.registered.run_id,
            alias=ctx.registered.alias,
            updated_at_utc=utc_stamp(),
            extra={
                "model": ctx.model,
                "env": ctx.environment.name,
                "previous_version": ctx.committed.active_version if ctx.committed else None,
                "deployed_by": "triton-gate",
            },
        )
    )


def check_golden(ctx: DeployContext, model: str, version: int) -> None:
    """Raise unless `model` version `version` gives the golden outputs within the smoke timeout."""
    outputs = ctx.environment.triton.infer(
        model, ctx.golden.inputs, list(ctx.golden.expected), version=version, timeout=ctx.settings.smoke_timeout
    )
    ctx.golden.check(outputs, f"{model} version {version} on {ctx.environment.name}")


def load_version(ctx: DeployContext, name: str, config, version: int, source: Optional[int] = None) -> None:
    """Load `config` as model `name` version `version`, from the files of version folder `source`
    (default: the same version), whatever config.pbtxt on disk says."""
    renamed = mc_copy(config)
    renamed.name = name
    folder = ctx.folder.version_path(version if source is None else source)
    files = {
        f"file:{version}/{p.relative_to(folder)}": p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }
    ctx.environment.triton.load(name, model_config.to_json(renamed), files=files)


def unload_candidate(ctx: DeployContext) -> None:
    try:
        ctx.environment.triton.unload(ctx.candidate)
    except GateError:
        pass  # not loaded (any more): nothing to do


# Rollback steps: disk first (cannot fail on Triton), then the server. Each returns the detail
# for its record; `recover` runs them too, from the journal of a deployer that died.


def restore(ctx: DeployContext) -> str:
    """Put current.json and config.pbtxt back as they were before the deploy."""
    restored = []
    if ctx.before_current is not None and ctx.folder.current_bytes() != ctx.before_current:
        ctx.folder.write_current_bytes(ctx.before_current)
        restored.append("current.json")
    if ctx.before_config is not None and _read_bytes(ctx.folder.config_path) != ctx.before_config:
        ctx.folder.write_config(ctx.before_config.decode())
        restored.append("config.pbtxt")
    return "restored " + ", ".join(restored) if restored else "nothing to restore"


def quarantine(ctx: DeployContext) -> str:
    """Move version folder N aside, whole, unless it is the committed one. Sets ctx.quarantined."""
    version = ctx.version
    if version is None or not ctx.folder.version_path(version).exists():
        return "no version folder to quarantine"
    if ctx.committed and ctx.committed.active_version == version:
        return f"version {version} is the committed one: kept in place"
    ctx.quarantined = ctx.folder.quarantine(version)
    return f"moved to {ctx.quarantined.relative_to(ctx.folder.path).as_posix()}"


def reload(ctx: DeployContext) -> str:
    """Serve the committed version again (none committed: unload the model), first clearing a
    candidate whose load failed."""
    detail = ""
    # After a crash we cannot know whether a candidate failed: an unready server says so.
    failed = ctx.candidate_failed or not ctx.environment.triton.ready()
    if failed and ctx.committed is not None and ctx.version is not None:
        # Triton keeps a version whose load failed as UNAVAILABLE, and with it
        # /v2/health/ready answers 400 (pods leave their Service) until that name and version
        # load successfully once: load the committed files as that version, then unload.
        config = model_config.pinned(model_config.read(ctx.folder.config_path), ctx.version)
        load_version(ctx, ctx.candidate, config, ctx.version, source=ctx.committed.active_version)
        detail = f"cleared the failed candidate v{ctx.version}; "
    elif failed:
        detail = (
            "nothing committed to clear the failed candidate with: server readiness stays false until Triton restarts; "
        )
    unload_candidate(ctx)
    if ctx.committed is None:
        ctx.environment.triton.unload(ctx.model)
        return detail + "no committed version: model unloaded"
    ctx.environment.triton.load(ctx.model)  # the on-disk config pins the committed version
    return detail + f"reloaded committed version {ctx.committed.active_version}"


def verify(ctx: DeployContext) -> str:
    """The committed version is ready and gives the golden outputs."""
    if ctx.committed is None:
        return "nothing committed to verify"
    version = ctx.committed.active_version
    ctx.environment.triton.wait_version_ready(ctx.model, version, ctx.settings.ready_timeout)
    ctx.steps.golden_check(ctx, ctx.model, version)
    return f"version {version} serves golden outputs"


@dataclass(frozen=True)
class DeploySteps:
    """The deploy path's replaceable parts; DEFAULT_STEPS is the builtin path.

    Stages, run in STAGES order: f(ctx) -> None; an exception fails the stage (and, once
    ctx.materialized, rolls back). Rollback steps, run in ROLLBACK_STEPS order after a failed
    stage and by `recover`: f(ctx) -> detail; each runs even when an earlier one failed.
    What they build on:
      lock(repository, timeout): context manager held for a whole deploy or recovery
      model_folder(repository, model, layout): the model's files (a ModelFolder)
      golden_check(ctx, model, version): raise unless that version gives the golden outputs
    """

    register: Stage = register
    materialize: Stage = materialize
    load: Stage = load
    ready: Stage = ready
    smoke: Stage = smoke
    commit: Stage = commit
    restore: RollbackStep = restore
    quarantine: RollbackStep = quarantine
    reload: RollbackStep = reload
    verify: RollbackStep = verify
    lock: Callable[[Path, float], ContextManager] = environment_lock
    model_folder: Callable[[Path, str, QuarantineLayout], ModelFolder] = ModelFolder
    golden_check: Callable[[DeployContext, str, int], None] = check_golden


DEFAULT_STEPS = DeploySteps()


# -- the deployer: runs the steps, records them ---------------------------------------------------


class _StageFailed(Exception):
    pass


class Deployer:
    """Runs the deploy path for one model into one environment."""

    def __init__(
        self,
        registry: Registry,
        environment: Environment,
        model: str,
        golden: GoldenSet,
        settings: Optional[DeploySettings] = None,
        on_stage: Optional[Callable[[str, str], None]] = None,
        *,
        steps: Optional[DeploySteps] = None,
    ):
        self.registry = registry
        self.environment = environment
        self.model = model
        self.golden = golden
        self.settings = settings or DeploySettings()
        self.steps = steps or DEFAULT_STEPS
        self.folder = self.steps.model_folder(environment.repository, model, QuarantineLayout(self.settings.quarantine))
        # Called with ("before"|"after", stage) at every stage boundary: the crash-consistency
        # sweep kills the deployer there.
        self.on_stage = on_stage or (lambda when, stage: None)

    def deploy(self, alias: Optional[str] = None, version: Optional[int] = None) -> DeployResult:
        requested = f"alias {alias}" if alias is not None else f"version {version}"
        result = DeployResult(env=self.environment.name, model=self.model, requested=requested, started_at=time.time())
        result.stages = [StageRecord(s) for s in STAGES]
        try:
            with self.steps.lock(self.environment.repository, self.settings.lock_timeout):
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

    def _context(self, **known) -> DeployContext:
        return DeployContext(
            self.registry,
            self.environment,
            self.model,
            self.golden,
            self.settings,
            self.folder,
            self.steps,
            self.on_stage,
            **known,
        )

    # -- the path ---------------------------------------------------------------------------

    def _run(self, result: DeployResult, alias: Optional[str], version: Optional[int]) -> None:
        ctx = self._context(
            before_current=self.folder.current_bytes(),
            before_config=_read_bytes(self.folder.config_path),
            committed=self.folder.read_current(),
            alias=alias,
            requested_version=version,
        )
        result.previous_version = ctx.committed.active_version if ctx.committed else None
        passed = self._stages(result, ctx)
        result.version = ctx.version
        result.run_id = ctx.registered.run_id if ctx.registered else ""
        if passed:
            result.ok = True
            self.folder.clear_journal()
            return
        ctx.failed_stage = result.failed_stage
        if ctx.materialized:
            result.rollback = self._recorded("rollback", self._rollback_actions(ctx))
            result.quarantined = str(ctx.quarantined) if ctx.quarantined else None
        if ctx.journal_written and _disk_restored(result.rollback):
            # The journal guards the disk. Once files are restored and N quarantined, a
            # server restarted later loads the committed version from disk; whether the
            # running server serves it is the rollback's reload/verify result, reported.
            self.folder.clear_journal()

    def _stages(self, result: DeployResult, ctx: DeployContext) -> bool:
        """Run the stages in order; False at the first that fails."""
        try:
            for name in STAGES:
                self._stage(result, name, ctx)
        except _StageFailed:
            return False
        return True

    def _stage(self, result: DeployResult, name: str, ctx: DeployContext) -> None:
        record = result.stage(name)
        self.on_stage("before", name)
        start = time.perf_counter()
        try:
            getattr(self.steps, name)(ctx)
        except Exception as exc:
            record.duration_s = time.perf_counter() - start
            record.outcome = "failed"
            record.detail = _message(exc)
            result.failed_stage, result.error = name, f"{name}: {_message(exc)}"
            raise _StageFailed() from exc
        record.duration_s = time.perf_counter() - start
        record.outcome = "passed"
        self.on_stage("after", name)

    def _rollback_actions(self, ctx: DeployContext) -> Dict[str, Callable[[], str]]:
        return {name: partial(getattr(self.steps, name), ctx) for name in ROLLBACK_STEPS}

    def _recorded(self, kind: str, actions: Dict[str, Callable[[], str]]) -> List[StageRecord]:
        records = []
        for name, action in actions.items():
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
        with self.steps.lock(self.environment.repository, self.settings.lock_timeout):
            return self._recover_locked()

    def _recover_locked(self) -> List[StageRecord]:
        journal = self.folder.read_journal()
        committed = self.folder.read_current()
        if journal is None:
            ctx = self._context(committed=committed)
            actions = {"clean": self._clean_leftovers}
            if not self.environment.triton.ready():  # e.g. a failed candidate left by a dead deployer
                actions = {"reload": partial(self.steps.reload, ctx), **actions}
            return self._recorded("recover", actions)
        previous_config = journal.get("previous_config")
        ctx = self._context(
            committed=committed,
            version=journal.get("version"),
            before_config=previous_config.encode() if previous_config is not None else None,
        )
        if committed is not None and ctx.version is not None and committed.active_version == ctx.version:
            # It died after writing current.json: the deploy was complete but for the journal.
            actions = {"finish": partial(self._finish_commit, ctx), "verify": partial(self.steps.verify, ctx)}
        else:
            actions = self._rollback_actions(ctx)
            if not journal.get("created"):
                actions["quarantine"] = lambda: "the version folder predates this deploy: kept"
        records = self._recorded("recover", {**actions, "clean": self._clean_leftovers})
        if _disk_restored(records):
            self.folder.clear_journal()
        return records

    def _finish_commit(self, ctx: DeployContext) -> str:
        unload_candidate(ctx)
        self.environment.triton.load(self.model)  # disk config is pinned to the committed version
        return f"version {ctx.committed.active_version} was committed; reloaded it"

    def _clean_leftovers(self) -> str:
        removed = self.folder.remove_staging_leftovers()
        return f"removed {removed}" if removed else "no leftovers"


def _read_bytes(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _disk_restored(records: List[StageRecord]) -> bool:
    """Whether the steps that put the repository back in order all passed."""
    return all(
        r.outcome == "passed" for r in records if r.name.split(":")[-1] in ("restore", "quarantine", "finish", "clean")
    )


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, GateError):
        text = f"{type(exc).__name__}: {text}"
        frame = traceback.extract_tb(exc.__traceback__)[-1:]  # where, for unexpected errors
        if frame:
            text += f" (at {Path(frame[0].filename).name}:{frame[0].lineno})"
    return text
