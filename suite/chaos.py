"""Run one fault against one environment and judge the result by the invariants."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional

from suite.deployers import DeployOutcome, DeployRequest
from suite.faults import Fault, FaultContext, file_digests
from suite.invariants import INVARIANTS, EnvironmentView, InvariantChecker, Judgement, Violation
from suite.probe import ProbeReport, TrafficProbe


@dataclass
class FaultRun:
    fault: str
    description: str
    deployer: str
    version: Optional[int]
    committed_before: Optional[int]
    outcome: DeployOutcome
    violations: List[Violation]
    probe: ProbeReport
    duration_s: float
    expected_stage: str
    notes: List[str] = field(default_factory=list)
    invariants_checked: List[int] = field(default_factory=lambda: list(INVARIANTS))
    not_applicable: Dict[int, str] = field(default_factory=dict)

    @property
    def findings(self) -> List[str]:
        """The violated invariants and checks ("1", "traffic"): the scenario's verdict."""
        return Judgement(self.violations).ids

    def to_dict(self) -> dict:
        body = asdict(self)
        body["violation_records"] = body.pop("violations")
        body["violations"] = [str(v) for v in self.violations]
        body["findings"] = self.findings
        body["deploy"] = self.outcome.record()
        return body

    def describe(self) -> str:
        lines = [
            f"fault {self.fault} ({self.description}) with deployer {self.deployer}: "
            f"v{self.version} over committed v{self.committed_before}, {self.duration_s:.1f} s",
            f"  deployer said: ok={self.outcome.ok} stage={self.outcome.failed_stage} "
            f"exit={self.outcome.exit_code}:\n    " + self.outcome.message.strip()[:3000].replace("\n", "\n    "),
            f"  traffic probe: {self.probe.describe()}",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  not applicable: invariant {n} ({reason})" for n, reason in self.not_applicable.items()]
        lines += [f"  VIOLATED {v}" for v in self.violations] or ["  all invariants hold"]
        return "\n".join(lines)


def run_fault(
    fault: Fault,
    ctx: FaultContext,
    view: EnvironmentView,
    others: List[EnvironmentView],
    deployer,
    checker: InvariantChecker,
    request: DeployRequest,
    stage_matters: Optional[bool] = None,
) -> FaultRun:
    """Prepare, inject, deploy under traffic, repair, then check every invariant and that the
    fault happened and users saw nothing of it. `request` is the deploy without its version (the
    fault prepares one). `stage_matters` (default: for the builtin path) also requires the
    failure at the fault's stage."""
    begin = time.perf_counter()
    version = fault.prepare(ctx)
    before = view.capture()
    ctx.committed = before.committed
    other_states = {other: other.capture() for other in others}
    probe = TrafficProbe(view.triton, ctx.model, ctx.golden)
    with probe:
        with fault.injected(ctx, version) as overrides:
            outcome = deployer.deploy(
                replace(
                    request,
                    mlflow_uri=overrides.mlflow_uri or request.mlflow_uri,
                    version=None if overrides.alias else version,
                    alias=overrides.alias,
                )
            )
        fault.repair(ctx)
    expected = file_digests(ctx.registered_bytes[version]) if version in ctx.registered_bytes else None
    judged_version = version if not overrides.alias else None
    if fault.disrupts_serving and outcome.ok and version is not None:
        # The server was killed after this deployer had finished its part: a good version
        # committed before the kill is as consistent an ending as a rollback.
        judgement = checker.after_success(view, before, other_states, version, outcome)
        judgement.notes.append(
            f"the deploy of v{version} completed despite the server kill: judged as a successful deploy"
        )
    else:
        judgement = checker.after_failure(
            view, before, other_states, judged_version, expected, outcome, materialized=fault.materializes
        )
    run = FaultRun(
        fault.name,
        fault.description,
        deployer.name,
        version,
        before.committed,
        outcome,
        judgement.violations,
        probe.report,
        time.perf_counter() - begin,
        fault.expected_stage,
        ctx.notes + judgement.notes,
        judgement.checked,
        judgement.not_applicable,
    )
    builtin = deployer.name == "builtin" if stage_matters is None else stage_matters
    run.violations += _side_checks(run, fault, builtin)
    return run


def _side_checks(run: FaultRun, fault: Fault, stage_matters: bool) -> List[Violation]:
    """The fault happened, users saw nothing of it, and the builtin path failed where it should."""
    found = []
    if run.probe.requests == 0:
        found.append(Violation("traffic", "the traffic probe sent nothing: the scenario measured nothing"))
    if fault.disrupts_serving:
        if "server killed" not in run.notes:
            found.append(
                Violation(
                    "fault", f"the server was never killed: {fault.description} was never seen ({'; '.join(run.notes)})"
                )
            )
    elif run.probe.failures:
        found.append(
            Violation(
                "traffic",
                f"users saw {run.probe.failures} failed requests during a failed deploy "
                f"(the committed version must answer every request): {run.probe.describe()}",
            )
        )
    if any(n == "downloads cut: 0" for n in run.notes) and run.outcome.failed_stage not in ("register", "lock"):
        found.append(
            Violation(
                "fault",
                "no model download passed through the registry URI the deployer was given "
                "(MLFLOW_TRACKING_URI): the fault never reached it. A deployer must take "
                "the registry from its environment for the gate to judge it",
            )
        )
    if (
        stage_matters
        and run.outcome.failed_stage != fault.expected_stage
        and not (fault.disrupts_serving and run.outcome.ok)
    ):
        found.append(
            Violation(
                "stage",
                f"expected the deploy to fail at {fault.expected_stage}, it failed at {run.outcome.failed_stage}",
            )
        )
    return found
