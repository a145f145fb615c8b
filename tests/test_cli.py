"""`python -m suite deploy`, run as a user runs it, against the embedded stack."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from suite.deploy import STAGES
from suite.model_repo import ModelFolder


def _run(args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "suite", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def stack_env(gate_stack, gate_envs, reference_versions):
    env = gate_envs["prod"]
    return {
        "MLFLOW_TRACKING_URI": gate_stack.mlflow.uri,
        "GATE_TRITON_URL": env.server.endpoints.http,
        "GATE_MODEL_REPOSITORY": str(env.repository),
    }


def test_deploy_command_prints_each_stage_and_exits_0(stack_env, gate_envs, reference_versions):
    version = reference_versions["v2"].version
    proc = _run(["deploy", "--env", "prod", "--model", "best_model", "--version", str(version)], stack_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stage in STAGES:
        assert f"-> {stage}" in proc.stdout and f"  {stage} " in proc.stdout
    assert ModelFolder(gate_envs["prod"].repository, "best_model").read_current().active_version == version


def test_deploy_command_fails_with_exit_1_naming_the_stage(stack_env):
    proc = _run(["deploy", "--env", "prod", "--model", "best_model", "--alias", "nowhere"], stack_env)
    assert proc.returncode == 1
    assert "FAILED at register" in proc.stdout and "alias 'nowhere'" in proc.stdout


@pytest.mark.parametrize(
    "missing,variable",
    [
        ("MLFLOW_TRACKING_URI", "--mlflow-uri"),
        ("GATE_TRITON_URL", "--triton-url"),
        ("GATE_MODEL_REPOSITORY", "--model-repository"),
    ],
)
def test_missing_settings_are_usage_errors(stack_env, missing, variable):
    env = {k: v for k, v in stack_env.items() if k != missing}
    clean = {k: v for k, v in os.environ.items() if k != missing}
    proc = subprocess.run(
        [sys.executable, "-m", "suite", "deploy", "--env", "prod", "--model", "best_model", "--alias", "A"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
    )
    assert proc.returncode == 2
    assert variable in proc.stderr and missing in proc.stderr


def test_unreachable_triton_is_a_usage_error(stack_env):
    proc = _run(
        ["deploy", "--env", "prod", "--model", "best_model", "--alias", "A"],
        {**stack_env, "GATE_TRITON_URL": "http://127.0.0.1:9"},
    )
    assert proc.returncode == 2 and "does not answer /v2/health/live" in proc.stderr
