"""Run one fault against one environment and judge the result by the invariants."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from suite.deploy import DeploySettings
from suite.deployers import DeployRequest
from suite.faults import Fault, FaultContext, file_digests
from suite.invariants import INVARIANTS, DeployOutcome, EnvironmentView, InvariantChecker, Violation
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

    @property
    def stage_matches(self) -> bool:
        """For the builtin deployer: it failed at the stage the fault targets."""
        return self.outcome.exit_code is not None or self.outcome.failed_stage == self.expected_stage

    def to_dict(self) -> dict:
        body = asdict(self)
        body["violation_records"] = body.pop("violations")
        body["violations"] = [str(v) for v in self.violations]
        return body

    def describe(self) -> str:
        lines = [f"fault {self.fault} ({self.description}) with deployer {self.deployer}: "
                 f"v{self.version} over committed v{self.committed_before}, {self.duration_s:.1f} s",
                 f"  deployer said: ok={self.outcome.ok} stage={self.outcome.failed_stage} "
                 f"exit={self.outcome.exit_code}:\n    " + self.outcome.message.strip()[:3000].replace("\n", "\n    "),
                 f"  traffic probe: {self.probe.describe()}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  VIOLATED {v}" for v in self.violations] or ["  all invariants hold"]
        return "\n".join(lines)


def run_fault(fault: Fault, ctx: FaultContext, target: EnvironmentView, others: List[EnvironmentView],
              deployer, checker: InvariantChecker, registered_bytes: Dict[int, bytes],
              settings: Optional[DeploySettings] = None) -> FaultRun:
    """Prepare, inject, deploy under traffic, repair, then check every invariant."""
    begin = time.perf_counter()
    version = fault.prepare(ctx)
    before = target.capture()
    ctx.committed = before.committed
    other_states = {view: view.capture() for view in others}
    probe = TrafficProbe(target.triton, ctx.model, ctx.golden)
    with probe:
        with fault.injected(ctx, version) as overrides:
            request = DeployRequest(
                env=target.name, repository=target.repository, triton=target.triton, model=ctx.model,
                mlflow_uri=overrides.mlflow_uri or ctx.mlflow_uri,
                version=None if overrides.alias else version, alias=overrides.alias,
                settings=settings or DeploySettings())
            outcome = deployer.deploy(request)
        fault.repair(ctx)
    expected = file_digests(registered_bytes[version]) if version in registered_bytes else None
    judged_version = version if not overrides.alias else None
    violations = checker.after_failure(target, before, other_states, judged_version,
                                       expected, outcome, materialized=fault.materializes)
    # Invariant 3 (quarantine) only applies when a new version was attempted.
    checked = [n for n in INVARIANTS if n != 3 or judged_version not in (None, before.committed)]
    return FaultRun(fault.name, fault.description, deployer.name, version, before.committed, outcome,
                    violations, probe.report, time.perf_counter() - begin, fault.expected_stage, ctx.notes,
                    checked)
