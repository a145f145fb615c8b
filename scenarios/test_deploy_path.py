"""The deploy path end to end on real servers: each deploy is committed, served and counted."""
from __future__ import annotations

import time

import pytest

from suite.checks import check_serves_committed
from suite.model_repo import ModelFolder

pytestmark = pytest.mark.deploy


def _counters(triton, model: str, version: int) -> tuple[float, float]:
    metrics = triton.metrics()
    return (metrics.value("nv_inference_request_success", model=model, version=str(version)),
            metrics.value("nv_inference_count", model=model, version=str(version)))


def _assert_counted(triton, model: str, version: int, before: tuple[float, float]) -> None:
    deadline = time.monotonic() + 5
    while True:
        after = _counters(triton, model, version)
        if after[0] > before[0] and after[1] > before[1]:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"Triton's metrics did not count golden inferences on {model} v{version}: "
                        f"(nv_inference_request_success, nv_inference_count) went {before} -> {after}")
        time.sleep(0.1)


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_deploy_v1_then_v2(env, gate_envs, gate_platform, gate_golden, reference_versions, deploy):
    """Deploy the alias (v1), then the retrained v2: each is committed, READY alone, golden, counted."""
    model = gate_platform.model.name
    environment = gate_envs[env]
    folder = ModelFolder(environment.repository, model)
    steps = [("alias", {"alias": gate_platform.model.alias}, reference_versions["v1"].version),
             ("version", {"version": reference_versions["v2"].version}, reference_versions["v2"].version)]
    for how, selector, expected in steps:
        result = deploy(env, **selector)
        assert result.ok, result.describe()
        assert result.version == expected
        assert folder.version_path(expected).is_dir(), f"registry version {expected} must be folder {expected}"
        problems = check_serves_committed(environment.triton, folder, gate_golden, expected_version=expected)
        assert not problems, f"after deploying {how} {selector} to {env}:\n" + "\n".join(problems)
        before = _counters(environment.triton, model, expected)
        environment.triton.infer(model, gate_golden.inputs, list(gate_golden.expected), version=expected)
        _assert_counted(environment.triton, model, expected, before)
        assert not folder.leftovers(), f"deploy left staging files behind: {folder.leftovers()}"
