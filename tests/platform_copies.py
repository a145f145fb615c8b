"""Copies of the reference platform that tests may break on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

from suite.platform import REFERENCE_DIR


def copy_reference(tmp: Path) -> Path:
    """A full copy of the reference platform (manifest, golden set, monitoring) under `tmp`."""
    target = tmp / "platform"
    shutil.copytree(REFERENCE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
