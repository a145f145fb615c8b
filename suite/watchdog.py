"""Ends the embedded stack's process groups when the gate's own process dies, however it dies.

Run as `python -m suite.watchdog`, in its own session, with a pipe on stdin. The gate writes
`+<pgid>` when it starts a server and `-<pgid>` when it has stopped one. When the pipe closes
(the gate exited, crashed or was SIGKILLed) every group still registered gets SIGTERM, then
SIGKILL after a grace period. Only groups the gate registered are touched.
"""

from __future__ import annotations

import os
import signal
import sys

from suite.waiting import WaitTimeout, wait_for

GRACE_S = 2.0


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def end_groups(groups: set[int], grace_s: float = GRACE_S) -> None:
    for pgid in groups:
        _signal(pgid, signal.SIGTERM)
    try:
        wait_for(
            lambda: not any(_alive(g) for g in groups),
            timeout_s=grace_s,
            interval_s=0.05,
            awaiting=f"process groups {sorted(groups)} to end after SIGTERM",
        )
    except WaitTimeout:
        pass  # the grace is over: SIGKILL what is left
    for pgid in groups:
        if _alive(pgid):
            _signal(pgid, signal.SIGKILL)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the gate's to handle, not ours
    groups: set[int] = set()
    for line in sys.stdin:  # returns at EOF: the gate is gone or done
        line = line.strip()
        if line[:1] == "+":
            groups.add(int(line[1:]))
        elif line[:1] == "-":
            groups.discard(int(line[1:]))
    end_groups(groups)


if __name__ == "__main__":
    main()
