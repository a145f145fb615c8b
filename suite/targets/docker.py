"""`--target docker`: the same stack as the embedded one, as containers built with testcontainers."""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Sequence

import requests

from suite.errors import GateError, StackStartError
from suite.processes import free_port
from suite.triton_client import TritonControl
from suite.triton_server import TritonEndpoints

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

# Triton 2.51.0, the same server as the embedded stack's nvidia-pytriton 0.7.0: both targets then
# verify one server version. A newer image is one option away (--triton-image / images.triton).
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
MLFLOW_IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"        # the lock's mlflow: client and server agree
PROMETHEUS_IMAGE = "prom/prometheus:v2.42.0"           # the versions the embedded stack runs
ALERTMANAGER_IMAGE = "prom/alertmanager:v0.25.0"

LABEL_PREFIX = "io.triton-gate"
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
# Pinned so containers can be described without asking an engine (docker-py's "auto" does);
# 1.41 is Docker 20.10, old enough for every engine still in use and new enough for everything here.
DOCKER_API_VERSION = "1.41"
MODELS_DIR = "/models"


class DockerUnavailable(GateError):
    """Raised when `--target docker` is chosen but no Docker engine answers."""


def engine_address(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("DOCKER_HOST") or DEFAULT_ENGINE


def engine_problem(environ: Mapping[str, str] = os.environ, timeout: float = 3.0) -> Optional[str]:
    """None when a Docker engine answers a ping, else the exact skip reason of the scenarios."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(base_url=engine_address(environ), version="auto", timeout=timeout)
        client.ping()
        client.close()
        return None
    except (DockerException, OSError, requests.RequestException) as exc:
        return (f"--target docker: no Docker engine answers at {engine_address(environ)} ({exc}); "
                f"start Docker or use --target local")


@dataclass(frozen=True)
class Images:
    triton: str = TRITON_IMAGE
    mlflow: str = MLFLOW_IMAGE
    prometheus: str = PROMETHEUS_IMAGE
    alertmanager: str = ALERTMANAGER_IMAGE

    @classmethod
    def choose(cls, manifest: Optional[object] = None, triton_option: Optional[str] = None) -> "Images":
        """The option beats the manifest's `images:` section, which beats the defaults."""
        chosen = {k: v for k, v in (vars(manifest).items() if manifest is not None else []) if v}
        if triton_option:
            chosen["triton"] = triton_option
        if "triton" in chosen:
            chosen["triton"] = triton_image(chosen["triton"])
        return cls(**chosen)


def triton_image(tag_or_image: str) -> str:
    """`24.10-py3` means the NGC image with that tag; anything with a `/` or `:` is an image."""
    if "/" in tag_or_image or ":" in tag_or_image:
        return tag_or_image
    return f"nvcr.io/nvidia/tritonserver:{tag_or_image}"


def triton_command(load_from: str = MODELS_DIR) -> List[str]:
    """Explicit model control; at every (re)start load the models with a `current.json`, as the
    embedded server and a restarted pod do (a fixed --load-model list would go stale after deploys)."""
    server = ("exec tritonserver --model-repository=" + load_from + " --model-control-mode=explicit"
              " --exit-on-error=false --metrics-interval-ms=500"
              " --http-port=8000 --grpc-port=8001 --metrics-port=8002")
    committed = (f'for d in {load_from}/*/; do [ -f "$d/current.json" ] && '
                 f'set -- "$@" "--load-model=$(basename "$d")"; done; ')
    return ["/bin/sh", "-c", committed + server + ' "$@"', "tritonserver"]


class TritonModelsReady:
    """Wait until the server is live and every committed model is READY: a server that answers
    /v2/health/ready before a startup model loaded (or with it failed) is not a usable stack."""

    def __init__(self, http_url: str, repository: Path, timeout: float = 120.0, poll: float = 0.5):
        self.http_url = http_url.rstrip("/")
        self.repository = Path(repository)
        self.timeout = timeout
        self.poll = poll

    def models(self) -> List[str]:
        if not self.repository.is_dir():
            return []
        return sorted(p.name for p in self.repository.iterdir() if (p / "current.json").is_file())

    def pending(self) -> List[str]:
        """What is not ready yet (empty when ready); connection errors are transient: say so."""
        try:
            if requests.get(f"{self.http_url}/v2/health/live", timeout=2).status_code != 200:
                return ["server not live"]
            return [m for m in self.models()
                    if requests.get(f"{self.http_url}/v2/models/{m}/ready", timeout=2).status_code != 200]
        except requests.RequestException as exc:
            return [f"server not answering ({type(exc).__name__})"]

    def wait_until_ready(self, container: "DockerContainer") -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            pending = self.pending()
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise StackStartError(
                    f"Triton container {container.image} at {self.http_url}: expected the server live and "
                    f"models {self.models()} READY within {self.timeout:.0f} s; still waiting for {pending}. "
                    f"Last lines of its log:\n{_log_tail(container)}")
            time.sleep(self.poll)


class HttpReady:
    """Wait for one URL to answer 200 (MLflow /health, Prometheus and Alertmanager /-/ready)."""

    def __init__(self, url: str, timeout: float = 120.0, poll: float = 0.5):
        self.url, self.timeout, self.poll = url, timeout, poll

    def wait_until_ready(self, container: "DockerContainer") -> None:
        deadline = time.monotonic() + self.timeout
        seen = "no answer"
        while time.monotonic() < deadline:
            try:
                status = requests.get(self.url, timeout=2).status_code
                if status == 200:
                    return
                seen = f"HTTP {status}"
            except requests.RequestException as exc:
                seen = type(exc).__name__
            time.sleep(self.poll)
        raise StackStartError(f"container {container.image}: expected 200 from {self.url} within "
                              f"{self.timeout:.0f} s, last seen {seen}. Last lines of its log:\n{_log_tail(container)}")


def _log_tail(container: "DockerContainer", lines: int = 30) -> str:
    try:
        out, err = container.get_logs()
        return "\n".join((out + err).decode(errors="replace").splitlines()[-lines:])
    except Exception as exc:  # the log is a courtesy on an error path: never mask the error
        return f"(log unavailable: {exc})"


def _bind_local(container: "DockerContainer", container_port: int, host_port: int) -> None:
    # 127.0.0.1 only (as every embedded server), and a port fixed up front: Docker re-picks a
    # random port when a killed container starts again, which would strand every client.
    container.ports[f"{container_port}/tcp"] = ("127.0.0.1", host_port)  # type: ignore[assignment]


def _host_network(container: "DockerContainer") -> None:
    # with_kwargs() replaces the extra arguments: keep the labels given at construction.
    container.with_kwargs(**{**container._kwargs, "network_mode": "host"})


@dataclass
class ContainerPlan:
    """The containers of one run, described (not started): what the tests check offline."""

    run_id: str
    workdir: Path
    images: Images = field(default_factory=Images)
    api_version: str = DOCKER_API_VERSION

    def labels(self, role: str, env: Optional[str] = None) -> Dict[str, str]:
        labels = {f"{LABEL_PREFIX}.run-id": self.run_id, f"{LABEL_PREFIX}.role": role}
        if env:
            labels[f"{LABEL_PREFIX}.env"] = env
        return labels

    def _container(self, image: str, role: str, env: Optional[str] = None) -> "DockerContainer":
        from testcontainers.core.container import DockerContainer

        name = f"triton-gate-{self.run_id}-{role}" + (f"-{env}" if env else "")
        return DockerContainer(image, docker_client_kw={"version": self.api_version}, name=name,
                               labels=self.labels(role, env))

    def triton(self, env: str, repository: Path) -> "tuple[DockerContainer, TritonEndpoints]":
        container = self._container(self.images.triton, "triton", env)
        container.with_command(triton_command())
        # rslave: the fault scenarios mount tmpfs / read-only binds under the repository on the
        # host after the container started; without propagation the container would not see them.
        container.with_volume_mapping(str(Path(repository).resolve()), MODELS_DIR, "rw,rslave")
        http, grpc, metrics = free_port(), free_port(), free_port()
        for inner, outer in ((8000, http), (8001, grpc), (8002, metrics)):
            _bind_local(container, inner, outer)
        endpoints = TritonEndpoints(f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}",
                                    f"http://127.0.0.1:{metrics}/metrics")
        container.waiting_for(TritonModelsReady(endpoints.http, repository))  # type: ignore[arg-type]
        return container, endpoints

    def mlflow(self, store: Path) -> "tuple[DockerContainer, str]":
        container = self._container(self.images.mlflow, "mlflow")
        container.with_command(["mlflow", "server", "--backend-store-uri", "sqlite:////mlflow/mlflow.db",
                                "--artifacts-destination", "/mlflow/artifacts",
                                "--host", "0.0.0.0", "--port", "5000", "--workers", "1"])
        # As for the embedded server: the job runner and huey consumers are not needed.
        container.with_env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        container.with_volume_mapping(str(Path(store).resolve()), "/mlflow", "rw")
        port = free_port()
        _bind_local(container, 5000, port)
        uri = f"http://127.0.0.1:{port}"
        container.waiting_for(HttpReady(f"{uri}/health"))  # type: ignore[arg-type]
        return container, uri

    def prometheus(self, env: str, config_file: Path, rules_dir: Optional[Path], port: int) -> "DockerContainer":
        """Host networking: the rendered config scrapes 127.0.0.1 ports, as the embedded one does."""
        container = self._container(self.images.prometheus, "prometheus", env)
        container.with_command(["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                                f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"])
        container.with_volume_mapping(str(Path(config_file).resolve()), "/etc/prometheus/prometheus.yml", "ro")
        if rules_dir is not None:
            container.with_volume_mapping(str(Path(rules_dir).resolve()), str(Path(rules_dir).resolve()), "ro")
        _host_network(container)
        container.waiting_for(HttpReady(f"http://127.0.0.1:{port}/-/ready"))  # type: ignore[arg-type]
        return container

    def alertmanager(self, env: str, config_file: Path, port: int) -> "DockerContainer":
        container = self._container(self.images.alertmanager, "alertmanager", env)
        # No gossip cluster: a lone Alertmanager would otherwise wait for peers before notifying.
        container.with_command(["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="])
        container.with_volume_mapping(str(Path(config_file).resolve()), "/etc/alertmanager/alertmanager.yml", "ro")
        _host_network(container)
        container.waiting_for(HttpReady(f"http://127.0.0.1:{port}/-/ready"))  # type: ignore[arg-type]
        return container


