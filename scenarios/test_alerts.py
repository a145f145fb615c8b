"""Alert rules and routing on real Prometheus and Alertmanager: right channel, never the other env's."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests
from hypothesis import given, settings, strategies as st

from suite.monitoring_config import fires_when_target_down, metric_names, rules_for
from suite.monitoring_stack import find_binary
from suite.routing import NULL, LabelSet, RoutingPolicy, amtool_receivers

pytestmark = pytest.mark.alerts


@pytest.fixture(params=["dev", "prod"])
def env(request, gate_platform):
    if request.param not in gate_platform.environments:
        pytest.skip(f"the platform has no environment {request.param}")
    return request.param


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
    proc = subprocess.run([find_binary(["promtool"], "prometheus"), "check", "rules", str(monitoring.rules_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{env}: promtool check rules failed:\n{proc.stdout}{proc.stderr}"


def test_amtool_check_config(env, gate_monitoring):
    monitoring = _am(gate_monitoring, env)
    proc = subprocess.run([find_binary(["amtool"], "prometheus-alertmanager"), "check-config",
                           str(monitoring.alertmanager_config.source)], capture_output=True, text=True)
    assert proc.returncode == 0, f"{env}: amtool check-config failed:\n{proc.stdout}{proc.stderr}"


def test_promtool_rule_unit_tests(env, gate_platform, tmp_path):
    """`promtool test rules` with the unit tests shipped beside the rules (`<rules dir>/tests/*.yaml`)."""
    rules = rules_for(gate_platform, env)
    if rules is None:
        pytest.skip(f"the platform manifest names no rules for {env}")
    tests = sorted((rules.source.parent / "tests").glob("*.yaml"))
    if not tests:
        pytest.fail(f"{env}: no promtool unit tests next to {rules.source} (expected {rules.source.parent}/tests/*.yaml): "
                    f"no alert is proven to fire, or to stay silent, before it reaches production")
    (tmp_path / f"{rules.source.stem}.rules.yaml").write_text(rules.to_yaml())  # CR -> plain rule file
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
    proc = subprocess.run([find_binary(["promtool"], "prometheus"), "test", "rules", *[t.name for t in tests]],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, f"{env}: promtool test rules failed:\n{proc.stdout}{proc.stderr}"


def test_every_alert_carries_the_namespace_label(env, gate_platform):
    """Routing keys on `namespace`: an alert whose result drops it can only reach 'null'."""
    from suite.monitoring_config import keeps_label

    rules = rules_for(gate_platform, env)
    if rules is None:
        pytest.skip(f"the platform manifest names no rules for {env}")
    missing = [r["alert"] for r in rules.alerts
               if "namespace" not in (r.get("labels") or {}) and not keeps_label(str(r["expr"]), "namespace")]
    assert not missing, (f"{env}: alerts {missing} carry no `namespace` label (their expression aggregates it away "
                         f"and they set none), so Alertmanager cannot route them to an environment's channel")


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
    assert not wrong, (f"{env}: Alertmanager {monitoring.alertmanager_config.source} routes against the policy "
                       f"(channel {policy.receiver(env)!r} gets namespaces matching {policy.patterns(env)}, "
                       f"everything else 'null'):\n  " + "\n  ".join(wrong))


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
        alerts.append({"labels": body, "annotations": {"summary": f"routing probe {name}"},
                       "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat()})
    since = time.time()
    response = requests.post(f"{monitoring.alertmanager_url}/api/v2/alerts", json=alerts, timeout=10)
    assert response.status_code == 200, response.text
    expected_hits = {n for n, (_, exp) in probes.items() if exp != {NULL}}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        seen = {n for n in probes for note in gate_monitoring.capture.received(since) if n in str(note.body)}
        if expected_hits <= seen:
            break
        time.sleep(0.25)
    time.sleep(2.0)  # and give wrong deliveries the same chance to arrive
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


def test_routing_property_over_generated_label_sets(env, gate_monitoring, gate_platform):
    monitoring = _am(gate_monitoring, env)
    policy = RoutingPolicy(gate_platform)
    known = sorted({value for labels in policy.label_sets(["x"]) for key, value in labels.labels if key == "namespace"})
    namespaces = st.one_of(st.none(), st.sampled_from(known),
                           st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=24),
                           st.builds(lambda a, b: a + b, st.sampled_from(known), st.sampled_from(["-x", "x", "-canary"])))
    alertnames = st.one_of(st.sampled_from(_alertnames(gate_platform, env)), st.from_regex(r"[A-Z][a-zA-Z]{0,20}", fullmatch=True))

    @settings(max_examples=60, deadline=None, database=None)
    @given(namespace=namespaces, alertname=alertnames, severity=st.sampled_from(["critical", "warning", "info"]))
    def routes_by_policy(namespace, alertname, severity):
        labels = {"alertname": alertname, "severity": severity}
        if namespace is not None:
            labels["namespace"] = namespace
        reached = amtool_receivers(monitoring.alertmanager_config.source, labels)
        assert reached == policy.expected(env, labels), (
            f"{env}: {LabelSet.of(**labels)} reached {sorted(reached)}, policy says {sorted(policy.expected(env, labels))}")
        assert not reached & policy.forbidden(env)

    routes_by_policy()


# -- live firing ------------------------------------------------------------------------------------


def _alert_on(gate_platform, env, predicate, what):
    rules = rules_for(gate_platform, env)
    found = [r for r in (rules.alerts if rules else []) if predicate(r)]
    if not found:
        pytest.fail(f"{env}: the platform has no alert for {what} (its rules: "
                    f"{[r['alert'] for r in rules.alerts] if rules else 'none'})")
    return found[0]["alert"]


def _wait_notification(capture, since, receiver_ok, alertname, firing, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for note in capture.received(since):
            if alertname in str(note.body) and receiver_ok(note.receiver) and note.firing == firing:
                return note
        time.sleep(0.1)
    return None


def _record_delivery(request, alertname: str, env: str, receiver: str, fault: str, delay) -> None:
    """For the report: which alert reached which channel, how long after the fault (None: never)."""
    request.node.user_properties.append(("alert", json.dumps(
        {"alert": alertname, "env": env, "receiver": receiver, "fault": fault,
         "delay_s": round(delay, 2) if delay is not None else None})))


def test_healthy_platform_under_traffic_sends_no_alert(gate_monitoring, gate_platform, committed, traffic):
    for env in gate_platform.environments:
        committed(env)
    time.sleep(3)  # let Prometheus see both servers settled after the last deploys
    since = time.time()
    for env in gate_platform.environments:
        traffic(env, 6.0)
    time.sleep(4)  # rule evaluation (1 s), shortened `for:` (2 s) and group_wait (1 s)
    firing = {env: [a["labels"].get("alertname") for a in m.alerts() if a["state"] == "firing"]
              for env, m in gate_monitoring.environments.items()}
    notes = [f"{n.receiver}: {n.title}" for n in gate_monitoring.capture.received(since)
             if n.firing and "GateRoutingProbe" not in str(n.body)]  # probes of the routing table are not rules
    assert not any(firing.values()) and not notes, (
        f"alerts fire on a healthy platform under steady traffic (a rule that fires when nothing is wrong "
        f"is a defect too): firing in Prometheus {firing}; notifications {notes}")


def test_triton_down_reaches_its_environment_only(env, gate_monitoring, gate_platform, gate_envs, committed,
                                                  request):
    alertname = _alert_on(gate_platform, env, lambda r: fires_when_target_down(str(r["expr"])), "Triton being down")
    policy = RoutingPolicy(gate_platform)
    committed(env)
    server = gate_envs[env].server
    since = time.time()
    server.kill()
    try:
        note = _wait_notification(gate_monitoring.capture, since, lambda r: r == policy.receiver(env), alertname, True, 30)
        delay = (note.received_at - since) if note else None
    finally:
        server.start()
    _record_delivery(request, alertname, env, policy.receiver(env), "triton-killed", delay)
    others = [n for n in gate_monitoring.capture.received(since)
              if alertname in str(n.body) and n.receiver != policy.receiver(env) and n.receiver in policy.forbidden(env)]
    assert note is not None, (f"{env}: Triton killed, but {alertname} did not reach {policy.receiver(env)} within 30 s; "
                              f"received: {[(n.receiver, n.title) for n in gate_monitoring.capture.received(since)]}")
    assert not others, f"{env}: {alertname} also reached another environment's channel: {[(n.receiver, n.title) for n in others]}"
    resolved = _wait_notification(gate_monitoring.capture, note.received_at, lambda r: r == policy.receiver(env),
                                  alertname, False, 45)
    assert resolved is not None, f"{env}: {alertname} was not resolved after Triton came back"
    print(f"{env}: {alertname} delivered {delay:.1f} s after the kill, resolved {resolved.received_at - since:.1f} s after")


def _serve_directly(triton, repository, model: str, version: int, onnx_bytes: bytes) -> None:
    """Load `version` into the live model from its bytes, as Triton's load API allows."""
    from suite import model_config
    from suite.model_repo import ModelFolder

    config = model_config.pinned(model_config.read(ModelFolder(repository, model).config_path), version)
    triton.load(model, model_config.to_json(config), files={f"file:{version}/model.onnx": onnx_bytes})
    triton.wait_version_ready(model, version, timeout=60)


