"""The nightly CI pipelines of deploy/ci: their vendor's schema (check-jsonschema, offline) and what
a schema cannot see: real gate options, the reports uploaded, the history carried to the next run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Dict, Iterator, List, Optional

import yaml

from tools.gate_args import REPO_ROOT, cron_problems, option_value, unknown_options

CI_DIR = REPO_ROOT / "deploy" / "ci"
GITHUB_WORKFLOW = CI_DIR / "github" / "triton-gate-nightly.yml"
GITLAB_CI = CI_DIR / "gitlab" / "triton-gate-nightly.gitlab-ci.yml"
# The schemas vendored inside check-jsonschema (no download), and the transform GitLab's file
# needs (its `!reference` tags are not plain YAML).
SCHEMAS = {GITHUB_WORKFLOW: ("vendor.github-workflows", None), GITLAB_CI: ("vendor.gitlab-ci", "gitlab-ci")}
DEFAULT_REPORT_DIR = "reports/out"
REPORT_FILES = ("junit.xml", "report.html")  # what a person (html) and the CI system (junit) read
# Major versions only: fixes arrive, breaking changes do not.
PINNED_ACTIONS = {
    "actions/checkout": "v4",
    "actions/setup-python": "v5",
    "actions/upload-artifact": "v4",
    "actions/cache/restore": "v4",
    "actions/cache/save": "v4",
}
GITHUB_INPUTS = {"platform": "deploy/platform.yaml", "markers": "", "target": "local"}
GITLAB_IMAGE = "python:3.11-bookworm"  # runs as root: `make gate` installs its Debian packages
# Any download attempt goes to a closed port and fails: the schema check must stay offline.
OFFLINE_ENV = {
    name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")
}

Obj = Dict[str, Any]


def load(path: Path) -> Obj:
    return yaml.safe_load(path.read_text()) or {}


# -- the vendor's schema ------------------------------------------------------------------------


def schema_problems(path: Path, schema: str, transform: Optional[str] = None) -> List[str]:
    """check-jsonschema with its vendored `schema`, offline; one line per error, [] when valid."""
    argv = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, "--output-format", "json"]
    argv += ["--data-transform", transform] if transform else []
    env = {**os.environ, **OFFLINE_ENV, "NO_PROXY": "", "no_proxy": ""}
    proc = subprocess.run(argv + [str(path)], capture_output=True, text=True, timeout=120, env=env, check=False)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        return [f"{path.name}: check-jsonschema failed (exit {proc.returncode}): {(proc.stdout + proc.stderr).strip()}"]
    errors = [f"{path.name}: {_schema_error(e)}" for e in result.get("errors") or []]
    errors += [f"{path.name}: cannot be parsed: {e.get('message')}" for e in result.get("parse_errors") or []]
    if proc.returncode != 0 and not errors:
        errors.append(f"{path.name}: check-jsonschema exit {proc.returncode}: {proc.stderr.strip()}")
    return errors


def _schema_error(error: Obj) -> str:
    # An error under a oneOf quotes the whole job; the deepest sub-error names the actual key.
    best = error.get("best_deep_match") if error.get("has_sub_errors") else None
    return f"{best['path']}: {best['message']}" if best else f"{error.get('path')}: {error.get('message')}"


# -- the commands inside the scripts ------------------------------------------------------------


@dataclass
class GateCommand:
    """One `make gate ... PYTEST_ARGS="..."` of a script, split as the recipe's shell splits it."""

    target: Optional[str]
    args: List[str]
    log: Optional[str]  # the file its output is tee'd to


