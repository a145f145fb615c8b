"""Monitoring defects: broken rules, Alertmanager routes, dashboard panels and target selection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, List

import yaml

from tests.platform_copies import edit
from tools.defects import Defect, Selection

MON = "monitoring"
# Selections: small, and shared by defects so the reference runs each one once.
STATIC = Selection(marker="alerts", keyword="carries_the_namespace or promtool_rule_unit_tests")  # no stack
ROUTES = Selection(marker="alerts", keyword="routing_table_with_amtool")
METRICS = Selection(marker="metrics")  # one stack for targets, metric names and panels: one reference run
DOWN = Selection(marker="alerts", keyword="triton_down_reaches and dev")
# The unbroken reference runs all of these in one session.
REFERENCE = Selection(
    marker="alerts or metrics",
    keyword="carries_the_namespace or promtool_rule_unit_tests or "
    "routing_table_with_amtool or (triton_down_reaches and dev) or test_metrics",
)


def _panel(title: str, old: str, new: str) -> Callable[[Path], None]:
    def mutate(platform: Path) -> None:
        path = platform / MON / "triton-dashboard.json"
        dashboard = json.loads(path.read_text())
        target = next(p for p in dashboard["panels"] if p["title"] == title)["targets"][0]
        assert old in target["expr"], f"{old!r} not in panel {title!r}"
        target["expr"] = target["expr"].replace(old, new)
        path.write_text(json.dumps(dashboard, indent=2))

    return mutate


def _drop_alert(name: str) -> Callable[[Path], None]:
    def mutate(platform: Path) -> None:
        path = platform / MON / "triton-alerts.yaml"
        rule_set = yaml.safe_load(path.read_text())
        for group in rule_set["spec"]["groups"]:
            group["rules"] = [r for r in group["rules"] if r.get("alert") != name]
        path.write_text(yaml.safe_dump(rule_set, sort_keys=False))

    return mutate


def _defect(*args, **kwargs) -> Defect:
    return Defect(*args, **kwargs, reference=REFERENCE)


def _edit(relative: str, old: str, new: str) -> Callable[[Path], None]:
    return lambda platform: edit(platform / relative, old, new)


ALERTS = f"{MON}/triton-alerts.yaml"
AM_DEV = f"{MON}/alertmanager-dev.yaml"
AM_PROD = f"{MON}/alertmanager-prod.yaml"

DEFECTS: List[Defect] = [
    _defect(
        "am-default-receiver-not-null",
        "dev Alertmanager's default receiver is slack-dev, not null",
        _edit(AM_DEV, 'receiver: "null"', "receiver: slack-dev"),
        ROUTES,
        ("test_alerts.py::test_routing_table_with_amtool[dev]",),
        ("routes against the policy", "namespace='default'"),
    ),
    _defect(
        "am-route-regex-matches-both-envs",
        'dev route matches namespace=~"triton-.*": prod alerts reach #alerts-dev',
        _edit(AM_DEV, 'namespace="triton-dev"', 'namespace=~"triton-.*"'),
        ROUTES,
        ("test_alerts.py::test_routing_table_with_amtool[dev]",),
        ("namespace='triton-prod'",),
    ),
    _defect(
        "am-prod-route-copied-from-dev",
        'prod Alertmanager routes namespace="triton-dev" to slack-prod (copy-paste)',
        _edit(AM_PROD, 'namespace="triton-prod"', 'namespace="triton-dev"'),
        ROUTES,
        ("test_alerts.py::test_routing_table_with_amtool[prod]",),
        ("namespace='triton-dev'",),
    ),
    _defect(
        "rule-misspelled-metric",
        "TritonMeanLatencyHigh divides by nv_inference_cout (a typo): never fires",
        _edit(ALERTS, "(rate(nv_inference_count{", "(rate(nv_inference_cout{"),
        METRICS,
        ("test_metrics.py::test_every_metric_in_rules_and_panels_exists_in_triton[dev]",),
        ("nv_inference_cout (in rule TritonMeanLatencyHigh)",),
    ),
    _defect(
        "rule-without-namespace",
        "TritonDown is sum(up) == 0: the alert has no namespace, Alertmanager cannot route it",
        _edit(ALERTS, 'expr: up{job="triton"} == 0', 'expr: sum(up{job="triton"}) == 0'),
        STATIC,
        ("test_alerts.py::test_every_alert_carries_the_namespace_label[dev]",),
        ("TritonDown", "carry no `namespace`"),
    ),
    _defect(
        "rule-latency-unit-mistake",
        "TritonMeanLatencyHigh divides microseconds by 1e3, not 1e6: fires at 0.5 ms",
        _edit(ALERTS, ") / 1e6 > 0.5", ") / 1e3 > 0.5"),
        STATIC,
        ("test_alerts.py::test_promtool_rule_unit_tests[dev]",),
        ("promtool test rules failed",),
    ),
    _defect(
        "rules-without-unit-tests",
        "the rules ship without promtool unit tests (monitoring/tests/ missing)",
        lambda platform: shutil.rmtree(platform / MON / "tests"),
        STATIC,
        ("test_alerts.py::test_promtool_rule_unit_tests[dev]",),
        ("no promtool unit tests",),
    ),
    _defect(
        "no-triton-down-alert",
        "the rules have no alert for Triton being down (the seed's rules)",
        _drop_alert("TritonDown"),
        DOWN,
        ("test_alerts.py::test_triton_down_reaches_its_environment_only[dev]",),
        ("the platform has no alert for Triton being down",),
    ),
    _defect(
        "rule-wrong-job-label",
        'TritonDown selects up{job="triton-server"}, a job no target has: never fires',
        _edit(ALERTS, 'expr: up{job="triton"} == 0', 'expr: up{job="triton-server"} == 0'),
        DOWN,
        ("test_alerts.py::test_triton_down_reaches_its_environment_only[dev]",),
        ("Triton killed, but TritonDown did not reach slack-dev",),
    ),
    _defect(
        "panel-on-missing-metric",
        "the 'Pending requests' panel queries nv_inference_pending_requests (no such metric)",
        _panel("Pending requests", "nv_inference_pending_request_count", "nv_inference_pending_requests"),
        METRICS,
        ("test_metrics.py::test_every_metric_in_rules_and_panels_exists_in_triton[dev]",),
        ("nv_inference_pending_requests (in panel 'Pending requests')",),
    ),
    _defect(
        "panel-with-no-data",
        "the 'CPU utilization' panel filters on kubernetes_namespace, a label no series has",
        _panel("CPU utilization", 'namespace="$namespace"', 'kubernetes_namespace="$namespace"'),
        METRICS,
        ("test_metrics.py::test_every_dashboard_panel_returns_data[dev]",),
        ("'CPU utilization'",),
    ),
    # In a cluster: dev's ServiceMonitor labelled release=monitoring-prod. In the embedded stack
    # the manifest's `release` is both the target's label and its Prometheus's selector, so the
    # observable equivalent is dev's release set to the other env's: its Prometheus selects both.
    _defect(
        "release-of-other-env",
        "dev's targets are selected by release monitoring-prod (the other env's)",
        _edit("platform.yaml", "release: monitoring-dev", "release: monitoring-prod"),
        METRICS,
        ("test_metrics.py::test_prometheus_scrapes_its_own_triton_and_no_other[dev]",),
        ("also scrapes the other environment",),
    ),
]
