"""Targets docker and k8s without an engine or a cluster: construction, rules, messages, skips."""

from __future__ import annotations

import http.server
import json
import re
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodStatus,
)

from suite.errors import GateError, PlatformError, StackStartError
from suite.platform import EnvironmentSpec, load_platform
from suite.targets import capabilities, guard, k8s, load_target
from suite.targets import docker as dk
from suite.targets.protocol import TargetOptions
from tests.kube_api import KubeApiStandIn, cluster_section, kubeconfig
from tests.platform_copies import copy_reference, edit

PROD = EnvironmentSpec(namespace="triton-prod", release="monitoring-prod")
DEV = EnvironmentSpec(namespace="triton-dev", release="monitoring-dev")
SPECS = {"dev": DEV, "prod": PROD}
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}

REFUSED_PROD_CHAOS = (
    "--target k8s: refused to run a destructive scenario (marked chaos) on protected environment 'prod' "
    "(namespace triton-prod). Expected --allow-destructive for a protected environment; seen: prod is "
    "protected by default because it is named prod and --allow-destructive was not given. To run it: pass "
    "--allow-destructive (it changes what prod serves), or set `protected: false` for prod in the manifest, "
    "or select a read-only subset with -m smoke."
)


# -- the refusal rules ----------------------------------------------------------------------------


def _target(name: str):
    return load_target(name, TargetOptions())


def test_prod_is_protected_by_default_and_the_manifest_decides_otherwise():
    assert guard.is_protected("prod", PROD) and not guard.is_protected("dev", DEV)
    assert not guard.is_protected("prod", PROD.model_copy(update={"protected": False}))
    assert guard.is_protected("dev", DEV.model_copy(update={"protected": True}))


def test_destructive_scenario_on_prod_is_refused_with_the_exact_message():
    assert (
        guard.refusal(_target("k8s"), ["marked chaos"], ["prod"], SPECS, allow_destructive=False) == REFUSED_PROD_CHAOS
    )
    with pytest.raises(guard.DestructiveRefused, match="refused to run a destructive scenario"):
        guard.check(_target("k8s"), ["marked chaos"], ["prod"], SPECS, allow_destructive=False)


@pytest.mark.parametrize(
    "target,reasons,envs,allow",
    [
        ("k8s", ["marked chaos"], ["prod"], True),  # permission given
        ("k8s", ["marked deploy"], ["dev"], False),  # dev is not protected
        ("k8s", [], ["prod"], False),  # read-only (smoke)
        ("local", ["marked chaos"], ["prod"], False),  # the gate's own stacks are thrown away
        ("docker", ["marked chaos"], ["prod"], False),
    ],
)
def test_what_is_not_refused(target, reasons, envs, allow):
    assert guard.refusal(_target(target), reasons, envs, SPECS, allow) is None
    guard.check(_target(target), reasons, envs, SPECS, allow)


def test_explicitly_protected_env_and_unknown_env_say_so():
    specs = {"dev": DEV.model_copy(update={"protected": True}), "prod": PROD.model_copy(update={"protected": False})}
    message = guard.refusal(_target("k8s"), ["uses fixture deploy"], ["dev", "prod"], specs, False, env_known=False)
    assert message is not None
    assert (
        "(uses fixture deploy) on protected environment 'dev' (namespace triton-dev) (the scenario has no env "
        "parameter, so it may touch every environment)"
    ) in message
    assert "seen: dev is marked `protected: true` in the platform manifest" in message


def test_destructive_reasons_come_from_markers_then_fixtures():
    assert guard.destructive_reasons(["smoke", "parametrize"], ["gate_stack", "committed"]) == []
    assert guard.destructive_reasons(["deploy", "chaos"], ["deploy"]) == ["marked chaos", "marked deploy"]
    assert guard.destructive_reasons(["alerts"], ["gate_stack", "run_fault", "deploy"]) == ["uses fixture deploy"]


# -- docker: containers described, not started ----------------------------------------------------


@pytest.fixture
def plan(tmp_path) -> dk.ContainerPlan:
    return dk.ContainerPlan("run42-gw0", tmp_path)


def _flag(script: str, name: str) -> str:
    return re.search(rf"--{name}=(\S+)", script).group(1)


def test_triton_container_is_explicit_labelled_bind_mounted_and_local(plan, tmp_path, monkeypatch):
    monkeypatch.delenv("GATE_DOCKER_SESSION", raising=False)
    repository = tmp_path / "model-repository" / "dev"
    container, endpoints = plan.triton("dev", repository)
    assert container.image == dk.TRITON_IMAGE == "triton-gate/tritonserver:2.51.0-cpu"
    assert container._name == "triton-gate-run42-gw0-triton-dev"
    assert container._kwargs == {
        "labels": {"io.triton-gate.run-id": "run42-gw0", "io.triton-gate.role": "triton", "io.triton-gate.env": "dev"},
        "network_mode": "host",
    }
    assert container.volumes == {str(repository.resolve()): {"bind": "/models", "mode": "rw,rslave"}}
    assert container.ports == {}  # published ports need a bridge: host networking instead
    script = container._command[2]
    assert "--model-control-mode=explicit" in script and "--model-repository=/models" in script
    assert {_flag(script, f"{kind}-address") for kind in ("http", "grpc", "metrics")} == {"127.0.0.1"}
    assert endpoints.http == f"http://127.0.0.1:{_flag(script, 'http-port')}"
    assert endpoints.grpc == f"127.0.0.1:{_flag(script, 'grpc-port')}"
    assert endpoints.metrics == f"http://127.0.0.1:{_flag(script, 'metrics-port')}/metrics"
    assert isinstance(container._wait_strategy, dk.TritonModelsReady)
    assert container._wait_strategy.http_url == endpoints.http