def test_slow_model_fires_latency_alert_in_its_environment_only(gate_monitoring, gate_platform, gate_envs, gate_golden,
                                                               committed, deploy, register_model, reference_versions,
                                                               request):
    from suite.probe import TrafficProbe
    from suite.reference_model import slow_onnx_for

    env = "dev" if "dev" in gate_platform.environments else sorted(gate_platform.environments)[0]
    alertname = _alert_on(gate_platform, env, lambda r: "nv_inference_request_duration_us" in metric_names(str(r["expr"])),
                          "a high inference latency")
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
        request.node.user_properties.append(("note", f"the platform's deployer refused the slow v{slow}; it was "
                                                     f"loaded directly to exercise the alert: {result.message[-300:]}"))
    probes = [TrafficProbe(gate_envs[env].triton, gate_platform.model.name, gate_golden, interval_s=0.0,
                           timeout_s=30, max_seconds=90) for _ in range(3)]
    for probe in probes:
        probe.__enter__()
    try:
        note = _wait_notification(gate_monitoring.capture, since, lambda r: r == policy.receiver(env), alertname, True, 75)
    finally:
        for probe in probes:
            probe.stop()
        good = deploy(env, version=reference_versions["v2"].version)
    delay = note.received_at - since if note else None
    _record_delivery(request, alertname, env, policy.receiver(env), "slow-model", delay)
    assert good.ok, good.message
    assert note is not None, (f"{env}: a model answering in ~0.8 s under load did not bring {alertname} to "
                              f"{policy.receiver(env)} within 75 s; Prometheus alerts: "
                              f"{[(a['labels'], a['state']) for a in gate_monitoring.environments[env].alerts()]}")
    others = [n for n in gate_monitoring.capture.received(since)
              if alertname in str(n.body) and n.receiver in policy.forbidden(env)]
    assert not others, f"{alertname} also reached another environment's channel: {[(n.receiver, n.title) for n in others]}"
    resolved = _wait_notification(gate_monitoring.capture, note.received_at, lambda r: r == policy.receiver(env),
                                  alertname, False, 60)
    assert resolved is not None, f"{env}: {alertname} did not resolve after the slow version was replaced"
    print(f"{env}: {alertname} delivered {delay:.1f} s after the slow version's deploy began, "
          f"resolved {resolved.received_at - since:.1f} s after")
