"""`--target docker`: the same stack as the embedded one, as containers built with testcontainers."""

from __future__ import annotations

import os
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import requests

from suite.environment import Environment
from suite.errors import GateError, StackStartError
from suite.processes import free_port, free_ports
from suite.run_id import new_run_id
from suite.targets.engine import SESSION_LABEL, SESSION_VARIABLE
from suite.targets.mounts import propagating
from suite.targets.protocol import TargetBase
from suite.timings import CONTAINER_POLL_S, CONTAINER_READY_S
from suite.triton_server import TritonEndpoints
from suite.waiting import WaitTimeout, wait_for

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

    from suite.monitoring_stack import MonitoringStack
    from suite.platform import Platform

# Built by `make images` from deploy/images/ (suite/targets/images.py), without any image registry:
# Triton 2.51.0 CPU, the same server as the embedded stack's nvidia-pytriton 0.7.0, so both targets
# verify one server version; the lock's MLflow; Debian's Prometheus 2.42 and Alertmanager 0.25.
# The manifest's `images:` section names others (an NGC image with --triton-image 24.10-py3).
TRITON_IMAGE = "triton-gate/tritonserver:2.51.0-cpu"
MLFLOW_IMAGE = "triton-gate/mlflow:3.17.2"
PROMETHEUS_IMAGE = "triton-gate/prometheus:2.42"
ALERTMANAGER_IMAGE = "triton-gate/alertmanager:0.25"
GATE_IMAGE = "triton-gate/gate:0.1.0"

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


def docker_client(api_version: str = "auto", timeout: float = 60.0):
    import docker

    return docker.DockerClient(base_url=engine_address(), version=api_version, timeout=timeout)


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
        return (
            f"--target docker: no Docker engine answers at {engine_address(environ)} ({exc}); "
            f"start Docker or use --target local"
        )


@dataclass(frozen=True)
class Images:
    triton: str = TRITON_IMAGE
    mlflow: str = MLFLOW_IMAGE
    prometheus: str = PROMETHEUS_IMAGE
    alertmanager: str = ALERTMANAGER_IMAGE
    gate: str = GATE_IMAGE

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


def triton_command(
    http: int, grpc: int, metrics: int, load_from: str = MODELS_DIR, extra_args: Sequence[str] = ()
) -> List[str]:
    """Explicit model control on 127.0.0.1 ports (host networking), plus the platform's own
    options (manifest `triton.args`); at every (re)start load the models with a `current.json`, as
    the embedded server and a restarted pod do (a fixed --load-model list would go stale after deploys)."""
    server = (
        "exec tritonserver --model-repository=" + load_from + " --model-control-mode=explicit"
        " --exit-on-error=false --metrics-interval-ms=500"
        f" --http-address=127.0.0.1 --http-port={http} --grpc-address=127.0.0.1 --grpc-port={grpc}"
        f" --metrics-address=127.0.0.1 --metrics-port={metrics}"
    )
    server += "".join(" " + shlex.quote(arg) for arg in extra_args)
    committed = (
        f'for d in {load_from}/*/; do [ -f "$d/current.json" ] && set -- "$@" "--load-model=$(basename "$d")"; done; '
    )
    return ["/bin/sh", "-c", committed + server + ' "$@"', "tritonserver"]


class TritonModelsReady:
    """Wait until the server is live and every committed model is READY: a server that answers
    /v2/health/ready before a startup model loaded (or with it failed) is not a usable stack."""

    def __init__(
        self,
        http_url: str,
        repository: Path,
        timeout_s: float = CONTAINER_READY_S,
        interval_s: float = CONTAINER_POLL_S,
    ):
        self.http_url = http_url.rstrip("/")
        self.repository = Path(repository)
        self.timeout_s = timeout_s
        self.interval_s = interval_s

    def models(self) -> List[str]:
        if not self.repository.is_dir():
            return []
        return sorted(p.name for p in self.repository.iterdir() if (p / "current.json").is_file())

    def pending(self) -> List[str]:
        """What is not ready yet (empty when ready); connection errors are transient: say so."""
        try:
            if requests.get(f"{self.http_url}/v2/health/live", timeout=2).status_code != 200:
                return ["server not live"]
            return [
                m
                for m in self.models()
                if requests.get(f"{self.http_url}/v2/models/{m}/ready", timeout=2).status_code != 200
            ]
        except requests.RequestException as exc:
            return [f"server not answering ({type(exc).__name__})"]

    def wait_until_ready(self, container: "DockerContainer") -> None:
        try:
            wait_for(
                self.pending,
                until=lambda pending: not pending,
                timeout_s=self.timeout_s,
                interval_s=self.interval_s,
                awaiting=f"Triton at {self.http_url} live with its models READY",
            )
        except WaitTimeout as timeout:
            raise StackStartError(
                f"Triton container {container.image} at {self.http_url}: expected the server live and "
                f"models {self.models()} READY within {self.timeout_s:.0f} s; still waiting for {timeout.last_value}. "
                f"Last lines of its log:\n{_log_tail(container)}"
            ) from None


