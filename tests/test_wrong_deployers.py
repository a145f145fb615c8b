"""Each invariant catches the defect it names: deliberately wrong deployers, judged by the checker.

Every wrong deployer is the real `python -m suite deploy` plus one realistic mistake, run as a
platform's own deploy command. The right one passes the same checks. Deployers written from
scratch, with their known verdicts on every scenario, are in tests/deployers/ (test_zoo.py).
"""

from __future__ import annotations

import pytest

from suite.deployers import CommandDeployer
from suite.faults import CATALOGUE

RIGHT = 'python -m suite deploy --env "$GATE_ENV"'  # it reads GATE_VERSION / GATE_ALIAS
FAILED_DIR = '"$GATE_MODEL_REPOSITORY/$GATE_MODEL/$GATE_VERSION"'

CONFIG = '"$GATE_MODEL_REPOSITORY/$GATE_MODEL/config.pbtxt"'

WRONG_DEPLOYERS = {
    # id: (the invariant that must catch it, what the deployer gets wrong, the command)
    "1-commits-early": (
        1,
        "commits current.json before the smoke check",
        'printf \'{"active_version": %s, "run_id": "", "alias": "", "updated_at_utc": "20260101T000000"}\' '
        '"$GATE_VERSION" > "$GATE_MODEL_REPOSITORY/$GATE_MODEL/current.json"; ' + RIGHT + " --ready-timeout 3",
    ),
    "1-config-not-restored": (
        1,
        "pins config.pbtxt to the new version and leaves it so when the deploy fails",
        RIGHT + f'; rc=$?; sed -i "s/versions: [0-9]*/versions: $GATE_VERSION/" {CONFIG}; exit $rc',
    ),
    "2-unloads": (
        2,
        "rolls back by unloading the model instead of restoring the committed version",
        RIGHT + '; rc=$?; [ $rc -ne 0 ] && curl -s -X POST "$GATE_TRITON_URL/v2/repository/models/$GATE_MODEL/unload"; '
        "exit $rc",
    ),
    "3-deletes": (
        3,
        "deletes the failed version instead of quarantining it",
        RIGHT + f"; rc=$?; rm -rf {FAILED_DIR}.failed_*; exit $rc",
    ),
    "4-staging-left": (
        4,
        "leaves its staging folder behind",
        RIGHT + '; rc=$?; mkdir -p "$GATE_MODEL_REPOSITORY/$GATE_MODEL/.staging-$GATE_VERSION-left"; exit $rc',
    ),
    "5-other-env": (
        5,
        "touches the other environment's repository",
        RIGHT + '; rc=$?; touch "$GATE_MODEL_REPOSITORY/../prod/touched-by-dev-deploy"; exit $rc',
    ),
    "6-exit-0": (6, "reports success whatever happened", RIGHT + "; exit 0"),
}


@pytest.mark.parametrize("wrong", sorted(WRONG_DEPLOYERS))
def test_wrong_deployer_is_caught_by_the_named_invariant(wrong, run_fault):
    """What the wrong deployer breaks is undone by the gate's baseline before the next test."""
    invariant, mistake, command = WRONG_DEPLOYERS[wrong]
    run = run_fault(CATALOGUE["wrong-answers"], deployer=CommandDeployer(command))
    violated = {v.invariant for v in run.violations}
    assert invariant in violated, (
        f"a deployer that {mistake} was not caught by invariant {invariant}:\n{run.describe()}"
    )


def test_the_builtin_path_as_a_command_passes_the_same_checks(run_fault):
    run = run_fault(CATALOGUE["wrong-answers"], deployer=CommandDeployer(RIGHT))
    assert not run.violations, run.describe()
    assert run.outcome.exit_code == 1
    assert "FAILED at smoke" in run.outcome.message
