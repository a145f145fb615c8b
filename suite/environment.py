"""One environment of a running platform, as every part of the gate sees it.

A target's stack builds one `Environment` per environment of the manifest; the same object is
what a deploy goes into, what a fault breaks and what the invariants look at. Names: `env` is
always an environment's name (a string from the manifest), `environment` always this object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from suite.triton_client import TritonControl
from suite.triton_server import TritonEndpoints


class ServerControl(Protocol):
    """What faults and the baseline do to an environment's Triton: a process, a container, or a
    cluster Service that refuses (the gate only kills servers it started)."""

    endpoints: TritonEndpoints

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def restart(self) -> None: ...

    def running(self) -> bool: ...


@dataclass(frozen=True, eq=False)
class Environment:
    """An environment's name, its model repository folder and its Triton (client and server).

    `repository` is None only on a cluster whose manifest names no mounted repository; `server` is
    None where the gate controls no server (the `python -m suite deploy` command line)."""

    name: str
    repository: Optional[Path]
    triton: TritonControl
    server: Optional[ServerControl] = None

    @classmethod
    def serving(cls, name: str, repository: Optional[Path], server: ServerControl) -> "Environment":
        """The environment of a server, with a client for the server's current endpoints."""
        return cls(name, repository, TritonControl(server.endpoints.http, server.endpoints.metrics), server)

    def __repr__(self) -> str:
        return f"Environment({self.name!r}, repository={self.repository}, triton={self.triton.http_url})"
