"""Points of a deploy the gate can see from outside, whoever wrote the deployer.

A deployer is a black box, but what it does shows: files appear under the model's folder,
`config.pbtxt` and `current.json` change, it asks Triton to load a model. `DeployObserver`
watches one environment for one such point and acts once when it is reached (SIGKILL the
deployer to test its recovery, SIGSTOP it to interleave a second deploy deterministically).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from suite.http_proxy import ForwardingProxy
from suite.model_repo import CONFIG_PBTXT, CURRENT_JSON

POINTS = {
    "first-write": "the first file written or changed under the model's folder",
    "config-changed": "config.pbtxt changed",
    "load-requested": "a model load requested from Triton",
    "current-changed": "current.json changed",
}
_LOAD = re.compile(r"^/v2/repository/models/[^/]+/load(?:\?.*)?$")
POLL_S = 0.003


def _tree(root: Path) -> Dict[str, Tuple[int, int]]:
    """Relative path -> (mtime_ns, size) of everything under `root`."""
    found: Dict[str, Tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                continue
            found[os.path.relpath(path, root)] = (stat.st_mtime_ns, stat.st_size)
    return found


def _read(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


class DeployObserver:
    """Watches one environment for `point` during a deploy and calls `action` once when it is seen.

    Use as a context manager around the deploy, handing the deployer `triton_url` (a proxy in
    front of Triton, through which load requests are seen).
    """

    def __init__(self, model_folder: Path, triton_url: str, point: str, action: Callable[[str], None]):
        if point not in POINTS:
            raise ValueError(f"unknown observation point {point!r}; expected one of {sorted(POINTS)}")
        self.folder = Path(model_folder)
        self.point = point
        self.action = action
        self.seen: Optional[str] = None  # what was observed, once it was
        self.seen_after_s: Optional[float] = None
        self.too_late = False  # reached only as the deployer exited: the action never ran
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._begin = time.perf_counter()
        self.proxy = ForwardingProxy(triton_url, on_request=self._on_request)
        self._before_tree = _tree(self.folder)
        self._before = {name: _read(self.folder / name) for name in (CONFIG_PBTXT, CURRENT_JSON)}
        self._thread = threading.Thread(target=self._watch, name=f"observe-{point}", daemon=True)

    @property
    def triton_url(self) -> str:
        return self.proxy.url

    def __enter__(self) -> "DeployObserver":
        self._begin = time.perf_counter()
        self.proxy.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.proxy.__exit__(*exc)
        # The point may be the deployer's last act, done between two polls just before it exited:
        # it was reached, but too late to act on. Say so, rather than claim it was never reached.
        if self.seen is None:
            detail = self._check()
            if detail:
                self.seen, self.too_late = detail, True
                self.seen_after_s = time.perf_counter() - self._begin

    def _fire(self, detail: str) -> None:
        with self._lock:
            if self.seen is not None:
                return
            self.seen = detail
            self.seen_after_s = time.perf_counter() - self._begin
        self.action(detail)

    def _on_request(self, method: str, path: str) -> None:
        if self.point == "load-requested" and method == "POST" and _LOAD.match(path):
            self._fire(f"POST {path}")

    def _watch(self) -> None:
        while not self._stop.is_set() and self.seen is None:
            detail = self._check()
            if detail:
                self._fire(detail)
                return
            self._stop.wait(POLL_S)

    def _check(self) -> Optional[str]:
        if self.point == "first-write":
            now = _tree(self.folder)
            changed = sorted(k for k in set(now) | set(self._before_tree) if now.get(k) != self._before_tree.get(k))
            return f"{changed[0]} written" if changed else None
        for name, point in ((CONFIG_PBTXT, "config-changed"), (CURRENT_JSON, "current-changed")):
            if self.point == point and _read(self.folder / name) != self._before[name]:
                return f"{name} changed"
        return None