def test_containers_of_an_engine_session_carry_its_label(plan, monkeypatch):
    """`python -m suite.targets.engine run` removes its session's containers by this label."""
    monkeypatch.setenv("GATE_DOCKER_SESSION", "s123")
    container, _ = plan.triton("dev", plan.workdir / "repo")
    assert container._kwargs["labels"]["io.triton-gate.session"] == "s123"


def test_mlflow_prometheus_alertmanager_containers(plan, tmp_path, monkeypatch):
    monkeypatch.delenv("GATE_DOCKER_SESSION", raising=False)
    mlflow, uri = plan.mlflow(tmp_path / "mlflow")
    assert mlflow.image == dk.MLFLOW_IMAGE and mlflow.env == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    assert mlflow.volumes[str((tmp_path / "mlflow").resolve())]["bind"] == "/mlflow"
    assert mlflow._command[:2] == ["mlflow", "server"] and "sqlite:////mlflow/mlflow.db" in mlflow._command
    assert mlflow._command[mlflow._command.index("--host") + 1] == "127.0.0.1"
    assert uri == f"http://127.0.0.1:{mlflow._command[mlflow._command.index('--port') + 1]}"
    assert mlflow._wait_strategy.url == f"{uri}/health" and mlflow._kwargs["network_mode"] == "host"
    args = ["--config.file=/w/prod/prometheus.yml", "--web.listen-address=127.0.0.1:19090"]
    prometheus = plan.monitoring("prometheus", "prod", args, tmp_path, "http://127.0.0.1:19090/-/ready")
    alertmanager = plan.monitoring(
        "alertmanager", "prod", ["--cluster.listen-address="], tmp_path, "http://127.0.0.1:19093/-/ready"
    )
    for server, role in ((prometheus, "prometheus"), (alertmanager, "alertmanager")):
        container = server.container
        assert container.image == getattr(plan.images, role)
        # host networking must not drop the run id labels (with_kwargs replaces the extra arguments)
        assert container._kwargs == {"labels": plan.labels(role, "prod"), "network_mode": "host"}
        assert container._wait_strategy.url.endswith("/-/ready")
        # the embedded stack's arguments and paths: the work folder is mounted at the same path
        assert container.volumes == {str(tmp_path.resolve()): {"bind": str(tmp_path.resolve()), "mode": "rw"}}
    assert prometheus.container._command == args and server.name == "alertmanager[prod]"


def test_docker_stack_builds_one_triton_per_env_without_an_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE["DOCKER_HOST"])
    stack = dk.DockerStack(tmp_path, ["dev", "prod"], dk.Images.choose(None, "25.01-py3"), "r1-main")
    images = {c.image for c in stack.containers()}
    assert images == {"nvcr.io/nvidia/tritonserver:25.01-py3", dk.MLFLOW_IMAGE}
    assert {c._kwargs["labels"]["io.triton-gate.run-id"] for c in stack.containers()} == {"r1-main"}
    assert stack.environments["prod"].repository == tmp_path / "model-repository" / "prod"
    ports = [re.findall(r"-port[= ](\d+)", " ".join(c._command)) for c in stack.containers()]
    ports = [p for found in ports for p in found]
    assert len(ports) == len(set(ports)) == 7  # 3 per Triton + MLflow, none shared
    stack.stop()  # nothing started: nothing to remove, and no engine is asked
    stack = dk.DockerStack(tmp_path, ["dev"], dk.Images(), "r2-main", triton_args=["--disable-auto-complete-config"])
    assert "--disable-auto-complete-config" in stack._server("dev").container._command[2]
    stack.stop()


def test_image_choice_option_beats_manifest_beats_default(tmp_path):
    platform = copy_reference(tmp_path)
    manifest = platform / "platform.yaml"
    manifest.write_text(manifest.read_text() + "images: {triton: 'registry.local/triton:1', mlflow: 'm:2'}\n")
    images = load_platform(manifest).spec.images
    assert dk.Images.choose(images) == dk.Images(triton="registry.local/triton:1", mlflow="m:2")
    assert dk.Images.choose(images, "nvcr.io/nvidia/tritonserver:25.01-py3").triton.endswith("25.01-py3")
    assert dk.triton_image("25.01-py3") == "nvcr.io/nvidia/tritonserver:25.01-py3"
    assert dk.triton_image("my.registry/tritonserver:x") == "my.registry/tritonserver:x"


