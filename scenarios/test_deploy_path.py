"""The deploy path end to end on real servers, through the platform's deployer: each deploy is
committed, served exactly, answers golden and is counted by Triton's metrics."""

from __future__ import annotations

import pytest

from suite.timings import METRICS_COUNTED_S
from suite.waiting import WaitTimeout, wait_for

pytestmark = pytest.mark.deploy


def _counters(triton, model: str, version: int) -> tuple[float, float]:
    metrics = triton.metrics()
    return (
        metrics.value("nv_inference_request_success", model=model, version=str(version)),
        metrics.value("nv_inference_count", model=model, version=str(version)),
    )


def _assert_counted(triton, model: str, version: int, before: tuple[float, float]) -> None:
    try:
        wait_for(
            lambda: _counters(triton, model, version),
            until=lambda after: after[0] > before[0] and after[1] > before[1],
            timeout_s=METRICS_COUNTED_S,
            interval_s=0.1,
            awaiting=f"Triton's metrics to count {model} v{version}",
        )
    except WaitTimeout as timeout:
        pytest.fail(
            f"Triton's metrics did not count golden inferences on {model} v{version}: "
            f"(nv_inference_request_success, nv_inference_count) went {before} -> {timeout.last_value}"
        )


def test_deploy_by_version_then_by_alias(
    env,
    gate_envs,
    gate_platform,
    gate_golden,
    reference_versions,
    committed,
    deploy,
    environment_view,
    other_states,
    checker,
    record_check,
):
    """From the baseline (the alias, v1): deploy the retrained v2 by number, then the alias again."""
    model = gate_platform.model.name
    committed(env)
    environment = gate_envs[env]
    view = environment_view(env)
    others = other_states(env)
    steps = [
        ("version", {"version": reference_versions["v2"].version}, reference_versions["v2"].version),
        ("alias", {"alias": gate_platform.model.alias}, reference_versions["v1"].version),
    ]
    for how, selector, expected in steps:
        before = view.capture()
        outcome = deploy(env, **selector)
        judgement = record_check(
            f"deploy by {how} {selector} to {env}", checker.after_success(view, before, others, expected, outcome)
        )
        assert not judgement.violations, (
            f"deploying by {how} {selector} to {env}:\n"
            + "\n".join(map(str, judgement.violations))
            + f"\n{outcome.message}"
        )
        counted = _counters(environment.triton, model, expected)
        environment.triton.infer(model, gate_golden.inputs, list(gate_golden.expected), version=expected)
        _assert_counted(environment.triton, model, expected, counted)
