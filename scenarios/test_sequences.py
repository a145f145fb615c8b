"""Property-based sequences: random runs of good deploys, faulty deploys, restarts and recoveries.

A hypothesis state machine; after every step the environment must serve exactly its committed
version with golden answers, hold no leftovers, and the other environment must be untouched.
The default profile is small (`make test`); `--hypothesis-profile=nightly` runs many more steps.
"""
from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from suite.checks import check_serves_committed
from suite.deploy import Deployer, DeployTarget
from suite.faults import CATALOGUE
from suite.model_repo import ModelFolder

pytestmark = pytest.mark.chaos

# Faults that leave the server running and cost a few seconds each.
SEQUENCE_FAULTS = ["wrong-answers", "corrupt-model", "config-wrong-input-name", "registry-version-missing",
                   "mlflow-unreachable", "download-cut-halfway"]
ACTIONS = ["deploy-faulty:" + f for f in SEQUENCE_FAULTS] + ["deploy-good:v2", "restart-server:", "deploy-good:v1",
                                                            "recover:"]


def test_random_sequences_keep_the_invariants(gate_stack, gate_envs, gate_platform, gate_golden, gate_deployer,
                                              committed, reference_versions, run_fault, deploy_into,
                                              environment_view):
    model = gate_platform.model.name
    dev = gate_envs["dev"]
    folder = ModelFolder(dev.repository, model)
    others = [environment_view(e) for n, e in gate_envs.items() if n != "dev"]

    class DeploySequences(RuleBasedStateMachine):
        @initialize()
        def start(self):
            committed("dev")
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
            outcome = deploy_into(dev, version)
            self.log.append(f"deploy good v{version}: ok={outcome.ok}")
            assert outcome.ok, outcome.message

        def deploy_faulty(self, fault):
            run = run_fault(CATALOGUE[fault])
            self.log.append(f"fault {fault}: {len(run.violations)} violations")
            assert not run.violations, run.describe()
            assert run.probe.failures == 0, run.describe()

        def restart_server(self, _):
            dev.server.restart()
            self.log.append("restart dev Triton")

        def recover(self, _):
            deployer = Deployer(gate_stack.registry(), DeployTarget("dev", dev.repository, dev.triton), model, gate_golden)
            records = deployer.recover()
            self.log.append(f"recover: {[r.outcome for r in records]}")
            assert all(r.outcome == "passed" for r in records), records

        def teardown(self):
            print("deploy sequence:", " -> ".join(self.log))  # shown with -s and in failure reports

        @invariant()
        def serves_exactly_the_committed_version(self):
            current = folder.read_current().active_version
            dev.triton.wait_version_ready(model, current, timeout=60)  # a restart takes a moment
            problems = check_serves_committed(dev.triton, folder, gate_golden)
            assert not problems, f"after {self.log}: {problems}"

        @invariant()
        def leaves_nothing_behind(self):
            assert not folder.leftovers(), f"after {self.log}: {folder.leftovers()}"

        @invariant()
        def other_environments_untouched(self):
            for view, state in self.others_before.items():
                differences = state.snapshot.differences(view.capture().snapshot)
                assert not differences, f"after {self.log}: {view.name} changed: {differences}"

    run_state_machine_as_test(DeploySequences, settings=settings())
