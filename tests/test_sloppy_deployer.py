"""Every fault of the catalogue is caught when the deploy path is deliberately sloppy.

The sloppy path is the builtin one with the seed platform's weak spots put back: no rollback,
a non-atomic materialize straight into the version folder, and fetch errors swallowed
(`|| true`). Run under each fault, the invariant checker must find something wrong.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from suite.deploy import DEFAULT_STEPS, ROLLBACK_STEPS, DeployContext, Deployer
from suite.deployers import BuiltinDeployer, DeployOutcome, DeployRequest
from suite.faults import CATALOGUE, mount_faults_unavailable
from suite.model_repo import ModelFolder
from suite.registry import Registry

# Which invariants each fault breaks under the sloppy path (at least these must be reported).
# The full-repository fault needs its tmpfs environment: scenarios/test_chaos.py covers it.
EXPECTED = {
    "corrupt-model": {3},
    "config-wrong-input-name": {3},
    "config-wrong-dims": {3},
    "config-wrong-dtype": {3},
    "wrong-answers": {3},
    "slow-model": {3},
    "triton-killed-during-load": {3},
    "triton-killed-during-smoke": {3},
    "mlflow-unreachable": {6},
    "download-cut-halfway": {3, 6},
    "repository-read-only": {6},
    "registry-version-missing": {6},
    "registry-alias-missing": {6},
}


class DownloadInPlace(ModelFolder):
    """The seed's download: straight into version folder N, no staging folder, no rename."""

    def materialize(self, version: int, fill: Callable[[Path], None]) -> bool:
        fill(self.version_path(version))
        return True


def left_as_it_is(ctx: DeployContext) -> str:
    return "not done: the seed has no rollback"


# The seed's gaps through the public extension point: a non-atomic download, no rollback step.
SLOPPY_STEPS = replace(DEFAULT_STEPS, model_folder=DownloadInPlace, **{name: left_as_it_is for name in ROLLBACK_STEPS})


class SloppyDeployer(BuiltinDeployer):
    name = "sloppy"

    def deploy(self, request: DeployRequest) -> DeployOutcome:
        target = request.environment
        path = Deployer(
            Registry(request.mlflow_uri), target, request.model, self.golden, request.settings, steps=SLOPPY_STEPS
        )
        result = path.deploy(alias=request.alias, version=request.version)
        swallowed = result.failed_stage in ("register", "materialize")  # `fetch || true`
        return DeployOutcome(
            ok=result.ok or swallowed,
            failed_stage=result.failed_stage,
            message=result.error or result.describe(),
            deployer=self.name,
        )


@pytest.mark.parametrize("fault_name", sorted(EXPECTED))
def test_fault_is_caught_when_the_deploy_path_is_sloppy(fault_name, run_fault, gate_golden):
    """What the sloppy path leaves behind is undone by the gate's baseline before the next test."""
    fault = CATALOGUE[fault_name]
    if fault.needs_root and mount_faults_unavailable():
        pytest.skip(mount_faults_unavailable())
    run = run_fault(fault, deployer=SloppyDeployer(gate_golden))
    found = {v.invariant for v in run.violations}
    assert EXPECTED[fault_name] <= found, (
        f"under fault {fault_name} the sloppy path must break invariants {sorted(EXPECTED[fault_name])}; "
        f"the checker found {sorted(found, key=str)}:\n{run.describe()}"
    )
