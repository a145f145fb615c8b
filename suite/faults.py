"""The fault catalogue: each way a deploy can fail, as a small reusable object.

A fault prepares the registry version to deploy (`prepare`), is active while the deploy runs
(`injected`, which may hand the deployer other settings, e.g. an unreachable MLflow), and
repairs what it broke afterwards (`repair`, e.g. restart a killed server) before the invariants
are checked. Faults only act from outside the deployer (registry, network, filesystem,
processes), so they apply unchanged to a platform's own deploy command.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from suite import reference_model
from suite.environment import Environment
from suite.errors import EnvironmentProblem, Unsupported
from suite.golden import GoldenSet
from suite.http_proxy import ForwardingProxy
from suite.processes import Watchdog, free_port
from suite.registry import Registry
from suite.targets.capabilities import REGISTRY_FILES, SERVER_CONTROL
from suite.timings import MODEL_LOAD_S
from suite.waiting import WaitTimeout, let_time_pass, wait_for


@dataclass
class FaultContext:
    """What a fault may touch: one environment, the registry, and how to register models."""

    environment: Environment  # its server too, for kill / restart
    model: str
    registry: Registry
    golden: GoldenSet
    register: Callable[[bytes, str], int]  # (onnx bytes, label) -> registry version
    registered_bytes: Dict[int, bytes] = field(default_factory=dict)  # what each version's file holds
    artifacts_root: Optional[Path] = None  # the registry's local artifact store, when it has one
    committed: Optional[int] = None
    notes: List[str] = field(default_factory=list)

    @property
    def mlflow_uri(self) -> str:
        return self.registry.tracking_uri


@dataclass
class Overrides:
    """Settings a fault imposes on the deploy (None: leave as it is)."""

    mlflow_uri: Optional[str] = None
    alias: Optional[str] = None


class Fault:
    name = ""
    description = ""
    expected_stage = ""  # where the builtin deploy path must fail
    disrupts_serving = False  # the fault takes the server down: the probe sees errors by design
    needs_root = False
    # What the fault asks of the target (suite/targets/capabilities.py): on a target without one
    # the scenario is skipped at setup, before the fault prepares anything.
    needs: Tuple[str, ...] = ()

    def prepare(self, ctx: FaultContext) -> Optional[int]:
        """Return the registry version to deploy (registering it if needed)."""
        return ctx.register(reference_model.build_onnx("retrained"), "good")

    @contextmanager
    def injected(self, ctx: FaultContext, version: Optional[int]) -> Iterator[Overrides]:
        yield Overrides()

    def repair(self, ctx: FaultContext) -> None:
        """Undo what the fault broke outside the repository (servers, mounts)."""

    @property
    def materializes(self) -> bool:
        """Whether the version folder exists when the deploy fails (quarantine expected)."""
        return self.expected_stage not in ("lock", "register", "materialize")

    def __repr__(self) -> str:
        return self.name


class CorruptStoredModel(Fault):
    name = "corrupt-model"
    expected_stage = "load"
    description = "the registry's stored model.onnx is truncated (storage damage): the load fails"
    needs = (REGISTRY_FILES,)

    def prepare(self, ctx: FaultContext) -> int:
        if ctx.artifacts_root is None:
            raise EnvironmentProblem("corrupting a stored model needs the embedded MLflow's artifact store")
        whole = reference_model.build_onnx("retrained")
        version = ctx.register(whole, self.name)
        stored = ctx.registry.stored_model_file(ctx.artifacts_root, ctx.model, version)
        stored.write_bytes(whole[: len(whole) // 2])
        ctx.registered_bytes[version] = whole[: len(whole) // 2]
        return version


class BadModelFault(Fault):
    """A registry version whose model is broken in a given way."""

    def __init__(self, name: str, variant: str, expected_stage: str, description: str):
        self.name, self.variant, self.expected_stage, self.description = name, variant, expected_stage, description

    def prepare(self, ctx: FaultContext) -> int:
        return ctx.register(reference_model.build_onnx(self.variant), self.name)


class SlowModel(Fault):
    name = "slow-model"
    expected_stage = "smoke"
    description = "a genuinely slow ONNX graph (same answers): the smoke inference times out"

    def __init__(self, seconds: float = 6.0):
        self.seconds = seconds

    def prepare(self, ctx: FaultContext) -> int:
        return ctx.register(reference_model.slow_onnx_for(self.seconds), self.name)


class _ServerKill(Fault):
    """SIGKILL the environment's Triton a moment after a condition is seen, then restart it.

    The conditions are observed from outside (repository, Triton's API), so they work for any
    deployer, the platform's own included.
    """

    disrupts_serving = True
    needs = (SERVER_CONTROL,)
    poll_s = 0.01
    delay_s = 0.3  # the kill lands this long after the condition is seen (into the load, the unload...)
    watch_s = 60.0  # the condition is watched for at most this long: longer than any deploy under test

    def seen(self, ctx: FaultContext, version: int) -> bool:
        raise NotImplementedError

    @contextmanager
    def injected(self, ctx: FaultContext, version: Optional[int]) -> Iterator[Overrides]:
        stop = threading.Event()
        killed: List[str] = []
        refused: List[Unsupported] = []

        def kill_once_seen() -> Optional[str]:
            if stop.is_set():
                return "stopped"
            if not self.seen(ctx, version):
                return None
            let_time_pass(self.delay_s, why="the fault's timing: the kill lands delay_s after the condition")
            try:
                ctx.environment.server.kill()
            except Unsupported as exc:  # the target refuses: no retry, the scenario says so below
                refused.append(exc)
                return "refused"
            killed.append("yes")
            return "killed"

        def watch() -> None:
            try:  # Triton may not answer while busy: an exception is "not yet", keep watching
                wait_for(
                    kill_once_seen,
                    timeout_s=self.watch_s,
                    interval_s=self.poll_s,
                    transient=(Exception,),
                    awaiting=f"the condition of fault {self.name}",
                )
            except WaitTimeout:
                pass  # never seen: the note below says so

        thread = threading.Thread(target=watch, name=f"fault-{self.name}", daemon=True)
        thread.start()
        try:
            yield Overrides()
        finally:
            stop.set()
            thread.join()
            if refused:
                ctx.notes.append(f"server NOT killed: the target refused: {refused[0]}")
            else:
                ctx.notes.append("server killed" if killed else "server NOT killed: the condition was never seen")
        if refused:
            raise refused[0]  # what the target cannot do, not a finding about the deployer

    def repair(self, ctx: FaultContext) -> None:
        # A restarted pod: Triton loads what current.json and config.pbtxt on disk say. Whether
        # that is the committed version is for the invariants to judge, not for the repair.
        if not ctx.environment.server.running():
            ctx.environment.server.start()
        settled = ctx.environment.triton.wait_model_settled(ctx.model, timeout_s=MODEL_LOAD_S)
        if ctx.committed is not None and ctx.committed not in ctx.environment.triton.ready_versions(ctx.model):
            ctx.notes.append(
                f"after the restart Triton does not serve the committed v{ctx.committed}: "
                + "; ".join(f"v{e.version} {e.state} {e.reason[:200]}" for e in settled)
            )


class KillDuringLoad(_ServerKill):
    name = "triton-killed-during-load"
    expected_stage = "load"
    description = "Triton SIGKILLed 0.3 s after version N is materialized, while N (slow to load, ~2 s) loads"

    def prepare(self, ctx: FaultContext) -> int:
        # The reference model loads in ~0.15 s: the kill would land after the load, in the smoke
        # or the commit. Real models take seconds to load; this one does too, with the same answers.
        return ctx.register(reference_model.slow_loading_onnx_for(1.5), self.name)

    def seen(self, ctx: FaultContext, version: int) -> bool:
        return (ctx.environment.repository / ctx.model / str(version)).is_dir()


class KillDuringSmoke(_ServerKill):
    name = "triton-killed-during-smoke"
    expected_stage = "smoke"
    description = "Triton SIGKILLed 0.2 s into the smoke inference of N (a model answering in ~0.4 s)"
    delay_s = 0.2  # deployers send their smoke within a few ms of N being ready

    def prepare(self, ctx: FaultContext) -> int:
        # Slow enough for the kill to land inside the inference, no slower: a deployer's own
        # latency budget must not reject the model first. The zoo's `preflight` allows 2 s per
        # batch; on a machine busy with four gate workers it measured 2.2 s for a 1 s model and
        # 2.0 s for a 0.6 s one (its ONNX Runtime computes in two threads, which a busy machine
        # stretches most).
        return ctx.register(reference_model.slow_onnx_for(0.4), self.name)

    def seen(self, ctx: FaultContext, version: int) -> bool:
        # N ready under any name: the builtin path's candidate, another deployer's, or the model.
        return bool(ctx.environment.triton.versions_loaded_anywhere(version))


class MlflowUnreachable(Fault):
    name = "mlflow-unreachable"
    expected_stage = "register"
    description = "the MLflow server does not answer (connection refused)"

    @contextmanager
    def injected(self, ctx: FaultContext, version: Optional[int]) -> Iterator[Overrides]:
        yield Overrides(mlflow_uri=f"http://127.0.0.1:{free_port()}")


class DownloadCutHalfway(Fault):
    name = "download-cut-halfway"
    expected_stage = "materialize"
    description = "the model artifact download stops halfway (a real HTTP proxy cuts the body)"

    @staticmethod
    def model_download(method: str, path: str) -> bool:
        """Any download of the model file, whatever the client: mlflow's artifact API
        (`/api/2.0/mlflow-artifacts/artifacts/.../model.onnx`) or the registry's
        (`/model-versions/get-artifact?path=model.onnx`)."""
        return method == "GET" and ".onnx" in path

    @contextmanager
    def injected(self, ctx: FaultContext, version: Optional[int]) -> Iterator[Overrides]:
        with ForwardingProxy(ctx.mlflow_uri, cut=self.model_download) as proxy:
            try:
                yield Overrides(mlflow_uri=proxy.url)
            finally:
                ctx.notes.append(f"downloads cut: {proxy.cuts}")


def _run(*argv: str) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")


CAP_SYS_ADMIN = 21  # the capability mount(2) asks for


def _effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


@functools.lru_cache(maxsize=1)
def mount_faults_unavailable() -> Optional[str]:
    """Why real mount faults cannot run here, or None when they can: root alone is not enough in
    an unprivileged container (no CAP_SYS_ADMIN, or a seccomp/AppArmor profile refusing mount), so
    a tmpfs is really mounted and unmounted once, and a refusal becomes the skip reason."""
    if os.geteuid() != 0:
        return "filesystem faults use real mounts (tmpfs, read-only bind): they need root"
    if not _effective_capabilities() >> CAP_SYS_ADMIN & 1:
        return (
            "filesystem faults use real mounts (tmpfs, read-only bind): they need CAP_SYS_ADMIN, which this "
            "root process does not have (an unprivileged container; run it privileged to include them)"
        )
    with tempfile.TemporaryDirectory(prefix="gate-mount-probe-") as folder:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder], capture_output=True, text=True
        )
        if proc.returncode != 0:
            return (
                f"filesystem faults use real mounts (tmpfs, read-only bind), and mount is refused here: "
                f"{(proc.stderr.strip() or f'exit {proc.returncode}').splitlines()[0]} (a container's seccomp or "
                f"AppArmor profile?)"
            )
        subprocess.run(["umount", folder], capture_output=True, check=False)
    return None


class ReadOnlyRepository(Fault):
    name = "repository-read-only"
    expected_stage = "materialize"
    needs_root = True
    description = "the model's folder is a read-only mount (EROFS)"

    @contextmanager
    def injected(self, ctx: FaultContext, version: Optional[int]) -> Iterator[Overrides]:
        folder = str(ctx.environment.repository / ctx.model)
        # Made read-only aside, then moved in: a container sees the repository through an rslave
        # bind, and a mount arrives there with the flags it had when it appeared. A bind remounted
        # ro in place would stay writable inside the container (measured on Docker 20.10).
        # Staged in /tmp, not beside the repository: a mount cannot be moved out of a shared parent
        # (the docker target shares the workdir with its containers). The watchdog removes it if
        # the gate dies meanwhile.
        staging = tempfile.mkdtemp(prefix="gate-read-only-")
        watchdog = Watchdog.shared()  # undoes the mounts if the gate dies while they are there
        try:
            watchdog.watch_mount(Path(staging), remove_folder=True)
            _run("mount", "--bind", folder, staging)
            try:
                _run("mount", "-o", "remount,bind,ro", staging)
                watchdog.watch_mount(Path(folder))
                _run("mount", "--move", staging, folder)
            except EnvironmentProblem:
                _run("umount", staging)
                raise
            try:
                yield Overrides()
            finally:
                _run("umount", folder)
                watchdog.forget_mount(Path(folder))
        finally:
            os.rmdir(staging)
            watchdog.forget_mount(Path(staging))


class FullRepository(Fault):
    """The environment's repository must live on a small filesystem (see `small_filesystem`)."""

    name = "repository-full"
    expected_stage = "materialize"
    needs_root = True
    description = "the repository's filesystem is full (ENOSPC)"
    filler = ".gate-fault-filler"

    @contextmanager
    def injected(self, ctx: FaultContext, version: Optional[int]) -> Iterator[Overrides]:
        filler = ctx.environment.repository / self.filler
        try:
            with open(filler, "wb", buffering=0) as handle:  # unbuffered: close cannot fail
                for size in (1 << 20, 1 << 12, 1):  # big chunks, then the last partial block
                    try:
                        while True:
                            handle.write(b"\0" * size)
                    except OSError:
                        pass
            yield Overrides()
        finally:
            filler.unlink(missing_ok=True)


@contextmanager
def small_filesystem(path: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the lifetime of the context."""
    path.mkdir(parents=True, exist_ok=True)
    watchdog = Watchdog.shared()  # undoes the mount if the gate dies while it is there
    watchdog.watch_mount(path)
    try:
        _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        try:
            yield path
        finally:
            _run("umount", "-l", str(path))
    finally:
        watchdog.forget_mount(path)


class MissingVersion(Fault):
    name = "registry-version-missing"
    expected_stage = "register"
    description = "the requested registry version does not exist"

    def prepare(self, ctx: FaultContext) -> int:
        return 99999


class AliasPointsNowhere(Fault):
    name = "registry-alias-missing"
    expected_stage = "register"
    description = "the alias to deploy is not set in the registry"

    def prepare(self, ctx: FaultContext) -> Optional[int]:
        return None

    @contextmanager
    def injected(self, ctx: FaultContext, version: Optional[int]) -> Iterator[Overrides]:
        yield Overrides(alias="gate-alias-that-points-nowhere")


CATALOGUE: Dict[str, Fault] = {
    f.name: f
    for f in [
        CorruptStoredModel(),
        BadModelFault(
            "config-wrong-input-name",
            "renamed-input",
            "load",
            "the model's input is named 'features' but config.pbtxt says 'input'",
        ),
        BadModelFault(
            "config-wrong-dims",
            "five-features",
            "load",
            "the model takes 5 features but config.pbtxt says dims [-1, 4]",
        ),
        BadModelFault(
            "config-wrong-dtype", "double-input", "load", "the model takes FP64 but config.pbtxt says TYPE_FP32"
        ),
        BadModelFault("wrong-answers", "flipped", "smoke", "the model loads but every label is wrong"),
        SlowModel(),
        KillDuringLoad(),
        KillDuringSmoke(),
        MlflowUnreachable(),
        DownloadCutHalfway(),
        ReadOnlyRepository(),
        FullRepository(),
        MissingVersion(),
        AliasPointsNowhere(),
    ]
}


def file_digests(onnx_bytes: bytes) -> Dict[str, str]:
    """What a materialized version folder holds for a registry model file."""
    return {"model.onnx": hashlib.sha256(onnx_bytes).hexdigest()}
