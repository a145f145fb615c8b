"""How our own tests share out among xdist workers (`make test`: `--dist loadfile`, tests/conftest.py).

Most of our tests wait (servers starting, alert windows, gate runs), so on 2 cores three workers
overlap those waits. Each test file runs whole in one worker: a module's costly fixture (a gate run,
a running platform) or runner of gate runs (the defect catalogue) is built once. The files that take
longest start first (longest-processing-time first), so that no worker is left alone with the zoo at
the end while the others idle. The order changes wall time only: every test makes its own stacks and
files, and gives the same result alone, in one process or in workers.
"""

from __future__ import annotations

import pytest

# Longest first, as `--durations` measured them in CI (2 cores); every other file keeps its order.
LONGEST_FIRST = (
    "tests/test_zoo.py",  # six gate runs of the zoo, one at a time, in 2 workers each: about 18 min
    "tests/test_defects.py",  # the defect catalogue's gate runs, two at a time
    "tests/test_nightly.py",  # its fixture: the nightly gate runs, about 2 min
    "tests/test_own_deployer.py",  # the chaos scenarios through the builtin command, about 2 min
    "tests/test_faults_reach_deployers.py",  # a stack per fault, about 14 s each
    "tests/test_sessions.py",  # three sessions at once, about 1 min
    "tests/test_environment_names.py",  # its fixture: a gate run of a renamed platform, about 1 min
    "tests/test_seed_platform.py",
    "tests/test_plugin.py",
    "tests/test_targets.py",
    "tests/test_reports.py",
)
DIST = "tests_dist"  # the controller's `--dist`, passed to each worker (a worker's own option reads "no")


def file_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::")[0]
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def whole_module_here(config: pytest.Config) -> bool:
    """True when every selected test of a module runs in this process: no xdist, or xdist
    distributing by file (or by module, for tests outside classes)."""
    workerinput = getattr(config, "workerinput", None)
    return workerinput is None or workerinput.get(DIST) in ("loadfile", "loadscope")
