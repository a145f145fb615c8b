"""reports.compare: two runs' verdicts, scenario by scenario."""

from __future__ import annotations

import json

from reports import compare


def _summary(path, outcomes):
    path.write_text(json.dumps({"scenarios": [{"nodeid": n, "outcome": o} for n, o in outcomes.items()]}))
    return path


def test_same_verdicts_pass_and_a_flipped_one_fails(tmp_path, capsys):
    local = _summary(
        tmp_path / "a.json", {"scenarios/t.py::a": "passed", "scenarios/t.py::b": "skipped", "tests/x.py::c": "failed"}
    )
    docker = _summary(
        tmp_path / "b.json",
        {"scenarios/t.py::a": "passed", "scenarios/t.py::b": "skipped", "scenarios/t.py::only": "passed"},
    )
    assert compare.main([str(local), str(docker)]) == 0  # project tests (tests/) are not verdicts
    assert (
        "2 scenarios in both runs, 0 with another outcome (0 only in the first, 1 only in the second)"
        in capsys.readouterr().out
    )
    flipped = _summary(tmp_path / "c.json", {"scenarios/t.py::a": "failed", "scenarios/t.py::b": "skipped"})
    assert compare.main([str(local), str(flipped)]) == 1
    assert "scenarios/t.py::a: passed vs failed" in capsys.readouterr().out
    nothing = _summary(tmp_path / "d.json", {"scenarios/t.py::z": "passed"})
    assert compare.main([str(local), str(nothing)]) == 2
