"""The nightly pipelines of deploy/ci: their vendor's schema (offline), real gate options, reports
uploaded, history carried to the next run; and every check broken on purpose."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from tools import gate_args, gitops, pipelines
from tools.pipelines import GITHUB_WORKFLOW, GITLAB_CI, Obj

FILES = {"github": GITHUB_WORKFLOW, "gitlab": GITLAB_CI}


@pytest.fixture(scope="module")
def known() -> frozenset:
    return gate_args.gate_options()


@pytest.fixture(scope="module")
def history_known():
    return gate_args.suite_command_options("history")


@pytest.fixture(scope="module")
def github() -> Obj:
    return pipelines.load(GITHUB_WORKFLOW)


@pytest.fixture(scope="module")
def gitlab() -> Obj:
    return pipelines.load(GITLAB_CI)


def check(kind: str, doc: Obj, known, history_known) -> List[str]:
    checker = pipelines.check_github_workflow if kind == "github" else pipelines.check_gitlab_ci
    return checker(doc, known, history_known)


def the_gate(kind: str, doc: Obj) -> pipelines.GateCommand:
    if kind == "github":
        scripts = [s.get("run") or "" for job in doc["jobs"].values() for s in job["steps"]]
    else:
        scripts = [pipelines._script(job, "script") for job in doc.values() if isinstance(job, dict)]
    (command,) = [c for script in scripts for c in pipelines.gate_commands(str(script))]
    return command


# -- as shipped ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FILES))
def test_pipeline_matches_its_vendor_schema_offline(kind):
    # The vendored schema, with every proxy pointing at a closed port: a download would fail.
    schema, transform = pipelines.SCHEMAS[FILES[kind]]
    assert pipelines.schema_problems(FILES[kind], schema, transform) == []


@pytest.mark.parametrize("kind", sorted(FILES))
def test_pipeline_does_what_the_nightly_needs(kind, github, gitlab, known, history_known):
    assert check(kind, {"github": github, "gitlab": gitlab}[kind], known, history_known) == []


def cronjob_args() -> Dict[str, List[str]]:
    out = {}
    for env in ("dev", "prod"):
        (cron,) = gitops.of_kind(gitops.render(gitops.GITOPS_DIR / "overlays" / env), "CronJob")
        out[f"cronjob-{env}"] = gitops._containers(cron)[0]["args"]
    return out


def test_every_option_passed_is_a_real_gate_option(github, gitlab):
    passed = {"github": the_gate("github", github).args, "gitlab": the_gate("gitlab", gitlab).args, **cronjob_args()}
    real = gate_args.gate_options()
    unknown = {where: gate_args.unknown_options(args, real) for where, args in passed.items()}
    assert unknown == {where: [] for where in passed}
    for where, args in passed.items():
        assert {"--history", "--gate-reruns", "--gate-summary"} <= set(args), f"{where}: {args}"


def test_history_is_read_with_real_options(github, gitlab, history_known):
    assert history_known, "`python -m suite history --help` lists no options"
    calls = pipelines.history_commands(_gh_step(github, "Summary")["run"])
    calls += pipelines.history_commands(pipelines._script(gitlab["triton-gate-nightly"], "after_script"))
    assert len(calls) == 2
    for args in calls:
        assert gate_args.unknown_options(args, history_known) == []
        assert gate_args.option_value(args, "--format") == "markdown"


def test_gitlab_junit_report_is_the_junitxml_the_gate_writes(gitlab):
    job = gitlab["triton-gate-nightly"]
    junit = gate_args.option_value(the_gate("gitlab", gitlab).args, "--junitxml")
    assert junit == job["artifacts"]["reports"]["junit"] == "reports/junit/gate.xml"
    assert job["artifacts"]["when"] == "always"


def test_reports_and_history_are_kept_even_when_the_gate_fails(github, gitlab):
    steps = github["jobs"]["gate"]["steps"]
    upload = next(s for s in steps if s.get("uses") == "actions/upload-artifact@v4")
    assert upload["if"] == "always()"
    assert {Path(p).name for p in upload["with"]["path"].split()} >= {"junit.xml", "report.html", "summary.json"}
    save = next(s for s in steps if s.get("uses") == "actions/cache/save@v4")
    restore = next(s for s in steps if s.get("uses") == "actions/cache/restore@v4")
    assert save["if"] == "always()" and save["with"]["path"] == restore["with"]["path"] == ".gate-history"
    history = [c for c in gitlab["triton-gate-nightly"]["cache"] if c["key"] == "triton-gate-history"]
    assert history == [{"key": "triton-gate-history", "paths": [".gate-history/"], "when": "always"}]
    assert "reports/out/" in gitlab["triton-gate-nightly"]["artifacts"]["paths"]


def test_cron_check_reads_cron_as_schedulers_do():
    for good in ("17 2 * * *", "*/15 0-6 * * MON-FRI", "0 3 1,15 JAN,JUL ?", "@daily"):
        assert gate_args.cron_problems(good) == [], good
    assert gate_args.cron_problems("0 0 1 13 *") == ["schedule '0 0 1 13 *': month field '13' is not within 1-12"]
    assert "has 6 fields" in gate_args.cron_problems("0 17 2 * * *")[0]
    assert gate_args.cron_problems("5-1 * * * *") and gate_args.cron_problems("*/0 * * * *")


# -- broken on purpose: each check must be able to fail ---------------------------------------------


def _drop_block(text: str, start: str, end: str) -> str:
    """The text without the lines from `start` up to (not including) `end`."""
    assert start in text and end in text, (start, end)
    return text[: text.index(start)] + text[text.index(end) :]


SCHEMA_BREAKAGES: Dict[str, tuple] = {
    "github-wrong-key": (
        "github",
        lambda t: t.replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest"),
        "$.jobs.gate: 'runs-on' is a required property",
    ),
    "github-missing-on": ("github", lambda t: _drop_block(t, "\non:", "\npermissions:"), "'on' is a required property"),
    "github-timeout-as-text": (
        "github",
        lambda t: t.replace("timeout-minutes: 60", "timeout-minutes: an hour"),
        "'an hour' is not of type 'number'",
    ),
    "github-unknown-trigger": (
        "github",
        lambda t: t.replace("  workflow_dispatch:", "  workflow-dispatch:"),
        "'workflow-dispatch'",
    ),
    "gitlab-wrong-key": (
        "gitlab",
        lambda t: t.replace("  artifacts:\n", "  artifact:\n"),
        "Additional properties are not allowed ('artifact' was unexpected)",
    ),
    "gitlab-timeout-as-number": (
        "gitlab",
        lambda t: t.replace("timeout: 1h", "timeout: 60"),
        "60 is not of type 'string'",
    ),
    "gitlab-cache-when-unknown": (
        "gitlab",
        lambda t: t.replace("when: always\n    - key:", "when: nightly\n    - key:"),
        "'nightly' is not one of",
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_BREAKAGES))
def test_each_schema_violation_is_caught(name, tmp_path):
    kind, breakage, expected = SCHEMA_BREAKAGES[name]
    broken = tmp_path / FILES[kind].name
    broken.write_text(breakage(FILES[kind].read_text()))
    schema, transform = pipelines.SCHEMAS[FILES[kind]]
    problems = pipelines.schema_problems(broken, schema, transform)
    assert any(expected in p for p in problems), f"{name}: expected {expected!r} in {problems}"


def _gh_step(doc: Obj, uses_or_name: str) -> Obj:
    return next(s for s in doc["jobs"]["gate"]["steps"] if uses_or_name in (s.get("uses"), s.get("name")))


def _gh_run(doc: Obj, name: str, old: str, new: str) -> None:
    step = _gh_step(doc, name)
    assert old in step["run"], (old, step["run"])
    step["run"] = step["run"].replace(old, new)


def _gh_remove(doc: Obj, uses_or_name: str) -> None:
    doc["jobs"]["gate"]["steps"].remove(_gh_step(doc, uses_or_name))


def _gh_upload_path(doc: Obj, old: str, new: str) -> None:
    upload = _gh_step(doc, "actions/upload-artifact@v4")["with"]
    upload["path"] = upload["path"].replace(old, new)


GITHUB_BREAKAGES: Dict[str, tuple] = {
    "no-on": (lambda d: d.pop(True), "no `on:` with schedule and workflow_dispatch"),
    "invalid-cron": (lambda d: d[True]["schedule"][0].update(cron="17 25 * * *"), "hour field '25' is not within 0-23"),
    "no-schedule": (lambda d: d[True].pop("schedule"), "on.schedule has no cron"),
    "other-default-platform": (
        lambda d: d[True]["workflow_dispatch"]["inputs"]["platform"].update(default="platform.yaml"),
        "input 'platform' defaults to 'platform.yaml', not 'deploy/platform.yaml'",
    ),
    "write-permissions": (lambda d: d.update(permissions="write-all"), "permissions 'write-all'"),
    "no-timeout": (lambda d: d["jobs"]["gate"].pop("timeout-minutes"), "no timeout-minutes"),
    "floating-action": (
        lambda d: _gh_step(d, "actions/checkout@v4").update(uses="actions/checkout@main"),
        "uses actions/checkout@main, expected actions/checkout@v4",
    ),
    "older-upload-action": (
        lambda d: _gh_step(d, "actions/upload-artifact@v4").update(uses="actions/upload-artifact@v3"),
        "expected actions/upload-artifact@v4",
    ),
    "no-system-packages": (lambda d: _gh_remove(d, "Debian packages of the gate"), "no `sudo make system-packages`"),
    "unknown-option": (
        lambda d: _gh_run(d, "Gate", "--gate-reruns 1", "--gate-rerun 1"),
        "--gate-rerun is not an option of the gate",
    ),
    "no-gate-summary": (lambda d: _gh_run(d, "Gate", "--gate-summary ", ""), "no --gate-summary"),
    "no-history": (lambda d: _gh_run(d, "Gate", "--history $GATE_HISTORY ", ""), "no --history PATH"),
    "output-not-logged": (lambda d: _gh_run(d, "Gate", " | tee gate.log", ""), "not tee'd to a log"),
    "summary-only-on-success": (lambda d: _gh_step(d, "Summary").pop("if"), "the summary step has no `if: always()`"),
    "history-read-elsewhere": (
        lambda d: _gh_run(d, "Summary", '--history "$GATE_HISTORY"', "--history reports/out/history.jsonl"),
        "reads 'reports/out/history.jsonl', but the gate appends to '.gate-history/history.jsonl'",
    ),
    "history-shown-as-table": (
        lambda d: _gh_run(d, "Summary", "--format markdown", "--format table"),
        "without --format markdown",
    ),
    "upload-only-on-success": (
        lambda d: _gh_step(d, "Upload the reports").pop("if"),
        "upload-artifact has no `if: always()`",
    ),
    "no-report-html": (
        lambda d: _gh_upload_path(d, "${{ steps.reports.outputs.dir }}/report.html\n", ""),
        "the artifact does not include report.html",
    ),
    "upload-through-the-symlink": (
        lambda d: _gh_upload_path(d, "${{ steps.reports.outputs.dir }}/junit.xml", "reports/out/latest/junit.xml"),
        "uploads junit.xml from 'reports/out/latest/junit.xml', not from reports/out/latest resolved",
    ),
    "history-never-saved": (lambda d: _gh_remove(d, "actions/cache/save@v4"), "is never saved for the next run"),
    "history-saved-only-on-success": (
        lambda d: _gh_step(d, "actions/cache/save@v4").pop("if"),
        "cache/save has no `if: always()`",
    ),
    "history-key-fixed": (
        lambda d: [_gh_step(d, u)["with"].update(key="triton-gate-history") for u in ("actions/cache/save@v4",)],
        "lacks github.run_id",
    ),
    "history-restored-from-elsewhere": (
        lambda d: _gh_step(d, "actions/cache/restore@v4")["with"].update({"restore-keys": "gate-history-"}),
        "does not find what cache/save stores",
    ),
    "history-restored-too-late": (
        lambda d: d["jobs"]["gate"]["steps"].append(d["jobs"]["gate"]["steps"].pop(3)),
        "the history is restored after the gate ran",
    ),
    "other-folder-cached": (
        lambda d: _gh_step(d, "actions/cache/save@v4")["with"].update(path="reports/out"),
        "caches ['reports/out'], not the history file .gate-history/history.jsonl",
    ),
}


def _gl_job(doc: Obj) -> Obj:
    return doc["triton-gate-nightly"]


def _gl_script(doc: Obj, old: str, new: str) -> None:
    job = _gl_job(doc)
    assert old in job["script"][-1], (old, job["script"][-1])
    job["script"][-1] = job["script"][-1].replace(old, new)


GITLAB_BREAKAGES: Dict[str, tuple] = {
    "junit-path-mismatch": (
        lambda d: _gl_job(d)["artifacts"]["reports"].update(junit="reports/out/latest/junit.xml"),
        "artifacts:reports:junit ['reports/out/latest/junit.xml'] is not the --junitxml path 'reports/junit/gate.xml'",
    ),
    "no-junitxml": (lambda d: _gl_script(d, " --junitxml reports/junit/gate.xml", ""), "no --junitxml PATH"),
    "artifacts-only-on-success": (lambda d: _gl_job(d)["artifacts"].pop("when"), "artifacts when=None"),
    "reports-not-kept": (
        lambda d: _gl_job(d)["artifacts"].update(paths=["gate.log"]),
        "do not include reports/out/<run id>/report.html",
    ),
    "history-cached-only-on-success": (
        lambda d: _gl_job(d)["cache"][0].pop("when"),
        "the history cache is saved only on success",
    ),
    "history-not-cached": (lambda d: _gl_job(d)["cache"].pop(0), "no cache holds the history file"),
    "history-read-elsewhere": (
        lambda d: _gl_job(d)["after_script"].__setitem__(
            1, ".venv/bin/python -m suite history --history history.jsonl --format markdown > gate-history.md"
        ),
        "reads 'history.jsonl', but the gate appends to '.gate-history/history.jsonl'",
    ),
    "no-gate-line": (lambda d: _gl_job(d)["after_script"].pop(0), "does not print the GATE PASS/FAIL line"),
    "unknown-option": (
        lambda d: _gl_script(d, "--gate-summary", "--summary"),
        "--summary is not an option of the gate",
    ),
    "no-schedule-rule": (lambda d: _gl_job(d)["rules"].pop(0), "no rule runs it on schedule pipelines"),
    "slim-image": (
        lambda d: _gl_job(d).update(image="python:3.11-slim"),
        "image 'python:3.11-slim', expected 'python:3.11-bookworm'",
    ),
    "no-timeout": (lambda d: _gl_job(d).pop("timeout"), "no timeout"),
}


@pytest.mark.parametrize(
    "kind,name", [("github", n) for n in sorted(GITHUB_BREAKAGES)] + [("gitlab", n) for n in sorted(GITLAB_BREAKAGES)]
)
def test_each_broken_pipeline_is_caught(kind, name, github, gitlab, known, history_known):
    doc = copy.deepcopy({"github": github, "gitlab": gitlab}[kind])
    breakage, expected = {"github": GITHUB_BREAKAGES, "gitlab": GITLAB_BREAKAGES}[kind][name]
    breakage(doc)
    problems = check(kind, doc, known, history_known)
    assert any(expected in p for p in problems), f"{kind}/{name}: expected {expected!r} in {problems}"


def test_a_broken_copy_on_disk_is_caught_end_to_end(tmp_path, known, history_known):
    # As a user's edited copy would be read: from the file, not from a dict we built.
    text = GITHUB_WORKFLOW.read_text().replace("--gate-reruns 1", "--gate-reruns 1 --allow-destructiv")
    path = tmp_path / "nightly.yml"
    path.write_text(text)
    problems = pipelines.check_github_workflow(yaml.safe_load(path.read_text()), known, history_known)
    assert any("--allow-destructiv is not an option of the gate" in p for p in problems), problems
