"""Deploys that race, and a deployer killed at every stage boundary, end in a consistent state."""
from __future__ import annotations

import os
import threading

import pytest

from suite.deploy import DeploySettings
from suite.deployers import DeployRequest
from suite.invariants import DeployOutcome, InvariantChecker
from suite.model_repo import ModelFolder
from suite.probe import TrafficProbe
from suite.warm_cli import run_cli

pytestmark = pytest.mark.chaos


def _request(gate_stack, environment, model, version, **settings):
    return DeployRequest(env=environment.name, repository=environment.repository, triton=environment.triton,
                         model=model, mlflow_uri=gate_stack.mlflow.uri, version=version,
                         settings=DeploySettings(**settings))


def test_successful_deploy_under_traffic_loses_no_request(gate_stack, gate_envs, gate_platform, gate_golden,
                                                          gate_deployer, committed, reference_versions,
                                                          environment_view, request):
    """Through a good deploy users see no error and no wrong answer while the version switches."""
    model = gate_platform.model.name
    current = committed("dev")
    target = next(v.version for v in reference_versions.values() if v.version != current)
    dev = gate_envs["dev"]
    others = {environment_view(e): environment_view(e).capture() for n, e in gate_envs.items() if n != "dev"}
    before = environment_view(dev).capture()
    with TrafficProbe(dev.triton, model, gate_golden) as probe:
        outcome = gate_deployer.deploy(_request(gate_stack, dev, model, target))
    request.node.user_properties.append(("probe", probe.report.describe()))
    violations = InvariantChecker(model, gate_golden).after_success(environment_view(dev), others, target, outcome,
                                                                    before=before)
    assert not violations, "\n".join(map(str, violations))
    assert probe.report.requests > 0
    assert probe.report.failures == 0, f"users saw failures during a good deploy: {probe.report.describe()}"