def new_run_id(worker: Optional[str] = None) -> str:
    """Unique per session and per xdist worker: labels and names of one run never collide."""
    return f"{uuid.uuid4().hex[:8]}-{worker or 'main'}"


class ContainerServer:
    """A Triton container with the interface the fault scenarios use on an embedded server."""

    def __init__(self, name: str, container: "DockerContainer", endpoints: TritonEndpoints, repository: Path):
        self.name = name
        self.container = container
        self.endpoints = endpoints
        self.repository = repository
        self.process = None  # no local process: dead_servers() asks Docker instead

    def start(self) -> None:
        if getattr(self.container, "_container", None) is None:
            self.container.start()
            return
        self.container.get_wrapped_container().start()  # same ports, same bind mounts
        self.container._wait_strategy.wait_until_ready(self.container)  # type: ignore[union-attr]

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()

    def stop(self) -> None:
        self.container.stop()

    def restart(self) -> None:
        self.container.get_wrapped_container().stop(timeout=3)
        self.start()

    def running(self) -> bool:
        self.container.reload()
        return self.container.status == "running"


@dataclass
class DockerEnvironment:
    name: str
    repository: Path
    server: ContainerServer
    triton: TritonControl


class DockerMlflow:
    def __init__(self, container: "DockerContainer", uri: str, store: Path):
        self.container, self.uri, self.workdir = container, uri, store

    @property
    def artifacts_root(self) -> Path:
        return self.workdir / "artifacts"


