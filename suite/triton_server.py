"""A real `tritonserver` on this machine, without Docker, from the `nvidia-pytriton` wheel.

The wheel ships Triton 2.51 with the Python backend; this module finds and starts it (the embedded
stack of `--target local`, ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from suite.errors import EnvironmentProblem
from suite.processes import PORT_ATTEMPTS, ServerProcess, free_ports, start_on_free_ports
from suite.triton_client import close_connections

BACKENDS_SOURCE = Path(__file__).resolve().parent / "triton_backends"
EXIT_TIMEOUT_S = 5  # how long a stopping Triton waits for in-flight requests and open connections
STOP_GRACE_S = 8.0  # SIGTERM to SIGKILL: the exit timeout plus unloading every model's stub


@dataclass(frozen=True)
class TritonEndpoints:
    http: str  # e.g. http://127.0.0.1:8000
    grpc: str  # e.g. 127.0.0.1:8001
    metrics: str  # e.g. http://127.0.0.1:8002/metrics


def check_numpy() -> None:
    """numpy 2 breaks every inference through the Python backend stub."""
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise EnvironmentProblem(
            f"numpy {numpy.__version__} is installed, but Triton's Python backend stub fails every "
            f"inference with numpy >= 2 ('output tensor shape does not match size of output'). "
            f"Install numpy < 2: pip install 'numpy<2' 'pandas<3' (or run `make test`, which does)."
        )


def _pytriton_paths() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem(
            "the Triton server binary comes from the PyPI package nvidia-pytriton==0.7.0, which "
            "is not installed in this Python. Run `make test` or pip install the project."
        )
    package = Path(list(spec.submodule_search_locations)[0])
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


class TritonRuntime:
    """A runnable copy of the Triton distribution in a work folder, shared by all servers."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.bin = self.root / "bin" / "tritonserver"
        self.backends = self.root / "backends"
        self.libs: Optional[Path] = None

    def prepare(self) -> "TritonRuntime":
        check_numpy()
        source, libs = _pytriton_paths()
        self.libs = libs
        if not self.bin.exists():
            shutil.copytree(source / "bin", self.root / "bin", dirs_exist_ok=True)
            shutil.copytree(source / "backends" / "python", self.backends / "python", dirs_exist_ok=True)
            stub = (
                source
                / "python_backend_stubs"
                / f"{sys.version_info.major}.{sys.version_info.minor}"
                / "triton_python_backend_stub"
            )
            if not stub.exists():
                raise EnvironmentProblem(
                    f"nvidia-pytriton has no Python backend stub for Python "
                    f"{sys.version_info.major}.{sys.version_info.minor} ({stub})."
                )
            shutil.copy2(stub, self.backends / "python" / "triton_python_backend_stub")
        shutil.copytree(BACKENDS_SOURCE / "onnxruntime", self.backends / "onnxruntime", dirs_exist_ok=True)
        return self

    def environment(self) -> dict:
        env = dict(os.environ)
        # The stub is a Python interpreter: the venv's bin first on PATH makes it find the venv's packages.
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["LD_LIBRARY_PATH"] = str(self.libs) + os.pathsep + env.get("LD_LIBRARY_PATH", "")
        return env


class TritonServer:
    """One Triton server in explicit model-control mode, bound to 127.0.0.1 on free ports."""

    def __init__(
        self,
        name: str,
        runtime: TritonRuntime,
        repository: Path,
        log_path: Path,
        start_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ):
        self.name = name
        self.runtime = runtime
        self.repository = Path(repository)
        self.log_path = Path(log_path)
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)  # the platform's own options (manifest `triton.args`)
        self.process: Optional[ServerProcess] = None
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.ports = tuple(free_ports(3))
        http, grpc, metrics = self.ports
        self.endpoints = TritonEndpoints(
            f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics"
        )

    def argv(self, load_models: List[str]) -> List[str]:
        http, grpc, metrics = self.ports
        argv = [
            str(self.runtime.bin),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self.runtime.backends}",
            "--http-address=127.0.0.1",
            f"--http-port={http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics}",
            "--metrics-interval-ms=500",
            # A committed model that fails to load must not take the server down with it.
            "--exit-on-error=false",
            # Not 30 s: a Triton still waiting for someone's idle connection when the stop grace ends
            # is SIGKILLed, and leaves its Python backend's /tmp/python_env_* behind.
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        ]
        return argv + self.extra_args + [f"--load-model={m}" for m in load_models]

    def committed_models(self) -> List[str]:
        """Models with a current.json: loaded at start, as a restarted pod would do."""
        if not self.repository.is_dir():
            return []
        return sorted(p.name for p in self.repository.iterdir() if (p / "current.json").is_file())

    def start(self) -> None:
        """Start (or restart) the server; on its first start, new ports if another process took one.
        A restart keeps its ports: clients and Prometheus know them."""
        first = self.process is None
        start_on_free_ports(self._start_once, self._choose_ports, attempts=PORT_ATTEMPTS if first else 1)

    def _start_once(self) -> None:
        self.repository.mkdir(parents=True, exist_ok=True)
        self.process = ServerProcess(
            f"tritonserver[{self.name}]",
            self.argv(self.committed_models()),
            ready_url=f"{self.endpoints.http}/v2/health/live",
            log_path=self.log_path,
            env=self.runtime.environment(),
            start_timeout=self.start_timeout,
            stop_grace=STOP_GRACE_S,
            ports=self.ports,
        )
        self.process.start()

    def stop(self) -> None:
        if self.process:
            close_connections(self.endpoints.http)  # or Triton waits for them instead of unloading
            self.process.stop()

    def kill(self) -> None:
        if self.process:
            self.process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return bool(self.process and self.process.running())

    @property
    def pid(self) -> Optional[int]:
        """The server's pid, which is also its process group id."""
        return self.process.pid if self.process else None
