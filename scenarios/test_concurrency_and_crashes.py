"""Deploys that race, and a deployer killed half-way, end in a consistent state.

Races are staged, not left to timing: the first deploy is paused at a point the gate observes
(suite/interleave.py) while the second runs, so every run gives the same verdict. The crash
sweep kills the platform's deployer at points any deployer reaches (suite/observe.py), then runs
the platform's recovery (`deployer.recover`) or simply the next deploy; the builtin path is also
killed at each of its own stage boundaries (GATE_CRASH_AT).
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from suite.deployers import DeployOutcome
from suite.faults import file_digests
from suite.observe import POINTS, DeployObserver
from suite.probe import TrafficProbe
from suite.reference_model import build_onnx
from suite.warm_cli import run_cli

pytestmark = pytest.mark.chaos


def test_successful_deploy_under_traffic_loses_no_request(
    trial_env,
    gate_envs,
    gate_platform,
    gate_golden,
    committed,
    deploy,
    reference_versions,
    environment_view,
    other_states,
    checker,
    record_check,
    request,
):
    """Through a good deploy users see no error and no wrong answer while the version switches."""
    current = committed(trial_env)
    new_version = next(v.version for v in reference_versions.values() if v.version != current)
    environment = gate_envs[trial_env]
    view = environment_view(trial_env)
    others = other_states(trial_env)
    before = view.capture()
    with TrafficProbe(environment.triton, gate_platform.model.name, gate_golden) as probe:
        outcome = deploy(trial_env, version=new_version)
    request.node.user_properties.append(("probe", probe.report.describe()))
    judgement = checker.after_success(view, before, others, new_version, outcome)
    if probe.report.requests == 0:
        judgement.add("traffic", "the traffic probe sent nothing: the scenario measured nothing")
    if probe.report.failures:
        judgement.add("traffic", f"users saw failures during a good deploy: {probe.report.describe()}")
    record_check(f"good deploy of v{new_version} under traffic", judgement)
    assert not judgement.violations, "\n".join(map(str, judgement.violations)) + f"\n{outcome.message}"


def test_two_deploys_at_once_both_succeed_in_turn(
    trial_env,
    gate_deployer,
    committed,
    register_model,
    deploy_request,
    environment_view,
    other_states,
    staged_deploy,
    checker,
    record_check,
):
    """A second deploy starts while the first has asked Triton to load its version (paused there):
    with a per-environment lock it waits its turn, and both succeed; no lock, and they interleave."""
    committed(trial_env)
    first_version, second_version = (
        register_model(build_onnx("retrained"), "race-first"),
        register_model(build_onnx("v1"), "race-second"),
    )
    view = environment_view(trial_env)
    others = other_states(trial_env)
    before = view.capture()
    staged = staged_deploy(
        trial_env,
        "load-requested",
        lambda: gate_deployer.deploy(deploy_request(trial_env, version=second_version)),
        version=first_version,
    )
    assert staged.point_seen, (
        f"the first deploy never asked Triton to load a model through GATE_TRITON_URL, so the "
        f"race could not be staged:\n{staged.first.message}"
    )
    assert staged.error is None, f"the second deploy raised: {staged.error!r}"
    second: DeployOutcome = staged.other
    outcomes = {first_version: staged.first, second_version: second}
    summary = {v: (o.ok, o.failed_stage, o.exit_code, o.message.strip().splitlines()[-1:]) for v, o in outcomes.items()}
    current = view.folder.read_current()
    live = current.active_version if current else None
    judgement = checker.after_success(
        view, before, others, live if live in outcomes else second_version, DeployOutcome(ok=True)
    )
    failed = [v for v, o in outcomes.items() if not o.ok]
    if failed:
        judgement.add(
            6,
            f"with the first deploy paused at its load request, deploys {failed} failed; one deploy "
            f"per environment at a time (a lock) lets both succeed in turn: {summary}",
        )
    record_check("two deploys staged at the first one's load request", judgement)
    assert not judgement.violations, "\n".join(map(str, judgement.violations)) + f"\n{summary}"


def test_two_deploys_at_once_short_lock_refuses_one(
    trial_env,
    gate_stack,
    gate_envs,
    gate_platform,
    gate_deployer,
    committed,
    register_model,
    deploy_request,
    environment_view,
    other_states,
    checker,
):
    """The builtin path's lock timeout: the second of two simultaneous deploys is refused, never torn."""
    if gate_deployer.name != "builtin":
        pytest.skip("the lock timeout is a setting of the builtin deployer; a platform command has its own")
    committed(trial_env)
    versions = [register_model(build_onnx("retrained"), "race-a"), register_model(build_onnx("v1"), "race-b")]
    view = environment_view(trial_env)
    others = other_states(trial_env)
    before = view.capture()
    outcomes: dict = {}

    def run(version: int) -> None:
        outcomes[version] = gate_deployer.deploy(deploy_request(trial_env, version=version, lock_timeout=0.2))

    threads = [threading.Thread(target=run, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    succeeded = [v for v, o in outcomes.items() if o.ok]
    summary = {v: (o.ok, o.failed_stage, o.message[:200]) for v, o in outcomes.items()}
    assert len(succeeded) == 1, f"with a short lock exactly one deploy wins: {summary}"
    loser = next(o for o in outcomes.values() if not o.ok)
    assert loser.failed_stage == "lock" and "another deploy holds" in loser.message, summary
    violations = checker.after_success(view, before, others, succeeded[0], DeployOutcome(ok=True)).violations
    assert not violations, "\n".join(map(str, violations)) + f"\n{summary}"


def test_failed_deploy_never_undoes_a_concurrent_commit(
    trial_env,
    gate_envs,
    gate_deployer,
    committed,
    register_model,
    registered_bytes,
    deploy_request,
    environment_view,
    other_states,
    staged_deploy,
    checker,
    record_check,
):
    """A deploy of a bad version is paused after its first write; a good deploy runs meanwhile.
    When the bad one fails, its rollback must not bring back what was committed before it began."""
    committed(trial_env)
    bad = register_model(build_onnx("flipped"), "undo-bad")
    good = register_model(build_onnx("retrained"), "undo-good")
    view = environment_view(trial_env)
    others = other_states(trial_env)
    before = view.capture()
    staged = staged_deploy(
        trial_env, "first-write", lambda: gate_deployer.deploy(deploy_request(trial_env, version=good)), version=bad
    )
    assert staged.point_seen, f"the bad deploy wrote nothing under the model's folder:\n{staged.first.message}"
    assert staged.error is None, f"the good deploy raised: {staged.error!r}"
    judgement = checker.after_success(view, before, others, good, staged.other)
    if staged.first.ok:
        judgement.add(6, f"the deploy of v{bad} (every label wrong) reported success")
    if bad in view.folder.versions():
        judgement.add(3, f"the failed v{bad} is still among the numeric versions {view.folder.versions()}")
    kept = view.folder.quarantined(bad)
    if not kept:
        judgement.add(
            3, f"the failed v{bad} was not kept at {view.folder.layout.template!r}: found {view.folder.entries()}"
        )
    elif set(file_digests(registered_bytes[bad]).values()) - {d for p in kept for d in _digests(p)}:
        judgement.add(3, f"the quarantined copy of v{bad} is incomplete")
    record_check(f"bad v{bad} paused at first write while good v{good} deployed", judgement)
    assert not judgement.violations, "\n".join(map(str, judgement.violations)) + (
        f"\n--- bad deploy:\n{staged.first.message}\n--- good deploy:\n{staged.other.message if staged.other else ''}"
    )


def _digests(path):
    from suite.model_repo import tree_digest

    return tree_digest(path).values()


@pytest.mark.parametrize("point", sorted(POINTS))
def test_deployer_killed_at_an_observed_point_recovers(
    trial_env,
    point,
    gate_envs,
    gate_platform,
    gate_deployer,
    committed,
    register_model,
    deploy_request,
    environment_view,
    other_states,
    checker,
    record_check,
):
    """SIGKILL the platform's deployer (its whole process group) when the gate sees `point`, then run
    the platform's recovery (`deployer.recover`), or deploy again when it declares none."""
    committed(trial_env)
    environment = gate_envs[trial_env]
    version = register_model(build_onnx("retrained"), f"crash-{point}")
    view = environment_view(trial_env)
    others = other_states(trial_env)
    before = view.capture()
    process_deployer = gate_deployer.as_command(gate_platform.spec.deployer.pass_env)
    holder: dict = {}
    ready = threading.Event()

    def kill(detail: str) -> None:
        ready.wait(timeout=10)
        holder["process"].signal(signal.SIGKILL)

    with DeployObserver(view.folder.path, environment.triton.http_url, point, kill) as observer:
        holder["process"] = process_deployer.start(
            deploy_request(trial_env, version=version, triton_url=observer.triton_url)
        )
        ready.set()
        crashed = holder["process"].wait()
    if observer.seen is None:
        pytest.skip(
            f"the deployer finished without reaching the point '{point}' ({POINTS[point]}), so it could not "
            f"be killed there; deploy said: {crashed.message.strip().splitlines()[-1:]}"
        )
    killed = f"killed at {point} ({observer.seen})"
    if observer.too_late:
        # Its last act: it exited before the kill could land. Recovery is still judged, from the
        # state it left, so the verdict does not depend on which side of the race the kill fell.
        killed = f"reached {point} ({observer.seen}) as it exited, before the kill could land"
    recovery = process_deployer.recover(deploy_request(trial_env, version=version))
    how = "the platform's recover command"
    if recovery is None:
        how = "the next deploy (the manifest declares no deployer.recover)"
        recovery = gate_deployer.deploy(deploy_request(trial_env, version=version))
    judgement = checker.after_recovery(view, before, others, version, recovery)
    if recovery.requested != "recover" and not judgement.violations:
        current = view.folder.read_current()
        if current is None or current.active_version != version:
            judgement.add(
                1,
                f"the next deploy of v{version} did not commit it: current.json names "
                f"{current.active_version if current else None}",
            )
    record_check(f"{killed}, healed by {how}", judgement)
    assert not judgement.violations, (
        f"deployer {killed}, {observer.seen_after_s:.2f} s in, then {how}:\n"
        + "\n".join(map(str, judgement.violations))
        + f"\n--- killed deployer:\n{crashed.message}\n--- recovery:\n{recovery.message}"
    )


GOOD_CRASH_POINTS = [
    "before:register",
    "after:register",
    "after:materialize",
    "after:load",
    "after:ready",
    "after:smoke",
    "mid:commit",
    "after:commit",
]
ROLLBACK_CRASH_POINTS = ["after:rollback:restore", "after:rollback:quarantine", "after:rollback:reload"]


def _cli(args, env, timeout=180):
    """`python -m suite ...` in its own process, forked warm (suite/warm_cli.py: no 2.5 s import each)."""
    return run_cli(args, {**os.environ, **env}, timeout=timeout)


# Every boundary is healed with `recover`; a representative set also by simply deploying again.
SWEEP = [(point, "recover") for point in GOOD_CRASH_POINTS + ROLLBACK_CRASH_POINTS] + [
    (point, "deploy-again") for point in ("after:materialize", "mid:commit", "after:commit", "after:rollback:restore")
]


@pytest.mark.parametrize("crash_at,how", SWEEP)
def test_deployer_killed_at_a_stage_boundary_recovers(
    trial_env,
    crash_at,
    how,
    gate_stack,
    gate_envs,
    gate_platform,
    gate_deployer,
    committed,
    register_model,
    environment_view,
    other_states,
    registered_bytes,
    checker,
    record_check,
):
    """SIGKILL the builtin deployer at a boundary; `recover` (or the next deploy) restores the invariants."""
    if gate_deployer.name != "builtin":
        pytest.skip(
            "the stage-boundary sweep kills the builtin deployer at its own stage boundaries (GATE_CRASH_AT); "
            "a platform's own deploy command is killed at observed points instead "
            "(test_deployer_killed_at_an_observed_point_recovers)"
        )
    model = gate_platform.model.name
    committed(trial_env)
    environment = gate_envs[trial_env]
    view = environment_view(trial_env)
    others = other_states(trial_env)
    failing = crash_at in ROLLBACK_CRASH_POINTS
    version = register_model(build_onnx("flipped" if failing else "retrained"), f"crash-{crash_at}")
    before = view.capture()
    variables = {
        "MLFLOW_TRACKING_URI": gate_stack.mlflow.uri,
        "GATE_TRITON_URL": environment.server.endpoints.http,
        "GATE_MODEL_REPOSITORY": str(environment.repository),
        "GATE_MODEL": model,
        "GATE_QUARANTINE": gate_platform.spec.deployer.quarantine,
    }
    crashed = _cli(["deploy", "--env", trial_env, "--version", str(version)], {**variables, "GATE_CRASH_AT": crash_at})
    assert crashed.returncode == -9, f"the deployer was not killed at {crash_at}:\n{crashed.stdout}{crashed.stderr}"
    if how == "recover":
        healed = _cli(["recover", "--env", trial_env], variables)
        assert healed.returncode == 0, f"recover failed after a crash at {crash_at}:\n{healed.stdout}{healed.stderr}"
    else:
        healed = _cli(["deploy", "--env", trial_env, "--version", str(version)], variables)
        assert healed.returncode == (1 if failing else 0), f"redeploy after {crash_at}:\n{healed.stdout}{healed.stderr}"
    outcome = DeployOutcome(ok=False, exit_code=crashed.returncode, message=f"killed at {crash_at}")
    if (how == "deploy-again" and not failing) or crash_at == "after:commit":  # it had committed
        judgement = checker.after_success(view, before, others, version, DeployOutcome(ok=True))
    else:
        # A redeploy of a failing version fails again and quarantines a second copy; a crash
        # before materialize left nothing to quarantine.
        materialized = how == "deploy-again" or crash_at not in ("before:register", "after:register")
        judgement = checker.after_failure(
            view, before, others, version, file_digests(registered_bytes[version]), outcome, materialized=materialized
        )
        if how == "deploy-again" and failing:
            judgement.violations = [v for v in judgement.violations if "expected exactly one new" not in v.detail]
    record_check(f"killed at {crash_at}, healed by {how}", judgement)
    assert not judgement.violations, (
        f"after a crash at {crash_at} and {how}:\n"
        + "\n".join(map(str, judgement.violations))
        + f"\n--- crashed deployer:\n{crashed.stdout}\n--- {how}:\n{healed.stdout}{healed.stderr}"
    )
