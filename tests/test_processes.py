"""Server processes: own group, log tail on failure, SIGTERM->SIGKILL, and the watchdog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from suite.errors import StackStartError
from suite.processes import PortTaken, ServerProcess, free_port, free_ports
from tests.proc_utils import wait_group_gone


def _gone(pid: int, within: float) -> bool:
    return not wait_group_gone(pid, within)  # servers lead their own group: pgid == pid


def test_free_ports_are_different_from_each_other():
    # One free_port() after another can be handed the same port again (CI saw Triton started with
    # HTTP and gRPC on one port); free_ports(n) holds every socket until all n are chosen.
    for _ in range(200):
        ports = free_ports(3)
        assert len(set(ports)) == 3, ports


def _http_server(tmp_path, port: int, extra: str = "") -> list[str]:
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(f"""
        import http.server, signal, sys
        {extra}
        print("serving", flush=True)
        http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler).serve_forever()
    """)
    )
    return [sys.executable, str(script)]


def test_server_that_exits_fails_with_its_log_tail(tmp_path):
    server = ServerProcess(
        "crasher",
        [sys.executable, "-c", "print('boom: bad flag'); raise SystemExit(3)"],
        ready_url=f"http://127.0.0.1:{free_port()}/",
        log_path=tmp_path / "crasher.log",
        start_timeout=10,
    )
    with pytest.raises(StackStartError) as raised:
        server.start()
    assert "crasher exited during start-up" in str(raised.value)
    assert "boom: bad flag" in str(raised.value), "the log tail must be in the error"


def test_server_that_never_gets_ready_times_out_with_log(tmp_path):
    server = ServerProcess(
        "sleeper",
        [sys.executable, "-c", "print('still warming up', flush=True); import time; time.sleep(60)"],
        ready_url=f"http://127.0.0.1:{free_port()}/",
        log_path=tmp_path / "s.log",
        start_timeout=1.5,
    )
    begin = time.monotonic()
    with pytest.raises(StackStartError, match="did not answer .* within 2 s") as raised:
        server.start()
    assert time.monotonic() - begin < 10
    assert "still warming up" in str(raised.value)


def test_stop_escalates_to_sigkill_for_a_server_ignoring_sigterm(tmp_path):
    port = free_port()
    argv = _http_server(tmp_path, port, "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    server = ServerProcess(
        "stubborn", argv, ready_url=f"http://127.0.0.1:{port}/", log_path=tmp_path / "stubborn.log", stop_grace=0.5
    )
    server.start()
    pid = server.pid
    assert os.getpgid(pid) == pid, "every server leads its own process group"
    begin = time.monotonic()
    server.stop()
    assert _gone(pid, 3), "SIGKILL must follow the ignored SIGTERM"
    assert time.monotonic() - begin < 3


def test_watchdog_ends_servers_when_the_gate_is_sigkilled(tmp_path):
    port = free_port()
    argv = _http_server(tmp_path, port)
    gate = tmp_path / "gate.py"
    gate.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from pathlib import Path
        from suite.processes import ServerProcess
        s = ServerProcess("child", {argv!r}, ready_url="http://127.0.0.1:{port}/",
                          log_path=Path({str(tmp_path / "child.log")!r}))
        s.start()
        print(s.pid, flush=True)
        time.sleep(120)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(gate)], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _gone(child, 5), f"server {child} outlived the SIGKILLed gate"


def _answering(port: int):
    """Another process's HTTP server on `port` (here a thread: any listener not of the server's group)."""
    import http.server
    import threading

    other = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    return other


def test_a_port_taken_before_the_start_is_reported_as_taken(tmp_path):
    port = free_port()
    other = _answering(port)
    try:
        server = ServerProcess(
            "late",
            _http_server(tmp_path, port),
            ready_url=f"http://127.0.0.1:{port}/",
            log_path=tmp_path / "late.log",
            start_timeout=10,
            ports=[port],
        )
        with pytest.raises(PortTaken, match="another process"):
            server.start()
    finally:
        other.shutdown()


def test_an_answer_from_a_process_that_took_the_port_is_not_readiness(tmp_path):
    """The port is taken while the server starts: the other process answers the ready URL, but the
    server's own group does not listen on it, so it is not ready; it fails to bind: PortTaken."""
    port = free_port()
    holder: list = []
    command = _http_server(tmp_path, port, extra="import time; time.sleep(1.0)")
    server = ServerProcess(
        "slow",
        command,
        ready_url=f"http://127.0.0.1:{port}/",
        log_path=tmp_path / "slow.log",
        start_timeout=20,
        ports=[port],
    )
    import threading

    threading.Timer(0.3, lambda: holder.append(_answering(port))).start()
    try:
        with pytest.raises(PortTaken):
            server.start()
    finally:
        time.sleep(0.5)
        for other in holder:
            other.shutdown()


def test_triton_moves_to_new_ports_when_another_process_took_one(gate_stack, tmp_path):
    from suite.triton_server import TritonServer

    server = TritonServer("port-test", gate_stack.runtime, tmp_path / "repo", tmp_path / "triton.log")
    taken = server.ports[0]
    other = _answering(taken)
    try:
        server.start()
        assert server.ports[0] != taken and server.endpoints.http.endswith(f":{server.ports[0]}")
    finally:
        server.stop()
        other.shutdown()
