"""The gate's reports: what a person reads and what a CI gate trusts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from reports import html
from reports.collect import PhaseReport, RunCollector, as_written, build_summary, verdict
from suite.redaction import MASK, Redactor, secrets_in
from tests import browser
from tests.platform_copies import copy_reference, edit

SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/xyzSECRET"
PASSWORD = "s3cr3t-pa55word"


# -- redaction ----------------------------------------------------------------------------------


def test_config_secrets_and_secret_shaped_text_are_masked():
    config = {
        "receivers": [
            {
                "name": "slack-dev",
                "slack_configs": [
                    {
                        "api_url": SLACK_URL,
                        "channel": "#alerts-dev",
                        "http_config": {"basic_auth": {"username": "gate", "password": PASSWORD}},
                    }
                ],
            }
        ]
    }
    redact = Redactor(secrets_in(config))
    text = (
        f"posting to {SLACK_URL} as gate/{PASSWORD}; token=abcd1234efgh; "
        "https://user:hunter22@alertmanager:9093/api; Authorization: Bearer eyJhbGciOiJIUzI1NiJ9x; "
        "https://hooks.slack.com/services/TOTHER/BOTHER/unknownOne"
    )
    cleaned = redact.text(text)
    for secret in ("T0SECRET", PASSWORD, "abcd1234efgh", "hunter22", "eyJhbGciOiJIUzI1NiJ9x", "unknownOne"):
        assert secret not in cleaned, cleaned
    assert cleaned.count(MASK) >= 6, cleaned
    assert redact.data(config)["receivers"][0]["slack_configs"][0]["api_url"] == MASK
    assert redact.data(config)["receivers"][0]["slack_configs"][0]["channel"] == "#alerts-dev"


def test_ordinary_text_is_left_alone():
    text = "deploy best_model version 3 -> dev: FAILED at load (Triton refused: InvalidProtobuf)"
    assert Redactor(["short", "A"]).text(text) == text


# -- collecting and judging ---------------------------------------------------------------------


def _phase(nodeid, when, outcome, **extra):
    return PhaseReport(nodeid=nodeid, when=when, outcome=outcome, duration=0.5, **extra)


def test_each_phase_outcome_maps_to_the_scenario_outcome_pytest_users_expect():
    collector = RunCollector()
    for nodeid, phases in {
        "passes": [("setup", "passed"), ("call", "passed"), ("teardown", "passed")],
        "fails": [("setup", "passed"), ("call", "failed"), ("teardown", "passed")],
        "setup-error": [("setup", "failed"), ("teardown", "passed")],
        "teardown-error": [("setup", "passed"), ("call", "passed"), ("teardown", "failed")],
        "skipped": [("setup", "skipped"), ("teardown", "passed")],
    }.items():
        for when, outcome in phases:
            collector.add(_phase(nodeid, when, outcome, message=f"{nodeid} {when}"))
    outcomes = {n: s.outcome for n, s in collector.scenarios.items()}
    assert outcomes == {
        "passes": "passed",
        "fails": "failed",
        "setup-error": "error",
        "teardown-error": "error",
        "skipped": "skipped",
    }
    assert collector.scenarios["setup-error"].message == "setup-error setup"
    assert collector.scenarios["passes"].duration_s == 1.5


def test_evidence_from_user_properties_lands_in_the_summary():
    fault_run = {
        "fault": "wrong-answers",
        "deployer": "builtin",
        "invariants_checked": [1, 2, 3, 4, 5, 6],
        "violation_records": [{"invariant": 3, "detail": "deleted"}],
        "violations": ["invariant 3 (failed version quarantined complete): deleted"],
        "findings": ["3"],
        "not_applicable": {"5": "the platform has no other environment"},
        "outcome": {"ok": False, "failed_stage": "smoke"},
        "deploy": {
            "deployer": "builtin",
            "env": "dev",
            "requested": "version 4",
            "ok": False,
            "failed_stage": "smoke",
            "stages": [
                {"name": "load", "outcome": "passed", "duration_s": 1.5, "detail": ""},
                {"name": "smoke", "outcome": "failed", "duration_s": 0.03, "detail": "wrong"},
            ],
            "rollback": [],
            "recovered": [],
        },
    }
    properties = [
        ("fault_run", json.dumps(fault_run)),
        ("alert", json.dumps({"alert": "TritonDown", "env": "dev", "receiver": "slack-dev", "delay_s": 3.9})),
    ]
    collector = RunCollector()
    collector.add(_phase("chaos", "setup", "passed"))
    collector.add(_phase("chaos", "call", "failed", message="AssertionError: invariant 3"))
    collector.add(_phase("chaos", "teardown", "passed", user_properties=properties))
    summary = build_summary({"run_id": "r"}, list(collector.scenarios.values()), exit_status=1)
    assert summary["verdict"] == "fail"
    row = summary["fault_matrix"][0]
    assert row["invariants"]["3"]["state"] == "violated" and row["invariants"]["1"]["state"] == "held"
    assert row["invariants"]["5"] == {"state": "not applicable", "detail": "the platform has no other environment"}
    assert summary["scenarios"][0]["findings"] == ["3"]
    assert summary["scenarios"][0]["deploys"][0]["deployer"] == "builtin"
    assert row["failed_stage"] == "smoke"
    assert summary["stage_statistics"]["load"]["median_s"] == 1.5
    assert summary["alerts"][0]["receiver"] == "slack-dev"
    assert summary["scenarios"][0]["headline"].startswith("VIOLATED invariant 3")


def _attempt(collector, nodeid, call_outcome, properties_so_far, message=""):
    collector.add(_phase(nodeid, "setup", "passed"))
    collector.add(_phase(nodeid, "call", call_outcome, message=message))
    collector.add(_phase(nodeid, "teardown", "passed", user_properties=list(properties_so_far)))


def _deploy_property(requested):
    return ("deploy", json.dumps({"env": "dev", "requested": requested, "ok": requested != "v2", "stages": []}))


def test_a_scenario_that_fails_then_passes_on_a_rerun_is_flaky_with_its_first_failure_kept():
    collector = RunCollector()
    first = [_deploy_property("v2")]
    # pytest-rerunfailures: the failed call arrives as "rerun"; user_properties accumulate over attempts
    _attempt(collector, "s", "rerun", first, message="AssertionError: deploy of v2 failed\nassert False")
    _attempt(collector, "s", "passed", first + [_deploy_property("v3")])
    scenario = collector.scenarios["s"]
    assert scenario.outcome == "flaky"
    assert [d["requested"] for d in scenario.deploys] == ["v3"]  # the last attempt's evidence only
    [kept] = scenario.attempts
    assert kept["outcome"] == "failed" and [d["requested"] for d in kept["deploys"]] == ["v2"]
    assert kept["headline"] == "deploy of v2 failed"
    summary = build_summary({"run_id": "r"}, [scenario], exit_status=1)
    assert summary["counts"]["flaky"] == 1 and summary["counts"]["passed"] == 0
    assert summary["verdict"] == "fail"
    assert summary["scenarios"][0]["headline"] == "FLAKY, first failure: deploy of v2 failed"
    assert build_summary({"run_id": "r"}, [scenario], exit_status=0, flaky_ok=True)["verdict"] == "pass"


def test_a_scenario_that_fails_on_every_attempt_is_failed_not_flaky():
    collector = RunCollector()
    _attempt(collector, "s", "rerun", [], message="AssertionError: broken")
    _attempt(collector, "s", "failed", [], message="AssertionError: still broken")
    scenario = collector.scenarios["s"]
    assert scenario.outcome == "failed" and len(scenario.attempts) == 1
    assert scenario.message == "AssertionError: still broken"


def test_an_interrupted_rerun_leaves_the_failed_attempt_as_the_verdict():
    collector = RunCollector()
    _attempt(collector, "s", "rerun", [], message="AssertionError: broken")
    assert collector.scenarios["s"].outcome == "failed"


@pytest.mark.parametrize(
    "message, written",
    [
        (
            "AssertionError: fault x with deployer d:\n  VIOLATED invariant 3\nassert not [Violation(...)]\n"
            " +  where [Violation(...)] = FaultRun(fault='x', ...).violations",
            "fault x with deployer d:\n  VIOLATED invariant 3",
        ),
        ("assert 1 == 2\n +  where 1 = f()", "assert 1 == 2\n +  where 1 = f()"),  # no message: the assert is it
        ("GateError: baseline could not be restored", "GateError: baseline could not be restored"),
    ],
)
def test_failure_messages_are_shown_as_the_scenario_wrote_them(message, written):
    assert as_written(message) == written


@pytest.mark.parametrize(
    "tally, exit_status, expected",
    [
        ({"failed": 0, "error": 0, "xpassed": 0, "total": 5}, 0, "pass"),
        ({"failed": 1, "error": 0, "xpassed": 0, "total": 5}, 1, "fail"),
        ({"failed": 0, "error": 1, "xpassed": 0, "total": 5}, 1, "fail"),
        ({"failed": 0, "error": 0, "xpassed": 0, "total": 0}, 5, "error"),  # nothing collected
        ({"failed": 0, "error": 0, "xpassed": 0, "total": 3}, 2, "error"),  # interrupted
        ({"failed": 0, "error": 0, "xpassed": 0, "total": 3}, 3, "error"),  # stack did not start
    ],
)
def test_verdict_is_pass_only_when_everything_ran_and_passed(tally, exit_status, expected):
    assert verdict(tally, exit_status) == expected


def test_html_escapes_what_scenarios_report():
    collector = RunCollector()
    collector.add(_phase("x", "call", "failed", message="<script>alert(1)</script>"))
    page = html.render(
        build_summary(
            {
                "run_id": "r",
                "started_at": "",
                "duration_s": 1.0,
                "command": [],
                "platform": "p",
                "target": "local",
                "stack": {"versions": {}, "timings": {}},
            },
            list(collector.scenarios.values()),
            1,
        )
    )
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- options and files, through pytest itself (no stack needed) --------------------------------


LEAKY_TEST = f"""
import json

