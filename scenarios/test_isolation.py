"""Environments are separate: a deploy to one leaves every other byte-for-byte unchanged."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.deploy


@pytest.mark.parametrize("env,other", [("dev", "prod"), ("prod", "dev")])
def test_deploy_leaves_other_environment_untouched(env, other, gate_envs, reference_versions, committed, deploy,
                                                   environment_view, checker, record_check):
    current = committed(env)
    committed(other)  # the other environment has a committed version, or "untouched" proves nothing
    # Deploy the version that is *not* live, so the deploy really changes something.
    target = next(v.version for v in reference_versions.values() if v.version != current)
    view = environment_view(env)
    others = {environment_view(other): environment_view(other).capture()}
    before = view.capture()
    outcome = deploy(env, version=target)
    judgement = record_check(f"deploy v{target} to {env}", checker.after_success(view, before, others, target, outcome))
    assert not judgement.violations, f"deploying v{target} to {env}:\n" + "\n".join(map(str, judgement.violations))
