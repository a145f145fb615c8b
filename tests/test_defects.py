"""The gate catches every seeded defect of tests/defects/ in the scenario that names it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from suite.platform import REFERENCE_DIR
from tests.defects import CATALOGUE
from tests.scheduling import whole_module_here
from tools.defects import Defect, DefectRunner, GateRun, Selection, judge, read_junit

BY_ID = {d.id: d for d in CATALOGUE}
# Two gate runs at a time: on 2 cores one run's waits (servers starting, alerts, traffic)
# overlap the other's CPU; more would only queue for the cores.
JOBS = 2


def _param(defect: Defect):
    # A known gap is not run here (it costs a stack for a known answer); `python -m tools.defects` runs it.
    marks = [pytest.mark.xfail(run=False, reason=f"known gap: {defect.known_gap}")] if defect.known_gap else []
    return pytest.param(defect.id, marks=marks, id=defect.id)


@pytest.fixture(scope="session")
def defect_runs(request, tmp_path_factory):
    """One runner for the session: the selected defects' gate runs (and each selection's reference run
    once) are queued at the start, so they run two at a time while the tests wait in order."""
    selected = [
        item.callspec.params["defect_id"]
        for item in request.session.items
        if hasattr(item, "callspec") and "defect_id" in item.callspec.params
    ]
    # Under xdist a worker may run only some of these tests: run lazily there rather than everything in
    # every worker, unless the whole module is this worker's (`make test`'s `--dist loadfile`).
    wanted = [d for d in selected if not BY_ID[d].known_gap] if whole_module_here(request.config) else []
    runner = DefectRunner(CATALOGUE, REFERENCE_DIR, tmp_path_factory.mktemp("defects"), jobs=JOBS).start(wanted)
    yield runner
    runner.close()


@pytest.mark.parametrize("defect_id", [_param(d) for d in CATALOGUE])
def test_defect_is_caught_by_the_scenario_that_names_it(defect_id, defect_runs):
    defect = BY_ID[defect_id]
    result = defect_runs.result(defect_id)
    assert result.reference_ok, (
        f"the unbroken reference must pass {defect.reference_selection} (expected scenarios "
        f"{defect.expected} passed): {result.reference.summary()}\n"
        f"{result.reference.output[-4000:]}"
    )
    assert result.caught, (
        f"{defect.id} ({defect.description}) was not caught: {result.reason}\n{result.run.output[-4000:]}"
    )


def test_catalogue_is_complete_and_well_formed():
    assert len(CATALOGUE) >= 15, len(CATALOGUE)
    for defect in CATALOGUE:
        assert defect.expected and defect.description and "\n" not in defect.description, defect.id
        for node in defect.expected:
            assert (REFERENCE_DIR.parent / "scenarios" / node.split("::")[0]).is_file(), f"{defect.id}: {node}"


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="scenarios.test_alerts" name="test_routing_table_with_amtool[dev]">
<failure message="dev: routes against the policy">detail namespace='default'</failure></testcase>
<testcase classname="scenarios.test_alerts" name="test_routing_table_with_amtool[prod]"/>
<testcase classname="scenarios.test_metrics" name="test_x[dev]"><skipped message="no dashboard"/></testcase>
<testcase classname="scenarios.test_metrics" name="test_y[dev]"><error message="fixture broke"/></testcase>
</testsuite></testsuites>"""


def test_judge_reads_junit_and_names_the_failing_scenario(tmp_path: Path):
    (tmp_path / "junit.xml").write_text(textwrap.dedent(JUNIT))
    outcomes, texts = read_junit(tmp_path / "junit.xml")
    assert outcomes == {
        "test_alerts.py::test_routing_table_with_amtool[dev]": "failed",
        "test_alerts.py::test_routing_table_with_amtool[prod]": "passed",
        "test_metrics.py::test_x[dev]": "skipped",
        "test_metrics.py::test_y[dev]": "error",
    }
    run = GateRun(tmp_path, Selection(), 1, 1.0, outcomes, texts)

    def defect(expected: str, *messages: str) -> Defect:
        return Defect("d", "a defect", lambda p: None, Selection(), (expected,), messages)

    assert judge(defect("test_alerts.py::test_routing_table_with_amtool[dev]", "namespace='default'"), run)[0]
    assert not judge(defect("test_alerts.py::test_routing_table_with_amtool[dev]", "triton-prod"), run)[0]
    assert not judge(defect("test_alerts.py::test_routing_table_with_amtool[prod]"), run)[0]
    assert not judge(defect("test_metrics.py::test_y[dev]"), run)[0], "an error is not a catch"
    crashed = GateRun(tmp_path, Selection(), 3, 1.0, outcomes, texts)
    assert not judge(defect("test_alerts.py::test_routing_table_with_amtool[dev]"), crashed)[0]
