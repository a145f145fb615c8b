"""Environment names come from the manifest: a platform whose environments are `staging` and
`production` is verified as completely as the reference's `dev` and `prod`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from suite.platform import load_platform
from tests.platform_copies import copy_reference

RENAMED = {"dev": "staging", "prod": "production"}


def renamed_platform(tmp: Path, order=("dev", "prod")) -> Path:
    """The reference platform with its environments renamed (namespaces and configs unchanged)."""
    manifest = copy_reference(tmp) / "platform.yaml"
    raw = yaml.safe_load(manifest.read_text())
    raw["environments"] = {RENAMED[env]: raw["environments"][env] for env in order}
    raw["monitoring"]["alertmanager"] = {RENAMED[env]: path for env, path in raw["monitoring"]["alertmanager"].items()}
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return manifest


def _collected(*args: str) -> list:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "scenarios",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return sorted(line for line in completed.stdout.splitlines() if "::" in line)


def test_every_scenario_is_collected_for_the_manifest_names(tmp_path):
    reference = _collected()
    renamed = _collected("--platform", str(renamed_platform(tmp_path)))
    expected = sorted(
        node.replace("[dev", "[staging")
        .replace("[prod", "[production")
        .replace("-dev]", "-staging]")
        .replace("-prod]", "-production]")
        .replace("-dev-", "-staging-")
        .replace("-prod-", "-production-")
        for node in reference
    )
    assert renamed == expected
    assert not [node for node in renamed if "dev" in node.split("[")[-1] or "prod]" in node]


def test_the_trial_environment_is_the_first_unprotected_one(tmp_path):
    assert load_platform(renamed_platform(tmp_path / "a")).trial_env == "staging"
    # production is protected by its name, so listing it first changes nothing
    assert load_platform(renamed_platform(tmp_path / "b", order=("prod", "dev"))).trial_env == "staging"
    manifest = renamed_platform(tmp_path / "c")
    manifest.write_text(
        manifest.read_text().replace("release: monitoring-dev", "release: monitoring-dev\n    protected: true")
    )
    assert load_platform(manifest).trial_env == "staging"  # all protected: the first one


@pytest.fixture(scope="module")
def renamed_run(tmp_path_factory):
    """Real servers: the smoke, deploy and metrics scenarios plus one fault, on staging/production."""
    work = tmp_path_factory.mktemp("renamed")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "scenarios",
            "--platform",
            str(renamed_platform(work)),
            "-m",
            "smoke or deploy or metrics or chaos",
            "-k",
            "not chaos or wrong-answers",
            "-q",
            "-p",
            "no:cacheprovider",
            "--report-dir",
            str(work / "out"),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return completed, json.loads((work / "out" / "latest" / "summary.json").read_text())


def test_staging_and_production_are_verified_like_dev_and_prod(renamed_run):
    completed, summary = renamed_run
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    passed = [s["nodeid"] for s in summary["scenarios"] if s["outcome"] == "passed"]
    for env in ("staging", "production"):
        assert any(f"[{env}]" in node for node in passed if "test_smoke.py" in node)
        assert any(f"[{env}]" in node for node in passed if "test_deploy_path.py" in node)
    assert any("[staging-production]" in node for node in passed) and any(
        "[production-staging]" in node for node in passed
    )
    fault = next(s for s in summary["scenarios"] if "wrong-answers" in s["nodeid"])
    assert fault["outcome"] == "passed" and fault["deploys"][0]["env"] == "staging", fault