def _logical_lines(script: str) -> Iterator[str]:
    pending = ""
    for line in script.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def _words(line: str) -> List[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return []


def gate_commands(script: str) -> List[GateCommand]:
    out = []
    for line in _logical_lines(script):
        words = _words(line)
        starts = [i for i in range(len(words) - 1) if words[i : i + 2] == ["make", "gate"]]
        for start in starts:
            assigned = {}
            for word in words[start + 2 :]:
                name, eq, value = word.partition("=")
                if not eq or not re.fullmatch(r"[A-Z_]+", name):
                    break
                assigned[name] = value
            rest = words[words.index("|", start) + 1 :] if "|" in words[start:] else []
            log = next((w for w in rest[1:] if not w.startswith("-")), None) if rest[:1] == ["tee"] else None
            out.append(GateCommand(assigned.get("TARGET"), shlex.split(assigned.get("PYTEST_ARGS", "")), log))
    return out


def history_commands(script: str) -> List[List[str]]:
    """The arguments of every `python -m suite history ...` in a script, up to the next shell operator."""
    out = []
    for line in _logical_lines(script):
        words = _words(line)
        for i in range(len(words) - 2):
            if words[i : i + 3] == ["-m", "suite", "history"]:
                args = []
                for word in words[i + 3 :]:
                    if word in ("|", "||", "&&", ";", ">", ">>") or word.startswith(">"):
                        break
                    args.append(word)
                out.append(args)
    return out


def expand(value: str, variables: Dict[str, Any]) -> str:
    """`$NAME` / `${NAME}` replaced from the pipeline's own variables (others are left as they are)."""

    def one(match: re.Match) -> str:
        found = variables.get(match.group(1) or match.group(2))
        if isinstance(found, dict):  # GitLab's {value:, description:}
            found = found.get("value")
        return match.group(0) if found is None else str(found)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, value)


def covers(entry: str, path: str) -> bool:
    """Whether a cache or artifact path entry includes `path` (the entry itself or a folder above)."""
    entry, path = entry.strip().rstrip("/").removeprefix("./"), path.strip().removeprefix("./")
    return bool(entry) and (path == entry or path.startswith(entry + "/"))


# -- what both pipelines must pass the gate ----------------------------------------------------


def check_gate_command(cmd: GateCommand, known: Collection[str], where: str) -> List[str]:
    problems = [
        f"{where}: {name} is not an option of the gate (`pytest scenarios --help`)"
        for name in unknown_options(cmd.args, known)
    ]
    if "--gate-summary" not in cmd.args:
        problems.append(f"{where}: no --gate-summary, so no GATE PASS/FAIL line for the summary")
    if option_value(cmd.args, "--history") is None:
        problems.append(f"{where}: no --history PATH: nothing is carried from one night to the next")
    formats = option_value(cmd.args, "--report-format")
    if formats is not None and not {"junit", "html"} <= set(formats.split(",")):
        problems.append(f"{where}: --report-format {formats} leaves out junit or html")
    if cmd.log is None:
        problems.append(f"{where}: the gate's output is not tee'd to a log (the summary reads its GATE line)")
    return problems


def check_history_reads(
    calls: List[List[str]], history: str, variables: Dict[str, Any], known: Optional[Collection[str]], where: str
) -> List[str]:
    """`python -m suite history` reads the file the gate appends to, as markdown, with real options."""
    if not calls:
        return [f"{where}: never runs `python -m suite history`: the trend is not shown"]
    problems = []
    for args in calls:
        if known is not None:
            problems += [
                f"{where}: {name} is not an option of `python -m suite history`"
                for name in unknown_options(args, known)
            ]
        read = option_value(args, "--history")
        if read is None or expand(read, variables) != history:
            problems.append(f"{where}: `python -m suite history` reads {read!r}, but the gate appends to {history!r}")
        if option_value(args, "--format") != "markdown":
            problems.append(f"{where}: `python -m suite history` without --format markdown")
    return problems


# -- GitHub Actions ------------------------------------------------------------------------------


def _steps(job: Obj) -> List[Obj]:
    return [s for s in job.get("steps") or [] if isinstance(s, dict)]


def _always(item: Obj) -> bool:
    return "always()" in str(item.get("if", ""))


def _uses(steps: List[Obj], action: str) -> List[Obj]:
    return [s for s in steps if str(s.get("uses", "")).partition("@")[0] == action]


