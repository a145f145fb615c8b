"""Invariant 1 compares what the committed files say, not their bytes (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.checks import EnvironmentSnapshot
from suite.invariants import EnvironmentState, InvariantChecker, Judgement
from suite.model_repo import ModelFolder, json_content

CONFIG = 'name: "m"\nplatform: "onnxruntime_onnx"\nversion_policy { specific { versions: 3 } }\n'


class _View:
    def __init__(self, repository: Path):
        self.repository = repository
        self.folder = ModelFolder(repository, "m")


def _before(view: _View) -> EnvironmentState:
    folder = view.folder
    return EnvironmentState(
        "dev",
        view.repository,
        folder.current_bytes(),
        3,
        folder.config_path.read_bytes(),
        {},
        [],
        set(),
        set(),
        EnvironmentSnapshot({}, {}),
    )


@pytest.fixture
def view(tmp_path):
    view = _View(tmp_path)
    view.folder.path.mkdir()
    view.folder.current_path.write_bytes(b'{"active_version": 3, "run_id": "r", "alias": "A", "extra": [1, 2]}\n')
    view.folder.config_path.write_text(CONFIG)
    return view


def _judge(view, before) -> Judgement:
    found = Judgement()
    InvariantChecker("m", golden=None)._committed_files_unchanged(view, before, found)
    return found


def test_same_content_other_formatting_is_a_note_not_a_violation(view):
    before = _before(view)
    view.folder.current_path.write_bytes(b'{\n\t"extra": [1,2], "alias": "A",\n\t"run_id": "r", "active_version": 3}')
    view.folder.config_path.write_text(
        'platform: "onnxruntime_onnx" name: "m" version_policy: { specific: { versions: [3] } }'
    )
    found = _judge(view, before)
    assert not found.violations, found.violations
    assert any("current.json was rewritten with the same content" in n for n in found.notes)
    assert any("config.pbtxt was rewritten with the same content" in n for n in found.notes)


@pytest.mark.parametrize(
    "rewritten",
    [
        b'{"active_version": 3.0, "run_id": "r", "alias": "A", "extra": [1, 2]}',  # a float is not an int
        b'{"active_version": 3, "run_id": "r", "alias": "A", "extra": [2, 1]}',
        b'{"active_version": 3, "run_id": "r", "alias": "A", "extra": [1, 2], "more": null}',
        b'{"active_version": 4, "run_id": "r", "alias": "A", "extra": [1, 2]}',
    ],
)
def test_any_change_of_content_or_type_violates_invariant_1(view, rewritten):
    before = _before(view)
    view.folder.current_path.write_bytes(rewritten)
    assert {v.invariant for v in _judge(view, before).violations} == {1}


def test_a_config_pinned_to_another_version_violates_invariant_1_and_says_how(view):
    before = _before(view)
    view.folder.config_path.write_text(CONFIG.replace("versions: 3", "versions: 4"))
    violations = _judge(view, before).violations
    assert len(violations) == 1 and violations[0].invariant == 1
    assert "version_policy was pinned to v3, is pinned to v4" in violations[0].detail


def test_json_content_keeps_types():
    assert json_content(b'{"a": 1}') != json_content(b'{"a": 1.0}') != json_content(b'{"a": true}')
    assert json_content(b'{"a": 1, "b": [true]}') == json_content(b'{ "b":[true],\n "a":1 }')
