"""`--target k8s`: a running cluster, reached through the endpoints the platform manifest names."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import requests

from suite.environment import Environment
from suite.errors import GateError, Unsupported
from suite.platform import ClusterEndpoints, Platform
from suite.targets.protocol import TargetBase
from suite.triton_client import TritonControl
from suite.triton_server import TritonEndpoints

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, V1Pod


class ClusterUnavailable(GateError):
    """Raised when `--target k8s` is chosen but no kubeconfig or in-cluster config reaches a cluster."""


class UnsupportedOnCluster(Unsupported):
    """Raised when a scenario asks a shared cluster for something only a throw-away stack allows."""


def load_client(
    kubeconfig: Optional[str] = None, context: Optional[str] = None, environ: Mapping[str, str] = os.environ
) -> "ApiClient":
    """In a pod (the Argo CD hook) the service account; elsewhere a kubeconfig."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if not kubeconfig and environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            path = kubeconfig or environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]
            config.load_kube_config(
                config_file=os.path.expanduser(path), context=context, client_configuration=configuration
            )
    except (ConfigException, OSError, TypeError) as exc:
        raise ClusterUnavailable(str(exc).strip() or type(exc).__name__) from exc
    return client.ApiClient(configuration)


def cluster_problem(
    kubeconfig: Optional[str] = None,
    context: Optional[str] = None,
    environ: Mapping[str, str] = os.environ,
    timeout: float = 5.0,
) -> Optional[str]:
    """None when a cluster answers /version, else the exact skip reason of the scenarios."""
    from kubernetes import client

    try:
        api = load_client(kubeconfig, context, environ)
        client.VersionApi(api).get_code(_request_timeout=timeout)
        return None
    except ClusterUnavailable as exc:
        return f"--target k8s: no cluster: {exc}"
    except Exception as exc:  # noqa: BLE001 - urllib3/ApiException: the cluster did not answer
        return f"--target k8s: no cluster: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- pods -------------------------------------------------------------------------------------


def pod_problems(pod: "V1Pod") -> List[str]:
    """Why a pod is not serving (empty when it is Running and every container is ready)."""
    name = pod.metadata.name if pod.metadata else "?"
    status = pod.status
    if status is None:
        return [f"pod {name}: has no status yet"]
    problems = []
    if status.phase != "Running":
        problems.append(f"pod {name}: phase {status.phase}, expected Running")
    ready = {c.type: c.status for c in (status.conditions or [])}.get("Ready")
    if ready != "True":
        problems.append(f"pod {name}: condition Ready={ready}, expected True")
    containers = status.container_statuses or []
    if not containers:
        problems.append(f"pod {name}: no container statuses")
    for container in containers:
        if not container.ready:
            problems.append(
                f"pod {name}: container {container.name} not ready ({_container_state(container)}, "
                f"{container.restart_count or 0} restarts)"
            )
    return problems


def _container_state(container) -> str:
    state = container.state
    if state is None:
        return "state unknown"
    if state.waiting is not None:
        return f"waiting: {state.waiting.reason}"
    if state.terminated is not None:
        return f"terminated: {state.terminated.reason} (exit {state.terminated.exit_code})"
    return "running, readiness probe failing"


def triton_pod_problems(pods: List["V1Pod"], namespace: str, selector: str) -> List[str]:
    if not pods:
        return [
            f"no pod in namespace {namespace} matches {selector!r}: expected the Triton Deployment's pods; "
            f"check `cluster.pod_selector` in the manifest against `kubectl -n {namespace} get pods --show-labels`"
        ]
    return [problem for pod in pods for problem in pod_problems(pod)]


def list_triton_pods(api: "ApiClient", namespace: str, selector: str) -> List["V1Pod"]:
    from kubernetes import client

    return list(
        client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector, _request_timeout=10).items
    )


# -- endpoints --------------------------------------------------------------------------------


def triton_endpoints(cluster: ClusterEndpoints) -> TritonEndpoints:
    """The Service's three ports; gRPC and metrics default to Triton's 8001 / 8002 on the same host."""
    host = urlsplit(cluster.triton_url).hostname
    scheme = urlsplit(cluster.triton_url).scheme or "http"
    return TritonEndpoints(
        cluster.triton_url.rstrip("/"),
        cluster.triton_grpc or f"{host}:8001",
        cluster.triton_metrics_url or f"{scheme}://{host}:8002/metrics",
    )


