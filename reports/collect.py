"""Turn per-phase test reports (plain data) into scenario records and the run's summary."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from suite.invariants import INVARIANTS

SCHEMA = "triton-gate-summary/1"
LONGREPR_LIMIT = 8000

# Evidence the scenarios and fixtures attach as user properties (name -> JSON text or value).
DEPLOY, FAULT_RUN, CHECK, ALERT, DIAGNOSTICS, BASELINE = (
    "deploy",
    "fault_run",
    "check",
    "alert",
    "diagnostics",
    "baseline",
)


@dataclass
class PhaseReport:
    """One phase (setup, call, teardown) of one test, as plain data that survives xdist."""

    nodeid: str
    when: str
    outcome: str  # passed | failed | skipped
    duration: float
    user_properties: List[Any] = field(default_factory=list)
    message: str = ""  # the crash line: what was expected and what was seen
    longrepr: str = ""
    wasxfail: bool = False
    markers: List[str] = field(default_factory=list)


@dataclass
class Scenario:
    nodeid: str
    # passed | failed | error | skipped | xfailed | xpassed | flaky (failed, then passed when re-run)
    outcome: str = "passed"
    duration_s: float = 0.0
    phases: Dict[str, float] = field(default_factory=dict)
    markers: List[str] = field(default_factory=list)
    message: str = ""
    longrepr: str = ""
    fault: Optional[str] = None
    deploys: List[dict] = field(default_factory=list)
    fault_runs: List[dict] = field(default_factory=list)
    checks: List[dict] = field(default_factory=list)  # judgements of deploys outside the fault catalogue
    # The violated invariants and checks ("1", "traffic") of its fault runs and judgements: the
    # scenario's verdict in a form that can be compared between runs and platforms.
    findings: List[str] = field(default_factory=list)
    baseline: Dict[str, str] = field(default_factory=dict)  # env -> how it was brought to its baseline
    invariants: Dict[str, List[int]] = field(default_factory=lambda: {"checked": [], "violated": []})
    alerts: List[dict] = field(default_factory=list)
    diagnostics: Dict[str, Any] = field(default_factory=dict)
    # Earlier attempts that failed and were re-run (--gate-reruns), oldest first, with their evidence.
    attempts: List[dict] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "error", "xpassed")

    def as_attempt(self) -> dict:
        """This attempt's failure and evidence, kept when the scenario is run again."""
        kept = ("outcome", "duration_s", "message", "longrepr", "findings", "deploys", "fault_runs", "checks")
        return dict({k: getattr(self, k) for k in kept}, headline=headline(self), diagnostics=self.diagnostics)


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


RERUN = "rerun"  # pytest-rerunfailures' outcome for a failed phase whose test will run again


