"""Mount propagation for `--target docker`: the fault scenarios mount under the model repository
on the host while Triton runs in a container, which sees those mounts only through an `rslave`
bind, and Docker accepts `rslave` only from a shared or slave mount (`/` is private on these
machines)."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

from suite.errors import GateError


class MountError(GateError):
    """The work folder cannot be given the propagation Docker needs: says what to run."""


@dataclass(frozen=True)
class Mount:
    point: Path
    propagation: str  # "shared", "slave" or "private"


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts(mountinfo: Optional[str] = None) -> List[Mount]:
    """Every mount of this process, from /proc/self/mountinfo (optional fields give propagation)."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    found = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        optional = fields[6 : fields.index("-")]
        if any(f.startswith("shared:") for f in optional):
            propagation = "shared"
        elif any(f.startswith("master:") for f in optional):
            propagation = "slave"
        else:
            propagation = "private"
        found.append(Mount(Path(_unescape(fields[4])), propagation))
    return found


def mount_of(path: Path, mountinfo: Optional[str] = None) -> Mount:
    """The mount `path` lives on: the last-mounted one with the longest matching mount point."""
    resolved = Path(os.path.realpath(path))
    best: Optional[Mount] = None
    for mount in mounts(mountinfo):
        if resolved == mount.point or mount.point in resolved.parents:
            if best is None or len(mount.point.parts) >= len(best.point.parts):
                best = mount
    assert best is not None, "/ is always a mount point"
    return best


@contextmanager
def propagating(folder: Path) -> Iterator[Optional[Path]]:
    """`folder` on a shared or slave mount for the block; made so (and undone) when it is private.
    Yields the folder bound here, or None when nothing had to change."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    mount = mount_of(folder)
    if mount.propagation != "private":
        yield None
        return
    if os.geteuid() != 0:
        raise MountError(
            f"--target docker: {folder} is on the private mount {mount.point}; expected a shared or slave "
            f"mount (Triton's container sees the fault scenarios' mounts through an rslave bind). As root run "
            f"`mount --bind {folder} {folder} && mount --make-shared {folder}`, or run the gate as root."
        )
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(folder)], check=True)
        yield folder
    finally:
        done = subprocess.run(["umount", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:  # something still holds it: detach it, never leave it behind
            subprocess.run(["umount", "-l", str(folder)], check=True)
