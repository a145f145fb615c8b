"""Alert rules and routing on real Prometheus and Alertmanager: right channel, never the other env's."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import pytest
import requests

from suite.monitoring_config import fires_when_target_down, metric_names, rules_for
from suite.monitoring_stack import find_binary
from suite.routing import NULL, LabelSet, RoutingPolicy, amtool_receivers
from suite.targets.capabilities import SERVER_CONTROL
from suite.timings import (
    FIRING_CHAIN_S,
    LATENCY_ALERT_S,
    LATENCY_RESOLVED_S,
    MISROUTE_WINDOW_S,
    MODEL_LOAD_S,
    ROUTED_DELIVERY_S,
    TARGET_UP_S,
    TRITON_DOWN_ALERT_S,
    TRITON_DOWN_RESOLVED_S,
)
from suite.waiting import WaitTimeout, let_time_pass, wait_for

pytestmark = pytest.mark.alerts


def _am(gate_monitoring, env):
    monitoring = gate_monitoring.environments[env]
    if monitoring.alertmanager_config is None:
        pytest.skip(f"the platform manifest names no Alertmanager config for {env} (monitoring.alertmanager)")
    return monitoring


def _alertnames(gate_platform, env):
    rules = rules_for(gate_platform, env)
    return sorted({r["alert"] for r in rules.alerts}) if rules else ["TritonDown"]


# -- static checks with the real tools ------------------------------------------------------------


def test_promtool_check_rules(env, gate_monitoring):
    monitoring = gate_monitoring.environments[env]
    if monitoring.rules_path is None:
        pytest.skip(f"the platform manifest names no rules for {env} (monitoring.rules)")
    proc = subprocess.run(
        [find_binary(["promtool"], "prometheus"), "check", "rules", str(monitoring.rules_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"{env}: promtool check rules failed:\n{proc.stdout}{proc.stderr}"


def test_amtool_check_config(env, gate_monitoring):
    monitoring = _am(gate_monitoring, env)
    proc = subprocess.run(
        [
            find_binary(["amtool"], "prometheus-alertmanager"),
            "check-config",
            str(monitoring.alertmanager_config.source),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"{env}: amtool check-config failed:\n{proc.stdout}{proc.stderr}"


def test_promtool_rule_unit_tests(env, gate_platform, tmp_path):
    """`promtool test rules` with the unit tests shipped beside the rules (`<rules dir>/tests/*.yaml`)."""
    rules = rules_for(gate_platform, env)
    if rules is None:
        pytest.skip(f"the platform manifest names no rules for {env}")
    tests = sorted((rules.source.parent / "tests").glob("*.yaml"))
    if not tests:
        pytest.fail(
            f"{env}: no promtool unit tests next to {rules.source} (expected {rules.source.parent}/tests/*.yaml): "
            f"no alert is proven to fire, or to stay silent, before it reaches production"
        )
    (tmp_path / f"{rules.source.stem}.rules.yaml").write_text(rules.to_yaml())  # CR -> plain rule file
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
    proc = subprocess.run(
        [find_binary(["promtool"], "prometheus"), "test", "rules", *[t.name for t in tests]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, f"{env}: promtool test rules failed:\n{proc.stdout}{proc.stderr}"


def test_every_alert_carries_the_namespace_label(env, gate_platform):
    """Routing keys on `namespace`: an alert whose result drops it can only reach 'null'."""
    from suite.monitoring_config import keeps_label

    rules = rules_for(gate_platform, env)
    if rules is None:
        pytest.skip(f"the platform manifest names no rules for {env}")
    missing = [
        r["alert"]
        for r in rules.alerts
        if "namespace" not in (r.get("labels") or {}) and not keeps_label(str(r["expr"]), "namespace")
    ]
    assert not missing, (
        f"{env}: alerts {missing} carry no `namespace` label (their expression aggregates it away "
        f"and they set none), so Alertmanager cannot route them to an environment's channel"
    )


# -- routing ------------------------------------------------------------------------------------


def test_routing_table_with_amtool(env, gate_monitoring, gate_platform):
    monitoring = _am(gate_monitoring, env)
    policy = RoutingPolicy(gate_platform)
    wrong = []
    for labels in policy.label_sets(_alertnames(gate_platform, env)):
        reached = amtool_receivers(monitoring.alertmanager_config.source, labels.as_dict())
        expected = policy.expected(env, labels.as_dict())
        if reached != expected or reached & policy.forbidden(env):
            wrong.append(f"{labels} -> {sorted(reached)}, policy says {sorted(expected)}")
    assert not wrong, (
        f"{env}: Alertmanager {monitoring.alertmanager_config.source} routes against the policy "
        f"(channel {policy.receiver(env)!r} gets namespaces matching {policy.patterns(env)}, "
        f"everything else 'null'):\n  " + "\n  ".join(wrong)
    )


def test_routing_table_on_the_live_alertmanager(env, gate_monitoring, gate_platform):
    """The same table, as alerts posted to the running Alertmanager and caught at the receivers."""
    monitoring = _am(gate_monitoring, env)
    policy = RoutingPolicy(gate_platform)
    run = uuid.uuid4().hex[:6]
    probes = {}
    now = datetime.now(timezone.utc)
    alerts = []
    for i, labels in enumerate(policy.label_sets(["GateRoutingProbe"])):
        name = f"GateRoutingProbe_{run}_{i}_"  # delimited: _1_ is no substring of _11_
        body = {**labels.as_dict(), "alertname": name}
        probes[name] = (labels, policy.expected(env, labels.as_dict()))
        alerts.append(
            {
                "labels": body,
                "annotations": {"summary": f"routing probe {name}"},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(minutes=5)).isoformat(),
            }
        )
    since = time.time()
    response = requests.post(f"{monitoring.alertmanager_url}/api/v2/alerts", json=alerts, timeout=10)
    assert response.status_code == 200, response.text
    expected_hits = {n for n, (_, exp) in probes.items() if exp != {NULL}}
    try:
        wait_for(
            lambda: {n for n in probes for note in gate_monitoring.capture.received(since) if n in str(note.body)},
            until=lambda seen: expected_hits <= seen,
            timeout_s=ROUTED_DELIVERY_S,
            interval_s=0.25,
            awaiting=f"{env}: the routing probes' deliveries",
        )
    except WaitTimeout:
        pass  # the missing deliveries are judged below, with the wrong ones
    let_time_pass(MISROUTE_WINDOW_S, why="must stay silent: wrong deliveries get the same chance to arrive")
    wrong = []
    notes = gate_monitoring.capture.received(since)
    ended = datetime.now(timezone.utc).isoformat()
    for alert in alerts:  # resolve the probes: they must not linger into later scenarios
        alert["endsAt"] = ended
    requests.post(f"{monitoring.alertmanager_url}/api/v2/alerts", json=alerts, timeout=10)
    for name, (labels, expected) in probes.items():
        reached = {note.receiver for note in notes if name in str(note.body)} or {NULL}
        if reached != expected:
            wrong.append(f"{labels} -> {sorted(reached)}, policy says {sorted(expected)}")
    assert not wrong, f"{env}: the live Alertmanager delivered against the policy:\n  " + "\n  ".join(wrong)


def test_routing_property_over_generated_label_sets(env, gate_monitoring, gate_platform, gate_hypothesis):
    # Imported here: hypothesis takes most of a second to import, which `-m smoke` would pay for nothing.
    from hypothesis import given, settings
    from hypothesis import strategies as st

    monitoring = _am(gate_monitoring, env)
    policy = RoutingPolicy(gate_platform)
    known = sorted({value for labels in policy.label_sets(["x"]) for key, value in labels.labels if key == "namespace"})
    namespaces = st.one_of(
        st.none(),
        st.sampled_from(known),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=24),
        st.builds(lambda a, b: a + b, st.sampled_from(known), st.sampled_from(["-x", "x", "-canary"])),
    )
    alertnames = st.one_of(
        st.sampled_from(_alertnames(gate_platform, env)), st.from_regex(r"[A-Z][a-zA-Z]{0,20}", fullmatch=True)
    )

    @settings(max_examples=60, deadline=None, database=None)
    @given(namespace=namespaces, alertname=alertnames, severity=st.sampled_from(["critical", "warning", "info"]))
    def routes_by_policy(namespace, alertname, severity):
        labels = {"alertname": alertname, "severity": severity}
        if namespace is not None:
            labels["namespace"] = namespace
        reached = amtool_receivers(monitoring.alertmanager_config.source, labels)
        assert reached == policy.expected(env, labels), (
            f"{env}: {LabelSet.of(**labels)} reached {sorted(reached)}, policy says {sorted(policy.expected(env, labels))}"
        )
        assert not reached & policy.forbidden(env)

    routes_by_policy()


# -- live firing ------------------------------------------------------------------------------------


def _alert_on(gate_platform, env, predicate, what):
    rules = rules_for(gate_platform, env)
    found = [r for r in (rules.alerts if rules else []) if predicate(r)]
    if not found:
        pytest.fail(
            f"{env}: the platform has no alert for {what} (its rules: "
            f"{[r['alert'] for r in rules.alerts] if rules else 'none'})"
        )
    return found[0]["alert"]


def _wait_notification(capture, since, receiver_ok, alertname, *, firing: bool, timeout_s: float):
    """The first matching notification, or None when none came within `timeout_s`: the caller
    records the miss for the report, then fails with its own evidence."""

    def matching():
        return next(
            (
                note
                for note in capture.received(since)
                if alertname in str(note.body) and receiver_ok(note.receiver) and note.firing == firing
            ),
            None,
        )

    try:
        return wait_for(
            matching,
            timeout_s=timeout_s,
            interval_s=0.1,
            awaiting=f"a {'firing' if firing else 'resolved'} {alertname} notification",
        )
    except WaitTimeout:
        return None


def _record_delivery(request, alertname: str, env: str, receiver: str, fault: str, delay) -> None:
    """For the report: which alert reached which channel, how long after the fault (None: never)."""
    request.node.user_properties.append(
        (
            "alert",
            json.dumps(
                {
                    "alert": alertname,
                    "env": env,
                    "receiver": receiver,
                    "fault": fault,
                    "delay_s": round(delay, 2) if delay is not None else None,
                }
            ),
        )
    )


def _scraped_since(monitoring, since: float) -> bool:
    """Every Triton target of this Prometheus was scraped after `since` (the sample time of `up`)."""
    samples = monitoring.query('timestamp(up{job="triton"})')
    return bool(samples) and all(float(sample["value"][1]) > since for sample in samples)


def test_healthy_platform_under_traffic_sends_no_alert(gate_monitoring, gate_platform, committed, traffic):
    for env in gate_platform.environments:
        committed(env)
    settled_from = time.time()  # Prometheus must see the servers as the baseline left them
    for env, monitoring in gate_monitoring.environments.items():
        wait_for(
            lambda: _scraped_since(monitoring, settled_from),
            timeout_s=TARGET_UP_S,
            interval_s=0.2,
            awaiting=f"{env}'s Prometheus scraping its Triton after the baseline was restored",
        )
    since = time.time()
    for env in gate_platform.environments:
        traffic(env, 6.0)
    let_time_pass(FIRING_CHAIN_S, why="must stay silent: rule evaluation, shortened `for:` and group_wait")
    firing = {
        env: [a["labels"].get("alertname") for a in m.alerts() if a["state"] == "firing"]
        for env, m in gate_monitoring.environments.items()
    }
    notes = [
        f"{n.receiver}: {n.title}"
        for n in gate_monitoring.capture.received(since)
        if n.firing and "GateRoutingProbe" not in str(n.body)
    ]  # probes of the routing table are not rules
    assert not any(firing.values()) and not notes, (
        f"alerts fire on a healthy platform under steady traffic (a rule that fires when nothing is wrong "
        f"is a defect too): firing in Prometheus {firing}; notifications {notes}"
    )


@pytest.mark.needs(SERVER_CONTROL)  # it kills Triton
def test_triton_down_reaches_its_environment_only(env, gate_monitoring, gate_platform, gate_envs, committed, request):
    alertname = _alert_on(gate_platform, env, lambda r: fires_when_target_down(str(r["expr"])), "Triton being down")
    policy = RoutingPolicy(gate_platform)
    committed(env)
    server = gate_envs[env].server
    since = time.time()
    server.kill()
    try:
        note = _wait_notification(
            gate_monitoring.capture,
            since,
            lambda r: r == policy.receiver(env),
            alertname,
            firing=True,
            timeout_s=TRITON_DOWN_ALERT_S,
        )
        delay = (note.received_at - since) if note else None
    finally:
        server.start()
    _record_delivery(request, alertname, env, policy.receiver(env), "triton-killed", delay)
    others = [
        n
        for n in gate_monitoring.capture.received(since)
        if alertname in str(n.body) and n.receiver != policy.receiver(env) and n.receiver in policy.forbidden(env)
    ]
    assert note is not None, (
        f"{env}: Triton killed, but {alertname} did not reach {policy.receiver(env)} within "
        f"{TRITON_DOWN_ALERT_S:.0f} s; "
        f"received: {[(n.receiver, n.title) for n in gate_monitoring.capture.received(since)]}"
    )
    assert not others, (
        f"{env}: {alertname} also reached another environment's channel: {[(n.receiver, n.title) for n in others]}"
    )
    resolved = _wait_notification(
        gate_monitoring.capture,
        note.received_at,
        lambda r: r == policy.receiver(env),
        alertname,
        firing=False,
        timeout_s=TRITON_DOWN_RESOLVED_S,
    )
    assert resolved is not None, f"{env}: {alertname} was not resolved after Triton came back"
    print(
        f"{env}: {alertname} delivered {delay:.1f} s after the kill, resolved {resolved.received_at - since:.1f} s after"
    )


def _serve_directly(triton, repository, model: str, version: int, onnx_bytes: bytes) -> None:
    """Load `version` into the live model from its bytes, as Triton's load API allows."""
    from suite import model_config
    from suite.model_repo import ModelFolder

    config = model_config.pinned(model_config.read(ModelFolder(repository, model).config_path), version)
    triton.load(model, model_config.to_json(config), files={f"file:{version}/model.onnx": onnx_bytes})
    triton.wait_version_ready(model, version, timeout_s=MODEL_LOAD_S)