def test_triton_command_loads_exactly_the_committed_models(tmp_path):
    """The container's start command, run by a real /bin/sh with a stand-in `tritonserver`."""
    bin_dir, repo = tmp_path / "bin", tmp_path / "models"
    bin_dir.mkdir()
    fake = bin_dir / "tritonserver"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    for name, committed in (("best_model", True), ("other", False), ("third", True)):
        (repo / name).mkdir(parents=True)
        if committed:
            (repo / name / "current.json").write_text("{}")
    argv = dk.triton_command(18000, 18001, 18002, str(repo))
    out = subprocess.run(argv, capture_output=True, text=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=True)
    args = out.stdout.split()
    assert [a for a in args if a.startswith("--load-model")] == ["--load-model=best_model", "--load-model=third"]
    assert "--model-control-mode=explicit" in args and f"--model-repository={repo}" in args
    assert "--http-address=127.0.0.1" in args and "--http-port=18000" in args and "--metrics-port=18002" in args
    assert "--disable-auto-complete-config" not in args

    # The platform's own options (manifest `triton.args`) reach the server as single arguments.
    argv = dk.triton_command(18000, 18001, 18002, str(repo), ["--disable-auto-complete-config", "--log-tag=a b"])
    out = subprocess.run(argv, capture_output=True, text=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=True)
    args = out.stdout.splitlines()
    assert "--disable-auto-complete-config" in args and "--log-tag=a b" in args
    assert args[-2:] == ["--load-model=best_model", "--load-model=third"]


class _FakeTriton:
    """An HTTP server answering like Triton: live, and a model ready only once told so."""

    def __init__(self) -> None:
        self.model_ready = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path == "/v2/health/live" or (self.path.endswith("/ready") and owner.model_ready)
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class _NoLogs:
    image = "nvcr.io/nvidia/tritonserver:24.10-py3"

    def get_logs(self):
        return b"I1126 model best_model loading\n", b"E1126 failed to load best_model\n"


def test_model_level_wait_is_not_satisfied_by_a_live_server(tmp_path):
    fake = _FakeTriton()
    (tmp_path / "best_model").mkdir()
    (tmp_path / "best_model" / "current.json").write_text("{}")
    wait = dk.TritonModelsReady(fake.url, tmp_path, timeout_s=0.6, interval_s=0.1)
    assert wait.pending() == ["best_model"]
    with pytest.raises(StackStartError) as raised:
        wait.wait_until_ready(_NoLogs())
    assert "models ['best_model'] READY within 1 s; still waiting for ['best_model']" in str(raised.value)
    assert "failed to load best_model" in str(raised.value)  # the container's log is attached
    fake.model_ready = True
    wait.wait_until_ready(_NoLogs())
    fake.server.shutdown()


def test_no_engine_gives_the_exact_skip_reason():
    reason = dk.engine_problem(NO_ENGINE, timeout=1)
    assert reason is not None
    assert reason.startswith("--target docker: no Docker engine answers at unix:///nonexistent/docker.sock (")
    assert reason.endswith("); start Docker or use --target local")
    assert dk.engine_address({}) == "unix:///var/run/docker.sock"


# -- k8s: real V1Pod objects, config loading -----------------------------------------------------


def _pod(name="triton-0", phase="Running", ready="True", containers=(("triton", True, None),)) -> V1Pod:
    statuses = []
    for cname, cready, waiting in containers:
        state = (
            V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting))
            if waiting
            else V1ContainerState(running=V1ContainerStateRunning())
        )
        statuses.append(
            V1ContainerStatus(
                name=cname, ready=cready, restart_count=3 if waiting else 0, image="i", image_id="", state=state
            )
        )
    return V1Pod(
        metadata=V1ObjectMeta(name=name, namespace="triton-dev"),
        status=V1PodStatus(
            phase=phase, conditions=[V1PodCondition(type="Ready", status=ready)], container_statuses=statuses
        ),
    )


def test_a_running_ready_pod_has_no_problem():
    assert k8s.pod_problems(_pod()) == []
    assert k8s.triton_pod_problems([_pod(), _pod("triton-1")], "triton-dev", "app=triton") == []


def test_a_pod_with_a_not_ready_container_is_reported():
    pod = _pod(ready="False", containers=(("triton", True, None), ("sidecar", False, "CrashLoopBackOff")))
    assert k8s.pod_problems(pod) == [
        "pod triton-0: condition Ready=False, expected True",
        "pod triton-0: container sidecar not ready (waiting: CrashLoopBackOff, 3 restarts)",
    ]


def test_pending_pods_and_no_pods_are_reported():
    assert k8s.pod_problems(_pod(phase="Pending", ready="False", containers=())) == [
        "pod triton-0: phase Pending, expected Running",
        "pod triton-0: condition Ready=False, expected True",
        "pod triton-0: no container statuses",
    ]
    problems = k8s.triton_pod_problems([], "triton-prod", "app=triton")
    assert problems[0].startswith("no pod in namespace triton-prod matches 'app=triton'")


_kubeconfig = kubeconfig