class ClusterServer:
    """A Triton Service: addresses only. Killing or restarting it is a fault the gate does not
    inject into a shared cluster."""

    def __init__(self, name: str, endpoints: TritonEndpoints):
        self.name = name
        self.endpoints = endpoints
        self.process = None

    def _refuse(self, what: str) -> None:
        raise UnsupportedOnCluster(
            f"--target k8s: the scenario wants to {what} Triton of {self.name}; the gate does that only to "
            f"servers it started itself. Run it with --target local or --target docker."
        )

    def kill(self) -> None:
        self._refuse("kill")

    def start(self) -> None:
        self._refuse("start")

    def stop(self) -> None:
        self._refuse("stop")

    def restart(self) -> None:
        self._refuse("restart")

    def running(self) -> bool:
        return TritonControl(self.endpoints.http).live()


class ClusterMlflow:
    def __init__(self, uri: Optional[str]):
        self.uri = uri
        self.artifacts_root = None


class ClusterStack:
    """The stack interface of the embedded one, over a platform that already runs: nothing is
    started, nothing is stopped."""

    def __init__(self, platform: Platform, environ: Mapping[str, str] = os.environ):
        missing = [name for name, spec in platform.environments.items() if spec.cluster is None]
        if missing:
            raise GateError(
                f"--target k8s: environments {missing} of {platform.path} have no `cluster:` section; expected "
                f"per environment at least `cluster: {{triton_url: http://triton.<namespace>.svc:8000}}` "
                f"(and prometheus_url, alertmanager_url, model_repository for the checks that use them)."
            )
        self.platform = platform
        self.environments: Dict[str, Environment] = {}
        for name, spec in platform.environments.items():
            cluster = spec.cluster
            assert cluster is not None
            repository = Path(cluster.model_repository) if cluster.model_repository else None
            self.environments[name] = Environment.serving(
                name, repository, ClusterServer(name, triton_endpoints(cluster))
            )
        self.timings: Dict[str, float] = {}
        uri = platform.spec.registry.mlflow_url if platform.spec.registry else environ.get("MLFLOW_TRACKING_URI")
        self.mlflow = ClusterMlflow(uri)
        self._registry = None

    def registry(self):
        from suite.registry import Registry

        if not self.mlflow.uri:
            raise GateError(
                f"--target k8s: no MLflow to deploy from; expected `registry: {{mlflow_url: ...}}` in "
                f"{self.platform.path} or MLFLOW_TRACKING_URI in the environment, saw neither."
            )
        if self._registry is None:
            self._registry = Registry(self.mlflow.uri)
        return self._registry

    def extra_environment(self, name: str, repository: Path) -> Environment:
        raise UnsupportedOnCluster(
            "--target k8s: extra environments (make_environment) start embedded Triton "
            "servers; expected --target local or docker for the scenarios that need them."
        )

    def describe(self) -> Dict[str, str]:
        return {"cluster": "the platform's own, read through the manifest's `cluster:` endpoints"}

    def dead_servers(self) -> List[str]:
        return []  # the cluster restarts its own pods; the pod check reports what is not ready

    def stop(self) -> None:
        pass


class ClusterTarget(TargetBase):
    """A running cluster: nothing is started or stopped, destructive scenarios are refused on
    protected environments, and the smoke subset reads what the platform committed."""

    name: ClassVar[str] = "k8s"
    title: ClassVar[str] = "cluster"
    deploys: ClassVar[bool] = False
    guarded: ClassVar[bool] = True
    # The cluster owns its pods, the gate starts no server there, and MLflow is reached by URL only:
    # the scenarios that need these skip at setup (suite/targets/capabilities.py).
    controls_servers: ClassVar[bool] = False
    starts_environments: ClassVar[bool] = False
    registry_files: ClassVar[bool] = False
    accepts: ClassVar[Tuple[str, ...]] = (*TargetBase.accepts, "kubeconfig", "kube_context")

    def probe(self) -> Optional[str]:
        return cluster_problem(self.options.kubeconfig, self.options.kube_context)

    def start_stack(self, platform: Platform, workdir: Path) -> ClusterStack:
        return ClusterStack(platform)

    def client(self) -> "ApiClient":
        """The Kubernetes API, for the checks only a cluster has (pods, RBAC)."""
        return load_client(self.options.kubeconfig, self.options.kube_context)

    def monitoring(self, platform: Platform, stack: ClusterStack, workdir: Path) -> "ClusterMonitoringSet":
        return ClusterMonitoringSet(
            {
                name: ClusterMonitoring(
                    name,
                    spec.release,
                    spec.cluster.prometheus_url if spec.cluster else None,
                    spec.cluster.alertmanager_url if spec.cluster else None,
                )
                for name, spec in platform.environments.items()
            }
        )

    def committed_version(self, stack: ClusterStack, model: str, env: str) -> int:
        """The smoke never deploys: it reads what the platform committed, or says what is missing."""
        from suite.model_repo import ModelFolder

        repository = stack.environments[env].repository
        if repository is None:
            raise NotCommitted(
                f"--target k8s: {env} names no `cluster.model_repository` in the manifest; expected "
                f"the path where the gate's pod mounts the model repository PVC, to read current.json",
                skip=True,
            )
        current = ModelFolder(repository, model).read_current()
        if current is None:
            raise NotCommitted(
                f"--target k8s: {env} has no committed version: expected {repository}/{model}/"
                f"current.json (written by the deploy path), found none. Deploy first; the k8s "
                f"smoke subset never deploys."
            )
        return current.active_version


