"""A platform's deploy command: its explicit environment, its process group, pause and kill."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from suite.deploy import DeploySettings
from suite.deployers import CommandDeployer, DeployRequest
from suite.environment import Environment
from suite.triton_client import TritonControl
from tests.proc_utils import wait_group_gone


def _request(tmp_path: Path, **overrides) -> DeployRequest:
    environment = Environment("dev", tmp_path, TritonControl("http://127.0.0.1:9"), server=None)
    fields = dict(
        environment=environment,
        model="m",
        mlflow_uri="http://127.0.0.1:8",
        version=7,
        settings=DeploySettings(quarantine="q/{version}-{utc}"),
    )
    return DeployRequest(**{**fields, **overrides})


def test_environment_holds_the_documented_variables_and_pass_env_only(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://the-gate-own-registry")
    monkeypatch.setenv("TEAM_TOKEN", "t")
    monkeypatch.setenv("OTHER_SECRET", "s")
    env = CommandDeployer("true", pass_env=["TEAM_*"]).environment(
        _request(tmp_path, hints={"GATE_SMOKE_TIMEOUT": "10"})
    )
    assert env["MLFLOW_TRACKING_URI"] == env["MLFLOW_REGISTRY_URI"] == "http://127.0.0.1:8"
    assert env["GATE_VERSION"] == "7" and env["GATE_ALIAS"] == "" and env["GATE_QUARANTINE"] == "q/{version}-{utc}"
    assert env["TEAM_TOKEN"] == "t" and "OTHER_SECRET" not in env and env["GATE_SMOKE_TIMEOUT"] == "10"


def test_output_and_exit_status_are_reported(tmp_path):
    outcome = CommandDeployer("echo loading; echo refused >&2; exit 3").deploy(_request(tmp_path))
    assert not outcome.ok and outcome.exit_code == 3
    assert "loading" in outcome.message and "refused" in outcome.message and "exited 3" in outcome.message
    record = outcome.record()
    assert record["deployer"] == "echo loading; echo refused >&2; exit 3" and record["stages"][0]["name"] == "command"


def test_what_the_command_left_running_is_ended_with_it(tmp_path):
    marker = tmp_path / "pgid"
    outcome = CommandDeployer(f"sleep 60 & echo $$ > {marker}; exit 0").deploy(_request(tmp_path))
    assert outcome.ok
    # SIGKILL is delivered asynchronously: on a busy machine the child takes a moment to be gone.
    assert wait_group_gone(int(marker.read_text()), within=10) == [], "a background child of the deploy outlived it"


def test_a_command_over_its_time_is_killed_with_its_group(tmp_path):
    marker = tmp_path / "pgid"
    began = time.monotonic()
    outcome = CommandDeployer(f"echo $$ > {marker}; sleep 60 & sleep 60", timeout_s=0.5).deploy(_request(tmp_path))
    assert not outcome.ok and outcome.failed_stage == "timeout" and time.monotonic() - began < 10
    assert wait_group_gone(int(marker.read_text()), within=10) == []


def test_the_gate_can_pause_resume_and_kill_the_whole_group(tmp_path):
    done = tmp_path / "done"
    process = CommandDeployer(f"sleep 0.5; touch {done}").start(_request(tmp_path))
    process.signal(signal.SIGSTOP)
    time.sleep(1.0)
    assert not done.exists() and not process.exited(), "a paused deploy went on"
    process.signal(signal.SIGCONT)
    outcome = process.wait()
    assert outcome.ok and done.exists()
    killed = CommandDeployer("sleep 60").start(_request(tmp_path))
    killed.signal(signal.SIGKILL)
    outcome = killed.wait()
    assert not outcome.ok and "killed by SIGKILL" in outcome.message
    killed.signal(signal.SIGKILL)  # after it was reaped: a no-op, never another process's group


def test_recover_is_none_when_the_platform_declares_none(tmp_path):
    assert CommandDeployer("true").recover(_request(tmp_path)) is None
    assert CommandDeployer("true", recover="exit 0").recover(_request(tmp_path)).ok