def test_kubeconfig_is_loaded_and_a_missing_one_is_explained(tmp_path):
    api = k8s.load_client(str(_kubeconfig(tmp_path / "kc", "https://10.9.8.7:6443")), environ={})
    assert api.configuration.host == "https://10.9.8.7:6443"
    assert api.configuration.api_key == {"BearerToken": "Bearer t0ken"}
    with pytest.raises(k8s.ClusterUnavailable):
        k8s.load_client(str(tmp_path / "absent"), environ={})
    with pytest.raises(k8s.ClusterUnavailable, match="context"):
        k8s.load_client(str(tmp_path / "kc"), context="nope", environ={})


def test_in_cluster_config_is_used_in_a_pod(monkeypatch):
    # In a pod without a mounted service account token the error names what is missing.
    environ = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert k8s.cluster_problem(environ=environ, timeout=1).startswith("--target k8s: no cluster: ")


def test_no_cluster_gives_the_exact_skip_reason(tmp_path):
    assert (
        k8s.cluster_problem(str(tmp_path / "absent"), environ={})
        == "--target k8s: no cluster: Invalid kube-config file. No configuration found."
    )
    closed = k8s.cluster_problem(str(_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9")), environ={}, timeout=2)
    assert closed.startswith("--target k8s: no cluster: ") and "127.0.0.1" in closed


def _cluster_platform(tmp_path: Path, extra: str = "") -> Path:
    """The reference platform with a `cluster:` section per environment, as the hook Job would use."""
    manifest = copy_reference(tmp_path) / "platform.yaml"
    raw = yaml.safe_load(manifest.read_text())
    for env, spec in raw["environments"].items():
        spec["cluster"] = {
            "triton_url": f"http://triton.{spec['namespace']}.svc:8000",
            "prometheus_url": f"http://prometheus.monitoring-{env}.svc:9090",
            "alertmanager_url": f"http://alertmanager.monitoring-{env}.svc:9093",
            "model_repository": str(tmp_path / "pvc" / env),
        }
    manifest.write_text(yaml.safe_dump(raw) + extra)
    return manifest


def test_manifest_names_cluster_endpoints_and_stays_strict(tmp_path):
    platform = load_platform(_cluster_platform(tmp_path, "registry: {mlflow_url: http://mlflow.mlops.svc:5000}\n"))
    stack = k8s.ClusterStack(platform, environ={})
    dev = stack.environments["dev"]
    assert dev.server.endpoints.http == "http://triton.triton-dev.svc:8000"
    assert dev.server.endpoints.grpc == "triton.triton-dev.svc:8001"
    assert dev.server.endpoints.metrics == "http://triton.triton-dev.svc:8002/metrics"
    assert dev.repository == tmp_path / "pvc" / "dev"
    assert stack.platform.environments["dev"].cluster.pod_selector == "app=triton"
    assert stack.mlflow.uri == "http://mlflow.mlops.svc:5000" and stack.dead_servers() == []
    with pytest.raises(k8s.UnsupportedOnCluster, match="kill Triton of dev"):
        dev.server.kill()
    typo = tmp_path / "typo"
    typo.mkdir()
    bad = _cluster_platform(typo)
    edit(bad, "prometheus_url:", "prometheus_ulr:")
    with pytest.raises(PlatformError, match=r"environments.dev.cluster.prometheus_ulr: unknown key"):
        load_platform(bad)


def test_k8s_stack_needs_cluster_sections_and_a_registry_to_deploy(tmp_path):
    with pytest.raises(GateError, match=r"environments \['dev', 'prod'\] .* have no `cluster:` section"):
        k8s.ClusterStack(load_platform(copy_reference(tmp_path) / "platform.yaml"))
    other = tmp_path / "o"
    other.mkdir()
    stack = k8s.ClusterStack(load_platform(_cluster_platform(other)), environ={})
    with pytest.raises(GateError, match="no MLflow to deploy from"):
        stack.registry()


def test_committed_on_cluster_reads_current_json_and_never_deploys(tmp_path):
    target = _target("k8s")
    stack = k8s.ClusterStack(load_platform(_cluster_platform(tmp_path)), environ={})
    folder = tmp_path / "pvc" / "dev" / "best_model"
    folder.mkdir(parents=True)
    with pytest.raises(k8s.NotCommitted, match="dev has no committed version: expected .*current.json"):
        target.committed_version(stack, "best_model", "dev")
    (folder / "current.json").write_text(
        '{"active_version": 7, "run_id": "r", "alias": "A", "updated_at_utc": "20261126T120000"}'
    )
    assert target.committed_version(stack, "best_model", "dev") == 7
    assert not target.deploys and target.guarded


def test_prometheus_target_evaluation():
    up = {"labels": {"job": "triton", "namespace": "triton-dev"}, "health": "up", "scrapeUrl": "u"}
    assert k8s.target_problems([up], "triton-dev", ["triton-prod"]) == []
    down = {**up, "health": "down", "lastError": "connection refused"}
    foreign = {"labels": {"job": "triton", "namespace": "triton-prod"}, "health": "up"}
    assert k8s.target_problems([down, foreign], "triton-dev", ["triton-prod"]) == [
        "target u is down: connection refused",
        "also scrapes the other environment: {'job': 'triton', 'namespace': 'triton-prod'}",
    ]
    assert k8s.target_problems([], "triton-dev", [])[0].startswith("no job=triton target in namespace triton-dev")


def test_live_alertmanager_config_routing_is_checked_and_can_fail(tmp_path):
    platform = load_platform(copy_reference(tmp_path) / "platform.yaml")
    config = (platform.base_dir / "monitoring" / "alertmanager-dev.yaml").read_text()
    assert k8s.live_routing_problems(platform, "dev", config, ["TritonDown"]) == []
    leaky = config.replace('namespace="triton-dev"', 'namespace=~"triton-.*"')  # dev's route matches prod too
    assert leaky != config
    wrong = k8s.live_routing_problems(platform, "dev", leaky, ["TritonDown"])
    assert any("namespace='triton-prod'" in w and "slack-dev" in w for w in wrong), wrong


# -- what a target can give: capabilities ---------------------------------------------------------

KILL_ON_K8S = (
    "--target k8s cannot give this scenario what it needs; skipped before it changed anything. Expected: "
    "control of the environment's Triton, to kill, stop or restart it (a crash or a pod restart, done by the "
    "gate). Seen: on --target k8s its Triton servers are not ones the gate started (a cluster's pods, which "
    "only the cluster restarts). To run it: --target local or --target docker."
)
EXTRA_ON_K8S = (
    "--target k8s cannot give this scenario what it needs; skipped before it changed anything. Expected: "
    "one more Triton, started by the gate on a repository of the scenario's (fixture make_environment). "
    "Seen: on --target k8s the gate starts no server. To run it: --target local or --target docker."
)
FILES_ON_K8S = (
    "--target k8s cannot give this scenario what it needs; skipped before it changed anything. Expected: "
    "the registry's stored model files on the gate's disk (MLflow's artifact store), to damage one. Seen: on "
    "--target k8s the registry is reached through its URL only, its artifact store is not on the gate's disk. "
    "To run it: --target local or --target docker."
)
SEQUENCES_ON_K8S = (
    "--target k8s cannot give this scenario what it needs; skipped before it changed anything. Expected: "
    "control of the environment's Triton, to kill, stop or restart it (a crash or a pod restart, done by the "
    "gate); and the registry's stored model files on the gate's disk (MLflow's artifact store), to damage one; "
    "and the gate's own verified baseline of every environment, restored before each example (fixture "
    "gate_baseline). Seen: on --target k8s its Triton servers are not ones the gate started (a cluster's pods, "
    "which only the cluster restarts); and the registry is reached through its URL only, its artifact store is "
    "not on the gate's disk; and the platform is the user's: the gate keeps no baseline of it and never resets "
    "it. To run it: --target local or --target docker."
)
# What dev's nightly selection (-m "smoke or deploy or chaos") cannot run on a cluster, and why.
NOT_ON_A_CLUSTER = {
    "test_chaos.py::test_fault_ends_in_the_committed_state[corrupt-model]": FILES_ON_K8S,
    "test_chaos.py::test_fault_ends_in_the_committed_state[triton-killed-during-load]": KILL_ON_K8S,
    "test_chaos.py::test_fault_ends_in_the_committed_state[triton-killed-during-smoke]": KILL_ON_K8S,
    "test_chaos.py::test_full_repository_ends_in_the_committed_state": EXTRA_ON_K8S,
    "test_deploy_contract.py::test_older_version_redeployed_is_served_also_after_a_restart": KILL_ON_K8S,
    "test_sequences.py::test_random_sequences_keep_the_invariants": SEQUENCES_ON_K8S,
}


def test_the_gates_own_stacks_can_give_everything_a_cluster_none_of_it():
    every = list(capabilities.CAPABILITIES)
    for name in ("local", "docker"):  # nothing ever skips there for a capability
        assert capabilities.unsupported(_target(name), every) is None
    assert capabilities.able_targets(every) == ["local", "docker"]
    cluster = _target("k8s")
    assert [c for c in every if capabilities.has(cluster, c)] == []
    assert capabilities.unsupported(cluster, [capabilities.SERVER_CONTROL]) == KILL_ON_K8S
    assert capabilities.unsupported(cluster, []) is None
    with pytest.raises(ValueError, match=r"unknown capabilities \['server_contrl'\]"):
        capabilities.unsupported(cluster, ["server_contrl"])


def test_needs_come_from_markers_then_fixtures():
    used = ["gate_stack", "gate_baseline", "make_environment"]
    assert capabilities.scenario_needs(["server_control"], used) == ["server_control", "baseline", "extra_environment"]
    # staged deploys and `committed` ask for the baseline only on a target that keeps one
    assert capabilities.scenario_needs([], ["gate_stack", "staged_deploy", "committed", "run_fault"]) == []


def test_faults_declare_what_they_ask_of_the_target():
    from suite.faults import CATALOGUE

    assert {name: fault.needs for name, fault in CATALOGUE.items() if fault.needs} == {
        "corrupt-model": ("registry_files",),
        "triton-killed-during-load": ("server_control",),
        "triton-killed-during-smoke": ("server_control",),
    }


def test_a_refused_kill_surfaces_as_the_refusal_at_once(tmp_path):
    """Not retried for the watcher's 60 s and reported as "the condition was never seen": raised."""
    from suite.faults import CATALOGUE, FaultContext

    stack = k8s.ClusterStack(load_platform(_cluster_platform(tmp_path)), environ={})
    environment = stack.environments["dev"]
    (environment.repository / "best_model" / "5").mkdir(parents=True)  # the fault's condition, seen at once
    ctx = FaultContext(environment, "best_model", registry=None, golden=None, register=lambda onnx, label: 5)
    fault = CATALOGUE["triton-killed-during-load"]
    begin = time.monotonic()
    with pytest.raises(k8s.UnsupportedOnCluster, match="the scenario wants to kill Triton of dev"):
        with fault.injected(ctx, 5):
            time.sleep(fault.delay_s + 1.0)  # the deploy: the kill is tried delay_s after the condition
    assert time.monotonic() - begin < 10
    assert len(ctx.notes) == 1 and ctx.notes[0].startswith(
        "server NOT killed: the target refused: --target k8s: the scenario wants to kill Triton of dev"
    )


# -- the plugin, black-box ------------------------------------------------------------------------

# A stand-in stack: these runs must never start servers, so a started one fails loudly.
CONFTEST = """
import pytest

class StandIn:
    def dead_servers(self):
        return []

@pytest.fixture(scope="session")
def gate_stack():
    return StandIn()
"""

SCENARIOS = """
import pytest

@pytest.mark.chaos
def test_chaos(env, gate_stack):
    pass

@pytest.mark.deploy
def test_deploy_everywhere(gate_stack):
    pass

@pytest.mark.smoke
def test_smoke(env, gate_stack):
    pass

def test_offline():
    pass
"""


@pytest.fixture
def scenarios(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_scenarios=SCENARIOS)
    return pytester


def _reasons(result) -> list:
    """Every skip reason, once per skipped test (-rs folds equal ones: `SKIPPED [3] file:line: reason`)."""
    reasons = []
    for line in result.stdout.lines:
        match = re.match(r"SKIPPED \[(\d+)\] [^ ]+: (.*)$", line)
        if match:
            reasons += [match.group(2)] * int(match.group(1))
    return sorted(reasons)


def test_unknown_target_is_a_usage_error(pytester):
    result = pytester.runpytest_subprocess("--target", "nomad")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--target: invalid choice: 'nomad' (choose from *local*docker*k8s*"])


def test_target_options_for_another_target_are_usage_errors(pytester):
    result = pytester.runpytest_subprocess("--triton-image", "25.01-py3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--triton-image applies to --target docker; seen --target local. "
            "Add --target docker or drop --triton-image.*"
        ]
    )


def test_local_target_runs_everything(scenarios):
    result = scenarios.runpytest_subprocess("-rs", "--report-dir", "out")
    result.assert_outcomes(passed=6)


def test_docker_without_engine_skips_stack_scenarios_with_the_exact_reason(scenarios, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE["DOCKER_HOST"])
    result = scenarios.runpytest_subprocess("--target", "docker", "-rs", "--report-dir", "out")
    result.assert_outcomes(passed=1, skipped=5)
    reason = dk.engine_problem(NO_ENGINE, timeout=1)
    assert _reasons(result) == [reason] * 5


def test_k8s_without_cluster_refuses_on_prod_and_skips_the_rest(scenarios, tmp_path):
    result = scenarios.runpytest_subprocess(
        "--target", "k8s", "--kubeconfig", str(tmp_path / "absent"), "-rs", "--report-dir", "out"
    )
    result.assert_outcomes(passed=1, skipped=5)
    no_cluster = "--target k8s: no cluster: Invalid kube-config file. No configuration found."
    reasons = _reasons(result)
    assert REFUSED_PROD_CHAOS in reasons  # chaos[prod]
    assert reasons.count(no_cluster) == 3  # chaos[dev], smoke[dev], smoke[prod]
    everywhere = [r for r in reasons if "(marked deploy)" in r]
    assert everywhere and "(the scenario has no env parameter, so it may touch every environment)" in everywhere[0]


def test_allow_destructive_lifts_the_refusal(scenarios, tmp_path):
    result = scenarios.runpytest_subprocess(
        "--target", "k8s", "--kubeconfig", str(tmp_path / "absent"), "--allow-destructive", "-rs", "--report-dir", "out"
    )
    result.assert_outcomes(passed=1, skipped=5)
    assert all(r.startswith("--target k8s: no cluster:") for r in _reasons(result)), _reasons(result)


def test_k8s_smoke_selection_has_nothing_to_refuse(scenarios, tmp_path):
    result = scenarios.runpytest_subprocess(
        "--target", "k8s", "--kubeconfig", str(tmp_path / "absent"), "-m", "smoke", "-rs", "--report-dir", "out"
    )
    result.assert_outcomes(skipped=2)
    assert not any("refused" in r for r in _reasons(result))


def test_a_misspelled_capability_is_a_usage_error(pytester):
    pytester.makepyfile(
        test_needs="""
        import pytest

        @pytest.mark.needs("server_contrl")
        def test_kills():
            pass
        """
    )
    result = pytester.runpytest_subprocess("--report-dir", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_kills: @pytest.mark.needs('server_contrl'): unknown capability; expected*"])


def test_gate_workdir_is_per_xdist_worker(pytester):
    pytester.makepyfile(
        test_w="""
        import os
        import pytest

        @pytest.mark.parametrize("i", range(6))
        def test_writes(i, gate_workdir):
            worker = os.environ.get("PYTEST_XDIST_WORKER")
            assert gate_workdir.name == worker
            (gate_workdir / f"{i}.txt").write_text(worker)
        """
    )
    workdir = pytester.path / "work"
    result = pytester.runpytest_subprocess("-n", "2", "--gate-workdir", str(workdir), "--report-dir", "out")
    result.assert_outcomes(passed=6)
    folders = sorted(p.name for p in workdir.iterdir())
    assert folders == ["gw0", "gw1"], folders
    assert sum(len(list((workdir / f).glob("*.txt"))) for f in folders) == 6


# -- k8s smoke against an already running platform ------------------------------------------------


@pytest.fixture(scope="module")
def running_platform(tmp_path_factory):
    """A platform that already runs and has v1 committed in dev and prod (here the embedded stack,
    started outside the gate), as the k8s target finds one."""
    from suite.deploy import Deployer
    from suite.golden import load_golden
    from suite.platform import default_platform_path
    from suite.reference_model import build_onnx
    from suite.targets.local import LocalStack

    reference = load_platform(default_platform_path())
    golden = load_golden(reference.golden_path())
    stack = LocalStack(tmp_path_factory.mktemp("running"), reference.environments, reference.spec.triton.args).start()
    try:
        stack.registry().register_onnx(reference.model.name, build_onnx("v1"), alias=reference.model.alias)
        for name, environment in stack.environments.items():
            result = Deployer(stack.registry(), environment, reference.model.name, golden).deploy(
                alias=reference.model.alias
            )
            assert result.ok, result.describe()
        yield stack
    finally:
        stack.stop()


def test_k8s_smoke_runs_against_a_running_platform_and_changes_nothing(running_platform, pytester, tmp_path):
    from suite.checks import snapshot

    api = KubeApiStandIn()
    manifest = copy_reference(tmp_path) / "platform.yaml"
    raw = yaml.safe_load(manifest.read_text())
    for name, spec in raw["environments"].items():
        environment = running_platform.environments[name]
        spec["cluster"] = cluster_section(environment.server.endpoints, str(environment.repository))
    manifest.write_text(yaml.safe_dump(raw))
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", api.url)
    before = {n: snapshot(e.repository, e.triton) for n, e in running_platform.environments.items()}
    argv = [
        "--pyargs",
        "scenarios",
        "-m",
        "smoke",
        "--target",
        "k8s",
        "--kubeconfig",
        str(kubeconfig),
        "--platform",
        str(manifest),
        "-rs",
        "--report-dir",
        "out",
        "-p",
        "no:randomly",
    ]

    result = pytester.runpytest_subprocess(*argv, timeout=300)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 26 and "failed" not in outcomes and "errors" not in outcomes, result.stdout.str()
    assert outcomes.get("skipped") == 4  # Prometheus and Alertmanager: the manifest names none
    assert "/api/v1/namespaces/triton-prod/pods?labelSelector=app.kubernetes.io%2Fname%3Dtriton" in api.requests
    after = {n: snapshot(e.repository, e.triton) for n, e in running_platform.environments.items()}
    assert {n: before[n].differences(after[n]) for n in before} == {"dev": [], "prod": []}

    api.ready["triton-prod"] = False  # and the check can fail: a pod whose container is not ready
    result = pytester.runpytest_subprocess(*argv, "-k", "pods_running", timeout=300)
    result.assert_outcomes(passed=1, failed=1, skipped=0)
    result.stdout.fnmatch_lines(
        [
            "*test_triton_pods_running_and_ready?prod?*",
            "*pod triton-7d9f-x2: container triton not ready (waiting: ContainerCreating, 0 restarts)*",
        ]
    )


# -- dev's nightly on k8s: what a cluster cannot give skips at setup, saying why ------------------

DEV_NIGHTLY = "smoke or deploy or chaos"  # deploy/gitops/overlays/dev/nightly-patch.yaml, without any -k


def _dev_only_manifest(tmp_path: Path, cluster: dict, mlflow_url: str) -> Path:
    """The reference platform reduced to dev on a cluster, with an MLflow: what dev's nightly mounts."""
    manifest = copy_reference(tmp_path) / "platform.yaml"
    raw = yaml.safe_load(manifest.read_text())
    raw["environments"] = {"dev": {**raw["environments"]["dev"], "cluster": cluster}}
    raw["registry"] = {"mlflow_url": mlflow_url}
    manifest.write_text(yaml.safe_dump(raw))
    return manifest


def _outcomes(report_dir: Path) -> dict:
    """Scenario (file::name) -> (outcome, skip reason), from the run's summary.json."""
    summary = json.loads((report_dir / "latest" / "summary.json").read_text())
    return {
        s["nodeid"].split("scenarios/", 1)[-1]: (s["outcome"], s["message"].removeprefix("Skipped: "))
        for s in summary["scenarios"]
    }


def test_k8s_skips_what_a_cluster_cannot_give_before_asking_the_cluster(pytester, tmp_path):
    """Dev's nightly selection with no cluster at all (so it costs seconds): each scenario that needs
    what a cluster cannot give is skipped at setup with its own reason, before anything else."""
    manifest = _dev_only_manifest(
        tmp_path, {"triton_url": "http://127.0.0.1:9", "model_repository": str(tmp_path / "pvc")}, "http://127.0.0.1:9"
    )
    pytester.runpytest_subprocess(
        "--pyargs",
        "scenarios",
        "-m",
        DEV_NIGHTLY,
        "--target",
        "k8s",
        "--kubeconfig",
        str(tmp_path / "absent"),
        "--platform",
        str(manifest),
        "--report-dir",
        "out",
        "-p",
        "no:randomly",
        timeout=120,
    )
    outcomes = _outcomes(pytester.path / "out")
    unable = {name: reason for name, (outcome, reason) in outcomes.items() if "cannot give" in reason}
    assert unable == NOT_ON_A_CLUSTER
    others = {outcomes[name] for name in outcomes if name not in unable}
    assert others == {("skipped", "--target k8s: no cluster: Invalid kube-config file. No configuration found.")}
    assert len(outcomes) > 50  # the selection is dev's nightly, not a corner of it


def test_k8s_dev_nightly_against_a_running_platform_skips_and_puts_the_alias_back(running_platform, pytester, tmp_path):
    """One scenario per missing capability skips; the two that move the registry's alias on the
    user's MLflow (the alias-moved race, and the reference versions a deploy by alias uses) pass
    and leave it where the platform had it."""
    api = KubeApiStandIn()
    dev = running_platform.environments["dev"]
    cluster = cluster_section(dev.server.endpoints, str(dev.repository))
    manifest = _dev_only_manifest(tmp_path, cluster, running_platform.mlflow.uri)
    registry = running_platform.registry()
    alias_before = registry.alias_version("best_model", "A")
    one_per_need = (
        "alias_moved_during or by_version_then_by_alias or triton-killed-during-load or corrupt-model "
        "or full_repository or after_a_restart or random_sequences"
    )
    result = pytester.runpytest_subprocess(
        "--pyargs",
        "scenarios",
        "-m",
        DEV_NIGHTLY,
        "-k",
        one_per_need,
        "--target",
        "k8s",
        "--kubeconfig",
        str(_kubeconfig(tmp_path / "kubeconfig", api.url)),
        "--platform",
        str(manifest),
        "--report-dir",
        "out",
        "-p",
        "no:randomly",
        timeout=600,
    )
    outcomes = _outcomes(pytester.path / "out")
    skipped = {n: r for n, r in NOT_ON_A_CLUSTER.items() if "triton-killed-during-smoke" not in n}
    assert outcomes == {
        "test_deploy_contract.py::test_alias_moved_during_a_deploy_records_what_is_served": ("passed", ""),
        "test_deploy_path.py::test_deploy_by_version_then_by_alias[dev]": ("passed", ""),
        **{name: ("skipped", reason) for name, reason in skipped.items()},
    }, result.stdout.str()
    assert registry.alias_version("best_model", "A") == alias_before
    assert dev.triton.ready()


# -- a new target: one module and one line in suite.targets.TARGETS -------------------------------

NEW_TARGET = '''
"""A target written the way the README's "Extending" section says: one module, one class."""
from suite.targets.local import LocalStack
from suite.targets.protocol import TargetOptions


class WorkdirTarget:
    name, title, deploys, guarded = "workdir", "workdir stack", True, False
    accepts = ("allow_destructive",)

    def __init__(self, options: TargetOptions):
        self.options = options

    def problem(self):
        return None

    def start_stack(self, platform, workdir):
        stack = LocalStack(workdir / "own", platform.environments, platform.spec.triton.args).start()
        (workdir / "started-by-the-new-target").write_text("yes")
        return stack

    def monitoring(self, platform, stack, workdir):
        from suite.monitoring_stack import for_platform

        return for_platform(platform, stack.environments, workdir)

    def committed_version(self, stack, model, env):
        raise NotImplementedError
'''

REGISTER = """
from suite.targets import TARGETS

TARGETS["workdir"] = "new_target:WorkdirTarget"  # the one registry line
"""


def test_a_new_target_is_one_module_and_one_registry_line(pytester):
    """Nothing else of the gate names a target: the smoke subset runs on real servers it started."""
    pytester.makepyfile(new_target=NEW_TARGET, register_new_target=REGISTER)
    # -p: the registry line must run before the command line is parsed, as an edit of TARGETS would.
    result = pytester.runpytest_subprocess(
        "-p",
        "register_new_target",
        "--pyargs",
        "scenarios",
        "-m",
        "smoke",
        "--target",
        "workdir",
        "--gate-workdir",
        "work",
        "-p",
        "no:randomly",
        timeout=600,
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 10 and "failed" not in outcomes and "errors" not in outcomes, (
        result.stdout.str()
    )
    assert (pytester.path / "work" / "main" / "started-by-the-new-target").read_text() == "yes"