def test_leaks_secrets(request):
    print("posting to {SLACK_URL} with password {PASSWORD}")
    request.node.user_properties.append(("alert", json.dumps({{"alert": "X", "env": "dev", "delay_s": 1.0,
                                                              "receiver": "{SLACK_URL}"}})))
    assert "{SLACK_URL}" == "", "token=abcd1234efgh leaked"

def test_passes():
    pass
"""


@pytest.fixture
def leaky_platform(pytester):
    platform = copy_reference(pytester.path)
    edit(platform / "monitoring/alertmanager-dev.yaml", "https://slack.invalid/services/REPLACED", SLACK_URL)
    edit(
        platform / "monitoring/alertmanager-dev.yaml",
        '        channel: "#alerts-dev"',
        f'        channel: "#alerts-dev"\n        http_config: {{basic_auth: {{username: gate, password: {PASSWORD}}}}}',
    )
    pytester.makepyfile(test_leaky=LEAKY_TEST)
    return platform / "platform.yaml"


def test_secrets_reach_neither_the_terminal_nor_any_report(pytester, leaky_platform):
    result = pytester.runpytest_subprocess(
        "--platform", str(leaky_platform), "--report-dir", "out", "-rA", "--gate-summary"
    )
    result.assert_outcomes(passed=1, failed=1)
    run_dir = pytester.path / "out" / "latest"
    files = sorted(p.name for p in run_dir.iterdir())
    assert files == ["junit.xml", "report.html", "summary.json"], files
    assert "print" in (run_dir / "junit.xml").read_text()  # the leaky test's output is in the junit file...
    for text in [result.stdout.str()] + [p.read_text() for p in run_dir.iterdir()]:
        for secret in ("T0SECRET", "xyzSECRET", PASSWORD, "abcd1234efgh"):
            assert secret not in text  # ...but not its secrets
    assert MASK in (run_dir / "summary.json").read_text()
    assert result.outlines[-1].startswith("GATE FAIL: 1 passed, 1 failed, 0 errors, 0 skipped"), result.outlines[-3:]


def test_report_format_writes_only_what_was_asked(pytester):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("--report-format", "json", "--report-dir", "out")
    result.assert_outcomes(passed=1)
    assert sorted(p.name for p in (pytester.path / "out" / "latest").iterdir()) == ["summary.json"]
    summary = json.loads((pytester.path / "out" / "latest" / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["counts"]["total"] == 1
    assert "--gate-summary" not in result.stdout.str() and not result.outlines[-1].startswith("GATE")


def test_an_unknown_report_format_is_a_usage_error(pytester):
    result = pytester.runpytest_subprocess("--report-format", "json,pdf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--report-format: expected a comma-separated list of junit, json, html; got 'json,pdf' (pdf unknown)*"]
    )


def test_latest_points_at_the_newest_run_and_older_runs_stay(pytester):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    for _ in range(2):
        pytester.runpytest_subprocess("--report-dir", "out").assert_outcomes(passed=1)
    runs = sorted(p for p in (pytester.path / "out").iterdir() if p.is_dir() and not p.name.startswith(("latest", ".")))
    assert len(runs) == 2
    latest = pytester.path / "out" / "latest"
    assert latest.is_symlink() and not os.path.isabs(os.readlink(latest))
    assert latest.resolve() == max(runs, key=lambda p: p.stat().st_mtime).resolve()


# -- a real failing gate run: evidence, and the HTML page in a real browser ------------------------

# The builtin deploy path as the platform's command, followed by the defect: it deletes the
# quarantined folder. The gate must fail on invariant 3 and the report must show why.
DELETING_DEPLOYER = (
    'python -m suite deploy --env "$GATE_ENV"; rc=$?; '
    'rm -rf "$GATE_MODEL_REPOSITORY/$GATE_MODEL/$GATE_VERSION".failed_*; exit $rc'
)


@pytest.fixture(scope="module")
def failed_gate_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("failing-gate")
    platform = copy_reference(work) / "platform.yaml"
    platform.write_text(platform.read_text() + f"deployer: {{command: '{DELETING_DEPLOYER}'}}\n")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "scenarios",
            "--platform",
            str(platform),
            "-m",
            "chaos",
            "-k",
            "(wrong-answers or registry-alias-missing) and fault_ends",
            "-q",
            "-p",
            "no:cacheprovider",
            "--report-dir",
            str(work / "out"),
            "--gate-summary",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return completed, work / "out" / "latest"


def test_a_failed_gate_run_fails_and_says_why(failed_gate_run):
    completed, run_dir = failed_gate_run
    assert completed.returncode == 1, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert "VIOLATED invariant 3 (failed version quarantined complete)" in completed.stdout
    assert "never deleted" in completed.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "fail" and summary["counts"]["failed"] == 1 and summary["counts"]["passed"] == 1
    assert set(summary["stack"]["versions"]) >= {"Triton", "MLflow", "ONNX Runtime"}
    assert summary["stack"]["versions"]["Triton"] == "2.51.0"
    failed = next(s for s in summary["scenarios"] if s["outcome"] == "failed")
    assert failed["fault"] == "wrong-answers" and failed["invariants"]["violated"] == [3]
    matrix = {row["fault"]: row["invariants"] for row in summary["fault_matrix"]}
    assert matrix["wrong-answers"]["3"]["state"] == "violated"
    # nothing could be materialized: invariant 3 checks the model's versions and quarantine are untouched
    assert matrix["registry-alias-missing"]["3"]["state"] == "held"
    # Evidence was gathered automatically, for the failed scenario only.
    dev = failed["diagnostics"]["environments"]["dev"]
    assert '"active_version"' in dev["current_json"]
    assert any(line.startswith("best_model/") for line in dev["repository_listing"])
    assert "tritonserver" in dev["triton_log_tail"] or "I1" in dev["triton_log_tail"]
    assert all(not s["diagnostics"] for s in summary["scenarios"] if s["outcome"] == "passed")
    assert completed.stdout.strip().splitlines()[-1].startswith("GATE FAIL: ")


def test_the_failed_report_reads_in_a_real_browser(failed_gate_run):
    """Debian's Chromium, headless: it renders, verdict and matrix are visible, no script errors."""
    _, run_dir = failed_gate_run
    screenshot = run_dir / "report.png"
    seen = browser.view(
        run_dir / "report.html",
        ["#verdict", "#fault-matrix", "#failure-list", "#evidence", "#stage-chart"]
        + ["#failure-1 pre.expected-and-seen", "#failure-1 ol.stages", "#fault-matrix td[title^=python]"],
        screenshot=screenshot,
    )
    assert not seen.errors, seen.errors
    assert seen.visible == {s: True for s in seen.visible}, seen.visible
    # The failure as the scenario wrote it, line by line: no pytest repr of the FaultRun after it.
    message = seen.text["#failure-1 pre.expected-and-seen"]
    assert message.startswith("fault wrong-answers (") and re.search(r"\n +VIOLATED invariant 3 \(", message)
    assert "FaultRun(" not in message and "AssertionError" not in message
    assert "command: failed" in seen.text["#failure-1 ol.stages"]  # the deploy log as a list of stages
    # The deployer named by the manifest's command, whole
    assert seen.text["#fault-matrix td[title^=python]"].startswith('python -m suite deploy --env "$GATE_ENV"; rc=$?')
    assert seen.text["#verdict"].startswith("GATE FAIL")
    assert "wrong-answers" in seen.text["#fault-matrix"] and "✗" in seen.text["#fault-matrix"]
    assert "VIOLATED invariant 3" in seen.text["#failure-list"]
    assert screenshot.stat().st_size > 10_000
    # The one script works: hiding passing rows leaves the failed one.
    filtered = browser.view(
        run_dir / "report.html",
        ["#scenario-table tr.row-failed", "#scenario-table tr.row-passed"],
        click="#only-failures",
    )
    assert not filtered.errors, filtered.errors
    assert filtered.visible["#scenario-table tr.row-failed"] and not filtered.visible["#scenario-table tr.row-passed"]


