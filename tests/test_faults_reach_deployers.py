"""Every fault reaches a platform's deploy command, and nothing of the gate's own environment does.

A probe deployer (tests/deployers/probe.py) is run as the deploy command under each fault of the
catalogue and reports what it saw; each fault must show in that report as the fault it is. The
gate builds the command's environment explicitly (documented variables and the manifest's
`pass_env`), so a live registry URI in the gate's own process cannot leak past a fault.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from suite.deployers import CommandDeployer
from suite.faults import CATALOGUE, FullRepository, mount_faults_unavailable, small_filesystem

PROBE = Path(__file__).resolve().parent / "deployers" / "probe.py"
DOCUMENTED = {
    "TRITON_GATE_SESSION",  # the session token, so the gate knows the command's processes as its own
    "GATE_ENV",
    "GATE_MODEL",
    "GATE_VERSION",
    "GATE_ALIAS",
    "GATE_MODEL_REPOSITORY",
    "GATE_TRITON_URL",
    "GATE_QUARANTINE",
    "GATE_GOLDEN",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "PATH",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# What the probe must see under each fault: (report -> None when seen, else why not).
def _sees_bytes(report, ctx):
    download = report["download"]
    expected = ctx["registered"]
    if download.get("sha256") != _sha(expected):
        return f"downloaded {download} is not the registry's {len(expected)} bytes of v{ctx['version']}"


def _sees_server_down(report, ctx):
    answers = report["triton"]["answers"]
    if not any(a != "200" for a in answers):
        return f"Triton answered {answers} all along: the kill never reached the deployer"


def _sees_registry_down(report, ctx):
    if report["registry"].get("error") != "ConnectionError":
        return f"the registry answered: {report['registry']}"
    leaked = [k for k, v in report["environment"].items() if ctx["live_registry"] in v]
    if leaked:
        return f"the live registry {ctx['live_registry']} reached the deployer through {leaked}"


def _sees_cut_download(report, ctx):
    download = report["download"]
    if download.get("complete") is True or download.get("received", 0) >= len(ctx["registered"]):
        return f"the download was not cut: {download}"


def _sees_errno(code):
    def check(report, ctx):
        if report["write"].get("errno") != code:
            return f"writing the version folder gave {report['write']}, expected errno {code}"

    return check


def _sees_missing(report, ctx):
    # MLflow answers 404 for an unknown version, 400 (INVALID_PARAMETER_VALUE) for an unset alias.
    if report["registry"].get("status") not in (400, 404):
        return (
            f"the registry answered {report['registry']} for {report['environment'].get('GATE_VERSION') or 'the alias'}"
        )


SEES = {
    "corrupt-model": _sees_bytes,
    "config-wrong-input-name": _sees_bytes,
    "config-wrong-dims": _sees_bytes,
    "config-wrong-dtype": _sees_bytes,
    "wrong-answers": _sees_bytes,
    "slow-model": _sees_bytes,
    "triton-killed-during-load": _sees_server_down,
    "triton-killed-during-smoke": _sees_server_down,
    "mlflow-unreachable": _sees_registry_down,
    "download-cut-halfway": _sees_cut_download,
    "repository-read-only": _sees_errno(30),
    "repository-full": _sees_errno(28),
    "registry-version-missing": _sees_missing,
    "registry-alias-missing": _sees_missing,
}


def test_every_fault_of_the_catalogue_has_a_probe_check():
    assert set(SEES) == set(CATALOGUE)


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """The probe as a platform command; PROBE_REPORT reaches it through pass_env only. A decoy
    variable of the gate's environment that pass_env does not name must not reach it."""
    report = tmp_path / "probe.json"
    monkeypatch.setenv("PROBE_REPORT", str(report))
    monkeypatch.setenv("GATE_DECOY_SECRET", "must-not-reach-the-deployer")
    return CommandDeployer(f"{sys.executable} {PROBE}", pass_env=["PROBE_*"]), report


def _check(run, report_path: Path, fault_name: str, registered_bytes, gate_stack):
    assert report_path.is_file(), f"the probe did not run under {fault_name}:\n{run.outcome.message}"
    report = json.loads(report_path.read_text())
    environment = report["environment"]
    unexpected = (
        set(environment)
        - DOCUMENTED
        - {
            "PROBE_REPORT",
            "HOME",
            "LANG",
            "LC_ALL",
            "LC_CTYPE",
            "TZ",
            "TMPDIR",
            "USER",
            "LOGNAME",
            "TERM",
            "LANGUAGE",
            "PWD",
            "SHLVL",
            "_",
        }
    )
    assert not unexpected, f"variables beyond the documented ones reached the deployer: {sorted(unexpected)}"
    assert "GATE_DECOY_SECRET" not in environment
    assert environment["MLFLOW_REGISTRY_URI"] == environment["MLFLOW_TRACKING_URI"]
    ctx = {
        "version": run.version,
        "registered": registered_bytes.get(run.version, b""),
        "live_registry": gate_stack.mlflow.uri,
    }
    problem = SEES[fault_name](report, ctx)
    assert problem is None, f"{fault_name} did not reach the deployer: {problem}\nprobe report: " + json.dumps(
        {k: v for k, v in report.items() if k != "environment"}
    )


@pytest.mark.parametrize("fault_name", [n for n in CATALOGUE if n != FullRepository.name])
def test_fault_reaches_a_command_deployer(fault_name, run_fault, probe, registered_bytes, gate_stack):
    fault = CATALOGUE[fault_name]
    if fault.needs_root and mount_faults_unavailable():
        pytest.skip(mount_faults_unavailable())
    deployer, report = probe
    run = run_fault(fault, deployer=deployer)
    _check(run, report, fault_name, registered_bytes, gate_stack)


def test_full_repository_reaches_a_command_deployer(
    run_fault, probe, registered_bytes, gate_stack, make_environment, gate_workdir, reference_versions, deploy
):
    if mount_faults_unavailable():
        pytest.skip(mount_faults_unavailable())
    deployer, report = probe
    with small_filesystem(gate_workdir / "small-fs-probe") as repository:
        environment = make_environment("small-fs-probe", repository)
        assert deploy(environment=environment, version=reference_versions["v1"].version).ok
        run = run_fault(CATALOGUE[FullRepository.name], environment=environment, deployer=deployer)
        environment.server.stop()
    _check(run, report, FullRepository.name, registered_bytes, gate_stack)


def test_the_gate_environment_does_not_leak_into_the_command(deploy_request, monkeypatch):
    """Built from scratch: the registry URI mlflow sets in the gate's process is not inherited."""
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://127.0.0.1:1/the-gate-own-registry")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gate-secret")
    monkeypatch.setenv("MY_TEAM_SETTING", "passed on purpose")
    request = deploy_request("dev", version=3, mlflow_uri="http://127.0.0.1:2/fault")
    env = CommandDeployer("true", pass_env=["MY_TEAM_*"]).environment(request)
    assert env["MLFLOW_REGISTRY_URI"] == env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:2/fault"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["MY_TEAM_SETTING"] == "passed on purpose"
    assert env["GATE_VERSION"] == "3" and env["GATE_ALIAS"] == ""
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
