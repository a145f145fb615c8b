"""The pytest plugin, black-box with pytester: options, markers, reports, and the gate itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite.watchdog import GRACE_S
from tests.platform_copies import copy_reference
from tests.proc_utils import interruptible, wait_group_gone


def test_missing_platform_is_a_usage_error(pytester):
    result = pytester.runpytest_subprocess("--platform", "absent.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*absent.yaml does not exist*--platform*"])


def test_invalid_platform_names_the_bad_key(pytester):
    pytester.makefile(".yaml", platform="model: {name: m}\nenvironments: {dev: {namespace: a, relase: b}}\n")
    result = pytester.runpytest_subprocess("--platform", "platform.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*environments.dev.relase: unknown key*"])


def test_markers_are_declared(pytester):
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.deploy:*", "@pytest.mark.smoke:*", "@pytest.mark.chaos:*"])


def test_reports_go_to_a_run_folder_of_the_report_dir(pytester):
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("--report-dir", "out")
    result.assert_outcomes(passed=1)
    latest = pytester.path / "out" / "latest"
    assert sorted(p.name for p in latest.iterdir()) == ["junit.xml", "report.html", "summary.json"]
    result.stdout.fnmatch_lines([f"gate reports (json, html, junit): {latest.resolve()}/"])


def test_junitxml_still_wins_for_the_junit_file(pytester):
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("--report-dir", "out", "--junitxml", "mine.xml")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "mine.xml").is_file()
    assert sorted(p.name for p in (pytester.path / "out" / "latest").iterdir()) == ["report.html", "summary.json"]


def _broken_golden_platform(tmp: Path) -> Path:
    """A platform whose golden set expects other labels: every model 'answers wrong'."""
    platform = copy_reference(tmp)
    golden_path = platform / "golden" / "best_model.json"
    golden = json.loads(golden_path.read_text())
    golden["expected"]["label"]["data"] = [(x + 1) % 3 for x in golden["expected"]["label"]["data"]]
    golden_path.write_text(json.dumps(golden))
    return platform / "platform.yaml"


def test_installed_gate_runs_smoke_scenarios_by_pyargs(pytester):
    """What a platform team runs from its own repository: no copy of ours around."""
    result = pytester.runpytest_subprocess("--pyargs", "scenarios", "-m", "smoke", "-q", timeout=300)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 20, outcomes


def test_gate_fails_when_the_model_does_not_give_golden_answers(pytester):
    platform = _broken_golden_platform(pytester.path)
    result = pytester.runpytest_subprocess(
        "--pyargs", "scenarios", "--platform", str(platform), "-m", "smoke", "-x", "-q", timeout=300
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*FAILED at smoke*", "*'label' differs from golden*"])


STACK_PROBE = """
import json, os, time
def test_hold_the_stack(gate_stack):
    groups = [e.server.pid for e in gate_stack.environments.values()] + [gate_stack.mlflow.process.pid]
    with open(os.environ["PIDS_FILE"], "w") as f:
        json.dump(groups, f)
    time.sleep(300)
"""


@pytest.mark.parametrize("how", ["SIGKILL", "Ctrl-C"])
def test_no_server_outlives_the_gate(pytester, how):
    """Killed by CI (SIGKILL) or interrupted by a person (Ctrl-C): every server group ends in seconds."""
    pytester.makepyfile(test_probe=STACK_PROBE)
    pids_file = pytester.path / "pids.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_probe.py"],
        cwd=pytester.path,
        env={**os.environ, "PIDS_FILE": str(pids_file)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=interruptible,
    )
    try:
        deadline = time.monotonic() + 120
        while not pids_file.exists() or not pids_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the stack did not start"
            time.sleep(0.2)
        groups = json.loads(pids_file.read_text())
        assert all(_has_members(g) for g in groups)
        proc.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGINT)
        proc.wait(timeout=30)
        # The watchdog's grace (SIGTERM, then SIGKILL), and a margin for a busy machine.
        leftovers = {g: wait_group_gone(g, within=GRACE_S + 4) for g in groups}
        assert not any(leftovers.values()), f"processes left after {how}: {leftovers}"
    finally:
        if proc.poll() is None:
            proc.kill()


def _has_members(pgid: int) -> bool:
    from tests.proc_utils import group_members

    return bool(group_members(pgid))


def test_a_server_that_dies_fails_the_session_with_its_log(pytester):
    pytester.makepyfile(
        test_dies="""
import os, signal, time
def test_a_crash(gate_stack):
    os.killpg(gate_stack.environments["dev"].server.pid, signal.SIGKILL)
    time.sleep(0.5)