def test_reports_are_whole_under_xdist(pytester):
    """Workers only attach evidence; the controller writes one report for the whole run."""
    pytester.makepyfile(
        test_many="""
import json
import pytest

@pytest.mark.parametrize("n", range(4))
def test_n(n, request):
    request.node.user_properties.append(("alert", json.dumps({"alert": f"A{n}", "env": "dev", "delay_s": n})))
    assert n != 3, "three fails"
"""
    )
    result = pytester.runpytest_subprocess("-n", "2", "--report-dir", "out")
    result.assert_outcomes(passed=3, failed=1)
    summary = json.loads((pytester.path / "out" / "latest" / "summary.json").read_text())
    assert summary["counts"] == {
        "passed": 3,
        "failed": 1,
        "error": 0,
        "skipped": 0,
        "xfailed": 0,
        "xpassed": 0,
        "flaky": 0,
        "total": 4,
    }
    assert sorted(a["alert"] for a in summary["alerts"]) == ["A0", "A1", "A2", "A3"]
    assert [s["headline"] for s in summary["scenarios"] if s["outcome"] == "failed"] == ["three fails"]


def test_collect_only_writes_no_report(pytester):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    pytester.runpytest_subprocess("--collect-only", "--report-dir", "out")
    assert not (pytester.path / "out").exists()


def test_reports_work_without_xdist(pytester):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--report-dir", "out")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "out" / "latest" / "summary.json").is_file()
