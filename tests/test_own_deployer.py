"""Bring your own deployer: the gate judges a platform's deploy command by what it leaves behind."""

from __future__ import annotations

from suite.deployers import BUILTIN_COMMAND, BUILTIN_RECOVER
from tests.platform_copies import copy_reference


def _platform_with_deployer(tmp, command: str, recover: str):
    platform = copy_reference(tmp) / "platform.yaml"
    platform.write_text(platform.read_text() + f"deployer: {{command: '{command}', recover: '{recover}'}}\n")
    return platform


def test_builtin_path_used_as_the_command_passes_the_chaos_scenarios(pytester):
    """The builtin path's command line as a platform's deployer: every chaos scenario that runs a
    command (the stage-boundary sweep and the lock-timeout race are the builtin's own) passes."""
    platform = _platform_with_deployer(pytester.path, BUILTIN_COMMAND, BUILTIN_RECOVER)
    result = pytester.runpytest_subprocess(
        "--pyargs", "scenarios", "--platform", str(platform), "-m", "chaos", "-k", "not sequences", "-q", timeout=1200
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-6000:]
    assert outcomes.get("passed", 0) >= 20, outcomes


# A deployer that deletes failed versions (and more) is in the defect catalogue: tests/defects/.
# Deployers written from scratch, with their expected verdicts, are in tests/deployers/ (test_zoo.py).
