"""Server processes of the embedded stack: own process group, readiness wait, sure stop.

Start-and-wait is mirakuru's (each process in its own session, HTTP readiness check, kill of
the whole group); this module adds log files, error messages with the log tail, a short
SIGTERM grace before SIGKILL, and the watchdog that ends everything if the gate is killed.
Every signal goes through `suite.ownership`: a group is signalled only while it is still ours.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import mirakuru.base
import psutil
from mirakuru import HTTPExecutor, SimpleExecutor
from mirakuru.exceptions import ProcessExitedWithError, TimeoutExpired

from suite.errors import StackStartError
from suite.ownership import OwnedGroup, tagged

# mirakuru's exit hook SIGKILLs every process on the machine whose `mirakuru_uuid` merely contains
# the exiting interpreter's pid as a substring: each short-lived `python -m suite deploy` killed, now
# and then, another session's MLflow or Triton ("killed by SIGKILL", no OOM). The gate ends its own
# servers itself, and the watchdog does when the gate dies; nothing else may.
atexit.unregister(mirakuru.base.cleanup_subprocesses)

LOG_TAIL_LINES = 30


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> List[int]:
    """`count` different ports on 127.0.0.1 that nothing listens on right now.

    All sockets stay bound until every port is chosen: one `free_port()` after another may be
    given the same port again (seen in CI: Triton refused HTTP and gRPC on one port)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except FileNotFoundError:
        return "(no log written)"


class Watchdog:
    """The gate's side of `suite.watchdog`: registers process groups to end if we die."""

    _instance: Optional["Watchdog"] = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "suite.watchdog"],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": _source_root() + os.pathsep + os.environ.get("PYTHONPATH", "")},
        )
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> "Watchdog":
        with cls._guard:
            if cls._instance is None or cls._instance._proc.poll() is not None:
                cls._instance = Watchdog()
            return cls._instance

    def _send(self, line: str) -> None:
        with self._lock:
            assert self._proc.stdin is not None
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()

    def watch(self, group: OwnedGroup) -> None:
        self._send(f"+{group.encode()}")

    def forget(self, group: OwnedGroup) -> None:
        self._send(f"-{group.encode()}")

    def watch_mount(self, path: Path, remove_folder: bool = False) -> None:
        """A mount to undo (lazily) if the gate dies while it is there; and its folder to remove."""
        self._send(f"{'t' if remove_folder else 'm'}+{path}")

    def forget_mount(self, path: Path) -> None:
        self._send(f"m-{path}")  # either kind

    @property
    def pid(self) -> int:
        return self._proc.pid


def _source_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


class PortTaken(StackStartError):
    """Raised when a server could not have its port: another process bound it between our choosing
    it and the server binding it (other gate sessions on the same machine do that)."""


# How many times a server is started again on new ports when another process took one.
PORT_ATTEMPTS = 3


