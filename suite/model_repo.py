"""The model repository on disk: versions, atomic materialize, quarantine and `current.json`.

Nothing here ever deletes a model version or `current.json`: a failed version is renamed to
`<N>.failed_<UTC>`. The only things removed are the gate's own staging folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import filelock

from suite.errors import DeployLockedError, RepositoryError
from suite.files import atomic_write, fsync_path
from suite.quarantine import DEFAULT_LAYOUT, QuarantineLayout

CURRENT_JSON = "current.json"
CONFIG_PBTXT = "config.pbtxt"
STAGING_PREFIX = ".staging-"
LOCK_FILE = ".gate-deploy.lock"
JOURNAL = ".deploy-journal.json"


def utc_stamp(now: Optional[float] = None) -> str:
    """UTC time as the seed writes it: YYYYMMDDTHHMMSS."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))


@dataclass(frozen=True)
class Current:
    """The committed state of a model in one environment (`current.json`)."""

    active_version: int
    run_id: str
    alias: str
    updated_at_utc: str
    extra: Dict[str, object]

    def to_json(self) -> bytes:
        body = {
            "active_version": self.active_version,
            "run_id": self.run_id,
            "alias": self.alias,
            "updated_at_utc": self.updated_at_utc,
            **self.extra,
        }
        return (json.dumps(body, indent=2) + "\n").encode()


def parse_current(data: bytes, source: str = CURRENT_JSON) -> Current:
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise RepositoryError(
            f"{source} is not valid JSON ({exc}); it must be an object with "
            f"active_version, run_id, alias and updated_at_utc."
        ) from exc
    if not isinstance(body, dict) or not isinstance(body.get("active_version"), int):
        raise RepositoryError(f"{source} must be a JSON object whose active_version is an integer; saw {body!r}.")
    extra = {k: v for k, v in body.items() if k not in ("active_version", "run_id", "alias", "updated_at_utc")}
    return Current(
        body["active_version"],
        str(body.get("run_id", "")),
        str(body.get("alias", "")),
        str(body.get("updated_at_utc", "")),
        extra,
    )


def json_content(data: Optional[bytes]) -> object:
    """A JSON document's content with every value's type kept (1, 1.0 and true differ), so two
    files compare equal exactly when they say the same thing, whatever their formatting."""
    if data is None:
        return None
    return _typed(json.loads(data))


def _typed(value: object) -> object:
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, _typed(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("array", tuple(_typed(v) for v in value))
    return (type(value).__name__, value)


class ModelFolder:
    """One model's folder in one environment's repository: `<repo>/<model>/`."""

    def __init__(self, repository: Path, model: str, layout: Optional[QuarantineLayout] = None):
        self.repository = Path(repository)
        self.model = model
        self.path = self.repository / model
        self.layout = layout or QuarantineLayout(DEFAULT_LAYOUT)

    # -- reading -------------------------------------------------------------------------

    @property
    def current_path(self) -> Path:
        return self.path / CURRENT_JSON

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_PBTXT

    def read_current(self) -> Optional[Current]:
        try:
            data = self.current_path.read_bytes()
        except FileNotFoundError:
            return None
        return parse_current(data, str(self.current_path))

    def current_bytes(self) -> Optional[bytes]:
        try:
            return self.current_path.read_bytes()
        except FileNotFoundError:
            return None

    def versions(self) -> List[int]:
        """Numeric version folders, the only ones Triton considers."""
        if not self.path.is_dir():
            return []
        return sorted(int(p.name) for p in self.path.iterdir() if p.is_dir() and p.name.isdigit())

    def quarantined(self, version: Optional[int] = None) -> List[Path]:
        """Failed versions kept where the quarantine layout says (of `version`, or all)."""
        return self.layout.entries(self.path, version)

    def entries(self) -> List[str]:
        """Names in the model's folder."""
        return sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []

    def leftovers(self) -> List[Path]:
        """Staging, temporary and journal entries a finished deploy must never leave behind."""
        if not self.path.is_dir():
            return []
        return sorted(
            p
            for p in self.path.iterdir()
            if p.name.startswith(STAGING_PREFIX) or p.name.endswith(".tmp") or p.name == JOURNAL
        )

    def remove_staging_leftovers(self) -> List[str]:
        """Remove what an interrupted deploy left half-made: staging folders and temp files.

        These are the gate's own, incomplete by definition; never a version or current.json.
        """
        removed = []
        for path in self.leftovers():
            if path.name == JOURNAL:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path.name)
        return removed

    # -- the deploy journal: what an interrupted deploy was doing -------------------------

    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL

    def read_journal(self) -> Optional[dict]:
        try:
            return json.loads(self.journal_path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            # torn only if written by something else than atomic_write: treat as interrupted
            # with nothing known, recover() still quarantines nothing and reloads the committed.
            return {}

    def write_journal(self, body: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.journal_path, json.dumps(body, indent=2).encode())

    def clear_journal(self) -> None:
        try:
            self.journal_path.unlink()
        except FileNotFoundError:
            pass
        else:
            fsync_path(self.path)

    def version_path(self, version: int) -> Path:
        return self.path / str(version)

    # -- writing -------------------------------------------------------------------------

    def materialize(self, version: int, fill: Callable[[Path], None]) -> bool:
        """Make version folder N appear complete or not at all.

        `fill(dir)` writes the version's files into a staging folder beside the target (same
        filesystem); the folder is then renamed into place. Returns False when an identical
        folder was already there (nothing to do). A different folder of the same number is
        refused, never overwritten.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        staging = self.path / f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        target = self.version_path(version)
        staged = staging / str(version)
        try:
            staged.mkdir(parents=True)
            fill(staged)
            if target.exists():
                if tree_digest(target) == tree_digest(staged):
                    return False
                raise RepositoryError(
                    f"version folder {target} already exists with other content than registry "
                    f"version {version}. The gate never overwrites a version: move that folder "
                    f"away (or run `python -m suite recover`) and deploy again."
                )
            _fsync_tree(staged)
            os.rename(staged, target)
            fsync_path(self.path)
            return True
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # our own staging folder, never a version

    def quarantine(self, version: int, now: Optional[float] = None) -> Path:
        """Move version N where the layout says (default `N.failed_<UTC>`); keeps it whole."""
        source = self.version_path(version)
        base = self.layout.path(self.path, version, utc_stamp(now))
        target, n = base, 1
        while target.exists():
            n += 1
            target = base.with_name(f"{base.name}_{n}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
        fsync_path(target.parent)
        return target

    def write_current(self, current: Current) -> None:
        atomic_write(self.current_path, current.to_json())

    def write_current_bytes(self, data: bytes) -> None:
        atomic_write(self.current_path, data)

    def write_config(self, text: str) -> None:
        atomic_write(self.config_path, text.encode())


def tree_digest(root: Path) -> Dict[str, str]:
    """Relative path -> sha256 of every file under `root` (directories as '<dir>')."""
    out: Dict[str, str] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = "<dir>"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


@contextmanager
def environment_lock(repository: Path, timeout: float) -> Iterator[None]:
    """Hold the environment's deploy lock: one deploy per environment at a time.

    An OS file lock, so a deployer killed with SIGKILL releases it with its process.
    """
    Path(repository).mkdir(parents=True, exist_ok=True)
    path = Path(repository) / LOCK_FILE
    lock = filelock.FileLock(str(path), is_singleton=False, thread_local=False)
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout as exc:
        raise DeployLockedError(
            f"another deploy holds {path} (waited {timeout:.0f} s). Only one deploy per "
            f"environment may run; wait for it to finish and try again."
        ) from exc
    try:
        yield
    finally:
        lock.release()
