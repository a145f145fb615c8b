"""Writing a file so that a reader sees the old content or the new, never a mix.

One implementation for the model repository (`current.json`, `config.pbtxt`, the journal), the
reports, the MLflow store template and Prometheus' target file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union


def atomic_write(path: Path, data: Union[bytes, str]) -> None:
    """Write `data` (text as UTF-8) to `path` so a reader sees the old bytes or the new ones."""
    with replacing(Path(path)) as partial:
        partial.write_bytes(data.encode() if isinstance(data, str) else data)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A fresh temporary file beside `path`, for whatever writes it (sqlite's backup API too);
    at the end of the block it is flushed to disk and renamed over `path` in one step. On an
    error it is removed and `path` is left as it was."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            # mkstemp makes it 0600: readers running as another user (Triton as uid 1000, the
            # PostSync hook as 10001) could no longer read it. Keep the file's mode, else 0644.
            os.fchmod(fd, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)
        finally:
            os.close(fd)
        yield Path(tmp)
        fsync_path(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') writes to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