class RunCollector:
    """Merges phase reports, in arrival order, into one record per scenario.

    With re-runs (pytest-rerunfailures), each attempt is setup, call, teardown again; a failed
    phase that will be re-run arrives with the outcome "rerun". Each attempt starts a fresh record;
    the failed ones are kept in its `attempts`, and a scenario that failed, then passed, is flaky.
    """

    def __init__(self) -> None:
        self.scenarios: Dict[str, Scenario] = {}
        self._failed_attempts: Dict[str, List[dict]] = {}
        self._rerun: set = set()  # node ids whose current attempt failed and will run again
        # user_properties accumulate over every attempt of a test: how many earlier attempts used
        self._properties_seen: Dict[str, int] = {}

    def add(self, report: PhaseReport) -> None:
        scenario = self.scenarios.get(report.nodeid)
        if scenario is None or report.when == "setup":
            scenario = Scenario(report.nodeid, attempts=list(self._failed_attempts.get(report.nodeid, [])))
            self.scenarios[report.nodeid] = scenario
        scenario.phases[report.when] = round(report.duration, 4)
        scenario.duration_s = round(sum(scenario.phases.values()), 4)
        scenario.markers = sorted(set(scenario.markers) | set(report.markers))
        if report.outcome == RERUN:
            self._rerun.add(report.nodeid)
        if report.when == "call" or report.outcome != "passed":
            self._outcome(scenario, report)
        if report.when == "teardown":
            seen = self._properties_seen.get(report.nodeid, 0)
            self._properties_seen[report.nodeid] = len(report.user_properties)
            self._evidence(scenario, report.user_properties[seen:])
            self._attempt_ended(scenario)

    def _attempt_ended(self, scenario: Scenario) -> None:
        if scenario.nodeid in self._rerun:
            self._rerun.discard(scenario.nodeid)
            self._failed_attempts.setdefault(scenario.nodeid, []).append(scenario.as_attempt())
        elif scenario.attempts and scenario.outcome == "passed":
            scenario.outcome = "flaky"

    @staticmethod
    def _outcome(scenario: Scenario, report: PhaseReport) -> None:
        if scenario.outcome in ("failed", "error"):
            return  # the first failure is the one to explain
        if report.wasxfail:
            scenario.outcome = "xfailed" if report.outcome == "skipped" else "xpassed"
        elif report.outcome == "skipped":
            scenario.outcome = "skipped"
        elif report.outcome in ("failed", RERUN):
            scenario.outcome = "failed" if report.when == "call" else "error"
        else:
            scenario.outcome = "passed"
        if report.outcome != "passed" or report.wasxfail:
            scenario.message = report.message
            scenario.longrepr = report.longrepr[-LONGREPR_LIMIT:]

    @staticmethod
    def _evidence(scenario: Scenario, properties: List[Any]) -> None:
        """user_properties accumulate over the phases: the teardown report carries them all."""
        for name, value in properties:
            value = _decode(value)
            if name == DEPLOY:
                scenario.deploys.append(value)
            elif name == FAULT_RUN:
                scenario.fault_runs.append(value)
                scenario.fault = scenario.fault or value.get("fault")
                if value.get("deploy"):
                    scenario.deploys.append(value["deploy"])
                _judged(scenario, value, value.get("invariants_checked") or list(INVARIANTS))
            elif name == CHECK:
                scenario.checks.append(value)
                _judged(scenario, value, [n for n in INVARIANTS if str(n) not in value.get("not_applicable", {})])
            elif name == BASELINE:
                scenario.baseline.update(value)
            elif name == ALERT:
                scenario.alerts.append(value)
            elif name == DIAGNOSTICS:
                scenario.diagnostics.update(value)


def _judged(scenario: Scenario, record: dict, checked: List[int]) -> None:
    violated = [v["invariant"] for v in record.get("violation_records", []) if isinstance(v["invariant"], int)]
    scenario.invariants["checked"] = sorted(set(scenario.invariants["checked"]) | set(checked))
    scenario.invariants["violated"] = sorted(set(scenario.invariants["violated"]) | set(violated))
    scenario.findings = sorted(
        set(scenario.findings) | set(record.get("findings", [])), key=lambda f: (not f.isdigit(), f)
    )


def headline(scenario: Scenario) -> str:
    """One line that says why a scenario failed: the first violated invariant, else the crash line."""
    if scenario.outcome == "flaky" and scenario.attempts:
        return "FLAKY, first failure: " + scenario.attempts[0]["headline"]
    for run in scenario.fault_runs + scenario.checks:
        for violation in run.get("violations", []):
            return f"VIOLATED {violation}"
    written = as_written(scenario.message)
    first = written.splitlines()[0] if written else ""
    return first or scenario.outcome


def as_written(message: str) -> str:
    """The failure message as the scenario wrote it: without pytest's `AssertionError: ` prefix and,
    when the assert had a message, without pytest's rewrite of the asserted expression after it
    (`assert not [Violation(...)]` / `+  where ... = FaultRun(...)`: a repr dump, not evidence)."""
    text = message.strip()
    if text.startswith("AssertionError: "):
        text = text[len("AssertionError: ") :]
        lines = text.splitlines()
        for index, line in enumerate(lines):
            if index and line.startswith("assert "):
                return "\n".join(lines[:index]).rstrip()
    return text


