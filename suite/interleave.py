"""Deterministic interleavings of a deploy with something else, for any deployer.

A race left to timing gives a different verdict from run to run. Instead the first deploy is
paused (SIGSTOP to its process group) at a point the gate observes (suite/observe.py), the
other action runs while it is paused, and the first deploy is resumed when the other action
is done, or after `hold_s` when the other action waits for the first (a deploy lock).
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Optional, TypeVar

from suite.deployers import DeployOutcome, DeployProcess
from suite.observe import DeployObserver
from suite.waiting import WaitTimeout, wait_for

T = TypeVar("T")


@dataclass
class Interleaving(Generic[T]):
    first: DeployOutcome
    other: Optional[T]  # the other action's result (None: it never ran)
    point_seen: Optional[str]  # what was observed when the first deploy was paused
    other_waited: bool  # the other action was still running when the first resumed
    error: Optional[BaseException] = None


def interleave(
    start_first: Callable[[str], DeployProcess],
    model_folder: Path,
    triton_url: str,
    point: str,
    other: Callable[[], T],
    hold_s: float,
) -> Interleaving[T]:
    """Start the first deploy (given the Triton URL to use), pause it at `point`, run `other`."""
    process_ready = threading.Event()
    paused = threading.Event()
    holder: dict = {}

    def pause(detail: str) -> None:
        process_ready.wait(timeout=10)
        holder["process"].signal(signal.SIGSTOP)
        paused.set()

    with DeployObserver(model_folder, triton_url, point, pause) as observer:
        process = start_first(observer.triton_url)
        holder["process"] = process
        process_ready.set()
        result: dict = {}
        waited = False
        try:
            try:
                wait_for(
                    lambda: paused.is_set() or process.exited(),
                    timeout_s=process.timeout_s,
                    interval_s=0.01,
                    awaiting=f"the first deploy to reach {point} or to exit",
                )
            except WaitTimeout:
                pass  # neither within the deploy's own timeout: wait() below times it out
            if paused.is_set():
                thread = threading.Thread(target=_capture, args=(other, result), name="interleaved", daemon=True)
                thread.start()
                thread.join(hold_s)
                waited = thread.is_alive()
                process.signal(signal.SIGCONT)
                first = process.wait()
                thread.join()
            else:
                first = process.wait()
        finally:  # an error or Ctrl-C while paused: the deploy must not stay stopped
            if process.proc.returncode is None:
                process.signal(signal.SIGKILL)
                process.wait()
    return Interleaving(first, result.get("value"), observer.seen, waited, result.get("error"))


def _capture(action: Callable[[], T], result: dict) -> None:
    try:
        result["value"] = action()
    except BaseException as exc:  # noqa: BLE001 - reported with the interleaving
        result["error"] = exc