def test_next(gate_stack):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-q", timeout=180)
    assert result.ret == 3
    result.stdout.fnmatch_lines(
        [
            "*the embedded stack is broken: tritonserver[[]dev[]] exited unexpectedly "
            "(killed by SIGKILL). Last lines of its log*triton-dev.log*"
        ]
    )


BASELINE_BREAKER = """
def test_first(committed, gate_envs, gate_workdir, gate_platform):
    committed("dev")
    # The gate's saved baseline is damaged, and dev left other than it: the next scenario's reset
    # puts back a repository that is not the one the platform's deployer made.
    for path in (gate_workdir / "baseline" / "dev").rglob("model.onnx"):
        path.write_bytes(b"damaged")
    (gate_envs["dev"].repository / "left-by-the-scenario").write_text("x")

def test_second(committed):
    pass
"""


def test_a_baseline_that_cannot_be_restored_errors_the_scenario_with_the_reason(pytester):
    pytester.makepyfile(test_baseline=BASELINE_BREAKER)
    result = pytester.runpytest_subprocess("-q", timeout=240)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*baseline could not be restored in dev: *repository differs: "
            "*best_model/1/model.onnx*What the repository held before is kept in *evidence*"
        ]
    )


UNREADY_AFTER_A_FAILED_LOAD = """
import requests
from suite import model_config

seen = {}

def test_first(committed, gate_envs):
    committed("dev")
    env = gate_envs["dev"]
    # A load that fails under another name (a foreign deployer's candidate): Triton keeps
    # /v2/health/ready at 400 until it restarts, though the live model is READY.
    config = model_config.read(env.repository / "best_model" / "config.pbtxt")
    config.name = "stray_candidate"
    try:
        env.triton.load("stray_candidate", model_config.to_json(config), files={"file:1/model.onnx": b"garbage"})
    except Exception:
        pass
    assert requests.get(env.triton.http_url + "/v2/health/ready", timeout=5).status_code == 400
    seen["pid"] = env.server.pid

def test_second(committed, gate_envs):
    env = gate_envs["dev"]
    assert requests.get(env.triton.http_url + "/v2/health/ready", timeout=5).status_code == 200
    assert env.server.pid != seen["pid"], "the reset made a not-ready server ready without restarting it?"
"""


def test_a_server_left_unready_by_a_failed_load_is_restarted_by_the_baseline_reset(pytester):
    pytester.makepyfile(test_unready=UNREADY_AFTER_A_FAILED_LOAD)
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly", timeout=240)
    result.assert_outcomes(passed=2)


# -- what the PostSync hook's `-m smoke` pays for --------------------------------------------------

HEAVY_FOR_SMOKE = ("hypothesis", "onnx", "mlflow", "sklearn", "pandas")  # none is used by a smoke check


def test_collecting_the_smoke_scenarios_imports_nothing_they_do_not_use(pytester):
    # A conftest that records, once the session ends, which heavy packages got imported at all.
    pytester.makeconftest(
        f"""
        import json, sys
        def pytest_unconfigure(config):
            heavy = [name for name in {HEAVY_FOR_SMOKE!r} if name in sys.modules]
            plugin = config.pluginmanager.has_plugin("hypothesispytest")
            open("imported.json", "w").write(json.dumps({{"heavy": heavy, "hypothesis plugin": plugin}}))
        """
    )
    result = pytester.runpytest_subprocess("--pyargs", "scenarios", "-m", "smoke", "--co", "-q", "--report-dir", "out")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert json.loads((pytester.path / "imported.json").read_text()) == {"heavy": [], "hypothesis plugin": False}
    # ... while a selection with a hypothesis scenario keeps hypothesis' plugin (its reporting).
    result = pytester.runpytest_subprocess("--pyargs", "scenarios", "-m", "chaos", "--co", "-q", "--report-dir", "out")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert json.loads((pytester.path / "imported.json").read_text())["hypothesis plugin"] is True


@pytest.mark.parametrize(
    "options,max_examples", [((), 4), (("--hypothesis-profile=nightly",), 25)], ids=["gate-profile", "nightly"]
)
def test_a_scenario_using_hypothesis_gets_the_gates_profile(pytester, options, max_examples):
    pytester.makepyfile(
        f"""
        def test_profile(gate_hypothesis):
            from hypothesis import settings
            assert settings.default.max_examples == {max_examples}
            assert settings.default.deadline is None and settings.default.database is None
        """
    )
    result = pytester.runpytest_subprocess(*options, "--report-dir", "out")
    result.assert_outcomes(passed=1)
