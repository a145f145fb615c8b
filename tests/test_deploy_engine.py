"""The deploy path engine on the real embedded stack: stage records, rollback, bad input."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from suite.checks import check_serves_committed
from suite.deploy import DEFAULT_STEPS, ROLLBACK_STEPS, STAGES, DeployContext, DeploySteps
from suite.errors import GateError
from suite.model_repo import ModelFolder


@pytest.fixture
def deploy(gate_stack, gate_platform, gate_golden):
    """The builtin engine itself, returning its DeployResult (the plugin's `deploy` fixture runs
    whichever deployer the platform names)."""
    from suite.deploy import Deployer

    def run(env, alias=None, version=None, steps=None):
        environment = gate_stack.environments[env]
        target = environment
        deployer = Deployer(gate_stack.registry(), target, gate_platform.model.name, gate_golden, steps=steps)
        return deployer.deploy(alias, version)

    return run


@pytest.fixture
def dev(gate_envs, gate_platform, committed):
    committed("dev")
    environment = gate_envs["dev"]
    return environment, ModelFolder(environment.repository, gate_platform.model.name)


def test_every_stage_is_recorded_in_order_with_duration_and_outcome(dev, deploy, reference_versions):
    result = deploy("dev", version=reference_versions["v2"].version)
    assert result.ok, result.describe()
    assert [s.name for s in result.stages] == list(STAGES)
    assert all(s.outcome == "passed" and s.duration_s > 0 for s in result.stages), result.describe()
    assert result.rollback == []
    json.dumps(result.to_dict())  # serialisable for reports


def test_wrong_answers_fail_smoke_and_roll_back_to_the_committed_version(dev, deploy, make_model_version, gate_golden):
    environment, folder = dev
    committed_before = folder.current_bytes()
    committed_version = folder.read_current().active_version
    flipped = make_model_version("flipped")
    result = deploy("dev", version=flipped.version)
    assert not result.ok and result.failed_stage == "smoke", result.describe()
    assert "does not give the golden outputs" in result.error
    assert [r.outcome for r in result.rollback] == ["passed"] * 4, result.describe()
    assert folder.current_bytes() == committed_before, "current.json must be byte-for-byte unchanged"
    assert flipped.version not in folder.versions()
    quarantined = folder.quarantined(flipped.version)
    assert len(quarantined) == 1 and (quarantined[0] / "model.onnx").is_file()
    assert not check_serves_committed(environment.triton, folder, gate_golden, committed_version)


def test_unknown_alias_fails_at_register_and_touches_nothing(dev, deploy):
    environment, folder = dev
    before = (folder.current_bytes(), folder.versions(), folder.quarantined())
    result = deploy("dev", alias="does-not-exist")
    assert not result.ok and result.failed_stage == "register"
    assert "alias 'does-not-exist'" in result.error and "aliases" in result.error, result.error
    assert (folder.current_bytes(), folder.versions(), folder.quarantined()) == before


def test_unknown_version_names_the_versions_that_exist(dev, deploy):
    result = deploy("dev", version=9999)
    assert not result.ok and result.failed_stage == "register"
    assert "version 9999" in result.error and "has versions" in result.error, result.error


def test_unreadable_current_json_fails_before_touching_anything(tmp_path, gate_golden):
    from suite.deploy import Deployer
    from suite.environment import Environment
    from suite.registry import Registry
    from suite.triton_client import TritonControl

    folder = ModelFolder(tmp_path, "best_model")
    folder.path.mkdir()
    folder.current_path.write_bytes(b"{ torn")
    deployer = Deployer(
        Registry("http://127.0.0.1:9"),
        Environment("dev", tmp_path, TritonControl("http://127.0.0.1:9")),
        "best_model",
        gate_golden,
    )
    result = deployer.deploy(version=1)
    assert not result.ok and result.failed_stage == "precheck", result.describe()
    assert "current.json is not valid JSON" in result.error
    assert folder.current_path.read_bytes() == b"{ torn", "a user's current.json is never rewritten or deleted"


def test_every_stage_and_rollback_step_is_a_replaceable_step():
    names = {f.name for f in fields(DeploySteps)}
    assert set(STAGES) | set(ROLLBACK_STEPS) <= names, sorted(names)


def test_a_replaced_stage_runs_in_place_of_the_builtin_one_and_its_failure_rolls_back(dev, deploy, reference_versions):
    """The public extension point, as a platform team uses it: one stage replaced, the rest builtin."""
    environment, folder = dev
    committed_before = folder.current_bytes()
    seen = []

    def refusing_smoke(ctx: DeployContext) -> None:
        seen.append((ctx.candidate, ctx.version, ctx.materialized))
        raise GateError("the platform's own smoke check refused it")

    version = reference_versions["v2"].version
    result = deploy("dev", version=version, steps=replace(DEFAULT_STEPS, smoke=refusing_smoke))
    assert seen == [(f"{folder.path.name}__candidate", version, True)]
    assert not result.ok and result.failed_stage == "smoke", result.describe()
    assert "the platform's own smoke check refused it" in result.error
    assert [r.outcome for r in result.rollback] == ["passed"] * 4, result.describe()
    assert folder.current_bytes() == committed_before
    assert len(folder.quarantined(version)) == 1 and result.quarantined == str(folder.quarantined(version)[0])


def test_a_download_asks_this_registry_whatever_the_process_wide_mlflow_uris_say(
    gate_stack, reference_versions, tmp_path
):
    # MLflow resolves `models:/<name>/<version>` with the process-wide registry URI, whatever it is
    # passed. Another stack's, stopped since, once failed a deploy of our tests here (in CI).
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # nothing listens there
    mlflow.set_registry_uri("http://127.0.0.1:9")
    try:
        path = gate_stack.registry().download_model_file("best_model", reference_versions["v2"].version, tmp_path)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    assert path.read_bytes()[:2] and path.stat().st_size > 100, path