def test_slow_model_fires_latency_alert_in_its_environment_only(
    trial_env,
    gate_monitoring,
    gate_platform,
    gate_envs,
    gate_golden,
    committed,
    deploy,
    register_model,
    reference_versions,
    request,
):
    from suite.probe import TrafficProbe
    from suite.reference_model import slow_onnx_for

    env = trial_env
    alertname = _alert_on(
        gate_platform,
        env,
        lambda r: "nv_inference_request_duration_us" in metric_names(str(r["expr"])),
        "a high inference latency",
    )
    policy = RoutingPolicy(gate_platform)
    committed(env)
    slow_bytes = slow_onnx_for(0.8)
    slow = register_model(slow_bytes, "latency-alert")
    since = time.time()  # the fault begins with the slow version's deploy (its smoke requests count too)
    result = deploy(env, version=slow, smoke_timeout=10.0)
    if not result.ok:
        # The platform's deployer refused a version answering in 0.8 s (its smoke check bounds
        # latency more tightly): the alert is about serving, so make the model slow behind it.
        _serve_directly(gate_envs[env].triton, gate_envs[env].repository, gate_platform.model.name, slow, slow_bytes)
        request.node.user_properties.append(
            (
                "note",
                f"the platform's deployer refused the slow v{slow}; it was "
                f"loaded directly to exercise the alert: {result.message[-300:]}",
            )
        )
    probes = [
        TrafficProbe(
            gate_envs[env].triton,
            gate_platform.model.name,
            gate_golden,
            interval_s=0.0,
            timeout_s=30,
            max_s=LATENCY_ALERT_S + 15,
        )
        for _ in range(3)
    ]  # load until the alert came
    try:
        with ExitStack() as running:
            for probe in probes:
                running.enter_context(probe)
            note = _wait_notification(
                gate_monitoring.capture,
                since,
                lambda r: r == policy.receiver(env),
                alertname,
                firing=True,
                timeout_s=LATENCY_ALERT_S,
            )
    finally:
        good = deploy(env, version=reference_versions["v2"].version)
    delay = note.received_at - since if note else None
    _record_delivery(request, alertname, env, policy.receiver(env), "slow-model", delay)
    assert good.ok, good.message
    assert note is not None, (
        f"{env}: a model answering in ~0.8 s under load did not bring {alertname} to "
        f"{policy.receiver(env)} within {LATENCY_ALERT_S:.0f} s; Prometheus alerts: "
        f"{[(a['labels'], a['state']) for a in gate_monitoring.environments[env].alerts()]}"
    )
    others = [
        n
        for n in gate_monitoring.capture.received(since)
        if alertname in str(n.body) and n.receiver in policy.forbidden(env)
    ]
    assert not others, (
        f"{alertname} also reached another environment's channel: {[(n.receiver, n.title) for n in others]}"
    )
    resolved = _wait_notification(
        gate_monitoring.capture,
        note.received_at,
        lambda r: r == policy.receiver(env),
        alertname,
        firing=False,
        timeout_s=LATENCY_RESOLVED_S,
    )
    assert resolved is not None, f"{env}: {alertname} did not resolve after the slow version was replaced"
    print(
        f"{env}: {alertname} delivered {delay:.1f} s after the slow version's deploy began, "
        f"resolved {resolved.received_at - since:.1f} s after"
    )