class HttpReady:
    """Wait for one URL to answer 200 (MLflow /health, Prometheus and Alertmanager /-/ready)."""

    def __init__(self, url: str, timeout_s: float = CONTAINER_READY_S, interval_s: float = CONTAINER_POLL_S):
        self.url, self.timeout_s, self.interval_s = url, timeout_s, interval_s

    def wait_until_ready(self, container: "DockerContainer") -> None:
        try:
            wait_for(
                lambda: requests.get(self.url, timeout=2).status_code,
                until=lambda status: status == 200,
                transient=(requests.RequestException,),
                timeout_s=self.timeout_s,
                interval_s=self.interval_s,
                awaiting=f"200 from {self.url}",
            )
        except WaitTimeout as timeout:
            seen = (
                type(timeout.last_error).__name__
                if timeout.last_error is not None
                else f"HTTP {timeout.last_value}"
                if timeout.last_value is not None
                else "no answer"
            )
            raise StackStartError(
                f"container {container.image}: expected 200 from {self.url} within "
                f"{self.timeout_s:.0f} s, last seen {seen}. Last lines of its log:\n"
                f"{_log_tail(container)}"
            ) from None


def _log_tail(container: "DockerContainer", lines: int = 30) -> str:
    try:
        out, err = container.get_logs()
        return "\n".join((out + err).decode(errors="replace").splitlines()[-lines:])
    except Exception as exc:  # the log is a courtesy on an error path: never mask the error
        return f"(log unavailable: {exc})"


def _created(container: "DockerContainer") -> bool:
    """Whether the engine has (had) this container: testcontainers creates it in start()."""
    from testcontainers.core.exceptions import ContainerStartException

    try:
        container.get_wrapped_container()
        return True
    except ContainerStartException:
        return False


def _name(container: "DockerContainer") -> str:
    return container.get_wrapped_container().name if _created(container) else f"(not created, {container.image})"


