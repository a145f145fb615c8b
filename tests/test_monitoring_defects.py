"""The monitoring checks catch what they name: the gate runs on broken copies of the reference
platform and fails in the scenario responsible, with the defect in its message."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.platform_copies import copy_reference as _copy_platform, edit as _edit


def _break_panel(platform: Path) -> None:
    path = platform / "monitoring" / "triton-dashboard.json"
    dashboard = json.loads(path.read_text())
    panel = next(p for p in dashboard["panels"] if p["title"] == "Pending requests")
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace("nv_inference_pending_request_count",
                                                                      "nv_inference_pending_requests")
    path.write_text(json.dumps(dashboard))


DEFECTS = {
    "default receiver not null": (
        lambda p: _edit(p / "monitoring" / "alertmanager-dev.yaml", 'receiver: "null"', "receiver: slack-dev"),
        "routing_table_with_amtool and dev", ["*routes against the policy*", "*namespace='default'*slack-dev*"]),
    "dev route also matches prod": (
        lambda p: _edit(p / "monitoring" / "alertmanager-dev.yaml", 'namespace="triton-dev"', 'namespace=~"triton-.*"'),
        "routing_table_with_amtool and dev", ["*routes against the policy*", "*namespace='triton-prod'*slack-dev*"]),
    "rule on a misspelled metric": (
        lambda p: _edit(p / "monitoring" / "triton-alerts.yaml",
                        "sum by (namespace) (rate(nv_inference_count{", "sum by (namespace) (rate(nv_inference_cout{"),
        "every_metric_in_rules and dev", ["*nv_inference_cout (in rule TritonMeanLatencyHigh)*"]),
    "alert without the namespace label": (
        lambda p: _edit(p / "monitoring" / "triton-alerts.yaml", 'expr: up{job="triton"} == 0',
                        'expr: sum(up{job="triton"}) == 0'),
        "carries_the_namespace and dev", ["*alerts *TritonDown* carry no `namespace` label*"]),
    "panel on a metric that does not exist": (
        _break_panel, "every_metric_in_rules and dev",
        ["*nv_inference_pending_requests (in panel 'Pending requests')*"]),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_broken_monitoring_config_is_caught_by_the_right_scenario(pytester, defect):
    mutate, selection, messages = DEFECTS[defect]
    platform = _copy_platform(pytester.path)
    mutate(platform)
    result = pytester.runpytest_subprocess("--pyargs", "scenarios", "--platform", str(platform / "platform.yaml"),
                                           "-m", "metrics or alerts", "-k", selection, "-q", timeout=600)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, f"{defect}: the gate did not fail\n{result.stdout.str()[-3000:]}"
    result.stdout.fnmatch_lines(messages)


def test_unbroken_reference_passes_the_same_selections(pytester):
    platform = _copy_platform(pytester.path)
    selection = " or ".join(sorted({f"({s})" for _, s, _ in DEFECTS.values()}))
    result = pytester.runpytest_subprocess("--pyargs", "scenarios", "--platform", str(platform / "platform.yaml"),
                                           "-m", "metrics or alerts", "-k", selection, "-q", timeout=600)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("passed", 0) >= 3, result.stdout.str()[-3000:]
