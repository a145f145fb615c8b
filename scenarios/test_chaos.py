"""Every way a deploy can fail ends in the same safe state, under steady traffic.

Each fault of the catalogue (suite/faults.py) is injected for real while a traffic probe keeps
asking the environment for golden answers; then the invariants (suite/invariants.py) are checked.
"""
from __future__ import annotations

import pytest

from suite.faults import CATALOGUE, FullRepository, mount_faults_unavailable, small_filesystem

pytestmark = pytest.mark.chaos

IN_PLACE = [name for name in CATALOGUE if name != FullRepository.name]


def _judge(run, fault, deployer_is_builtin: bool) -> None:
    assert run.probe.requests > 0, "the traffic probe sent nothing: the scenario measured nothing"
    assert not run.violations, run.describe()
    if deployer_is_builtin:
        assert run.outcome.failed_stage == fault.expected_stage, (
            f"expected the deploy to fail at {fault.expected_stage}:\n{run.describe()}")
    if not fault.disrupts_serving:
        assert run.probe.failures == 0, (
            f"users saw {run.probe.failures} failed requests during a failed deploy (the committed "
            f"version must answer every request):\n{run.describe()}")
    else:
        assert "server killed" in run.notes, run.describe()


@pytest.mark.parametrize("fault_name", IN_PLACE)
def test_fault_ends_in_the_committed_state(fault_name, run_fault, gate_deployer):
    fault = CATALOGUE[fault_name]
    if fault.needs_root and mount_faults_unavailable():
        pytest.skip(mount_faults_unavailable())
    run = run_fault(fault)
    _judge(run, fault, gate_deployer.name == "builtin")


def test_full_repository_ends_in_the_committed_state(run_fault, make_environment, gate_workdir, gate_deployer,
                                                     reference_versions, deploy_into):
    """The repository's filesystem is full: a real 16 MiB tmpfs, filled up, for an extra environment."""
    if mount_faults_unavailable():
        pytest.skip(mount_faults_unavailable())
    fault = CATALOGUE[FullRepository.name]
    with small_filesystem(gate_workdir / "small-fs") as repository:
        environment = make_environment("small-fs", repository)
        first = deploy_into(environment, reference_versions["v1"].version)
        assert first.ok, first.message
        run = run_fault(fault, environment=environment)
        environment.server.stop()
    _judge(run, fault, gate_deployer.name == "builtin")
