"""The model repository engine: atomic materialize, quarantine, current.json, the deploy lock."""

from __future__ import annotations

import json
import threading

import pytest

from suite.errors import DeployLockedError, RepositoryError
from suite.model_repo import Current, ModelFolder, atomic_write, environment_lock, parse_current


def _fill(content: bytes):
    def fill(folder):
        (folder / "model.onnx").write_bytes(content)

    return fill


def test_materialize_creates_version_folder_named_after_registry_version(tmp_path):
    folder = ModelFolder(tmp_path, "m")
    assert folder.materialize(7, _fill(b"onnx")) is True
    assert folder.versions() == [7]
    assert (tmp_path / "m" / "7" / "model.onnx").read_bytes() == b"onnx"
    assert folder.leftovers() == []


def test_materialize_failing_halfway_leaves_repository_untouched(tmp_path):
    folder = ModelFolder(tmp_path, "m")
    folder.materialize(1, _fill(b"one"))

    def broken(d):
        (d / "model.onnx").write_bytes(b"half")
        raise OSError("connection reset in the middle of the download")

    with pytest.raises(OSError):
        folder.materialize(2, broken)
    assert folder.versions() == [1]
    assert folder.leftovers() == [], "the staging folder must be cleaned up"


def test_materialize_same_content_is_a_no_op_and_other_content_is_refused(tmp_path):
    folder = ModelFolder(tmp_path, "m")
    folder.materialize(3, _fill(b"a"))
    assert folder.materialize(3, _fill(b"a")) is False
    with pytest.raises(RepositoryError, match="already exists with other content"):
        folder.materialize(3, _fill(b"b"))
    assert (tmp_path / "m" / "3" / "model.onnx").read_bytes() == b"a", "never overwritten"


def test_quarantine_renames_and_keeps_contents(tmp_path):
    folder = ModelFolder(tmp_path, "m")
    folder.materialize(4, _fill(b"bad"))
    moved = folder.quarantine(4, now=0)
    assert moved.name == "4.failed_19700101T000000"
    assert (moved / "model.onnx").read_bytes() == b"bad"
    assert folder.versions() == []
    folder.materialize(4, _fill(b"bad again"))
    second = folder.quarantine(4, now=0)
    assert second.name == "4.failed_19700101T000000_2", "a second failure in the same second is kept too"
    assert len(folder.quarantined(4)) == 2


def test_current_json_is_seed_compatible(tmp_path):
    folder = ModelFolder(tmp_path, "m")
    folder.path.mkdir()
    folder.write_current(Current(5, "run123", "A", "20261126T101010", {"env": "dev"}))
    body = json.loads(folder.current_path.read_text())
    assert body["active_version"] == 5 and isinstance(body["active_version"], int)
    assert body["run_id"] == "run123" and body["alias"] == "A"
    assert body["updated_at_utc"] == "20261126T101010"
    assert folder.read_current().active_version == 5


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"active_version": "5"}'])
def test_unparseable_current_json_is_a_clear_error(content):
    with pytest.raises(RepositoryError, match="active_version"):
        parse_current(content, "current.json")


def test_atomic_write_never_shows_a_torn_file(tmp_path):
    path = tmp_path / "current.json"
    old, new = b"x" * 200_000, b"y" * 200_000
    path.write_bytes(old)
    seen = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            data = path.read_bytes()
            seen.add(data[:1] + data[-1:] + str(len(data)).encode())

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(50):
        atomic_write(path, new if i % 2 == 0 else old)
    stop.set()
    thread.join()
    assert seen <= {b"xx200000", b"yy200000"}, f"a reader saw a torn file: {seen}"
    assert not list(tmp_path.glob("*.tmp"))


def test_environment_lock_lets_one_deploy_in_at_a_time(tmp_path):
    order = []
    with environment_lock(tmp_path, timeout=1):

        def second():
            try:
                with environment_lock(tmp_path, timeout=0.3):
                    order.append("second got in")
            except DeployLockedError as exc:
                order.append(str(exc))

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(order) == 1 and "another deploy holds" in order[0]
    with environment_lock(tmp_path, timeout=1):  # released: free again
        pass


def test_atomic_write_leaves_files_readable_by_other_users(tmp_path):
    """Triton (uid 1000 in the NGC image) and the PostSync hook (uid 10001) read what the deploy
    path wrote as another user: a new file is 0644, a rewritten one keeps its mode."""
    new = tmp_path / "current.json"
    atomic_write(new, b"{}")
    assert oct(new.stat().st_mode & 0o777) == oct(0o644)
    kept = tmp_path / "config.pbtxt"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    atomic_write(kept, b"new")
    assert oct(kept.stat().st_mode & 0o777) == oct(0o640) and kept.read_bytes() == b"new"
