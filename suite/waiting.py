"""The one way the gate waits: poll a condition until it holds, or give up with what was seen.

In the manner of testcontainers' `waiting_utils`. One contract: `wait_for` returns the first
satisfying value or raises `WaitTimeout`; it never answers a bool. A caller for whom running
out of time is a finding, not an error (a check collecting problems, a scenario asserting with
its own evidence), catches `WaitTimeout` where it does so, in plain sight.

The only other pause is `let_time_pass`: a span where the time itself is the point, so there
is nothing to poll (a must-stay-silent window, a fault's delay). Each such span is named with
its reason in `suite/timings.py` or beside the fault that uses it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Tuple, Type, TypeVar

from suite.errors import GateError

T = TypeVar("T")

_REPR_LIMIT = 500


class WaitTimeout(GateError):
    """Raised when a condition did not hold in time: says what was awaited, for how long, and
    the last value (or exception) the condition gave."""

    def __init__(
        self,
        awaiting: str,
        timeout_s: float,
        elapsed_s: float,
        checks: int,
        last_value: Any = None,
        last_error: Optional[BaseException] = None,
    ):
        self.awaiting = awaiting
        self.timeout_s = timeout_s
        self.elapsed_s = elapsed_s
        self.checks = checks
        self.last_value = last_value  # what the last check that returned gave
        self.last_error = last_error  # the last check's exception (None when it returned)
        seen = f"last value seen: {_short(last_value)}"
        if last_error is not None:
            seen = f"last exception seen: {type(last_error).__name__}: {_short(last_error, str)}; " + seen
        super().__init__(
            f"gave up waiting for {awaiting} after {elapsed_s:.1f} s (timeout {timeout_s:g} s, {checks} checks); {seen}"
        )


def wait_for(
    condition: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float,
    awaiting: str,
    until: Callable[[T], Any] = bool,
    transient: Tuple[Type[BaseException], ...] = (),
) -> T:
    """Call `condition()` every `interval_s` until `until(value)` is true (by default: the value
    is truthy) and return that value; raise `WaitTimeout` once `timeout_s` has passed.

    The condition is checked at least once, and once more when the time is up. Exceptions of the
    `transient` types count as "not yet" (a server still starting refuses connections); any
    other exception propagates at once. `awaiting` completes "gave up waiting for ...".
    """
    start = time.monotonic()
    deadline = start + timeout_s
    checks = 0
    last_value: Any = None
    last_error: Optional[BaseException] = None
    while True:
        checks += 1
        try:
            value = condition()
        except transient as exc:
            last_error = exc
        else:
            if until(value):
                return value
            last_value, last_error = value, None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(awaiting, timeout_s, time.monotonic() - start, checks, last_value, last_error)
        time.sleep(min(interval_s, remaining))


def let_time_pass(duration_s: float, *, why: str) -> None:
    """Let `duration_s` pass where the time itself is the point, so there is nothing to poll:
    a must-stay-silent window (an alert that must not fire, a delivery that must not arrive;
    the caller judges what arrived in it), or a fault's deliberate delay. `why` says which, at
    the call site."""
    time.sleep(duration_s)


def _short(value: Any, render: Callable[[Any], str] = repr) -> str:
    text = render(value)
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT] + "..."
