"""The monitoring config engine: rules (plain and PrometheusRule), PromQL names, rewrites."""

from __future__ import annotations

import pytest
import yaml

from suite.errors import PlatformError
from suite.monitoring_config import (
    fires_when_target_down,
    for_the_gate,
    keeps_label,
    load_alertmanager,
    load_rules,
    metric_names,
    resolve_variables,
    shorten_rules,
)
from suite.platform import REFERENCE_DIR

MONITORING = REFERENCE_DIR / "monitoring"


def test_prometheus_rule_resource_and_plain_file_give_the_same_groups(tmp_path):
    resource = load_rules(MONITORING / "triton-alerts.yaml")
    plain = tmp_path / "plain.yaml"
    plain.write_text(resource.to_yaml())
    assert load_rules(plain).groups == resource.groups
    assert {r["alert"] for r in resource.alerts} >= {
        "TritonDown",
        "TritonMeanLatencyHigh",
        "TritonHighErrorRate",
        "TritonCommittedModelNotReady",
    }


def test_a_file_without_groups_is_a_clear_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("kind: ConfigMap\ndata: {}\n")
    with pytest.raises(PlatformError, match="no rule groups"):
        load_rules(path)


def test_shortening_lists_every_change_and_keeps_the_logic():
    rules = load_rules(MONITORING / "triton-alerts.yaml")
    short, changes = shorten_rules(rules, max_for=2, max_range="20s")
    latency = next(r for r in short.alerts if r["alert"] == "TritonMeanLatencyHigh")
    assert latency["for"] == "2s" and "[20s]" in latency["expr"] and "[5m]" not in latency["expr"]
    assert "TritonMeanLatencyHigh: for 5m -> 2s" in changes
    assert metric_names(latency["expr"]) == metric_names(
        next(r for r in rules.alerts if r["alert"] == "TritonMeanLatencyHigh")["expr"]
    )
    original = next(r for r in rules.alerts if r["alert"] == "TritonMeanLatencyHigh")
    assert original["for"] == "5m", "the user's rules are not modified in place"


@pytest.mark.parametrize(
    "expr,names",
    [
        ('up{job="triton"} == 0', {"up"}),
        (
            "sum(rate(nv_inference_cout[5m])) / sum(rate(nv_inference_count[5m]))",
            {"nv_inference_cout", "nv_inference_count"},
        ),
        ('{__name__="nv_cpu_utilization"} > 0.9', {"nv_cpu_utilization"}),
        ("max_over_time(x[1m:10s]) unless on (a) -abs(y)", {"x", "y"}),
    ],
)
def test_metric_names_come_from_the_parsed_expression(expr, names):
    assert metric_names(expr) == names


@pytest.mark.parametrize(
    "expr,keeps",
    [
        ('up{job="triton"} == 0', True),
        ('sum(up{job="triton"}) == 0', False),
        ("sum by (namespace) (rate(a[5m])) / sum by (namespace) (rate(b[5m])) > 0.5", True),
        ("sum without (namespace) (a) > 1", False),
        ("sum without (pod) (a) > 1", True),
        ("1 - sum(a)", False),
    ],
)
def test_namespace_label_survival(expr, keeps):
    assert keeps_label(expr, "namespace") is keeps


def test_invalid_promql_is_a_clear_error():
    with pytest.raises(PlatformError, match="not valid PromQL"):
        metric_names("sum(rate(x[5m])")


def test_alertmanager_rewrite_touches_only_urls_and_timings():
    config = load_alertmanager(MONITORING / "alertmanager-dev.yaml")
    gate = for_the_gate(config, "http://127.0.0.1:9/capture")
    slack = next(r for r in gate.body["receivers"] if r["name"] == "slack-dev")["slack_configs"][0]
    assert slack["api_url"] == "http://127.0.0.1:9/capture/slack-dev"
    assert gate.body["route"]["routes"] == config.body["route"]["routes"], "routing must stay the user's"
    assert gate.body["route"]["receiver"] == "null"
    assert gate.body["route"]["repeat_interval"] == config.body["route"]["repeat_interval"]
    assert any("group_wait 30s -> 1s" in c for c in gate.changes)
    assert "REPLACED" in yaml.safe_dump(config.body), "the original is not modified"


def test_template_variables_resolve_or_fail_clearly():
    assert (
        resolve_variables(
            'x{ns="$namespace", m=~"${model}"}[$__rate_interval]',
            {"namespace": "triton-dev", "model": "best_model", "__rate_interval": "20s"},
        )
        == 'x{ns="triton-dev", m=~"best_model"}[20s]'
    )
    with pytest.raises(PlatformError, match=r"\$cluster"):
        resolve_variables('x{c="$cluster"}', {})


@pytest.mark.parametrize(
    "expr, detects",
    [
        ('up{job="triton"} == 0', True),
        ('absent(up{job="triton", namespace="triton-dev"})', True),
        ("sum by (namespace) (up) < 1", True),
        ('0 == up{job="triton"}', True),
        ("nv_model_ready == 0 and on(pod) up == 1", False),  # reads `up`, fires on a model, not on a down target
        ("rate(nv_inference_request_failure[5m]) > 0", False),
    ],
)
def test_which_expressions_detect_a_down_target(expr, detects):
    assert fires_when_target_down(expr) is detects
