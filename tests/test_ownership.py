"""No gate session signals a process it did not start (issue: another session's MLflow "killed by
SIGKILL" while four sessions ran on one machine).

The cause, reproduced below: mirakuru's exit hook SIGKILLs every process whose `mirakuru_uuid`
contains the exiting interpreter's pid as a substring, and each deploy (`python -m suite deploy`,
which imports the gate's process module) is such an interpreter. The second route closed here: a
process-group id recorded by the gate that a stranger's group took after ours ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from suite.ownership import SESSION_VARIABLE, OwnedGroup, tagged
from suite.processes import ServerProcess, free_port
from suite.targets.mounts import mounts
from tests.proc_utils import group_members, wait_group_gone

ROOT = Path(__file__).resolve().parent.parent


def _stranger(**env: str) -> subprocess.Popen:
    """A process of someone else's, leading its own group (as another session's server does)."""
    return subprocess.Popen(["sleep", "300"], env={**os.environ, **env}, start_new_session=True)


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def _python_that_exits(imports: str) -> subprocess.Popen:
    """A Python interpreter that imports `imports`, then exits when its stdin closes."""
    return subprocess.Popen(
        [sys.executable, "-c", f"import sys, {imports}; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "imports, spared",
    [
        pytest.param("mirakuru", False, id="bare mirakuru: the cause"),
        pytest.param("suite.registry", True, id="what a deploy imports: fixed"),
    ],
)
def test_an_exiting_interpreter_spares_processes_whose_tag_contains_its_pid(imports, spared):
    interpreter = _python_that_exits(imports)
    # Another session's server: its mirakuru tag is "<that gate's pid>:<uuid>", and holds our pid.
    stranger = _stranger(mirakuru_uuid=f"9{interpreter.pid}7:0f1e2d3c")
    try:
        time.sleep(1.0)  # the interpreter has imported what it imports
        interpreter.stdin.close()
        interpreter.wait(timeout=30)
        time.sleep(0.3)
        assert _alive(stranger) is spared, (
            f"a Python that imported {imports} and exited "
            f"{'SIGKILLed' if not _alive(stranger) else 'spared'} a stranger (returncode {stranger.poll()})"
        )
    finally:
        stranger.kill()
        stranger.wait()


def test_a_recorded_group_whose_id_a_stranger_took_is_never_signalled():
    ours = subprocess.Popen(["true"], start_new_session=True, env=tagged())
    recorded = OwnedGroup.of(ours.pid)
    ours.wait()
    time.sleep(0.05)  # start times tick every 10 ms; a reused id comes minutes later
    stranger = _stranger()
    try:
        # The kernel gave our old group id to the stranger: same number, another start time.
        reused = OwnedGroup(stranger.pid, recorded.leader_started)
        assert reused.state() == "reused"
        assert reused.signal(signal.SIGKILL) is False
        time.sleep(0.2)
        assert _alive(stranger)
        assert OwnedGroup.of(stranger.pid).state() == "ours"  # the check can say yes too
    finally:
        stranger.kill()
        stranger.wait()


def test_a_stranger_group_without_its_leader_is_not_ours_but_our_orphans_are():
    """With the leader gone, the group is ours only if what is left carries our session token."""
    for environ, expected in ((tagged(), "ours"), (dict(os.environ), "reused")):
        leader = subprocess.Popen(
            ["bash", "-c", "sleep 300 & echo $!"], stdout=subprocess.PIPE, env=environ, start_new_session=True
        )
        orphan = int(leader.stdout.readline())
        group = OwnedGroup.of(leader.pid) if expected == "ours" else OwnedGroup(leader.pid, 0.0)
        leader.wait()  # reaped: only its child holds the group id now
        try:
            assert group.state() == expected
            assert group.signal(signal.SIGKILL) is (expected == "ours")
            if expected == "ours":
                assert not wait_group_gone(leader.pid, 5), "our orphan must be reached"
                assert group.state() == "gone"
            else:
                time.sleep(0.2)
                assert group_members(leader.pid) == [orphan], "a stranger's orphan must be spared"
        finally:
            if group_members(leader.pid):
                os.killpg(leader.pid, signal.SIGKILL)


def _http_server(tmp_path: Path, port: int) -> list:
    script = tmp_path / "server.py"
    script.write_text(
        f"import http.server\nhttp.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()\n"
    )
    return [sys.executable, str(script)]


def test_a_server_that_died_on_its_own_is_forgotten_and_its_old_id_spared(tmp_path):
    port = free_port()
    server = ServerProcess(
        "short-lived", _http_server(tmp_path, port), f"http://127.0.0.1:{port}/", tmp_path / "s.log", ports=[port]
    )
    server.start()
    assert server.running()
    recorded = server._owned
    assert psutil_environ(server.pid).get(SESSION_VARIABLE), "every process the gate starts carries its token"
    os.kill(server.pid, signal.SIGKILL)  # crashed, or killed by someone else
    time.sleep(0.3)
    assert not server.running()
    assert server._owned is None, "a group that ended is forgotten at once"
    # Had it been kept, and its id taken by a stranger, stop() must still spare the stranger.
    stranger = _stranger()  # started 0.3 s after the server: another start time
    try:
        server._owned = OwnedGroup(stranger.pid, recorded.leader_started)
        server.stop()
        time.sleep(0.2)
        assert _alive(stranger), "stop() signalled a group the gate no longer owns"
    finally:
        stranger.kill()
        stranger.wait()


def psutil_environ(pid: int) -> dict:
    import psutil

    return psutil.Process(pid).environ()


def _watchdog() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "suite.watchdog"], stdin=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )


def test_the_watchdog_ends_its_groups_and_spares_a_stranger_that_took_a_registered_id():
    ours = subprocess.Popen(["sleep", "300"], start_new_session=True, env=tagged())
    ended = subprocess.Popen(["true"], start_new_session=True, env=tagged())
    ended_group = OwnedGroup.of(ended.pid)
    ended.wait()
    time.sleep(0.05)  # start times tick every 10 ms; a reused id comes minutes later
    stranger = _stranger()
    watchdog = _watchdog()
    try:
        watchdog.stdin.write(f"+{OwnedGroup.of(ours.pid).encode()}\n")
        # What a stale registration looks like once a stranger has the number.
        watchdog.stdin.write(f"+{OwnedGroup(stranger.pid, ended_group.leader_started).encode()}\n")
        watchdog.stdin.close()  # the gate died
        watchdog.wait(timeout=30)
        ours.wait(timeout=5)
        assert _alive(stranger), "the watchdog signalled a group the gate no longer owns"
    finally:
        for proc in (ours, stranger):
            proc.kill()
            proc.wait()


FAULT_IN_PROGRESS = {
    "tmpfs": """
        from suite.faults import small_filesystem
        with small_filesystem(folder):
            print("mounted", flush=True)
            time.sleep(300)
    """,
    "read-only bind": """
        from types import SimpleNamespace
        from suite.faults import ReadOnlyRepository
        ctx = SimpleNamespace(environment=SimpleNamespace(repository=folder.parent), model=folder.name)
        with ReadOnlyRepository().injected(ctx, None):
            print("mounted", flush=True)
            time.sleep(300)
    """,
}


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
@pytest.mark.parametrize("fault", sorted(FAULT_IN_PROGRESS))
def test_the_watchdog_undoes_a_faults_mounts_when_the_gate_dies(tmp_path, fault):
    point = tmp_path / "repository" / "m"
    point.mkdir(parents=True)
    gate = tmp_path / "gate.py"
    gate.write_text(
        "import time\nfrom pathlib import Path\n"
        f"folder = Path({str(point)!r})\n" + textwrap.dedent(FAULT_IN_PROGRESS[fault])
    )
    # The gate's own temp folder: under xdist (`make test`) other tests' gates stage their faults in /tmp meanwhile.
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.Popen([sys.executable, str(gate)], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        assert proc.stdout.readline().strip() == "mounted"
        assert _mounted(point)
        proc.kill()  # SIGKILL: no `finally` runs in the gate
        proc.wait()
        deadline = time.monotonic() + 15
        while _mounted(point) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _mounted(point), f"the {fault} outlived the SIGKILLed gate"
        time.sleep(0.5)
        assert list(temp.iterdir()) == [], "the staging folder was left"
    finally:
        if _mounted(point):
            subprocess.run(["umount", "-l", str(point)])


def _mounted(path: Path) -> bool:
    """Whether `path` is a mount point (a bind mount of the same filesystem too, unlike ismount)."""
    return any(m.point == path for m in mounts())
