"""The nightly gate: real runs into one history file, flaky versus broken, regressions, the charts.

Six real gate runs of one deploy scenario, one after the other, with a deployer that has transient
trouble on request (tests/deployers/transient.py: the builtin path, but chosen version deploys
fail at once, or every deploy is slowed down):

  1, 2  nothing wrong                                -> passed
  3     the first version deploy fails, --gate-reruns 1  -> flaky, and the gate fails
  4     the same, with --flaky-ok                    -> flaky, accepted
  5     every deploy 6 s slower                      -> passed, the stage regression flagged
  6     every version deploy fails, --gate-reruns 1  -> failed (broken, not flaky)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from tests import browser
from tests.platform_copies import copy_reference

ROOT = Path(__file__).resolve().parent.parent
TRANSIENT = ROOT / "tests" / "deployers" / "transient.py"
SCENARIO = "scenarios/test_deploy_path.py::test_deploy_by_version_then_by_alias[dev]"
SLOWER_S = 6.0  # well above 1.5 x a deploy here (about 5.7 s for the builtin path as a command)


@dataclass
class NightlyRun:
    returncode: int
    output: str
    run_dir: Path

    @property
    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())

    def outcome(self) -> str:
        [scenario] = self.summary["scenarios"]
        return scenario["outcome"]


RUNS = [  # (environment of the deployer, gate options)
    ({}, ["--gate-reruns", "1"]),
    ({}, ["--gate-reruns", "1"]),
    ({"TRANSIENT_FAIL": "1"}, ["--gate-reruns", "1"]),
    ({"TRANSIENT_FAIL": "1"}, ["--gate-reruns", "1", "--flaky-ok"]),
    ({"TRANSIENT_SLOW_S": str(SLOWER_S)}, ["--gate-reruns", "1"]),
    ({"TRANSIENT_FAIL": "all"}, ["--gate-reruns", "1"]),
]


@pytest.fixture(scope="module")
def nightly(tmp_path_factory) -> Dict[str, object]:
    work = tmp_path_factory.mktemp("nightly")
    manifest = copy_reference(work) / "platform.yaml"
    spec = yaml.safe_load(manifest.read_text())
    spec["deployer"] = {"command": f"python {TRANSIENT}", "pass_env": ["TRANSIENT_*"]}
    manifest.write_text(yaml.safe_dump(spec, sort_keys=False))
    history = work / "state" / "history.jsonl"  # as on a persistent volume, apart from the reports
    runs: List[NightlyRun] = []
    for number, (knobs, options) in enumerate(RUNS, start=1):
        env = dict(os.environ, TRANSIENT_COUNTER=str(work / f"counter-{number}"), **knobs)
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", SCENARIO, "--platform", str(manifest), "--history", str(history)]
            + ["--report-dir", str(work / "reports"), "--gate-summary", "-q", "-p", "no:cacheprovider", *options],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = completed.stdout + completed.stderr
        run_dir = (
            Path(output.split("; report: ")[-1].strip().splitlines()[0]).parent if "; report: " in output else work
        )
        runs.append(NightlyRun(completed.returncode, output, run_dir))
    return {"runs": runs, "history": history, "work": work}


def _explain(run: NightlyRun) -> str:
    return f"exit {run.returncode}\n{run.output[-4000:]}"


def test_each_run_gets_the_verdict_its_trouble_deserves(nightly):
    runs: List[NightlyRun] = nightly["runs"]
    seen = [(run.outcome(), run.returncode, run.summary["verdict"]) for run in runs]
    assert seen == [
        ("passed", 0, "pass"),
        ("passed", 0, "pass"),
        ("flaky", 1, "fail"),  # flaky fails the gate ...
        ("flaky", 0, "pass"),  # ... unless --flaky-ok
        ("passed", 0, "pass"),
        ("failed", 1, "fail"),  # failed on the re-run too: broken, not flaky
    ], "\n\n".join(_explain(run) for run in runs)


def test_a_flaky_scenario_keeps_its_first_failure_as_evidence(nightly):
    run: NightlyRun = nightly["runs"][2]
    [scenario] = run.summary["scenarios"]
    [first] = scenario["attempts"]
    assert first["outcome"] == "failed"
    assert [d["requested"] for d in first["deploys"]] == ["version 2"] and not first["deploys"][0]["ok"]
    assert "transient: version deploy #1 fails" in first["deploys"][0]["error"]
    assert first["diagnostics"]["environments"]["dev"]["current_json"]  # gathered at the failure
    # the passing attempt's own evidence: both deploys of the scenario, committed
    assert [(d["requested"], d["ok"]) for d in scenario["deploys"]] == [("version 2", True), ("alias A", True)]
    assert "FLAKY " + SCENARIO in run.output and "first failure: " in run.output
    assert run.output.strip().splitlines()[-1].startswith("GATE FAIL: 0 passed, 0 failed, 0 errors, 0 skipped, 1 flaky")
    junit = (run.run_dir / "junit.xml").read_text()
    assert 'name="gate_outcome" value="flaky: passed on attempt 2, after failing"' in junit


def test_a_broken_scenario_fails_with_every_attempt_recorded(nightly):
    run: NightlyRun = nightly["runs"][5]
    [scenario] = run.summary["scenarios"]
    assert scenario["outcome"] == "failed" and len(scenario["attempts"]) == 1
    assert "FLAKY" not in run.output


def test_the_history_has_every_run_and_flags_what_changed(nightly):
    runs, history = nightly["runs"], nightly["history"]
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert [line["run_id"] for line in lines] == [run.summary["run_id"] for run in runs]
    first = lines[0]
    assert first["versions"]["Triton"] == "2.51.0" and first["versions"]["MLflow"]
    assert len(first["manifest_sha256"]) == 64 and first["stage_medians"]["command"] > 1
    assert first["scenarios"] == {SCENARIO: "passed"}
    flagged = {index + 1: run.summary["regressions"] for index, run in enumerate(runs)}
    assert flagged[1] == [] and flagged[2] == []
    assert [(r["kind"], r["subject"]) for r in flagged[3]] == [("verdict", SCENARIO)]
    assert "passed in the run before, flaky now" in flagged[3][0]["detail"]
    slow = [(r["kind"], r["subject"]) for r in flagged[5]]
    assert ("stage", "command") in slow and ("verdict", SCENARIO) in slow, flagged[5]
    assert "REGRESSION stage command: " in runs[4].output
    # a flip back to passed is a change to know about, not a step back
    assert f"CHANGED verdict {SCENARIO}: flaky in the run before, passed now" in runs[4].output
    assert [(r["kind"], r["subject"]) for r in flagged[6]] == [("verdict", SCENARIO)], flagged[6]
    assert runs[5].summary["history"]["flake_rates"] == {SCENARIO: {"flaky": 2, "runs": 6, "rate": 0.333}}


def test_python_m_suite_history_prints_the_same(nightly):
    history = nightly["history"]
    shown = subprocess.run(
        [sys.executable, "-m", "suite", "history", "--history", str(history)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()
    assert rows[0].split() == [
        "run",
        "started",
        "verdict",
        "passed",
        "failed",
        "flaky",
        "skipped",
        "duration",
        "s",
        "regressions",
    ]
    assert len([r for r in rows if r.startswith("2")]) == 6
    assert "REGRESSION stage command: " in rows[5] and "1.5 x the rolling median" in rows[5]
    assert f"{SCENARIO}: 2/6 (33%)" in shown.stdout
    markdown = subprocess.run(
        [sys.executable, "-m", "suite", "history", "--history", str(history), "--format", "markdown", "--last", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert markdown.stdout.startswith("| run | started | verdict |") and markdown.stdout.count("\n| 2") == 2


def test_the_history_charts_and_flags_render_in_a_real_browser(nightly):
    """The slow run's page: its regression listed, five runs plotted; the last page: six runs."""
    slow: NightlyRun = nightly["runs"][4]
    seen = browser.view(
        slow.run_dir / "report.html",
        ["#regressions", "#trend-duration svg", "#trend-stages svg", "#trend-counts svg", "#history-table"],
        screenshot=slow.run_dir / "report.png",
    )
    assert not seen.errors, seen.errors
    assert seen.visible == {s: True for s in seen.visible}, seen.visible
    assert "stage command" in seen.text["#regressions"] and "rolling median" in seen.text["#regressions"]
    page = (slow.run_dir / "report.html").read_text()
    assert page.count('class="verdict verdict-') == 5  # one point per run, this one included
    last: NightlyRun = nightly["runs"][5]
    seen = browser.view(last.run_dir / "report.html", ["#flake-rates", "#history-table", "#trend-duration svg"])
    assert not seen.errors and all(seen.visible.values()), (seen.errors, seen.visible)
    assert "33%" in seen.text["#flake-rates"]
    assert (last.run_dir / "report.html").read_text().count('class="verdict verdict-') == 6


def test_the_flaky_page_shows_the_first_failure_as_written(nightly):
    run: NightlyRun = nightly["runs"][2]
    seen = browser.view(
        run.run_dir / "report.html",
        ["#verdict", "#flaky-list", "#flaky-1 pre.expected-and-seen", "#flaky-1 ol.stages"],
    )
    assert not seen.errors and all(seen.visible.values()), (seen.errors, seen.visible)
    assert "1 flaky" in seen.text["#verdict"]
    message = seen.text["#flaky-1 pre.expected-and-seen"]
    assert message.startswith("deploying by version") and "\n" in message
    assert "AssertionError" not in message and "assert " not in message
    assert "command: failed" in seen.text["#flaky-1 ol.stages"]