def stage_statistics(scenarios: List[Scenario]) -> Dict[str, dict]:
    """Per deploy stage: how often it ran, its median and its slowest duration."""
    durations: Dict[str, List[float]] = {}
    for scenario in scenarios:
        for deploy in scenario.deploys:
            for stage in deploy.get("stages", []) + deploy.get("rollback", []):
                if stage.get("outcome") != "not run":
                    durations.setdefault(stage["name"], []).append(stage["duration_s"])
    return {
        name: {"count": len(values), "median_s": round(statistics.median(values), 4), "max_s": round(max(values), 4)}
        for name, values in durations.items()
    }


def fault_matrix(scenarios: List[Scenario]) -> List[dict]:
    """One row per fault run: for every invariant, held, violated (with the detail) or not checked."""
    rows = []
    for scenario in scenarios:
        for run in scenario.fault_runs:
            checked = set(run.get("invariants_checked") or INVARIANTS)
            not_applicable = {int(k): v for k, v in (run.get("not_applicable") or {}).items()}
            violated: Dict[int, List[str]] = {}
            for record in run.get("violation_records", []):
                violated.setdefault(record["invariant"], []).append(record["detail"])
            cells = {}
            for number in INVARIANTS:
                if number in violated:
                    cells[str(number)] = {"state": "violated", "detail": "; ".join(violated[number])}
                elif number in not_applicable:
                    cells[str(number)] = {"state": "not applicable", "detail": not_applicable[number]}
                elif number in checked:
                    cells[str(number)] = {"state": "held", "detail": ""}
                else:
                    cells[str(number)] = {"state": "not checked", "detail": ""}
            rows.append(
                {
                    "fault": run.get("fault"),
                    "deployer": run.get("deployer"),
                    "scenario": scenario.nodeid,
                    "outcome": scenario.outcome,
                    "failed_stage": _failed_at(run.get("outcome") or {}),
                    "duration_s": run.get("duration_s"),
                    "invariants": cells,
                }
            )
    return rows


def _failed_at(outcome: dict) -> str:
    """The builtin path names its stage; a platform's command only has its exit status."""
    if outcome.get("failed_stage"):
        return outcome["failed_stage"]
    if outcome.get("exit_code") is not None:
        return f"exit {outcome['exit_code']}"
    return "reported success" if outcome.get("ok") else ""


def counts(scenarios: List[Scenario]) -> Dict[str, int]:
    tally = {k: 0 for k in ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "flaky")}
    for scenario in scenarios:
        tally[scenario.outcome] += 1
    tally["total"] = len(scenarios)
    return tally


def verdict(tally: Dict[str, int], exit_status: int, flaky_ok: bool = False) -> str:
    """pass only when pytest itself succeeded and nothing failed; error when pytest could not finish.
    A flaky scenario fails the gate unless the run was told flakes are acceptable (--flaky-ok)."""
    if tally["failed"] or tally["error"] or tally["xpassed"] or (tally.get("flaky") and not flaky_ok):
        return "fail"
    if exit_status == 0 and tally["total"]:
        return "pass"
    return "fail" if exit_status == 1 else "error"


def build_summary(
    run: Dict[str, Any], scenarios: List[Scenario], exit_status: int, flaky_ok: bool = False
) -> Dict[str, Any]:
    tally = counts(scenarios)
    alerts = [dict(alert, scenario=s.nodeid) for s in scenarios for alert in s.alerts]
    return {
        "schema": SCHEMA,
        **run,
        "verdict": verdict(tally, exit_status, flaky_ok),
        "exit_status": exit_status,
        "flaky_ok": flaky_ok,
        "counts": tally,
        "invariants": {str(k): v for k, v in INVARIANTS.items()},
        "stage_statistics": stage_statistics(scenarios),
        "fault_matrix": fault_matrix(scenarios),
        "alerts": alerts,
        "scenarios": [
            dict(asdict(s), headline=headline(s) if s.failed or s.outcome == "flaky" else "") for s in scenarios
        ],
    }