def start_on_free_ports(
    start: Callable[[], None], new_ports: Callable[[], None], attempts: int = PORT_ATTEMPTS
) -> None:
    """`start()`; when another process took one of its ports first (`PortTaken`: another gate
    session chose the same free port), `new_ports()` and start again, `attempts` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            start()
            return
        except PortTaken:
            if attempt == attempts:
                raise
            new_ports()


class ServerProcess:
    """One server: started in its own process group, logged to a file, waited on over HTTP.

    Ready means: `ready_url` answers and every port in `ports` is listened on by this server's
    process group, not by another process that happened to take it (which would answer too).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        ready_url: str,
        log_path: Path,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[Path] = None,
        start_timeout: float = 60.0,
        stop_grace: float = 3.0,
        ports: Sequence[int] = (),
    ):
        self.name = name
        self.ports = list(ports)
        self.argv = list(argv)
        self.ready_url = ready_url
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self._executor: Optional[HTTPExecutor] = None
        self._owned: Optional[OwnedGroup] = None
        self._log = None

    @property
    def pid(self) -> Optional[int]:
        proc = self._executor.process if self._executor else None
        return proc.pid if proc else None

    def running(self) -> bool:
        running = bool(self._executor and self._executor.running())
        if not running and self._owned is not None and not self._owned.alive():
            self._forget_group()  # ended on its own (crashed, killed by a fault): forgotten at once
        return running

    def exit_status(self) -> str:
        """How the process ended, in words ("killed by SIGKILL", "exit code 1")."""
        proc = self._executor.process if self._executor else None
        code = proc.poll() if proc else None
        if code is None:
            return "running" if proc else "not started"
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

    def start(self) -> None:
        """Start and block until `ready_url` answers 2xx; fail with the log tail otherwise."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a")
        self._executor = HTTPExecutor(
            self.argv,
            url=self.ready_url,
            method="GET",
            timeout=self.start_timeout,
            sleep=0.05,
            request_timeout=2.0,
            envvars=tagged(self.env),
            cwd=str(self.cwd) if self.cwd else None,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        executor = self._executor
        if executor.pre_start_check():
            raise PortTaken(
                f"{self.name}: something already answers {self.ready_url}; the port was taken "
                f"between choosing and binding it (by another process, maybe another gate session)"
            )
        # mirakuru's Executor.start() in two steps, so the group is handed to the watchdog
        # before the (possibly long) readiness wait, not after it.
        SimpleExecutor.start(executor)
        self._owned = OwnedGroup.of(executor.process.pid)
        Watchdog.shared().watch(self._owned)
        try:
            executor.wait_for(self._ready)
        except ProcessExitedWithError as exc:
            taken = self._ports_taken()
            self.kill()
            if taken or "address already in use" in log_tail(self.log_path).lower():
                raise PortTaken(
                    self._explain(f"could not bind port {taken or self.ports}: another process has it")
                ) from None
            raise StackStartError(self._explain(f"exited during start-up ({exc.exit_code})")) from None
        except TimeoutExpired:
            self.kill()
            raise StackStartError(
                self._explain(f"did not answer {self.ready_url} within {self.start_timeout:.0f} s")
            ) from None

    def _ready(self) -> bool:
        executor = self._executor
        if executor.process is not None and executor.process.poll() == 0:
            # mirakuru waits on a server that exited 0 (uvicorn does, when its port is taken) as
            # long as something answers its URL: here another process would.
            raise ProcessExitedWithError(executor, 0)
        return executor.check_subprocess() and self._owns_ports()

    def _listeners(self) -> Dict[int, Optional[int]]:
        """Port -> pid listening on it, for this server's ports."""
        found: Dict[int, Optional[int]] = {}
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in self.ports:
                found[conn.laddr.port] = conn.pid
        return found

    def _group(self) -> set:
        pid = self.pid
        members = set()
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == pid:
                    members.add(proc.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        return members

    def _owns_ports(self) -> bool:
        if not self.ports:
            return True
        listeners, group = self._listeners(), self._group()
        return all(listeners.get(port) in group for port in self.ports)

    def _ports_taken(self) -> List[int]:
        """Our ports that some other process listens on."""
        group = self._group()
        return sorted(port for port, pid in self._listeners().items() if pid is not None and pid not in group)

    def _explain(self, what: str) -> str:
        return (
            f"{self.name} {what}. Command: {' '.join(self.argv)}\n"
            f"Last lines of its log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it after the grace period. Idempotent."""
        executor = self._executor
        if executor is None or executor.process is None:
            return
        if self._owned is not None and self._owned.signal(signal.SIGTERM):
            try:
                executor.process.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group now (also how a chaos scenario crashes a server)."""
        executor = self._executor
        if executor is None:
            return
        if self._owned is not None:
            # While the leader is unreaped its pid holds the group id; the check covers the rest.
            self._owned.signal(signal.SIGKILL)  # the leader and what outlived it (backend stubs)
        try:
            executor.kill(wait=True, sig=signal.SIGKILL)  # reaps; its uuid-tagged leftovers too
        except ProcessLookupError:
            pass
        self._forget_group()
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def _forget_group(self) -> None:
        if self._owned is not None:
            Watchdog.shared().forget(self._owned)
            self._owned = None


def stop_all(servers: List[ServerProcess]) -> None:
    """Stop servers in parallel, so teardown costs one grace period, not one per server."""
    threads = [threading.Thread(target=s.stop, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
