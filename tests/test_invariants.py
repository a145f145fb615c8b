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


def _captured(view: _View) -> EnvironmentState:
    from dataclasses import replace

    from suite.file_identity import file_identity

    return replace(_before(view), current_identity=file_identity(view.folder.current_path))


NEXT = b'{"active_version": 4, "run_id": "s", "alias": "A"}\n'


def test_current_json_rewritten_in_place_is_reported(view):
    before = _captured(view)
    with open(view.folder.current_path, "r+b") as out:  # truncate + write: the seed's way
        out.truncate()
        out.write(NEXT)
    found = InvariantChecker._written_atomically(view, before)
    assert len(found) == 1 and "is the same file" in found[0] and "os.replace()" in found[0], found


def test_current_json_replaced_is_not_reported_even_when_its_inode_number_comes_back(view):
    """Temp file + os.replace twice: on ext4 the second temporary file usually gets the first
    file's freed inode number. It is a new file, not the old one rewritten: never reported."""
    import os

    from suite.files import atomic_write

    for attempt in range(100):  # another process on the machine may take the freed number first
        before = _captured(view)
        atomic_write(view.folder.current_path, NEXT)
        atomic_write(view.folder.current_path, NEXT + b" " * (attempt + 1))
        if os.stat(view.folder.current_path).st_ino == before.current_identity.inode:
            break
    else:
        pytest.skip("this filesystem never gave the inode number back: the case cannot be made here")
    assert InvariantChecker._written_atomically(view, before) == []


def test_file_identity_tells_a_kept_file_from_a_new_one_with_its_number():
    from suite.file_identity import FileIdentity

    kept = FileIdentity(7, 100)
    assert kept.same_file_as(FileIdentity(7, 100)) is True
    assert kept.same_file_as(FileIdentity(7, 200)) is False  # the number reused by a new file
    assert kept.same_file_as(FileIdentity(8, 100)) is False
    assert kept.same_file_as(FileIdentity(7, None)) is None  # no birth times: cannot tell


def test_without_birth_times_a_kept_inode_is_reported_saying_it_cannot_be_sure(view, monkeypatch):
    import suite.invariants as invariants
    from suite.file_identity import FileIdentity, file_identity

    def no_birth_times(path):
        found = file_identity(path)
        return found and FileIdentity(found.inode, None)

    monkeypatch.setattr(invariants, "file_identity", no_birth_times)
    before = invariants.EnvironmentState(
        **{**_before(view).__dict__, "current_identity": no_birth_times(view.folder.current_path)}
    )
    with open(view.folder.current_path, "r+b") as out:
        out.truncate()
        out.write(NEXT)
    (found,) = InvariantChecker._written_atomically(view, before)
    assert "records no birth times" in found and "rewritten in place" in found
