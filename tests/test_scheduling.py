"""How `make test` shares our tests among xdist workers (tests/scheduling.py, tests/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from tests.conftest import pytest_collection_modifyitems
from tests.scheduling import LONGEST_FIRST, whole_module_here

ROOT = Path(__file__).resolve().parents[1]


def _items(*nodeids):
    return [SimpleNamespace(nodeid=nodeid) for nodeid in nodeids]


def test_workers_start_the_longest_files_first_and_keep_the_rest_in_order():
    items = _items(
        "tests/test_bench.py::test_a",
        "tests/test_defects.py::test_defect[x]",
        "scenarios/test_smoke.py::test_s",
        "tests/test_zoo.py::test_zoo[seed-dag]",
        "tests/test_bench.py::test_b",
        "tests/test_zoo.py::test_zoo[careful-shell]",
    )
    pytest_collection_modifyitems(SimpleNamespace(workerinput={}), items)
    assert [i.nodeid for i in items] == [
        "tests/test_zoo.py::test_zoo[seed-dag]",
        "tests/test_zoo.py::test_zoo[careful-shell]",
        "tests/test_defects.py::test_defect[x]",
        "tests/test_bench.py::test_a",
        "scenarios/test_smoke.py::test_s",
        "tests/test_bench.py::test_b",
    ]


def test_one_process_keeps_pytests_order():
    items = _items("tests/test_bench.py::test_a", "tests/test_zoo.py::test_zoo[x]")
    pytest_collection_modifyitems(SimpleNamespace(), items)
    assert [i.nodeid for i in items] == ["tests/test_bench.py::test_a", "tests/test_zoo.py::test_zoo[x]"]


def test_every_longest_file_exists_and_make_test_schedules_by_file_in_that_order():
    # A renamed file would silently lose its place; without loadfile and no reorder the order means nothing.
    assert [p for p in LONGEST_FIRST if not (ROOT / p).is_file()] == []
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"-m pytest tests scenarios -n \$\(TEST_WORKERS\) --dist loadfile --no-loadscope-reorder", recipe)


def test_a_worker_knows_whether_it_runs_whole_files(pytester, monkeypatch):
    """With the real xdist: the controller's `--dist` reaches the workers (their own option reads "no")."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.conftest import pytest_collection_modifyitems, pytest_configure_node  # noqa")
    pytester.makepyfile(
        test_where="""
        import os
        from tests.scheduling import whole_module_here

        def test_where(request):
            assert whole_module_here(request.config) is (os.environ["EXPECT"] == "whole")
        """
    )
    for dist, expect in (("loadfile", "whole"), ("load", "split")):
        monkeypatch.setenv("EXPECT", expect)
        result = pytester.runpytest_subprocess("-n", "2", "--dist", dist, "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)
    assert whole_module_here(SimpleNamespace()) is True  # no xdist: one process runs everything
