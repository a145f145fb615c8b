"""dev and prod are separate: a deploy to one leaves the other byte-for-byte unchanged."""
from __future__ import annotations

import pytest

from suite.checks import snapshot

pytestmark = pytest.mark.deploy


@pytest.mark.parametrize("env,other", [("dev", "prod"), ("prod", "dev")])
def test_deploy_leaves_other_environment_untouched(env, other, gate_envs, gate_platform,
                                                   reference_versions, committed, deploy):
    committed(other)
    current = committed(env)
    # Deploy the version that is *not* live, so the deploy really changes something.
    target = next(v.version for v in reference_versions.values() if v.version != current)
    before = snapshot(gate_envs[other].repository, gate_envs[other].triton)
    result = deploy(env, version=target)
    assert result.ok, result.describe()
    after = snapshot(gate_envs[other].repository, gate_envs[other].triton)
    differences = before.differences(after)
    assert not differences, f"deploying v{target} to {env} changed {other}: " + "; ".join(differences)
