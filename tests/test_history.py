"""The history file and its judgements: each rule flags what it names, and nothing else."""

from __future__ import annotations

import hashlib
import json
import multiprocessing

import pytest

from suite import history

SCENARIO = "scenarios/test_deploy_path.py::test_x[dev]"


def _run(run_id: str, stages=None, alerts=None, outcome="passed", versions=None) -> dict:
    return {
        "schema": history.SCHEMA,
        "run_id": run_id,
        "started_at": "2026-11-29T00:00:00+00:00",
        "duration_s": 30.0,
        "verdict": "pass",
        "exit_status": 0,
        "counts": {"passed": 1, "failed": 0, "error": 0, "skipped": 0, "flaky": 0},
        "versions": versions or {"Triton": "2.51.0", "MLflow": "3.17.2"},
        "stage_medians": stages if stages is not None else {"load": 1.4, "ready": 0.001},
        "alert_delays": alerts or {},
        "scenarios": {SCENARIO: outcome},
    }


def _kinds(found):
    return [(r.kind, r.subject) for r in found]


STEADY = [
    _run(f"r{i}", {"load": 1.4 + i / 100, "ready": 0.001}, {"TritonDown → slack-dev (dev)": 4.0}) for i in range(5)
]


@pytest.mark.parametrize(
    "current, expected",
    [
        (_run("now", {"load": 1.45, "ready": 0.001}), []),  # within noise
        (_run("now", {"load": 2.5, "ready": 0.001}), [("stage", "load")]),  # 1.8 x
        (_run("now", {"load": 1.4, "ready": 0.004}), []),  # 4 x of a millisecond: below MIN_INCREASE_S
        (_run("now", alerts={"TritonDown → slack-dev (dev)": 9.0}), [("alert", "TritonDown → slack-dev (dev)")]),
        (_run("now", outcome="failed"), [("verdict", SCENARIO)]),
        (_run("now", outcome="skipped"), []),  # a skip is not a verdict
        (_run("now", versions={"Triton": "2.52.0", "MLflow": "3.17.2"}), [("version", "Triton")]),
        (_run("now", versions={"Triton": "2.51.0", "MLflow": "3.17.2", "numpy": "1.26.5"}), []),
    ],
    ids=["steady", "slower-stage", "tiny-stage", "slower-alert", "verdict-flip", "skip", "new-triton", "not-a-server"],
)
def test_each_rule_flags_what_it_names_and_nothing_else(current, expected):
    assert _kinds(history.regressions(current, STEADY)) == expected


def test_only_steps_back_are_regressions_a_fix_or_a_new_version_is_a_change():
    worse = {(r.kind, r.worse) for r in history.regressions(_run("now", {"load": 2.5}, outcome="failed"), STEADY)}
    assert worse == {("stage", True), ("verdict", True)}
    fixed = history.regressions(_run("now"), [*STEADY, _run("failing", outcome="failed")])
    assert [(r.kind, r.worse, str(r)) for r in fixed] == [
        ("verdict", False, f"CHANGED verdict {SCENARIO}: failed in the run before, passed now")
    ]
    [new] = history.regressions(_run("now", versions={"Triton": "2.52.0", "MLflow": "3.17.2"}), STEADY)
    assert not new.worse and str(new) == "CHANGED version Triton: 2.51.0 in the run before, 2.52.0 now"


def test_no_judgement_of_speed_before_enough_runs():
    few = STEADY[: history.MIN_RUNS - 1]
    assert history.regressions(_run("now", {"load": 9.0}), few) == []
    assert _kinds(history.regressions(_run("now", {"load": 9.0}), STEADY[: history.MIN_RUNS])) == [("stage", "load")]


def test_the_rolling_median_forgets_runs_outside_the_window():
    old_slow = [_run(f"o{i}", {"load": 3.0}) for i in range(history.WINDOW)]
    recent_fast = [_run(f"n{i}", {"load": 1.0}) for i in range(history.WINDOW)]
    assert _kinds(history.regressions(_run("now", {"load": 2.0}), old_slow + recent_fast)) == [("stage", "load")]


