"""Every fault of the catalogue is caught when the deploy path is deliberately sloppy.

The sloppy path is the builtin one with the seed platform's weak spots put back: no rollback,
a non-atomic materialize straight into the version folder, and fetch errors swallowed
(`|| true`). Run under each fault, the invariant checker must find something wrong.
"""
from __future__ import annotations

import pytest

from suite.deploy import Deployer, DeployTarget
from suite.deployers import BuiltinDeployer, DeployOutcome, DeployRequest
from suite.faults import CATALOGUE, mount_faults_unavailable
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


class SloppyPath(Deployer):
    def _rollback(self, result, committed, before_current, before_config) -> None:
        pass  # the seed's gap: a failed deploy is left as it is

    def _materialize(self, registered, state, journal):
        from suite import model_config

        version = registered.version
        self.folder.write_journal(journal)
        state["journal"] = True
        target = self.folder.version_path(version)  # straight into place: not atomic
        self.registry.download_model_file(self.model, version, target)
        state["materialized"] = True
        return model_config.pinned(model_config.read(self.folder.config_path), version)


class SloppyDeployer(BuiltinDeployer):
    name = "sloppy"

    def deploy(self, request: DeployRequest) -> DeployOutcome:
        target = DeployTarget(request.env, request.repository, request.triton)
        path = SloppyPath(Registry(request.mlflow_uri), target, request.model, self.golden, request.settings)
        result = path.deploy(alias=request.alias, version=request.version)
        swallowed = result.failed_stage in ("register", "materialize")  # `fetch || true`
        return DeployOutcome(ok=result.ok or swallowed, failed_stage=result.failed_stage,
                             message=result.error or result.describe(), deployer=self.name)


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
        f"the checker found {sorted(found, key=str)}:\n{run.describe()}")
