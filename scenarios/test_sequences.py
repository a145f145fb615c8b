"""Property-based sequences: random runs of good deploys, faulty deploys, restarts and recoveries.

A hypothesis state machine, driving the platform's deployer; after every step the environment
must serve exactly its committed version with golden answers, hold no leftovers, and the other
environment must be untouched. Every example starts from the verified baseline (the gate resets
the platform), so hypothesis can replay and shrink a failing sequence; the shortest one is
printed as reproducible steps. The default profile is small (`make test`);
`--hypothesis-profile=nightly` runs many more steps.
"""

from __future__ import annotations

import pytest

from suite.checks import check_serves_committed
from suite.faults import CATALOGUE
from suite.invariants import Judgement, Violation
from suite.targets.capabilities import SERVER_CONTROL
from suite.timings import MODEL_LOAD_S

pytestmark = pytest.mark.chaos

# Faults that leave the server running and cost a few seconds each.
SEQUENCE_FAULTS = [
    "wrong-answers",
    "corrupt-model",
    "config-wrong-input-name",
    "registry-version-missing",
    "mlflow-unreachable",
    "download-cut-halfway",
]
ACTIONS = ["deploy-faulty:" + f for f in SEQUENCE_FAULTS] + [
    "deploy-good:v2",
    "restart-server:",
    "deploy-good:v1",
    "recover:",
]


# Restarts, and the faults' own needs (corrupt-model damages the registry's files); gate_baseline
# adds the gate's baseline. On a target without one of them the whole test skips at setup.
@pytest.mark.needs(SERVER_CONTROL, *sorted({need for fault in SEQUENCE_FAULTS for need in CATALOGUE[fault].needs}))
def test_random_sequences_keep_the_invariants(
    trial_env,
    gate_envs,
    gate_platform,
    gate_golden,
    gate_deployer,
    gate_baseline,
    committed,
    reference_versions,
    run_fault,
    deploy,
    deploy_request,
    environment_view,
    record_check,
    gate_hypothesis,
):
    # Imported here: hypothesis takes most of a second to import, which `-m smoke` (the PostSync
    # hook) would pay for nothing when collecting this module.
    from hypothesis import settings
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

    environment = gate_envs[trial_env]
    folder = environment_view(trial_env).folder
    others = [environment_view(other) for other in gate_envs if other != trial_env]
    # The first failure's judgement is the verdict: the generated examples are the same on every
    # run (derandomized), how far shrinking gets in its time is not.
    first_failure: dict = {}

    def fail(log, violations):
        first_failure.setdefault("judgement", Judgement(list(violations)))
        raise AssertionError(f"after {' -> '.join(log)}:\n" + "\n".join(map(str, violations)))

    class DeploySequences(RuleBasedStateMachine):
        @initialize()
        def start(self):
            gate_baseline.ensure()  # every example from the same state: replays see what the first run saw
            self.others_before = {view: view.capture() for view in others}
            self.log = []

        # One rule drawing the action: hypothesis then mixes deploys, faults, restarts and
        # recoveries within a few short sequences, rather than repeating the simplest rule.
        @rule(action=st.sampled_from(ACTIONS))
        def step(self, action):
            kind, _, argument = action.partition(":")
            getattr(self, kind.replace("-", "_"))(argument)

        def deploy_good(self, which):
            version = reference_versions[which].version
            outcome = deploy(trial_env, version=version)
            self.log.append(f"deploy good v{version}: ok={outcome.ok}")
            if not outcome.ok:
                fail(self.log, [Violation(6, f"the deploy of a good version failed: {outcome.message[-500:]}")])

        def deploy_faulty(self, fault):
            run = run_fault(CATALOGUE[fault])
            self.log.append(f"fault {fault}: {run.findings or 'all hold'}")
            if run.violations:
                fail(self.log, run.violations)

        def restart_server(self, _):
            environment.server.restart()
            self.log.append(f"restart {trial_env} Triton")

        def recover(self, _):
            outcome = gate_deployer.recover(deploy_request(trial_env))
            if outcome is None:
                self.log.append("recover: the platform declares no recovery (nothing to run)")
                return
            self.log.append(f"recover: ok={outcome.ok}")
            if not outcome.ok:
                fail(self.log, [Violation(6, f"the platform's recovery failed: {outcome.message[-500:]}")])

        def teardown(self):
            print("deploy sequence:", " -> ".join(self.log))  # shown with -s and in failure reports

        @invariant()
        def serves_exactly_the_committed_version(self):
            environment.triton.wait_model_settled(
                gate_platform.model.name, timeout_s=MODEL_LOAD_S
            )  # a restart takes a moment
            problems = check_serves_committed(environment.triton, folder, gate_golden)
            if problems:
                fail(self.log, [Violation(2, p) for p in problems])

        @invariant()
        def leaves_nothing_behind(self):
            if folder.leftovers():
                fail(self.log, [Violation(4, f"left in {folder.path}: {[p.name for p in folder.leftovers()]}")])

        @invariant()
        def other_environments_untouched(self):
            for view, state in self.others_before.items():
                differences = state.snapshot.differences(view.capture().snapshot)
                if differences:
                    fail(self.log, [Violation(5, f"{view.name} changed: {differences}")])

    try:
        run_state_machine_as_test(DeploySequences, settings=settings())
    except Exception:
        if "judgement" in first_failure:
            record_check(
                "the first failing sequence (the shortest found is printed as reproducible steps)",
                first_failure["judgement"],
            )
        raise
