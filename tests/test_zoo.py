"""The gate's verdict on deployers it did not write (tests/deployers/): exactly the expected table.

Each zoo deployer is run as a platform's deploy command through `pytest scenarios -m "deploy or
chaos"`, as a user would run the gate; every scenario's verdict (pass, skip, or fail with the
violated invariants and checks) must be the one its table names, for the broken deployers (no
miss) and the correct ones (no false alarm). Some scenarios are also run alone: a scenario's
verdict does not depend on what ran before it.
"""

from __future__ import annotations

import pytest

from tests.deployers.zoo import FAULT, ISOLATION, OLDER, ZOO, run_deployer, run_zoo
from tools.defects import Selection

BY_NAME = {d.name: d for d in ZOO}
JOBS = 2  # two gate runs at a time: on 2 cores one run's waits overlap the other's work
# Each gate run in two xdist workers (four in all, about 60% of 2 cores, as `make gate` runs):
# 561 s for the six against 731 s in one process each, the same verdicts in 3 runs of 3. Before the
# faults that hang on timing were made to tolerate it (README, "Parallel runs") this load gave false
# alarms in 3 runs of 4.
WORKERS = 2
# Scenarios run alone, each in its own gate session, for the deployers whose failures (a bad
# version committed, leftovers) would once have cascaded into the scenarios after them.
ALONE = [
    ("seed-dag", FAULT.format("registry-version-missing")),
    ("seed-dag", ISOLATION.format("prod-dev")),
    ("seed-dag", FAULT.format("wrong-answers")),
    ("quarantine-outside", OLDER),
]


@pytest.fixture(scope="session")
def zoo_runs(request, tmp_path_factory):
    """Every selected deployer's gate run, started together (JOBS at a time) when first needed."""
    if hasattr(request.config, "workerinput"):
        # Under xdist: one gate run per test, in its worker, rather than every deployer in every
        # worker. Also when the whole file is this worker's (`make test`): the other workers'
        # tests are the parallelism there, and two zoo runs beside them would load 2 cores past
        # what the zoo's verdicts were measured under.
        return {}
    wanted = {
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_zoo_deployer_gets_exactly_its_expected_verdicts"
    }
    return run_zoo([d for d in ZOO if d.name in wanted], tmp_path_factory.mktemp("zoo"), JOBS, WORKERS)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_zoo_deployer_gets_exactly_its_expected_verdicts(name, zoo_runs, tmp_path):
    if name not in zoo_runs:
        zoo_runs.update(run_zoo([BY_NAME[name]], tmp_path, jobs=1, workers=WORKERS))
    try:
        run = zoo_runs[name].result()
    except KeyboardInterrupt:
        for queued in zoo_runs.values():  # Ctrl-C: no gate run starts after it
            queued.cancel()
        raise
    assert run.verdicts, f"the gate run left no summary.json ({run.gate.summary()}):\n{run.gate.output[-4000:]}"
    mismatches = run.mismatches()
    assert not mismatches, (
        f"{name} ({'correct' if run.deployer.correct else '; '.join(run.deployer.defects)}): the gate's verdicts "
        f"differ from the expected ones:\n"
        + "\n".join(f"  {node}: expected {want!r}, the gate said {seen!r}" for node, (want, seen) in mismatches.items())
        + f"\n{run.gate.output[-6000:]}"
    )
    missing = [node for node in run.deployer.verdicts if node not in run.verdicts]
    assert not missing, f"{name}: scenarios of the expected table did not run: {missing}"


@pytest.mark.parametrize("name,scenario", ALONE, ids=[f"{n}-{s.split('::')[-1]}" for n, s in ALONE])
def test_scenario_gives_the_same_verdict_alone_as_in_the_session(name, scenario, tmp_path):
    deployer = BY_NAME[name]
    run = run_deployer(deployer, tmp_path, Selection(nodes=(scenario,)))
    assert run.verdicts.get(scenario) == deployer.expected(scenario), (
        f"{scenario} with {name}, alone: {run.verdicts.get(scenario)!r}; in the full session (the zoo table): "
        f"{deployer.expected(scenario)!r}\n{run.gate.output[-4000:]}"
    )