def check_github_workflow(
    doc: Obj, known: Collection[str], history_known: Optional[Collection[str]] = None
) -> List[str]:
    """What the nightly workflow must do beyond its schema; [] when it does."""
    triggers = doc.get("on", doc.get(True))  # PyYAML reads the bare key `on` as True
    if not isinstance(triggers, dict):
        return ["no `on:` with schedule and workflow_dispatch: the workflow never runs"]
    problems = _check_triggers(triggers)
    if doc.get("permissions") != {"contents": "read"}:
        problems.append(f"permissions {doc.get('permissions')!r}, expected {{contents: read}}")
    gate_jobs = {n: j for n, j in (doc.get("jobs") or {}).items() if any(_step_gates(s) for s in _steps(j))}
    if len(gate_jobs) != 1:
        return problems + [f"expected one job running `make gate`, found {sorted(gate_jobs)}"]
    ((name, job),) = gate_jobs.items()
    return problems + _check_github_job(
        name, job, {**(doc.get("env") or {}), **(job.get("env") or {})}, known, history_known
    )


def _check_triggers(triggers: Obj) -> List[str]:
    crons = [entry.get("cron") for entry in triggers.get("schedule") or [] if isinstance(entry, dict)]
    problems = [] if crons else ["on.schedule has no cron: the workflow never runs at night"]
    for cron in crons:
        problems += [f"on.schedule: {p}" for p in cron_problems(cron)]
    inputs = (triggers.get("workflow_dispatch") or {}).get("inputs") or {}
    for key, default in GITHUB_INPUTS.items():
        if key not in inputs:
            problems.append(f"workflow_dispatch has no input {key!r}")
        elif str(inputs[key].get("default", "")) != default:
            problems.append(
                f"workflow_dispatch input {key!r} defaults to {inputs[key].get('default')!r}, not {default!r}"
            )
    return problems


def _step_gates(step: Obj) -> List[GateCommand]:
    return gate_commands(str(step.get("run") or ""))


def _check_github_job(
    name: str, job: Obj, env: Dict[str, Any], known: Collection[str], history_known: Optional[Collection[str]]
) -> List[str]:
    where = f"jobs.{name}"
    steps = _steps(job)
    problems = []
    if job.get("runs-on") != "ubuntu-latest":
        problems.append(f"{where}: runs-on {job.get('runs-on')!r}, expected 'ubuntu-latest'")
    if not isinstance(job.get("timeout-minutes"), int) or job["timeout-minutes"] <= 0:
        problems.append(f"{where}: no timeout-minutes: a hung gate would hold the runner for 6 hours")
    problems += _check_actions(where, steps)
    gate_index = next(i for i, s in enumerate(steps) if _step_gates(s))
    if not any("sudo make system-packages" in str(s.get("run") or "") for s in steps[:gate_index]):
        problems.append(f"{where}: no `sudo make system-packages` before the gate (it runs unprivileged)")
    cmd = _step_gates(steps[gate_index])[0]
    problems += check_gate_command(cmd, known, f"{where}.steps[{gate_index}]")
    history = expand(option_value(cmd.args, "--history") or "", env)
    report_dir = expand(option_value(cmd.args, "--report-dir") or DEFAULT_REPORT_DIR, env)
    problems += _check_summary(where, steps, cmd, history, env, history_known)
    problems += _check_upload(where, steps, report_dir)
    problems += _check_history_cache(where, steps, history)
    order = [i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("actions/cache/restore")]
    if any(i > gate_index for i in order):
        problems.append(f"{where}: the history is restored after the gate ran: the gate starts a new one")
    return problems


def _check_actions(where: str, steps: List[Obj]) -> List[str]:
    problems = []
    for step in steps:
        if "uses" not in step:
            continue
        action, _, ref = str(step["uses"]).partition("@")
        wanted = PINNED_ACTIONS.get(action)
        if not re.fullmatch(r"v\d+", ref) or (wanted and ref != wanted):
            problems.append(f"{where}: uses {step['uses']}, expected {action}@{wanted or 'v<major>'}")
    for action in PINNED_ACTIONS:
        if not _uses(steps, action):
            problems.append(f"{where}: does not use {action}")
    for step in _uses(steps, "actions/setup-python"):
        if str((step.get("with") or {}).get("python-version")) != "3.11":
            problems.append(f"{where}: setup-python {step.get('with')}, expected python-version 3.11")
    return problems


