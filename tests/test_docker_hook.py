"""The Argo CD PostSync hook for real: the gate image, run in a container exactly as
deploy/gitops/base/smoke-job.yaml runs it (its args, its non-root user, a read-only root, the model
repository mounted read-only, /tmp a scratch volume), against a running platform of real
containers (Triton per environment, MLflow, Prometheus and Alertmanager per environment).

The Kubernetes API is the one stand-in (tests/kube_api.py): no cluster can run here. It reports
each Triton pod from the real container (running, and the model ready as the Deployment's
readiness probe asks), and the gate reaches it through KUBECONFIG instead of the in-cluster
service account. It must pass on the healthy platform and fail, for the right reason, on a broken one."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests
import yaml

from suite.deploy import Deployer
from suite.golden import load_golden
from suite.monitoring_config import alertmanager_for, rules_for
from suite.monitoring_stack import MonitoredTarget, MonitoringStack
from suite.platform import default_platform_path, load_platform
from suite.reference_model import build_onnx
from suite.targets import docker as dk
from suite.targets.images import image_present
from tests.kube_api import KubeApiStandIn, cluster_section, kubeconfig
from tests.platform_copies import copy_reference

PROJECT = Path(__file__).resolve().parents[1]
HOOK_JOB = PROJECT / "deploy" / "gitops" / "base" / "smoke-job.yaml"
ENGINE_PROBLEM = dk.engine_problem()
pytestmark = pytest.mark.skipif(ENGINE_PROBLEM is not None, reason=f"needs a Docker engine: {ENGINE_PROBLEM}")


@pytest.fixture(scope="module")
def reference():
    return load_platform(default_platform_path())


@pytest.fixture(scope="module")
def images(reference):
    chosen = dk.Images.choose(reference.spec.images)
    client = dk.docker_client()
    missing = [image for image in vars(chosen).values() if not image_present(client, image)]
    client.close()
    if missing:
        pytest.skip(f"images {missing} not built: run `make images`")
    return chosen


@pytest.fixture(scope="module")
def platform_in_containers(tmp_path_factory, reference, images):
    """A running platform with v1 committed in dev and prod, as the hook finds one after a sync."""
    workdir = tmp_path_factory.mktemp("platform")
    stack = dk.DockerStack(workdir, reference.environments, images, dk.new_run_id("hook")).start()
    monitoring = None
    try:
        golden = load_golden(reference.golden_path())
        stack.registry().register_onnx(reference.model.name, build_onnx("v1"), alias=reference.model.alias)
        for name, environment in stack.environments.items():
            result = Deployer(stack.registry(), environment, reference.model.name, golden).deploy(
                alias=reference.model.alias
            )
            assert result.ok, result.describe()
        targets = [
            MonitoredTarget(
                name,
                spec.namespace,
                spec.release,
                stack.environments[name].server.endpoints.metrics.split("//")[1].split("/")[0],
            )
            for name, spec in reference.environments.items()
        ]
        monitoring = MonitoringStack(
            workdir / "monitoring",
            targets,
            {n: rules_for(reference, n) for n in reference.environments},
            {n: alertmanager_for(reference, n) for n in reference.environments},
            containers=stack.plan,
        ).start()
        _wait_for_discovery(monitoring)
        yield stack, monitoring
    finally:
        if monitoring is not None:
            monitoring.stop()
        stack.stop()


def _wait_for_discovery(monitoring, timeout: float = 30.0) -> None:
    """A platform found after a sync has run for a while: Prometheus applies discovered targets
    in batches (about 5 s after start), so wait until each one lists its Triton."""
    deadline = time.monotonic() + timeout
    for env in monitoring.environments.values():
        url = f"{env.prometheus_url}/api/v1/targets"
        while not requests.get(url, timeout=5).json()["data"]["activeTargets"]:
            assert time.monotonic() < deadline, f"{url}: no target discovered within {timeout:.0f} s"
            time.sleep(0.5)


def _pod_ready(stack, env: str, model: str):
    """What the Deployment's probes would say of the Triton container of `env`."""

    def ready() -> bool:
        server = stack.environments[env].server
        if not server.running():
            return False
        try:
            return requests.get(f"{server.endpoints.http}/v2/models/{model}/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return ready


def _hook_manifest(tmp_path: Path, reference, stack, monitoring) -> Path:
    """The per-environment ConfigMap of the overlays: the manifest with `cluster:` endpoints, the
    model repository where the hook's pod mounts it (/models/<env>)."""
    folder = copy_reference(tmp_path / "etc-gate")
    manifest = folder / "platform.yaml"
    raw = yaml.safe_load(manifest.read_text())
    for name, spec in raw["environments"].items():
        spec["cluster"] = cluster_section(
            stack.environments[name].server.endpoints,
            f"/models/{name}",
            prometheus_url=monitoring.environments[name].prometheus_url,
            alertmanager_url=monitoring.environments[name].alertmanager_url,
        )
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def _run_hook(image: str, etc_gate: Path, repositories: Path, kube: Path, run_id: str):
    """The Job's container, as Kubernetes would run it; (exit code, log)."""
    job = yaml.safe_load(HOOK_JOB.read_text())
    pod = job["spec"]["template"]["spec"]
    container_spec = pod["containers"][0]
    assert container_spec["securityContext"]["readOnlyRootFilesystem"] is True
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    env = {e["name"]: e["value"] for e in container_spec.get("env", [])}
    client = dk.docker_client()
    container = client.containers.run(
        image,
        container_spec["args"],
        detach=True,
        user=user,
        read_only=True,
        network_mode="host",
        tmpfs={"/tmp": "rw,size=256m"},
        environment={**env, "KUBECONFIG": "/etc/kube/config"},
        volumes={
            str(etc_gate): {"bind": "/etc/gate", "mode": "ro"},
            str(repositories): {"bind": "/models", "mode": "ro"},
            str(kube): {"bind": "/etc/kube", "mode": "ro"},
        },
        labels={f"{dk.LABEL_PREFIX}.run-id": run_id, f"{dk.LABEL_PREFIX}.role": "hook"},
    )
    try:
        status = container.wait(timeout=pod.get("activeDeadlineSeconds", 300))
        return status["StatusCode"], container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
        client.close()


def _outcomes(log: str) -> dict:
    summary = [line for line in log.splitlines() if re.search(r"\d+ (passed|failed)", line)][-1]
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}