@pytest.mark.parametrize("lock_timeout,both_succeed", [(120.0, True), (0.2, False)], ids=["wait", "refuse"])
def test_two_deploys_at_once_never_tear_the_state(gate_stack, gate_envs, gate_platform, gate_golden, gate_deployer,
                                                  committed, register_model, environment_view, lock_timeout,
                                                  both_succeed):
    """Two deploys race for one environment: the second waits for the lock, or is refused by it."""
    from suite.reference_model import build_onnx

    if gate_deployer.name != "builtin" and not both_succeed:
        pytest.skip("the lock timeout is a setting of the builtin deployer; a platform command has its own")
    model = gate_platform.model.name
    committed("dev")
    dev = gate_envs["dev"]
    versions = [register_model(build_onnx("retrained"), "race-a"), register_model(build_onnx("v1"), "race-b")]
    others = {environment_view(e): environment_view(e).capture() for n, e in gate_envs.items() if n != "dev"}
    outcomes: dict = {}

    def deploy(version: int) -> None:
        outcomes[version] = gate_deployer.deploy(_request(gate_stack, dev, model, version, lock_timeout=lock_timeout))

    threads = [threading.Thread(target=deploy, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    succeeded = [v for v, o in outcomes.items() if o.ok]
    summary = {v: (o.ok, o.failed_stage, o.message[:200]) for v, o in outcomes.items()}
    if both_succeed:
        assert len(succeeded) == 2, f"with a patient lock both deploys must succeed in turn: {summary}"
    else:
        assert len(succeeded) == 1, f"with a short lock exactly one deploy wins: {summary}"
        loser = next(o for o in outcomes.values() if not o.ok)
        assert loser.failed_stage == "lock" and "another deploy holds" in loser.message, summary
    live = ModelFolder(dev.repository, model).read_current().active_version
    assert live in succeeded, f"current.json names v{live}, which did not deploy successfully: {summary}"
    violations = InvariantChecker(model, gate_golden).after_success(
        environment_view(dev), others, live, DeployOutcome(ok=True))
    assert not violations, "\n".join(map(str, violations)) + f"\n{summary}"


GOOD_CRASH_POINTS = ["before:register", "after:register", "after:materialize", "after:load", "after:ready",
                     "after:smoke", "mid:commit", "after:commit"]
ROLLBACK_CRASH_POINTS = ["after:rollback:restore", "after:rollback:quarantine", "after:rollback:reload"]


def _cli(args, env, timeout=180):
    """`python -m suite ...` in its own process, forked warm (suite/warm_cli.py: no 2.5 s import each)."""
    return run_cli(args, {**os.environ, **env}, timeout=timeout)


# Every boundary is healed with `recover`; a representative set also by simply deploying again.
SWEEP = [(point, "recover") for point in GOOD_CRASH_POINTS + ROLLBACK_CRASH_POINTS] + \
    [(point, "deploy-again") for point in ("after:materialize", "mid:commit", "after:commit", "after:rollback:restore")]


@pytest.mark.parametrize("crash_at,how", SWEEP)
def test_deployer_killed_at_a_stage_boundary_recovers(crash_at, how, gate_stack, gate_envs, gate_platform,
                                                       gate_golden, gate_deployer, committed, register_model,
                                                       environment_view, registered_bytes):
    """SIGKILL the builtin deployer at a boundary; `recover` (or the next deploy) restores the invariants."""
    from suite.faults import file_digests
    from suite.reference_model import build_onnx

    if gate_deployer.name != "builtin":
        pytest.skip("the crash sweep kills the builtin deployer at its stage boundaries (GATE_CRASH_AT); "
                    "a platform's own deploy command has no such boundaries to kill it at")
    model = gate_platform.model.name
    committed("dev")
    dev = gate_envs["dev"]
    view = environment_view(dev)
    others = {environment_view(e): environment_view(e).capture() for n, e in gate_envs.items() if n != "dev"}
    failing = crash_at in ROLLBACK_CRASH_POINTS
    version = register_model(build_onnx("flipped" if failing else "retrained"), f"crash-{crash_at}")
    before = view.capture()
    env = {"MLFLOW_TRACKING_URI": gate_stack.mlflow.uri, "GATE_TRITON_URL": dev.server.endpoints.http,
           "GATE_MODEL_REPOSITORY": str(dev.repository), "GATE_MODEL": model}
    crashed = _cli(["deploy", "--env", "dev", "--version", str(version)], {**env, "GATE_CRASH_AT": crash_at})
    assert crashed.returncode == -9, f"the deployer was not killed at {crash_at}:\n{crashed.stdout}{crashed.stderr}"
    if how == "recover":
        healed = _cli(["recover", "--env", "dev"], env)
        assert healed.returncode == 0, f"recover failed after a crash at {crash_at}:\n{healed.stdout}{healed.stderr}"
    else:
        healed = _cli(["deploy", "--env", "dev", "--version", str(version)], env)
        assert healed.returncode == (1 if failing else 0), f"redeploy after {crash_at}:\n{healed.stdout}{healed.stderr}"
    checker = InvariantChecker(model, gate_golden)
    outcome = DeployOutcome(ok=False, exit_code=crashed.returncode, message=f"killed at {crash_at}")
    if how == "deploy-again" and not failing:
        violations = checker.after_success(view, others, version, DeployOutcome(ok=True))
    elif crash_at == "after:commit":
        violations = checker.after_success(view, others, version, DeployOutcome(ok=True))  # it had committed
    else:
        # A redeploy of a failing version fails again and quarantines a second copy; a crash
        # before materialize left nothing to quarantine.
        materialized = crash_at not in ("before:register", "after:register")
        if how == "deploy-again":
            materialized = True
        violations = checker.after_failure(view, before, others, version, file_digests(registered_bytes[version]),
                                           outcome, materialized=materialized)
        if how == "deploy-again" and failing:
            violations = [v for v in violations if "expected exactly one new" not in v.detail]
    assert not violations, f"after a crash at {crash_at} and {how}:\n" + "\n".join(map(str, violations)) + \
        f"\n--- crashed deployer:\n{crashed.stdout}\n--- {how}:\n{healed.stdout}{healed.stderr}"
