"""A platform no one here wrote: the seed's real PrometheusRules and documented routing.

The gate must run to a verdict against it, not crash, and name each finding precisely.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed-platform" / "platform.yaml"

# What the gate finds in the seed platform, each in the scenario that names it.
EXPECTED_FINDINGS = [
    "*Failed: dev: no promtool unit tests next to*triton-alerts-dev.yaml*",
    "*Failed: prod: no promtool unit tests next to*triton-alerts-prod.yaml*",
    "*Failed: dev: the platform has no alert for Triton being down*",
    "*Failed: prod: the platform has no alert for Triton being down*",
]


@pytest.mark.skipif(
    not SEED.is_file(), reason=f"the seed platform is not at {SEED} (shared/ is not beside the checkout)"
)
def test_gate_reaches_a_verdict_on_the_seed_platform_and_names_its_findings(pytester):
    result = pytester.runpytest_subprocess(
        "--pyargs",
        "scenarios",
        "--platform",
        str(SEED),
        "-m",
        "metrics or alerts",
        "-k",
        "not slow_model",
        "-q",
        "-rfE",
        timeout=900,
    )
    text = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, f"expected a failing verdict with findings:\n{text[-5000:]}"
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) == 0, (
        f"the gate crashed on the seed platform instead of judging it:\n{text[-5000:]}"
    )
    assert outcomes.get("passed", 0) > 10, outcomes
    result.stdout.fnmatch_lines_random(EXPECTED_FINDINGS)
