"""Many gate sessions on one machine: each keeps to its own processes, files and ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from suite import monitoring_stack
from suite.monitoring_stack import MonitoredTarget, MonitoringStack
from tools.sessions import run_trial

ROOT = Path(__file__).resolve().parent.parent

# Smoke, a deploy, and the faults that SIGKILL a Triton and mount filesystems: what a session
# killed half-way most likely leaves behind.
SELECTION = [
    "scenarios/test_smoke.py",
    "scenarios/test_deploy_path.py",
    "scenarios/test_chaos.py",
    "-k",
    "smoke or deploy_by_version or killed-during-load or read-only or full_repository",
]


@pytest.mark.skipif(sys.platform != "linux", reason="process and mount checks read /proc")
def test_three_sessions_at_once_one_killed_one_interrupted(tmp_path):
    trial = run_trial(tmp_path, SELECTION, sessions=3, kill=1, interrupt=1)
    roles = {s.role: s for s in trial.sessions}
    assert roles["killed"].exit_code == -9, "the killed session was not killed half-way: the trial proves nothing"
    assert not trial.problems, "\n".join(trial.problems)
    assert roles["runs"].scenarios == trial.solo_scenarios >= 8


def test_a_second_session_in_the_same_gate_workdir_is_refused(tmp_path):
    """Two sessions in one --gate-workdir would deploy into each other's repositories."""
    workdir = tmp_path / "work"
    (workdir / "main").mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, filelock
                lock = filelock.FileLock({str(workdir / "main" / ".gate-session.lock")!r})
                lock.acquire()
                open({str(workdir / "main" / ".gate-session.owner")!r}, "w").write("pid 4242, since earlier")
                print("held", flush=True)
                sys.stdin.read()
            """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(
            [sys.executable, "-m", "pytest", "scenarios/test_smoke.py", "--gate-workdir", str(workdir)]
            + ["-p", "no:cacheprovider", "--report-dir", str(tmp_path / "reports")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.stdin.close()
        holder.wait()
    assert second.returncode == pytest.ExitCode.USAGE_ERROR, second.stdout[-2000:] + second.stderr[-2000:]
    assert "is in use by another gate session (pid 4242, since earlier)" in second.stdout + second.stderr
    assert "its own --gate-workdir" in second.stdout + second.stderr


def test_monitoring_moves_to_new_ports_when_another_process_took_one(tmp_path, monkeypatch):
    """Between choosing a free port and binding it, another session may take it."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()  # listens, never answers: Prometheus cannot bind it
    ports = iter([taken.getsockname()[1]])
    monkeypatch.setattr(monitoring_stack, "free_port", lambda: next(ports, None) or _kernel_port())
    stack = MonitoringStack(
        tmp_path, [MonitoredTarget("dev", "ns", "release", "127.0.0.1:9")], {"dev": None}, {"dev": None}
    )
    try:
        stack.start()
        url = stack.environments["dev"].prometheus_url
        assert not url.endswith(f":{taken.getsockname()[1]}"), "started on the taken port"
        assert stack.environments["dev"].targets() is not None  # our Prometheus answers, on its new port
    finally:
        stack.stop()
        taken.close()


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_only_what_stays_new_counts_as_left_behind(monkeypatch):
    """Other gates on the machine (other tests under xdist) stage their own faults for a scenario."""
    from tools import sessions

    monkeypatch.setattr(sessions, "LEFTOVER_S", 1.0)
    seen = iter([{"/tmp/gate-read-only-theirs", "/tmp/gate-read-only-left"}] + [{"/tmp/gate-read-only-left"}] * 99)
    assert sessions._still_new(lambda: next(seen)) == [{"/tmp/gate-read-only-left"}]
    began = time.monotonic()
    crashed_triton = {"/tmp/python_env_Ab12Cd"}  # counted apart, not waited for
    assert sessions._still_new(lambda: set(crashed_triton)) == [crashed_triton]
    assert time.monotonic() - began < 0.5
