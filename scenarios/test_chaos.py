"""Every way a deploy can fail ends in the same safe state, under steady traffic.

Each fault of the catalogue (suite/faults.py) is injected for real while a traffic probe keeps
asking the environment for golden answers; then the invariants (suite/invariants.py) are checked,
and that the fault really happened. Every environment starts at its verified baseline.
"""

from __future__ import annotations

import pytest

from suite.faults import CATALOGUE, FullRepository, mount_faults_unavailable, small_filesystem

pytestmark = pytest.mark.chaos

# Each fault with what it asks of the target (`Fault.needs`): skipped at setup on one without it.
IN_PLACE = [
    pytest.param(name, marks=pytest.mark.needs(*fault.needs)) if fault.needs else name
    for name, fault in CATALOGUE.items()
    if name != FullRepository.name
]


@pytest.mark.parametrize("fault_name", IN_PLACE)
def test_fault_ends_in_the_committed_state(fault_name, run_fault):
    fault = CATALOGUE[fault_name]
    if fault.needs_root and mount_faults_unavailable():
        pytest.skip(mount_faults_unavailable())
    run = run_fault(fault)
    assert not run.violations, run.describe()


def test_full_repository_ends_in_the_committed_state(
    run_fault, make_environment, gate_workdir, reference_versions, deploy
):
    """The repository's filesystem is full: a real 16 MiB tmpfs, filled up, for an extra environment
    (make_environment: skipped at setup on a target that starts no server)."""
    if mount_faults_unavailable():
        pytest.skip(mount_faults_unavailable())
    fault = CATALOGUE[FullRepository.name]
    with small_filesystem(gate_workdir / "small-fs") as repository:
        environment = make_environment("small-fs", repository)
        first = deploy(environment=environment, version=reference_versions["v1"].version)
        assert first.ok, f"the platform's deployer could not make the small environment's baseline:\n{first.message}"
        run = run_fault(fault, environment=environment)
        environment.server.stop()
    assert not run.violations, run.describe()
