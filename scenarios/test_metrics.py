"""Metrics are scraped per environment and everything rules and dashboards use really exists."""

from __future__ import annotations

import pytest

from suite.monitoring_config import load_dashboard, metric_names, panel_queries, resolve_variables, rules_for
from suite.timings import PANEL_DATA_S, SERIES_S, TARGET_UP_S
from suite.waiting import WaitTimeout, wait_for

pytestmark = pytest.mark.metrics


@pytest.fixture
def env(request, committed):
    committed(request.param)
    return request.param


def test_prometheus_scrapes_its_own_triton_and_no_other(env, gate_monitoring, gate_platform):
    monitoring = gate_monitoring.environments[env]
    namespace = gate_platform.environments[env].namespace
    others = {spec.namespace for name, spec in gate_platform.environments.items() if name != env}

    def own_up():
        return [t for t in monitoring.targets() if t["labels"].get("namespace") == namespace and t["health"] == "up"]

    try:
        up = wait_for(
            own_up,
            timeout_s=TARGET_UP_S,
            interval_s=0.25,
            awaiting=f"a Triton target up in namespace {namespace} in {env}'s Prometheus",
        )
    except WaitTimeout:
        up = []  # asserted next, with every active target as evidence
    targets = monitoring.targets()
    assert up, (
        f"{env}: Prometheus ({monitoring.release}) has no Triton target up in namespace {namespace}; "
        f"active targets: {[(t['labels'], t['health'], t.get('lastError')) for t in targets]}"
    )
    labels = up[0]["labels"]
    for key, value in {"job": "triton", "service": "triton", "endpoint": "metrics"}.items():
        assert labels.get(key) == value, (
            f"{env}: target label {key}={labels.get(key)!r}, kube-prometheus sets {value!r}"
        )
    assert "pod" in labels and "instance" in labels, f"{env}: target lacks pod/instance labels: {labels}"
    foreign = [t["labels"] for t in targets if t["labels"].get("namespace") in others]
    assert not foreign, f"{env}: Prometheus {monitoring.release} also scrapes the other environment: {foreign}"


def _used_metrics(gate_platform, env):
    used = {}
    rules = rules_for(gate_platform, env)
    recorded = set()
    if rules:
        recorded = {r["record"] for r in rules.rules if "record" in r}
        for rule in rules.rules:
            for name in metric_names(str(rule["expr"])):
                used.setdefault(name, []).append(f"rule {rule.get('alert') or rule.get('record')}")
    dashboard = gate_platform.spec.monitoring.dashboard if gate_platform.spec.monitoring else None
    if dashboard:
        for query in panel_queries(load_dashboard(gate_platform.resolve(dashboard))):
            for name in metric_names(resolve_variables(query.expr, _variables(gate_platform, env))):
                used.setdefault(name, []).append(f"panel {query.panel!r}")
    for name in recorded | {"up", "ALERTS", "ALERTS_FOR_STATE"}:  # made by Prometheus, not Triton
        used.pop(name, None)
    return used


def _variables(gate_platform, env):
    return {
        "namespace": gate_platform.environments[env].namespace,
        "model": gate_platform.model.name,
        "__rate_interval": "20s",
        "__interval": "1s",
        "__range": "5m",
        "datasource": "prometheus",
        "job": "triton",
        "instance": ".*",
        "pod": ".*",
        "version": ".*",
    }


def test_every_metric_in_rules_and_panels_exists_in_triton(env, gate_envs, gate_platform, gate_golden, traffic):
    traffic(env, 0.5)
    exposed = gate_envs[env].triton.metrics().names()
    used = _used_metrics(gate_platform, env)
    missing = {name: where for name, where in used.items() if name not in exposed}
    assert not missing, (
        f"{env}: metrics used by the platform's rules or dashboard do not exist in Triton's "
        f"/metrics (a typo, or a metric this Triton does not have): "
        + "; ".join(f"{n} (in {', '.join(w)})" for n, w in sorted(missing.items()))
    )


def test_inference_series_exist_and_increase(env, gate_monitoring, gate_platform, traffic):
    monitoring = gate_monitoring.environments[env]
    namespace = gate_platform.environments[env].namespace
    counters = sorted(
        n
        for n in _used_metrics(gate_platform, env)
        if n.startswith("nv_inference_") and n not in ("nv_inference_pending_request_count",) and "failure" not in n
    )
    assert counters, f"{env}: the rules and dashboard use no nv_inference_* counter at all"

    def total(name):
        result = monitoring.query(f'sum({name}{{job="triton", namespace="{namespace}"}})')
        return float(result[0]["value"][1]) if result else None

    def totals():
        return {n: total(n) for n in counters}

    try:
        before = wait_for(
            totals,
            until=lambda now: all(v is not None for v in now.values()),
            timeout_s=SERIES_S,
            interval_s=0.25,
            awaiting=f"series of {counters} in {namespace}",
        )
    except WaitTimeout as timeout:
        before = timeout.last_value  # asserted next, naming the missing series
    assert all(v is not None for v in before.values()), (
        f"{env}: Prometheus has no series for {[n for n, v in before.items() if v is None]} in {namespace}"
    )
    traffic(env, 2.0)
    try:
        wait_for(
            totals,
            until=lambda now: all(now[n] > before[n] for n in counters),
            timeout_s=SERIES_S,
            interval_s=0.25,
            awaiting=f"series of {counters} in {namespace} to increase",
        )
    except WaitTimeout as timeout:
        pytest.fail(f"{env}: series did not increase after traffic: {before} -> {timeout.last_value}")


def test_every_dashboard_panel_returns_data(env, gate_monitoring, gate_platform, traffic):
    dashboard = gate_platform.spec.monitoring.dashboard if gate_platform.spec.monitoring else None
    if not dashboard:
        pytest.skip("the platform manifest names no dashboard (monitoring.dashboard)")
    monitoring = gate_monitoring.environments[env]
    traffic(env, 3.0)
    empty = []
    for query in panel_queries(load_dashboard(gate_platform.resolve(dashboard))):
        expr = resolve_variables(query.expr, _variables(gate_platform, env))
        try:
            wait_for(
                lambda: monitoring.query(expr),
                timeout_s=PANEL_DATA_S,
                interval_s=0.25,
                awaiting=f"data for panel {query.panel!r}",
            )
        except WaitTimeout:
            empty.append(f"{query.panel!r}: {expr}")
    assert not empty, f"{env}: dashboard panels show no data after traffic: " + " | ".join(empty)
