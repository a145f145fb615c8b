"""Our tests under xdist: whole files per worker, the longest first (tests/scheduling.py)."""

from __future__ import annotations

from typing import List

import pytest

from tests.scheduling import DIST, file_rank


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    node.workerinput[DIST] = node.config.getoption("dist")


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    # Only in xdist workers, whose collection order is the schedule (with `--no-loadscope-reorder`);
    # one process keeps pytest's order. The sort is stable and the same in every worker, as xdist requires.
    if hasattr(config, "workerinput"):
        items.sort(key=file_rank)
