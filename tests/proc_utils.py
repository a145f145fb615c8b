"""Helpers for tests that check processes are really gone (zombies count as gone)."""

from __future__ import annotations

import os
import time

import psutil


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def wait_group_gone(pgid: int, within: float) -> list[int]:
    """Wait until the group has no live member; return what is still alive at the deadline."""
    deadline = time.monotonic() + within
    while True:
        alive = group_members(pgid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def interruptible() -> None:
    """`preexec_fn` for a child the test will Ctrl-C: a job started in the background (a CI runner,
    `cmd &` in a script) inherits SIGINT ignored, and a Python started so never raises
    KeyboardInterrupt. The child gets the terminal's default back, as a foreground process has."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