class DockerStack:
    """MLflow plus one Triton container per environment; every container removed at the end."""

    def __init__(self, workdir: Path, env_names: Iterable[str], images: Images, run_id: str,
                 api_version: str = DOCKER_API_VERSION):
        self.workdir = Path(workdir)
        self.plan = ContainerPlan(run_id, self.workdir, images, api_version)
        self.env_names: Sequence[str] = list(env_names)
        self.environments: Dict[str, DockerEnvironment] = {}
        store = self.workdir / "mlflow"
        container, uri = self.plan.mlflow(store)
        self.mlflow = DockerMlflow(container, uri, store)
        for name in self.env_names:
            repository = self.workdir / "model-repository" / name
            triton, endpoints = self.plan.triton(name, repository)
            self.environments[name] = DockerEnvironment(
                name, repository, ContainerServer(name, triton, endpoints, repository),
                TritonControl(endpoints.http, endpoints.metrics))
        self._registry = None

    def containers(self) -> List["DockerContainer"]:
        return [self.mlflow.container] + [e.server.container for e in self.environments.values()]

    def start(self) -> "DockerStack":
        self.mlflow.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for environment in self.environments.values():
                environment.repository.mkdir(parents=True, exist_ok=True)
            for container in self.containers():
                container.start()
        except BaseException:
            self.stop()
            raise
        return self

    def dead_servers(self) -> List[str]:
        dead = []
        for container in self.containers():
            try:
                container.reload()
                if container.status != "running":
                    dead.append(f"container {container._name} ({container.image}) is {container.status}. "
                                f"Last lines of its log:\n{_log_tail(container)}")
            except Exception as exc:  # noqa: BLE001 - a vanished container is as dead as an exited one
                dead.append(f"container {container._name} ({container.image}) cannot be inspected: {exc}")
        return dead

    def registry(self):
        from suite.registry import Registry

        if self._registry is None:
            self._registry = Registry(self.mlflow.uri)
        return self._registry

    @property
    def runtime(self):
        raise GateError("--target docker: extra environments (make_environment) start embedded Triton "
                        "servers; expected --target local for the scenarios that need them.")

    def stop(self) -> None:
        for container in self.containers():
            if getattr(container, "_container", None) is not None:
                try:
                    container.stop()  # removes the container (force) and its anonymous volumes
                except Exception:  # noqa: BLE001 - keep removing the others; Ryuk reaps leftovers
                    pass
