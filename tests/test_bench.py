"""The bench's table: medians, goals and the stage-against-floor verdicts."""

from __future__ import annotations

from tools.bench import STAGES, table, time_by_module


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
    assert "| full gate, wall (`pytest scenarios`) | 80.00 s | ≤ 60 s | MISSED |" in text
    assert "| smoke checks against the running platform (call phases) | 1.20 s | ≤ 3 s | met |" in text
    assert "| load | 1.00 s | 1.10 s | 1.00 s | 1.10× | met |" in text
    assert "| commit | 1.00 s | 3.00 s | 1.00 s | 3.00× | MISSED |" in text
    assert "| `scenarios/test_b.py` | 1 | 30.0 |" in text


def test_time_by_module_ranks_the_costliest_first():
    rows = time_by_module([_summary({"test_a.py": 5.0, "test_b.py": 20.0}, smoke_calls=())])
    assert [r[0] for r in rows] == ["scenarios/test_b.py", "scenarios/test_a.py"]
    assert rows[0][3] == 0.8
