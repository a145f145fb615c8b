"""The one wait helper, the one atomic write and the one run id."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from suite.errors import GateError
from suite.files import atomic_write, replacing
from suite.run_id import new_run_id
from suite.waiting import WaitTimeout, let_time_pass, wait_for


def test_wait_for_returns_the_first_satisfying_value():
    counter = itertools.count()
    assert wait_for(lambda: next(counter) >= 3 and "ready", timeout_s=5, interval_s=0.01, awaiting="x") == "ready"
    assert wait_for(lambda: [1, 2], until=lambda v: len(v) == 2, timeout_s=5, interval_s=0.01, awaiting="x") == [1, 2]


def test_wait_timeout_says_what_for_how_long_and_what_was_seen():
    values = iter(range(1000))
    began = time.monotonic()
    with pytest.raises(WaitTimeout) as raised:
        wait_for(lambda: next(values), until=lambda v: v < 0, timeout_s=0.3, interval_s=0.05, awaiting="the answer")
    elapsed = time.monotonic() - began
    assert 0.3 <= elapsed < 1.5
    timeout = raised.value
    assert isinstance(timeout, GateError)
    assert timeout.checks >= 2 and timeout.last_value == timeout.checks - 1  # checked once more at the end
    assert re.match(
        r"gave up waiting for the answer after 0\.\d s \(timeout 0\.3 s, \d+ checks\); "
        r"last value seen: \d+$",
        str(timeout),
    ), str(timeout)


def test_transient_exceptions_mean_not_yet_and_are_reported():
    calls = itertools.count()

    def flaky():
        if next(calls) < 2:
            raise ConnectionError("refused")
        return "up"

    assert wait_for(flaky, timeout_s=5, interval_s=0.01, awaiting="x", transient=(ConnectionError,)) == "up"

    def refused():
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeout, match=r"last exception seen: ConnectionError: refused; last value seen: None"):
        wait_for(refused, timeout_s=0.1, interval_s=0.02, awaiting="x", transient=(ConnectionError,))


def test_other_exceptions_propagate_at_once():
    with pytest.raises(KeyError):
        wait_for(lambda: {}["missing"], timeout_s=5, interval_s=0.01, awaiting="x", transient=(ConnectionError,))


def test_let_time_pass_takes_the_time():
    began = time.monotonic()
    let_time_pass(0.1, why="test")
    assert time.monotonic() - began >= 0.1


def test_atomic_write_takes_text_and_a_failed_write_leaves_the_file(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write(path, "{}\n")
    assert path.read_text() == "{}\n"
    with pytest.raises(RuntimeError):
        with replacing(path) as partial:
            partial.write_text("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_run_ids_sort_by_time_and_never_repeat():
    first, second, worker = new_run_id(), new_run_id(), new_run_id("gw1")
    assert re.fullmatch(r"\d{8}T\d{6}Z-\d+(\.\d+)?", first), first
    assert len({first, second}) == 2 and worker.split("-")[-1].startswith("gw1")
