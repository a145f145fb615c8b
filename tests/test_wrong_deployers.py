"""Each invariant catches the defect it names: deliberately wrong deployers, judged by the checker.

Every wrong deployer is the real `python -m suite deploy` plus one realistic mistake, run as a
platform's own deploy command. The right one passes the same checks.
"""
from __future__ import annotations

import pytest

from suite.deployers import CommandDeployer
from suite.faults import CATALOGUE

RIGHT = 'python -m suite deploy --env "$GATE_ENV" --version "$GATE_VERSION"'
FAILED_DIR = '"$GATE_MODEL_REPOSITORY/$GATE_MODEL/$GATE_VERSION"'

WRONG_DEPLOYERS = {
    # invariant: (what the deployer gets wrong, the command)
    1: ("commits current.json before the smoke check",
        'printf \'{"active_version": %s, "run_id": "", "alias": "", "updated_at_utc": "20260101T000000"}\' '
        '"$GATE_VERSION" > "$GATE_MODEL_REPOSITORY/$GATE_MODEL/current.json"; ' + RIGHT + " --ready-timeout 3"),
    2: ("rolls back by unloading the model instead of restoring the committed version",
        RIGHT + '; rc=$?; [ $rc -ne 0 ] && curl -s -X POST "$GATE_TRITON_URL/v2/repository/models/$GATE_MODEL/unload"; exit $rc'),
    3: ("deletes the failed version instead of quarantining it",
        RIGHT + f'; rc=$?; rm -rf {FAILED_DIR}.failed_*; exit $rc'),
    4: ("leaves its staging folder behind",
        RIGHT + '; rc=$?; mkdir -p "$GATE_MODEL_REPOSITORY/$GATE_MODEL/.staging-$GATE_VERSION-left"; exit $rc'),
    5: ("touches the other environment's repository",
        RIGHT + '; rc=$?; touch "$GATE_MODEL_REPOSITORY/../prod/touched-by-dev-deploy"; exit $rc'),
    6: ("reports success whatever happened", RIGHT + "; exit 0"),
}


@pytest.mark.parametrize("invariant", sorted(WRONG_DEPLOYERS))
def test_wrong_deployer_is_caught_by_the_named_invariant(invariant, run_fault, gate_envs, gate_platform):
    mistake, command = WRONG_DEPLOYERS[invariant]
    run = run_fault(CATALOGUE["wrong-answers"], deployer=CommandDeployer(command))
    violated = {v.invariant for v in run.violations}
    assert invariant in violated, f"a deployer that {mistake} was not caught by invariant {invariant}:\n{run.describe()}"
    # repair what the wrong deployer broke, so later tests start from a sound platform
    for env in gate_envs.values():
        (env.repository / "touched-by-dev-deploy").unlink(missing_ok=True)
    dev = gate_envs["dev"]
    for leftover in (dev.repository / gate_platform.model.name).glob(".staging-*"):
        leftover.rmdir()
    if invariant in (1, 2):
        _restore(run, dev, gate_platform.model.name)


def _restore(run, dev, model: str) -> None:
    """Put back the committed state the wrong deployer broke (current.json, served version)."""
    from suite.model_repo import Current, ModelFolder

    folder = ModelFolder(dev.repository, model)
    if run.committed_before is not None:
        current = folder.read_current()
        if current is None or current.active_version != run.committed_before:
            folder.write_current(Current(run.committed_before, "", "A", "20260101T000000", {}))
            folder.write_config(folder.config_path.read_text().replace(
                f"versions: {run.version}", f"versions: {run.committed_before}"))
    dev.triton.load(model)
    if run.committed_before is not None:
        dev.triton.wait_version_ready(model, run.committed_before, timeout=30)


def test_the_builtin_path_as_a_command_passes_the_same_checks(run_fault):
    run = run_fault(CATALOGUE["wrong-answers"], deployer=CommandDeployer(RIGHT))
    assert not run.violations, run.describe()
    assert run.outcome.exit_code == 1
    assert "FAILED at smoke" in run.outcome.message
