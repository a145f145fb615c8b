"""`--target local`, the default: the embedded stack, an MLflow server and one Triton server per
environment, processes on this machine (suite/processes.py)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, Dict, Iterable, List, Optional, Sequence

from suite import monitoring_stack
from suite.environment import Environment
from suite.platform import Platform
from suite.processes import stop_all
from suite.registry import MlflowServer, Registry
from suite.targets.protocol import TargetBase
from suite.triton_client import close_connections
from suite.triton_server import TritonRuntime, TritonServer


class LocalTarget(TargetBase):
    """Nothing to reach: the gate starts everything itself, and throws it away at the end."""

    name: ClassVar[str] = "local"
    title: ClassVar[str] = "embedded stack"
    deploys: ClassVar[bool] = True
    guarded: ClassVar[bool] = False
    controls_servers: ClassVar[bool] = True
    starts_environments: ClassVar[bool] = True
    registry_files: ClassVar[bool] = True

    def start_stack(self, platform: Platform, workdir: Path) -> "LocalStack":
        from suite import reference_model

        stack = LocalStack(workdir, platform.environments, platform.spec.triton.args)
        prefetch = ThreadPoolExecutor(max_workers=1)
        prefetch.submit(reference_model.build_all)  # builds the models while the servers start
        prefetch.shutdown(wait=False)
        return stack.start()

    def monitoring(self, platform: Platform, stack: "LocalStack", workdir: Path) -> monitoring_stack.MonitoringStack:
        return monitoring_stack.for_platform(platform, stack.environments, workdir)


class LocalStack:
    """Everything on 127.0.0.1, free ports, one process group per server, logs under `workdir`."""

    def __init__(self, workdir: Path, env_names: Iterable[str], triton_args: Sequence[str] = ()):
        self.workdir = Path(workdir)
        self.env_names: List[str] = list(env_names)
        self.triton_args = list(triton_args)
        self.mlflow = MlflowServer(self.workdir / "mlflow")
        self.runtime = TritonRuntime(self.workdir / "tritonserver")
        self.environments: Dict[str, Environment] = {}
        self._servers: List[TritonServer] = []
        self.timings: Dict[str, float] = {}
        self._registry: Optional[Registry] = None

    @property
    def repository_root(self) -> Path:
        return self.workdir / "model-repository"

    def extra_environment(self, name: str, repository: Path) -> Environment:
        """One more Triton on its own repository (a fault's small filesystem); the caller stops it."""
        server = TritonServer(
            name, self.runtime, repository, self.workdir / "logs" / f"triton-{name}.log", extra_args=self.triton_args
        )
        server.start()
        return Environment.serving(name, repository, server)

    def start(self) -> "LocalStack":
        """Start MLflow and every Triton in parallel: start-up costs the slowest one, not the sum."""
        begin = time.perf_counter()
        self.runtime.prepare()
        servers = {
            name: TritonServer(
                name,
                self.runtime,
                self.repository_root / name,
                self.workdir / "logs" / f"triton-{name}.log",
                extra_args=self.triton_args,
            )
            for name in self.env_names
        }
        self._servers = list(servers.values())
        jobs = {"mlflow": self.mlflow.start}
        jobs.update({f"triton-{n}": server.start for n, server in servers.items()})
        try:
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                futures = {name: pool.submit(self._timed, name, job) for name, job in jobs.items()}
                for future in futures.values():
                    future.result()  # re-raises the first StackStartError
        except BaseException:
            self.stop()
            raise
        # Clients only now: a server may have moved to other ports if another process took one.
        for name, server in servers.items():
            self.environments[name] = Environment.serving(name, server.repository, server)
        self.timings["stack"] = time.perf_counter() - begin
        return self

    def _timed(self, name: str, job) -> None:
        begin = time.perf_counter()
        job()
        self.timings[name] = time.perf_counter() - begin

    def dead_servers(self) -> List[str]:
        """A description, with the log tail, of every server that is no longer running."""
        servers = [(f"tritonserver[{server.name}]", server.process) for server in self._servers]
        servers.append(("mlflow server", self.mlflow.process))
        return [
            f"{name} exited unexpectedly ({proc.exit_status()}). Last lines of its log {proc.log_path}:\n{proc.log_tail()}"
            for name, proc in servers
            if proc is not None and not proc.running()
        ]

    def describe(self) -> Dict[str, str]:
        from suite import versions

        return versions.engine_packages()

    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.mlflow.uri)
        return self._registry

    def stop(self) -> None:
        for server in self._servers:
            close_connections(server.endpoints.http)  # or each Triton waits for them instead of unloading
        processes = [s.process for s in self._servers if s.process]
        if self.mlflow.process:
            processes.append(self.mlflow.process)
        stop_all(processes)

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
