"""The id of one gate run: its report folder, its containers' names and labels."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from typing import Optional, Set

_issued: Set[str] = set()
_lock = threading.Lock()


def new_run_id(worker: Optional[str] = None) -> str:
    """`<UTC time>Z-<pid>[-<worker>]`: sorts by start, names the process, and is unique on this
    machine, per xdist worker too (a second id asked for in the same second gets `.2`, `.3`...)."""
    base = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}" + (f"-{worker}" if worker else "")
    with _lock:
        run_id, n = base, 1
        while run_id in _issued:
            n += 1
            run_id = f"{base}.{n}"
        _issued.add(run_id)
    return run_id
