"""Post-deploy smoke: read-only checks that what is committed is what is served, correctly."""

from __future__ import annotations

import pytest

from suite.checks import check_serves_committed
from suite.model_repo import ModelFolder
from suite.timings import SERVER_READY_S
from suite.waiting import WaitTimeout

pytestmark = pytest.mark.smoke


@pytest.fixture
def env(request, committed):
    committed(request.param)
    return request.param


def test_server_live_and_ready(env, gate_envs):
    triton = gate_envs[env].triton
    assert triton.live(), f"{env}: /v2/health/live did not answer 200 at {triton.http_url}"
    try:  # 400 for ~1.5 s while a deploy loads (Triton #7014): SERVER_READY_S allows it to settle, no longer
        triton.wait_server_ready(SERVER_READY_S)
    except WaitTimeout:
        pytest.fail(
            f"{env}: /v2/health/ready did not answer 200 within {SERVER_READY_S:.0f} s at "
            f"{triton.http_url}; repository index: {triton.index()}"
        )


def test_committed_version_is_served_with_golden_outputs(env, gate_envs, gate_platform, gate_golden):
    environment = gate_envs[env]
    folder = ModelFolder(environment.repository, gate_platform.model.name)
    problems = check_serves_committed(environment.triton, folder, gate_golden)
    assert not problems, f"{env}:\n" + "\n".join(problems)