def test_gate_image_as_postsync_hook_passes_on_a_healthy_platform_and_fails_on_a_broken_one(
    platform_in_containers, reference, images, tmp_path
):
    stack, monitoring = platform_in_containers
    model = reference.model.name
    api = KubeApiStandIn(
        {spec.namespace: _pod_ready(stack, name, model) for name, spec in reference.environments.items()}
    )
    etc_gate = _hook_manifest(tmp_path, reference, stack, monitoring)
    kube = tmp_path / "kube"
    kube.mkdir()
    kubeconfig(kube / "config", api.url)
    repositories = stack.workdir / "model-repository"
    before = {p: p.read_bytes() for p in repositories.rglob("*") if p.is_file()}

    code, log = _run_hook(images.gate, etc_gate, repositories, kube, stack.plan.run_id)
    outcomes = _outcomes(log)
    # every smoke check, the cluster ones (pods, Service, Prometheus targets, routing) included
    assert code == 0 and outcomes == {"passed": 30}, log
    assert any("/api/v1/namespaces/triton-prod/pods" in r for r in api.requests), api.requests
    assert {p: p.read_bytes() for p in repositories.rglob("*") if p.is_file()} == before  # it changed nothing

    # Broken: prod's Triton dies. The hook must fail, naming prod's pod and Service.
    stack.environments["prod"].server.kill()
    deadline = time.monotonic() + 10
    while stack.environments["prod"].server.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    code, log = _run_hook(images.gate, etc_gate, repositories, kube, stack.plan.run_id)
    assert code == 1, log
    assert re.search(r"FAILED scenarios/test_cluster.py::test_triton_pods_running_and_ready\[prod\]", log), log
    assert re.search(r"FAILED scenarios/test_cluster.py::test_triton_service_answers\[prod\]", log), log
    assert not re.search(r"FAILED \S+\[dev\]", log), log  # dev is healthy: no false alarm there
