"""Post-deploy smoke: read-only checks that what is committed is what is served, correctly."""
from __future__ import annotations

import pytest

from suite.checks import check_serves_committed
from suite.model_repo import ModelFolder

pytestmark = pytest.mark.smoke


@pytest.fixture(params=["dev", "prod"])
def env(request, committed):
    committed(request.param)
    return request.param


SERVER_READY_WITHIN_S = 10.0


def test_server_live_and_ready(env, gate_envs):
    triton = gate_envs[env].triton
    assert triton.live(), f"{env}: /v2/health/live did not answer 200 at {triton.http_url}"
    # Triton answers 400 on /v2/health/ready while any model loads or unloads (Triton issue
    # #7014), e.g. for ~1.5 s after a deploy: allow it to settle, no longer.
    assert triton.wait_server_ready(SERVER_READY_WITHIN_S), (
        f"{env}: /v2/health/ready did not answer 200 within {SERVER_READY_WITHIN_S:.0f} s at "
        f"{triton.http_url}; repository index: {triton.index()}")


def test_committed_version_is_served_with_golden_outputs(env, gate_envs, gate_platform, gate_golden):
    environment = gate_envs[env]
    folder = ModelFolder(environment.repository, gate_platform.model.name)
    problems = check_serves_committed(environment.triton, folder, gate_golden)
    assert not problems, f"{env}:\n" + "\n".join(problems)
