"""Ends the gate's process groups and undoes its mounts when the gate's own process dies, however.

Run as `python -m suite.watchdog`, in its own session, with a pipe on stdin. The gate writes
`+<group>` when it starts a server or a deploy command and `-<group>` when it has ended it, a group
being `suite.ownership.OwnedGroup.encode()`; `m+<path>` for a fault's mount (`t+<path>`: a
temporary mount point, whose folder is removed too), `m-<path>` once it is undone. When the pipe
closes (the gate exited, crashed or was SIGKILLed) every group still registered gets SIGTERM, then
SIGKILL after a grace period, and every mount still registered is unmounted. A group is
signalled only while it is still the gate's (`OwnedGroup.signal`): its id may name a stranger's
group by then.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Iterable, List, Tuple

from suite.ownership import OwnedGroup
from suite.waiting import WaitTimeout, wait_for

GRACE_S = 8.0  # as a Triton's stop grace: time to unload its models and remove its temporary files


def end_groups(groups: Iterable[OwnedGroup], grace_s: float = GRACE_S) -> None:
    signalled = [group for group in groups if group.signal(signal.SIGTERM)]
    try:
        wait_for(
            lambda: not any(group.alive() for group in signalled),
            timeout_s=grace_s,
            interval_s=0.05,
            awaiting=f"process groups {sorted(g.pgid for g in signalled)} to end after SIGTERM",
        )
    except WaitTimeout:
        pass  # the grace is over: SIGKILL what is left
    for group in signalled:
        group.signal(signal.SIGKILL)


def undo_mounts(mounts: List[Tuple[str, bool]]) -> None:
    for path, remove_folder in reversed(mounts):  # the newest first: it may sit on an older one
        subprocess.run(["umount", "-l", path], capture_output=True)  # "not mounted" is fine too
        if remove_folder:
            try:
                os.rmdir(path)
            except OSError:
                pass  # not empty or already gone: never remove more than an empty mount point


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the gate's to handle, not ours
    groups: dict[int, OwnedGroup] = {}
    mounts: List[Tuple[str, bool]] = []
    for line in sys.stdin:  # returns at EOF: the gate is gone or done
        line = line.rstrip("\n")
        if line[:2] in ("m+", "t+"):
            mounts.append((line[2:], line[0] == "t"))
        elif line.startswith("m-"):
            mounts = [m for m in mounts if m[0] != line[2:]]
        elif line[:1] == "+":
            group = OwnedGroup.decode(line[1:])
            groups[group.pgid] = group
        elif line[:1] == "-":
            group = OwnedGroup.decode(line[1:])
            if groups.get(group.pgid) == group:
                del groups[group.pgid]
    end_groups(groups.values())
    undo_mounts(mounts)


if __name__ == "__main__":
    main()