def test_a_flip_is_judged_against_the_last_run_that_ran_the_scenario():
    runs = [_run("a", outcome="failed"), _run("b", outcome="skipped"), {**_run("c"), "scenarios": {}}]
    assert _kinds(history.regressions(_run("now", outcome="failed"), runs)) == []
    [flip] = history.regressions(_run("now"), runs)
    assert flip.detail == "failed in the run before, passed now"


def test_lines_that_are_not_runs_are_named_and_skipped_never_rewritten(tmp_path):
    path = tmp_path / "history.jsonl"
    history.append(path, _run("one"))
    with path.open("a") as handle:
        handle.write('{"schema": "triton-gate-history/1", "run_id": "cut sh\n')  # a writer killed mid-line
        handle.write('{"something": "else"}\n')
    history.append(path, _run("two"))
    before = path.read_bytes()
    runs, notes = history.load(path)
    assert [r["run_id"] for r in runs] == ["one", "two"]
    assert len(notes) == 2 and ":2: not JSON" in notes[0] and ":3: expected a run with schema" in notes[1]
    assert path.read_bytes() == before


def test_a_folder_given_as_the_history_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(history.HistoryError, match="it is not a file. Give --history a file path"):
        history.load(tmp_path)


def _append_many(path, writer):
    for index in range(200):
        history.append(path, _run(f"{writer}-{index}", {"load": 1.0, "x" * 2000: 1.0}))


def test_concurrent_sessions_interleave_whole_lines(tmp_path):
    """Lines of about 2 kB from four processes at once: every line is one whole run."""
    path = tmp_path / "history.jsonl"
    workers = [multiprocessing.Process(target=_append_many, args=(path, n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    runs, notes = history.load(path)
    assert notes == [] and len(runs) == 800
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_flake_rates_count_only_runs_that_ran_the_scenario():
    runs = [_run("a", outcome="flaky"), _run("b"), _run("c", outcome="skipped"), _run("d", outcome="flaky")]
    assert history.flake_rates(runs) == {SCENARIO: {"flaky": 2, "runs": 3, "rate": 0.667}}


def test_the_entry_of_a_summary_has_what_the_issue_lists(tmp_path):
    manifest = tmp_path / "platform.yaml"
    manifest.write_text("model: {name: m}\n")
    summary = {
        "run_id": "r",
        "started_at": "t",
        "duration_s": 1.0,
        "verdict": "fail",
        "exit_status": 1,
        "counts": {"passed": 0, "flaky": 1},
        "stack": {"versions": {"Triton": "2.51.0"}},
        "stage_statistics": {"load": {"count": 2, "median_s": 1.5, "max_s": 2.0}},
        "alerts": [
            {"alert": "TritonDown", "receiver": "slack-dev", "env": "dev", "delay_s": 3.0},
            {"alert": "TritonDown", "receiver": "slack-dev", "env": "dev", "delay_s": 5.0},
            {"alert": "TritonDown", "receiver": "slack-prod", "env": "prod", "delay_s": None},
        ],
        "scenarios": [
            {"nodeid": "s", "outcome": "flaky", "fault_runs": [{"probe": {"worst_latency_s": 0.25}}]},
        ],
    }
    line = history.entry(summary, history.manifest_hash(manifest))
    assert line["stage_medians"] == {"load": 1.5}
    assert line["alert_delays"] == {"TritonDown → slack-dev (dev)": 5.0}  # the worst; undelivered is no delay
    assert line["worst_probe_latency_s"] == 0.25
    assert line["manifest_sha256"] == hashlib.sha256(b"model: {name: m}\n").hexdigest()
    assert line["scenarios"] == {"s": "flaky"} and line["versions"] == {"Triton": "2.51.0"}


def test_a_folder_as_history_is_a_usage_error_before_anything_runs(pytester):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("--history", str(pytester.path), "--report-dir", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--history: expected a history file (JSON lines) at *; it is not a file.*"])
    assert not (pytester.path / "out").exists()


def test_a_run_that_cannot_be_appended_keeps_its_reports_and_says_so(pytester):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("--history", "/proc/no-such/history.jsonl", "--report-dir", "out")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["this run could not be appended to the history /proc/no-such/history.jsonl: *"])
    assert json.loads((pytester.path / "out" / "latest" / "summary.json").read_text())["verdict"] == "pass"