class NotCommitted(GateError):
    """A cluster environment has no committed version to check (`skip`: the manifest cannot say)."""

    def __init__(self, message: str, skip: bool = False):
        super().__init__(message)
        self.skip = skip


# -- monitoring -------------------------------------------------------------------------------


@dataclass
class ClusterMonitoring:
    """An environment's in-cluster Prometheus and Alertmanager, read-only."""

    env: str
    release: str
    prometheus_url: Optional[str]
    alertmanager_url: Optional[str]
    changes: tuple = ()  # the gate changes nothing of a cluster's configuration

    def _prometheus(self, path: str, **params: str) -> dict:
        if not self.prometheus_url:
            raise GateError(f"--target k8s: {self.env} names no `cluster.prometheus_url` in the manifest")
        body = requests.get(f"{self.prometheus_url.rstrip('/')}{path}", params=params, timeout=10).json()
        if body.get("status") != "success":
            raise GateError(f"Prometheus {self.prometheus_url} refused {path} {params}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> List[dict]:
        return self._prometheus("/api/v1/query", query=expr)["result"]

    def targets(self) -> List[dict]:
        return self._prometheus("/api/v1/targets")["activeTargets"]

    def alerts(self) -> List[dict]:
        return self._prometheus("/api/v1/alerts")["alerts"]

    def alertmanager_config(self) -> str:
        """The configuration the running Alertmanager loaded (GET /api/v2/status: read-only)."""
        if not self.alertmanager_url:
            raise GateError(f"--target k8s: {self.env} names no `cluster.alertmanager_url` in the manifest")
        response = requests.get(f"{self.alertmanager_url.rstrip('/')}/api/v2/status", timeout=10)
        response.raise_for_status()
        return response.json()["config"]["original"]


@dataclass
class ClusterMonitoringSet:
    """The cluster's own monitoring, per environment; nothing to start or stop."""

    environments: Dict[str, ClusterMonitoring]
    capture: None = None  # no capture receiver: alerts are never posted on a shared platform

    def start(self) -> "ClusterMonitoringSet":
        return self

    def stop(self) -> None:
        pass


def target_problems(targets: List[dict], namespace: str, other_namespaces: List[str]) -> List[str]:
    """The env's Triton targets are up and no target of another env is scraped."""
    own = [
        t
        for t in targets
        if t.get("labels", {}).get("namespace") == namespace and t.get("labels", {}).get("job") == "triton"
    ]
    problems = []
    if not own:
        problems.append(
            f"no job=triton target in namespace {namespace}; active targets: {[t.get('labels') for t in targets]}"
        )
    problems += [
        f"target {t.get('scrapeUrl')} is {t.get('health')}: {t.get('lastError')}"
        for t in own
        if t.get("health") != "up"
    ]
    problems += [
        f"also scrapes the other environment: {t.get('labels')}"
        for t in targets
        if t.get("labels", {}).get("namespace") in other_namespaces
    ]
    return problems


def live_routing_problems(platform: Platform, env: str, config_text: str, alertnames: List[str]) -> List[str]:
    """The routing table of the policy, tested with amtool on the config Alertmanager really runs.

    Posting probe alerts would page the real channels: routing is read, not exercised."""
    from suite.routing import RoutingPolicy, amtool_receivers

    policy = RoutingPolicy(platform)
    wrong = []
    with tempfile.TemporaryDirectory(prefix="gate-am-") as folder:
        path = Path(folder) / "alertmanager.yaml"
        path.write_text(config_text)
        for labels in policy.label_sets(alertnames):
            reached = amtool_receivers(path, labels.as_dict())
            expected = policy.expected(env, labels.as_dict())
            if reached != expected or reached & policy.forbidden(env):
                wrong.append(f"{labels} -> {sorted(reached)}, policy says {sorted(expected)}")
    return wrong
