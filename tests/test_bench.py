"""The bench's table: medians, goals and the stage-against-floor verdicts."""

from __future__ import annotations

import pytest

from tools.bench import (
    README_BEGIN,
    README_END,
    STAGES,
    headline_values,
    readme_values,
    table,
    time_by_module,
    with_bench_block,
)


def _summary(seconds_by_module, stage_median=1.0, smoke_calls=(0.5, 0.7)):
    scenarios = [
        {"nodeid": f"scenarios/{m}::test_x", "duration_s": s, "markers": [], "phases": {"call": s}}
        for m, s in seconds_by_module.items()
    ]
    scenarios += [
        {"nodeid": "scenarios/test_smoke.py::t", "duration_s": c, "markers": ["smoke"], "phases": {"call": c}}
        for c in smoke_calls
    ]
    return {
        "scenarios": scenarios,
        "stack": {"timings": {"stack": 9.0}},
        "stage_statistics": {s: {"median_s": stage_median} for s in STAGES},
    }


def test_table_gives_medians_and_judges_each_goal():
    stages = {"suite": {s: [1.0, 1.1, 1.2] for s in STAGES}, "floor": {s: [1.0, 1.0, 1.0] for s in STAGES}}
    stages["suite"]["commit"] = [3.0, 3.0, 3.0]  # 3x its floor: missed
    runs = [{"wall_s": w, "exit": 0, "summary": _summary({"test_a.py": 10.0, "test_b.py": 30.0})} for w in (70, 90, 80)]
    text = table(
        {"date": "d", "machine": "2 cores", "stage_repeats": 3, "stages": stages, "gate": runs, "smoke": runs[:1]}
    )
    assert "| full gate, wall (`pytest scenarios`) | 80.00 s | ≤ 150 s | met |" in text
    assert "| smoke checks against the running platform (call phases) | 1.20 s | ≤ 3 s | met |" in text
    assert "| load | 1.00 s | 1.10 s | 1.00 s | 1.10× | met |" in text
    assert "| commit | 1.00 s | 3.00 s | 1.00 s | 3.00× | MISSED |" in text
    assert "| `scenarios/test_b.py` | 1 | 30.0 |" in text


def test_time_by_module_ranks_the_costliest_first():
    rows = time_by_module([_summary({"test_a.py": 5.0, "test_b.py": 20.0}, smoke_calls=())])
    assert [r[0] for r in rows] == ["scenarios/test_b.py", "scenarios/test_a.py"]
    assert rows[0][3] == 0.8


def _results(hook=(1.9, 2.1, 2.4), gate_walls=(170, 160, 180), ci=None):
    stages = {"suite": {s: [1.0] for s in STAGES}, "floor": {s: [1.0] for s in STAGES}}
    runs = [{"wall_s": w, "exit": 0, "summary": _summary({"test_a.py": 1.0})} for w in gate_walls]
    results = {"date": "d", "machine": "2 cores", "stage_repeats": 1, "stages": stages, "gate": runs, "smoke": runs[:1]}
    results["hook"] = list(hook)
    if ci is not None:
        results["ci_test_s"] = ci
    return results


def test_headline_puts_each_wait_beside_its_previous_value_and_its_goal():
    text = table(_results(ci=1500), previous={"hook_wall_s": 5.6, "gate_wall_s": 354.0})
    assert (
        "| PostSync hook: `pytest --pyargs scenarios -m smoke --target k8s` against a running platform, whole process | 2.10 s | 5.60 s | ≤ 2.00 s | MISSED |"
        in text
    )
    assert "| full gate: `pytest scenarios`, warm venv, wall | 170.00 s | 354.00 s | ≤ 150.00 s | MISSED |" in text
    assert (
        "| our CI: `make test` in `.ci/run` on a fresh clone (from `--ci-timing`) | 25.0 min | – | ≤ 12.0 min | MISSED |"
        in text
    )
    met = table(_results(hook=(1.5, 1.7, 1.9), gate_walls=(140,)))
    assert "whole process | 1.70 s | – | ≤ 2.00 s | met |" in met
    assert "from `--ci-timing`) | – | – | ≤ 12.0 min | – |" in met  # not measured: no verdict


def test_the_readme_block_is_replaced_and_keeps_the_values_for_the_next_bench():
    # The prose may name the markers; only a marker alone on its line delimits the block.
    readme = f"# Title\n\nbefore, between `{README_BEGIN}` and `{README_END}`\n\n{README_BEGIN}\nold table\n{README_END}\n\nafter\n"
    first = with_bench_block(readme, "TABLE 1", headline_values(_results()))
    assert first.startswith(f"# Title\n\nbefore, between `{README_BEGIN}` and `{README_END}`\n\n{README_BEGIN}\n")
    assert first.endswith(f"{README_END}\n\nafter\n")
    assert "TABLE 1" in first and "old table" not in first
    assert readme_values(first) == {"hook_wall_s": 2.1, "gate_wall_s": 170, "ci_test_s": None}
    second = with_bench_block(first, "TABLE 2", {"hook_wall_s": 1.8, "gate_wall_s": 150, "ci_test_s": None})
    assert (
        "TABLE 1" not in second
        and second.count(f"\n{README_BEGIN}\n") == 1
        and readme_values(second)["hook_wall_s"] == 1.8
    )


def test_a_readme_without_the_bench_block_is_a_clear_error():
    with pytest.raises(ValueError, match="found only one, or in the wrong order"):
        with_bench_block(f"# markers named in prose only: `{README_BEGIN}`\n{README_END}\n", "T", {}, "README.md")
    with pytest.raises(
        ValueError,
        match="expected a bench block, the line <!-- bench:begin --> then the line <!-- bench:end -->; found neither",
    ):
        with_bench_block("# no block\n", "T", {}, "README.md")
