"""The deploy path's contract where platforms' deployers most often break it.

Each scenario sets up the situation from outside the deployer (the registry, the repository,
a pause at an observed point), lets the platform's deployer run, and judges what it left.
"""

from __future__ import annotations

import pytest

from suite.reference_model import build_onnx
from suite.targets.capabilities import SERVER_CONTROL
from suite.timings import MODEL_LOAD_S

pytestmark = pytest.mark.deploy


def test_alias_moved_during_a_deploy_records_what_is_served(
    trial_env,
    gate_stack,
    gate_platform,
    committed,
    register_model,
    environment_view,
    other_states,
    staged_deploy,
    checker,
    record_check,
):
    """The alias is moved from X to Y while a deploy of the alias runs (paused at its first write):
    current.json must name the version Triton serves (X or Y, never one recorded and the other served).
    The alias is put back where it pointed before (the baseline's version; on a cluster, the platform's)."""
    committed(trial_env)
    model, alias = gate_platform.model.name, gate_platform.model.alias
    registry = gate_stack.registry()
    first = register_model(build_onnx("retrained"), "alias-first")
    moved_to = register_model(build_onnx("v1"), "alias-moved-to")
    view = environment_view(trial_env)
    others = other_states(trial_env)
    before = view.capture()
    with registry.alias_kept(model, alias):
        registry.set_alias(model, alias, first)
        staged = staged_deploy(
            trial_env, "first-write", lambda: registry.set_alias(model, alias, moved_to), hold_s=30, alias=alias
        )
    assert staged.point_seen, f"the deploy wrote nothing under the model's folder:\n{staged.first.message}"
    current = view.folder.read_current()
    served = current.active_version if current and current.active_version in (first, moved_to) else first
    judgement = checker.after_success(view, before, others, served, staged.first)
    if current is not None and current.run_id:
        registered_run = registry.resolve(model, version=current.active_version).run_id
        if current.run_id != registered_run:
            judgement.add(
                1,
                f"current.json names v{current.active_version} with run_id {current.run_id}, but "
                f"v{current.active_version} was registered by run {registered_run}: it records one "
                f"version's identity and another's number",
            )
    record_check(
        f"alias {alias} moved v{first} -> v{moved_to} while the deploy was paused at {staged.point_seen}", judgement
    )
    assert not judgement.violations, "\n".join(map(str, judgement.violations)) + f"\n{staged.first.message}"


def test_existing_version_folder_with_other_content_is_refused(
    trial_env, gate_envs, committed, register_model, deploy, environment_view, other_states, checker, record_check
):
    """Folder N already holds another model than registry version N: the deploy must refuse, and
    leave that folder byte-for-byte where it is (never overwrite it, never serve it as N)."""
    committed(trial_env)
    version = register_model(build_onnx("retrained"), "existing-folder")
    view = environment_view(trial_env)
    folder = view.folder.version_path(version)
    folder.mkdir()
    (folder / "model.onnx").write_bytes(build_onnx("v1"))  # a good model, but not registry version N
    others = other_states(trial_env)
    before = view.capture()
    outcome = deploy(trial_env, version=version)
    judgement = checker.after_failure(view, before, others, version, None, outcome, materialized=False)
    record_check(f"deploy of v{version} over an existing folder {version} with other content", judgement)
    assert not judgement.violations, "\n".join(map(str, judgement.violations)) + f"\n{outcome.message}"


@pytest.mark.needs(SERVER_CONTROL)  # the restart: skipped at setup on a target whose servers are not the gate's
def test_older_version_redeployed_is_served_also_after_a_restart(
    trial_env,
    gate_envs,
    gate_platform,
    reference_versions,
    committed,
    deploy,
    environment_view,
    other_states,
    checker,
    record_check,
):
    """Deploy v2, then v1 again while folder 2 stays: Triton must serve v1 (what current.json says),
    also after a restart. Without a version policy Triton serves the highest folder instead."""
    committed(trial_env)
    environment = gate_envs[trial_env]
    newer, older = reference_versions["v2"].version, reference_versions["v1"].version
    view = environment_view(trial_env)
    others = other_states(trial_env)
    before = view.capture()
    first = deploy(trial_env, version=newer)
    assert first.ok, f"the deploy of v{newer} failed, so the older-version check could not run:\n{first.message}"
    outcome = deploy(trial_env, version=older)
    judgement = checker.after_success(view, before, others, older, outcome)
    if not judgement.violations:
        environment.server.restart()  # as a pod restart would: Triton loads what the disk says
        try:
            environment.triton.wait_version_ready(gate_platform.model.name, older, timeout_s=MODEL_LOAD_S)
        except Exception:  # noqa: BLE001 - the check below says what is served instead
            pass
        restarted = checker.after_success(view, before, others, older, outcome)
        for violation in restarted.violations:
            judgement.add(violation.invariant, f"after a Triton restart: {violation.detail}")
    record_check(f"v{newer} then the older v{older}", judgement)
    assert not judgement.violations, "\n".join(map(str, judgement.violations)) + f"\n{outcome.message}"