def _check_summary(
    where: str, steps: List[Obj], cmd: GateCommand, history: str, env: Dict[str, Any], known: Optional[Collection[str]]
) -> List[str]:
    summaries = [s for s in steps if "GITHUB_STEP_SUMMARY" in str(s.get("run") or "")]
    if not summaries:
        return [f"{where}: nothing is written to $GITHUB_STEP_SUMMARY"]
    problems = []
    for step in summaries:
        run = str(step.get("run"))
        if not _always(step):
            problems.append(f"{where}: the summary step has no `if: always()`: a failing night shows nothing")
        if "GATE (PASS|FAIL)" not in run or str(cmd.log) not in run:
            problems.append(f"{where}: the summary does not take the GATE PASS/FAIL line from {cmd.log}")
        problems += check_history_reads(history_commands(run), history, env, known, f"{where} summary")
    return problems


def _check_upload(where: str, steps: List[Obj], report_dir: str) -> List[str]:
    uploads = _uses(steps, "actions/upload-artifact")
    if not uploads:
        return []  # reported by _check_actions
    problems = []
    # `latest` is a symlink: the upload must name the folder a step resolved it to.
    resolved = {
        str(s.get("id"))
        for s in steps
        if s.get("id") and re.search(rf"readlink -f {re.escape(report_dir)}/latest\b", str(s.get("run") or ""))
    }
    for step in uploads:
        if not _always(step):
            problems.append(f"{where}: upload-artifact has no `if: always()`: a failing night uploads no report")
        paths = [p.strip() for p in str((step.get("with") or {}).get("path", "")).splitlines() if p.strip()]
        for name in REPORT_FILES:
            mine = [p for p in paths if p.endswith("/" + name)]
            if not mine:
                problems.append(f"{where}: the artifact does not include {name}")
            elif not any(m.group(1) in resolved for p in mine if (m := re.search(r"steps\.([\w-]+)\.outputs\.", p))):
                problems.append(
                    f"{where}: uploads {name} from {mine[0]!r}, not from {report_dir}/latest resolved by `readlink -f`"
                )
    return problems


def _check_history_cache(where: str, steps: List[Obj], history: str) -> List[str]:
    restores = _uses(steps, "actions/cache/restore")
    saves = _uses(steps, "actions/cache/save")
    problems = []
    for step in restores + saves:
        paths = str((step.get("with") or {}).get("path", "")).splitlines()
        if not any(covers(p, history) for p in paths):
            problems.append(f"{where}: {step['uses']} caches {paths}, not the history file {history}")
    if not saves:
        return problems + [f"{where}: the history file {history} is never saved for the next run"]
    for step in saves:
        key = str((step.get("with") or {}).get("key", ""))
        if not _always(step):
            problems.append(f"{where}: cache/save has no `if: always()`: a failing night is left out of the history")
        if "github.run_id" not in key:
            problems.append(f"{where}: cache key {key!r} lacks github.run_id: entries are immutable, one per run")
        for restore in restores:
            with_ = restore.get("with") or {}
            prefixes = str(with_.get("restore-keys", "")).split()
            if with_.get("key") != key or not any(key.startswith(p) for p in prefixes):
                problems.append(
                    f"{where}: cache/restore (key {with_.get('key')!r}, restore-keys {prefixes}) does not find "
                    f"what cache/save stores under {key!r}"
                )
    return problems


# -- GitLab CI -----------------------------------------------------------------------------------


def _script(job: Obj, key: str) -> str:
    lines = job.get(key) or []
    return "\n".join(str(line) for line in (lines if isinstance(lines, list) else [lines]))


