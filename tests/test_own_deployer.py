"""Bring your own deployer: the gate judges a platform's deploy command by what it leaves behind."""
from __future__ import annotations

from tests.platform_copies import copy_reference

BUILTIN_AS_COMMAND = 'python -m suite deploy --env "$GATE_ENV" --version "$GATE_VERSION"'


def _platform_with_deployer(tmp, command: str):
    platform = copy_reference(tmp) / "platform.yaml"
    platform.write_text(platform.read_text() + f"deployer: {{command: '{command}'}}\n")
    return platform


def test_builtin_path_used_as_the_command_passes_the_fault_catalogue(pytester):
    platform = _platform_with_deployer(pytester.path, BUILTIN_AS_COMMAND)
    result = pytester.runpytest_subprocess("--pyargs", "scenarios", "--platform", str(platform), "-m", "chaos",
                                           "-k", "not killed_at and not sequences", "-q",
                                           timeout=900)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-6000:]
    assert outcomes.get("passed", 0) >= 15, outcomes


# A deployer that deletes failed versions (and more) is in the defect catalogue: tests/defects/.
