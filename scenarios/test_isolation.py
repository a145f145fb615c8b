"""Environments are separate: a deploy to one leaves every other byte-for-byte unchanged."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.deploy


def test_deploy_leaves_other_environment_untouched(
    env, other_env, gate_envs, reference_versions, committed, deploy, environment_view, checker, record_check
):
    current = committed(env)
    committed(other_env)  # the other environment has a committed version, or "untouched" proves nothing
    # Deploy the version that is *not* live, so the deploy really changes something.
    new_version = next(v.version for v in reference_versions.values() if v.version != current)
    view = environment_view(env)
    others = {environment_view(other_env): environment_view(other_env).capture()}
    before = view.capture()
    outcome = deploy(env, version=new_version)
    judgement = record_check(
        f"deploy v{new_version} to {env}", checker.after_success(view, before, others, new_version, outcome)
    )
    assert not judgement.violations, f"deploying v{new_version} to {env}:\n" + "\n".join(map(str, judgement.violations))
