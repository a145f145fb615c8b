"""The empty MLflow store kept after the first start, so later starts skip ~5 s of migrations."""

from __future__ import annotations

import sqlite3

from suite import registry


def _store(path, rows):
    with sqlite3.connect(path) as db:
        db.execute("create table experiments (name text)")
        db.executemany("insert into experiments values (?)", [(r,) for r in rows])


def test_the_first_store_is_kept_and_copied_into_later_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, later = tmp_path / "first.db", tmp_path / "later.db"
    registry.restore_empty_store(later)
    assert not later.exists()  # nothing kept yet: MLflow makes the store itself
    _store(first, ["Default"])
    registry.keep_empty_store(first)
    registry.restore_empty_store(later)
    with sqlite3.connect(later) as db:
        assert db.execute("select name from experiments").fetchall() == [("Default",)]


def test_a_kept_store_is_never_replaced_by_a_later_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _store(tmp_path / "a.db", ["Default"])
    _store(tmp_path / "b.db", ["Default", "registered-later"])
    registry.keep_empty_store(tmp_path / "a.db")
    registry.keep_empty_store(tmp_path / "b.db")
    registry.restore_empty_store(tmp_path / "c.db")
    with sqlite3.connect(tmp_path / "c.db") as db:
        assert db.execute("select count(*) from experiments").fetchone() == (1,)
