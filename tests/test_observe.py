"""DeployObserver: a point seen while the deployer runs triggers the action once; a point that was
the deployer's last act, done just before it exited, is reported as reached too late, not missed."""

from __future__ import annotations

import time

from suite.observe import DeployObserver


def test_point_seen_in_time_runs_the_action_once(tmp_path):
    calls = []
    with DeployObserver(tmp_path, "http://127.0.0.1:9", "current-changed", calls.append) as observer:
        (tmp_path / "current.json").write_text('{"version": 2}')
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        (tmp_path / "current.json").write_text('{"version": 3}')
        time.sleep(0.05)
    assert calls == ["current.json changed"] and observer.seen == "current.json changed"
    assert observer.too_late is False


def test_last_act_before_exit_is_reached_too_late_not_missed(tmp_path):
    calls = []
    (tmp_path / "current.json").write_text('{"version": 1}')
    observer = DeployObserver(tmp_path, "http://127.0.0.1:9", "current-changed", calls.append)
    observer._stop.set()  # its watcher never polls again: the change below lands between two polls
    with observer:
        (tmp_path / "current.json").write_text('{"version": 2}')
    assert observer.seen == "current.json changed" and observer.too_late is True
    assert calls == []  # the deployer is gone: nothing to act on


def test_point_never_reached_stays_unseen(tmp_path):
    with DeployObserver(tmp_path, "http://127.0.0.1:9", "config-changed", lambda detail: None) as observer:
        (tmp_path / "current.json").write_text("{}")
    assert observer.seen is None and observer.too_late is False