def check_gitlab_ci(doc: Obj, known: Collection[str], history_known: Optional[Collection[str]] = None) -> List[str]:
    """What the nightly job must do beyond its schema; [] when it does."""
    jobs = {n: j for n, j in doc.items() if isinstance(j, dict) and gate_commands(_script(j, "script"))}
    if len(jobs) != 1:
        return [f"expected one job running `make gate`, found {sorted(jobs)}"]
    ((name, job),) = jobs.items()
    variables = {**(doc.get("variables") or {}), **(job.get("variables") or {})}
    problems = _check_gitlab_runs(name, job)
    cmd = gate_commands(_script(job, "script"))[0]
    problems += check_gate_command(cmd, known, f"{name}.script")
    history = expand(option_value(cmd.args, "--history") or "", variables)
    report_dir = expand(option_value(cmd.args, "--report-dir") or DEFAULT_REPORT_DIR, variables)
    calls = history_commands(_script(job, "after_script"))
    problems += check_history_reads(calls, history, variables, history_known, f"{name}.after_script")
    if "GATE (PASS|FAIL)" not in _script(job, "after_script"):
        problems.append(f"{name}: after_script does not print the GATE PASS/FAIL line (it runs even on failure)")
    problems += _check_gitlab_artifacts(name, job, cmd, report_dir, variables)
    problems += _check_gitlab_cache(name, job, history)
    return problems


def _check_gitlab_runs(name: str, job: Obj) -> List[str]:
    image = job.get("image")
    image = image.get("name") if isinstance(image, dict) else image
    problems = [] if image == GITLAB_IMAGE else [f"{name}: image {image!r}, expected {GITLAB_IMAGE!r} (root, Debian)"]
    sources = set(
        re.findall(
            r'\$CI_PIPELINE_SOURCE\s*==\s*"(\w+)"', " ".join(str(r.get("if", "")) for r in job.get("rules") or [])
        )
    )
    for source in ("schedule", "web"):
        if source not in sources:
            problems.append(f"{name}: no rule runs it on {source} pipelines (rules cover {sorted(sources)})")
    if not job.get("timeout"):
        problems.append(f"{name}: no timeout: a hung gate would hold the runner for the project's limit")
    return problems


def _check_gitlab_artifacts(name: str, job: Obj, cmd: GateCommand, report_dir: str, variables: Dict) -> List[str]:
    artifacts = job.get("artifacts") or {}
    problems = []
    if artifacts.get("when") != "always":
        problems.append(
            f"{name}: artifacts when={artifacts.get('when')!r}, expected 'always' (a failing night's reports)"
        )
    paths = [expand(str(p), variables) for p in artifacts.get("paths") or []]
    for file in REPORT_FILES:
        if not any(covers(p, f"{report_dir}/latest/{file}") for p in paths):
            problems.append(f"{name}: the artifacts ({paths}) do not include {report_dir}/<run id>/{file}")
    junit = option_value(cmd.args, "--junitxml") or option_value(cmd.args, "--junit-xml")
    declared = (artifacts.get("reports") or {}).get("junit")
    declared = [declared] if isinstance(declared, str) else list(declared or [])
    if junit is None:
        problems.append(f"{name}: no --junitxml PATH: merge requests show no test results")
    elif expand(junit, variables) not in [expand(str(d), variables) for d in declared]:
        problems.append(f"{name}: artifacts:reports:junit {declared} is not the --junitxml path {junit!r}")
    return problems


def _check_gitlab_cache(name: str, job: Obj, history: str) -> List[str]:
    caches = job.get("cache") or []
    caches = [caches] if isinstance(caches, dict) else caches
    mine = [c for c in caches if any(covers(str(p), history) for p in c.get("paths") or [])]
    if not mine:
        return [f"{name}: no cache holds the history file {history}: every night starts a new history"]
    if not any(c.get("when") == "always" for c in mine):
        return [f"{name}: the history cache is saved only on success (when: always keeps a failing night too)"]
    return []
