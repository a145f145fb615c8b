"""A background stream of golden requests, to measure what users saw while a deploy ran."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import List

from suite.errors import GateError
from suite.golden import GoldenSet
from suite.triton_client import TritonControl

# An answer slower than this is a failure for the user who waited: the committed version answers
# in milliseconds (1.6 s at worst seen under a concurrent model load on 2 cores; 4.2 s once with
# three gate sessions on those 2 cores). Below the slow-model fault's 6 s, which it must catch.
SLOW_ANSWER_S = 5.0


@dataclass
class ProbeReport:
    requests: int = 0
    errors: int = 0  # no answer, or an error answer
    wrong_answers: int = 0  # answered, but not the golden outputs
    slow_answers: int = 0  # answered right, but after SLOW_ANSWER_S
    worst_latency_s: float = 0.0
    first_problems: List[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return self.errors + self.wrong_answers + self.slow_answers

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        text = (
            f"{self.requests} requests, {self.errors} errors, {self.wrong_answers} wrong answers, "
            f"{self.slow_answers} slower than {SLOW_ANSWER_S:.0f} s, worst latency {self.worst_latency_s * 1000:.0f} ms"
        )
        if self.first_problems:
            text += "; first problems: " + " | ".join(self.first_problems)
        return text


class TrafficProbe:
    """Sends the golden batch to the served model (no version: what users get) in a loop.

    Bounded: at most `max_requests` and `max_s` seconds, paced by `interval_s`, so it always stops.
    """

    def __init__(
        self,
        triton: TritonControl,
        model: str,
        golden: GoldenSet,
        interval_s: float = 0.02,
        timeout_s: float = 10.0,
        max_s: float = 600.0,
        max_requests: int = 100_000,
    ):
        # Its own client object: the probe must not share connections with the deployer.
        self.triton = TritonControl(triton.http_url, triton.metrics_url, timeout=timeout_s)
        self.model = model
        self.golden = golden
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_s = max_s
        self.max_requests = max_requests
        self.report = ProbeReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic-probe", daemon=True)

    def __enter__(self) -> "TrafficProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self) -> ProbeReport:
        """Probe in the foreground until `max_s` or `max_requests` is reached."""
        self._run()
        return self.report

    def stop(self) -> ProbeReport:
        self._stop.set()
        self._thread.join()
        return self.report

    def _run(self) -> None:
        # The time bound is the stop signal itself, given after `max_s`: it also ends a pause between requests.
        bound = threading.Timer(self.max_s, self._stop.set)
        bound.daemon = True
        bound.start()
        try:
            self._send(list(self.golden.expected))
        finally:
            bound.cancel()

    def _send(self, names: List[str]) -> None:
        while not self._stop.is_set() and self.report.requests < self.max_requests:
            start = time.perf_counter()
            problem = None
            try:
                outputs = self.triton.infer(self.model, self.golden.inputs, names, timeout=self.timeout_s)
                mismatch = self.golden.compare(outputs)
                if mismatch:
                    self.report.wrong_answers += 1
                    problem = "wrong answer: " + mismatch[0]
            except GateError as exc:
                self.report.errors += 1
                problem = str(exc)
            latency = time.perf_counter() - start
            if problem is None and latency > SLOW_ANSWER_S:
                self.report.slow_answers += 1
                problem = f"a right answer after {latency:.1f} s"
            self.report.requests += 1
            self.report.worst_latency_s = max(self.report.worst_latency_s, latency)
            if problem and len(self.report.first_problems) < 3:
                self.report.first_problems.append(problem[:300])
            self._stop.wait(max(0.0, self.interval_s - latency))