@dataclass
class ContainerPlan:
    """The containers of one run, described (not started): what the tests check offline."""

    run_id: str
    workdir: Path
    images: Images = field(default_factory=Images)
    api_version: str = DOCKER_API_VERSION
    triton_args: Sequence[str] = ()  # the platform's own tritonserver options (manifest `triton.args`)

    def labels(self, role: str, env: Optional[str] = None) -> Dict[str, str]:
        labels = {f"{LABEL_PREFIX}.run-id": self.run_id, f"{LABEL_PREFIX}.role": role}
        session = os.environ.get(SESSION_VARIABLE)
        if session:  # set by `python -m suite.targets.engine run`, which removes them all at its end
            labels[SESSION_LABEL] = session
        if env:
            labels[f"{LABEL_PREFIX}.env"] = env
        return labels

    def _container(self, image: str, role: str, env: Optional[str] = None) -> "DockerContainer":
        from testcontainers.core.config import testcontainers_config
        from testcontainers.core.container import DockerContainer

        # No reaper container: its image needs a registry. The stack removes its containers by
        # label at the end, and `python -m suite.targets.engine run` sweeps its session's after.
        testcontainers_config.ryuk_disabled = True

        name = f"triton-gate-{self.run_id}-{role}" + (f"-{env}" if env else "")
        # Host networking: every server binds 127.0.0.1 on a free port given on its command line.
        # Published ports need a bridge, which these engines do not have: never use them.
        return DockerContainer(
            image,
            docker_client_kw={"version": self.api_version},
            name=name,
            labels=self.labels(role, env),
            network_mode="host",
        )

    def triton(self, env: str, repository: Path) -> "tuple[DockerContainer, TritonEndpoints]":
        container = self._container(self.images.triton, "triton", env)
        http, grpc, metrics = free_ports(3)
        container.with_command(triton_command(http, grpc, metrics, extra_args=self.triton_args))
        # rslave: the fault scenarios mount tmpfs / read-only binds under the repository on the
        # host after the container started; without propagation the container would not see them.
        container.with_volume_mapping(str(Path(repository).resolve()), MODELS_DIR, "rw,rslave")
        endpoints = TritonEndpoints(
            f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics"
        )
        container.waiting_for(TritonModelsReady(endpoints.http, repository))  # type: ignore[arg-type]
        return container, endpoints

    def mlflow(self, store: Path) -> "tuple[DockerContainer, str]":
        container = self._container(self.images.mlflow, "mlflow")
        port = free_port()
        container.with_command(
            [
                "mlflow",
                "server",
                "--backend-store-uri",
                "sqlite:////mlflow/mlflow.db",
                "--artifacts-destination",
                "/mlflow/artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ]
        )
        # As for the embedded server: the job runner and huey consumers are not needed.
        container.with_env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        container.with_volume_mapping(str(Path(store).resolve()), "/mlflow", "rw")
        uri = f"http://127.0.0.1:{port}"
        container.waiting_for(HttpReady(f"{uri}/health"))  # type: ignore[arg-type]
        return container, uri

    def monitoring(self, role: str, env: str, args: List[str], workdir: Path, ready_url: str) -> "MonitoringContainer":
        """Prometheus or Alertmanager (`role`) as the images.<role> container, with the embedded
        stack's arguments: the work folder (configs, rules, targets file, storage) mounted at the
        same path, host networking so 127.0.0.1 means the same on both sides."""
        container = self._container(getattr(self.images, role), role, env)
        container.with_command(args)
        container.with_volume_mapping(str(Path(workdir).resolve()), str(Path(workdir).resolve()), "rw")
        container.waiting_for(HttpReady(ready_url))  # type: ignore[arg-type]
        return MonitoringContainer(f"{role}[{env}]", container)


class MonitoringContainer:
    """A monitoring container with the start/stop/running of the embedded stack's ServerProcess."""

    def __init__(self, name: str, container: "DockerContainer"):
        self.name, self.container = name, container

    def start(self) -> None:
        self.container.start()

    def stop(self) -> None:
        if _created(self.container):
            self.container.stop()

    def running(self) -> bool:
        self.container.reload()
        return self.container.status == "running"


class ContainerServer:
    """A Triton container with the interface the fault scenarios use on an embedded server."""

    def __init__(self, name: str, container: "DockerContainer", endpoints: TritonEndpoints, repository: Path):
        self.name = name
        self.container = container
        self.endpoints = endpoints
        self.repository = repository
        self.ready = TritonModelsReady(endpoints.http, repository)  # the plan's wait, again after a restart

    def start(self) -> None:
        if not _created(self.container):
            self.container.start()
            return
        self.container.get_wrapped_container().start()  # same ports, same bind mounts
        self.ready.wait_until_ready(self.container)

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()

    def stop(self) -> None:
        """Stop and remove; a container already removed is stopped."""
        from docker.errors import NotFound

        try:
            self.container.stop()
        except NotFound:
            pass

    def restart(self) -> None:
        self.container.get_wrapped_container().stop(timeout=3)
        self.start()

    def running(self) -> bool:
        self.container.reload()
        return self.container.status == "running"


class DockerMlflow:
    def __init__(self, container: "DockerContainer", uri: str, store: Path):
        self.container, self.uri, self.workdir = container, uri, store

    @property
    def artifacts_root(self) -> Path:
        return self.workdir / "artifacts"


class DockerStack:
    """MLflow plus one Triton container per environment; every container removed at the end."""

    def __init__(
        self,
        workdir: Path,
        env_names: Iterable[str],
        images: Images,
        run_id: str,
        api_version: str = DOCKER_API_VERSION,
        triton_args: Sequence[str] = (),
    ):
        self.workdir = Path(workdir)
        self.plan = ContainerPlan(run_id, self.workdir, images, api_version, tuple(triton_args))
        self.env_names: Sequence[str] = list(env_names)
        self.environments: Dict[str, Environment] = {}
        store = self.workdir / "mlflow"
        container, uri = self.plan.mlflow(store)
        self.mlflow = DockerMlflow(container, uri, store)
        for name in self.env_names:
            repository = self.workdir / "model-repository" / name
            triton, endpoints = self.plan.triton(name, repository)
            self.environments[name] = Environment.serving(
                name, repository, ContainerServer(name, triton, endpoints, repository)
            )
        self._registry = None
        self._mounts = ExitStack()
        self._extra: List["DockerContainer"] = []
        self.timings: Dict[str, float] = {}

    def containers(self) -> List["DockerContainer"]:
        return [self.mlflow.container] + [self._server(env).container for env in self.environments]

    def _server(self, env: str) -> ContainerServer:
        return self.environments[env].server  # type: ignore[return-value]  # built as one above

    @property
    def monitoring_containers(self) -> ContainerPlan:
        return self.plan

    def missing_images(self) -> List[str]:
        """A clear message per image the engine does not have (no pull is tried: no registry here)."""
        from suite.targets.images import image_present, missing_image_message

        client = docker_client(self.plan.api_version)
        used = {"triton": self.plan.images.triton, "mlflow": self.plan.images.mlflow}
        return [missing_image_message(key, image) for key, image in used.items() if not image_present(client, image)]

    def start(self) -> "DockerStack":
        missing = self.missing_images()
        if missing:
            raise StackStartError("\n".join(missing))
        self.mlflow.workdir.mkdir(parents=True, exist_ok=True)
        try:
            # The faults' mounts under the repositories reach Triton's containers only this way.
            self._mounts.enter_context(propagating(self.workdir))
            for environment in self.environments.values():
                environment.repository.mkdir(parents=True, exist_ok=True)
            self._start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_all(self) -> None:
        """All containers at once (MLflow takes the longest); each one's start time is kept."""
        roles = {
            "mlflow": self.mlflow.container,
            **{f"triton-{env}": self._server(env).container for env in self.environments},
        }

        def start(role: str) -> float:
            begin = time.perf_counter()
            roles[role].start()
            return time.perf_counter() - begin

        begin = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(roles)) as pool:
            futures = {role: pool.submit(start, role) for role in roles}
        errors = [f.exception() for f in futures.values() if f.exception() is not None]
        if errors:
            raise errors[0]
        self.timings = {f"{role} container": f.result() for role, f in futures.items()}
        self.timings["stack"] = time.perf_counter() - begin

    def dead_servers(self) -> List[str]:
        dead = []
        for container in self.containers():
            try:
                container.reload()
                if container.status != "running":
                    dead.append(
                        f"container {_name(container)} ({container.image}) is {container.status}. "
                        f"Last lines of its log:\n{_log_tail(container)}"
                    )
            except Exception as exc:  # noqa: BLE001 - a vanished container is as dead as an exited one
                dead.append(f"container {_name(container)} ({container.image}) cannot be inspected: {exc}")
        return dead

    def registry(self):
        from suite.registry import Registry

        if self._registry is None:
            self._registry = Registry(self.mlflow.uri)
        return self._registry

    def describe(self) -> Dict[str, str]:
        return {f"image {key}": image for key, image in vars(self.plan.images).items()}

    def extra_environment(self, name: str, repository: Path) -> Environment:
        """One more Triton container on its own repository (a fault's small filesystem); the caller
        stops it (which removes it)."""
        container, endpoints = self.plan.triton(name, repository)
        server = ContainerServer(name, container, endpoints, repository)
        self._extra.append(container)
        server.start()
        return Environment.serving(name, repository, server)

    def stop(self) -> None:
        for container in self.containers() + self._extra:
            if _created(container):
                try:
                    container.stop()  # removes the container (force) and its anonymous volumes
                except Exception:  # noqa: BLE001 - keep removing the others; the engine wrapper reaps leftovers
                    pass
        self._mounts.close()


