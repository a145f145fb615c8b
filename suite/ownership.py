"""Which process groups are this session's, checked before every signal: pids are reused.

A process group is named by its leader's pid. Once every member has ended and the leader has been
reaped, that number is free and the kernel gives it to a later process, on a busy machine (several
gate sessions, pid_max 32768) within minutes. A group id recorded earlier may then name a
stranger's group. So each group is recorded with its leader's start time, and every process the
gate starts carries this session's token in its environment. A group is signalled only while:

- its leader is the same process (same pid and start time, running or not yet reaped), or
- its leader is gone and what is left of the group carries the token (children that outlived it:
  the number cannot be reused while anything still belongs to the group).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import List, Optional

import psutil

SESSION_VARIABLE = "TRITON_GATE_SESSION"

# One per gate process (each xdist worker is its own session: it starts and stops its own servers).
_TOKEN = f"{os.getpid()}-{uuid.uuid4().hex}"

# Start times come from /proc/<pid>/stat in clock ticks (10 ms): two processes with one pid are
# always further apart than this.
_SAME_START_S = 0.005


def session_token() -> str:
    return _TOKEN


def tagged(environ: Optional[dict] = None, token: Optional[str] = None) -> dict:
    """`environ` (default: ours) with the session token, for a process the gate starts."""
    return {**(os.environ if environ is None else environ), SESSION_VARIABLE: token or _TOKEN}


@dataclass(frozen=True)
class OwnedGroup:
    """A process group this session started: its id and its leader's start time."""

    pgid: int
    leader_started: float
    token: str = _TOKEN

    @classmethod
    def of(cls, leader_pid: int) -> "OwnedGroup":
        """Record a group just after starting its leader (which cannot have been reaped yet)."""
        return cls(leader_pid, psutil.Process(leader_pid).create_time())

    def encode(self) -> str:
        return f"{self.pgid}@{self.leader_started!r}@{self.token}"

    @classmethod
    def decode(cls, text: str) -> "OwnedGroup":
        pgid, started, token = text.split("@", 2)
        return cls(int(pgid), float(started), token)

    def state(self) -> str:
        """ "ours" (ours and still there), "gone" (nothing of it is left) or "reused" (the id now
        names a stranger's group)."""
        try:
            leader = psutil.Process(self.pgid)
            same = abs(leader.create_time() - self.leader_started) < _SAME_START_S
            # Another process with our leader's pid: the number was free, so nothing of ours is left.
            return "ours" if same else "reused"
        except psutil.NoSuchProcess:
            pass
        members = self._members()
        if not members:
            return "gone"
        return "ours" if all(self._carries_token(pid) for pid in members) else "reused"

    def signal(self, sig: int) -> bool:
        """Signal the whole group if it is still ours; whether it was signalled."""
        if self.state() != "ours":
            return False
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def alive(self) -> bool:
        return self.state() == "ours"

    def _members(self) -> List[int]:
        """The group's processes that still run (a zombie only waits for its parent to reap it)."""
        found = []
        for pid in psutil.pids():
            try:
                if os.getpgid(pid) == self.pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    found.append(pid)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        return found

    def _carries_token(self, pid: int) -> bool:
        try:
            return psutil.Process(pid).environ().get(SESSION_VARIABLE) == self.token
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False
