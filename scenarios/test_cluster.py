"""`--target k8s` post-deploy smoke: pods, Service, Prometheus targets and alert routing, read-only."""

from __future__ import annotations

import pytest

from suite.monitoring_config import rules_for
from suite.targets.k8s import list_triton_pods, live_routing_problems, target_problems, triton_pod_problems
from suite.timings import SERVER_READY_S
from suite.waiting import WaitTimeout

pytestmark = pytest.mark.smoke


def _cluster(gate_platform, env):
    cluster = gate_platform.environments[env].cluster
    assert cluster is not None  # ClusterStack refused a manifest without it before any test ran
    return cluster


def test_triton_pods_running_and_ready(env, gate_cluster, gate_platform):
    namespace = gate_platform.environments[env].namespace
    selector = _cluster(gate_platform, env).pod_selector
    problems = triton_pod_problems(list_triton_pods(gate_cluster["api"], namespace, selector), namespace, selector)
    assert not problems, f"{env}: Triton pods in {namespace} are not all serving:\n" + "\n".join(problems)


def test_triton_service_answers(env, gate_cluster):
    triton = gate_cluster["stack"].environments[env].triton
    assert triton.live(), f"{env}: the Service {triton.http_url} did not answer /v2/health/live with 200"
    try:  # 400 for ~1.5 s while a deploy loads (Triton #7014)
        triton.wait_server_ready(SERVER_READY_S)
    except WaitTimeout:
        pytest.fail(
            f"{env}: {triton.http_url}/v2/health/ready did not answer 200 within {SERVER_READY_S:.0f} s; "
            f"index: {triton.index()}"
        )


def test_prometheus_scrapes_its_triton_and_no_other(env, gate_cluster, gate_platform):
    monitoring = gate_cluster["monitoring"][env]
    if not monitoring.prometheus_url:
        pytest.skip(f"{env} names no `cluster.prometheus_url` in the manifest")
    others = [s.namespace for n, s in gate_platform.environments.items() if n != env]
    problems = target_problems(monitoring.targets(), gate_platform.environments[env].namespace, others)
    assert not problems, f"{env}: Prometheus {monitoring.prometheus_url}:\n" + "\n".join(problems)


def test_alert_routing_of_the_running_alertmanager(env, gate_cluster, gate_platform):
    monitoring = gate_cluster["monitoring"][env]
    if not monitoring.alertmanager_url:
        pytest.skip(f"{env} names no `cluster.alertmanager_url` in the manifest")
    rules = rules_for(gate_platform, env)
    alertnames = sorted({r["alert"] for r in rules.alerts}) if rules else ["TritonDown"]
    wrong = live_routing_problems(gate_platform, env, monitoring.alertmanager_config(), alertnames)
    assert not wrong, (
        f"{env}: the Alertmanager at {monitoring.alertmanager_url} routes against the policy:\n  " + "\n  ".join(wrong)
    )