class DockerTarget(TargetBase):
    """The embedded stack's servers as containers of a Docker engine (`make images` builds them);
    thrown away at the end like the embedded stack."""

    name: ClassVar[str] = "docker"
    title: ClassVar[str] = "docker stack"
    deploys: ClassVar[bool] = True
    guarded: ClassVar[bool] = False
    controls_servers: ClassVar[bool] = True
    starts_environments: ClassVar[bool] = True
    registry_files: ClassVar[bool] = True
    accepts: ClassVar[Tuple[str, ...]] = (*TargetBase.accepts, "triton_image")

    def probe(self) -> Optional[str]:
        return engine_problem()

    def start_stack(self, platform: "Platform", workdir: Path) -> DockerStack:
        images = Images.choose(platform.spec.images, self.options.triton_image)
        run_id = new_run_id(os.environ.get("PYTEST_XDIST_WORKER"))
        stack = DockerStack(workdir, platform.environments, images, run_id, triton_args=platform.spec.triton.args)
        try:
            return stack.start()
        except GateError:
            raise
        except Exception as exc:  # noqa: BLE001 - docker.errors.*: image refused, port taken, bad mount
            raise StackStartError(
                f"the engine refused to run a container ({exc}). Images used: {vars(stack.plan.images)}."
            ) from exc

    def monitoring(self, platform: "Platform", stack: DockerStack, workdir: Path) -> "MonitoringStack":
        from suite.monitoring_stack import for_platform

        return for_platform(platform, stack.environments, workdir, containers=stack.plan)
