"""Mount propagation for --target docker: mountinfo read right, a private work folder made shared
for the run and restored after (real mounts, as root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from suite.targets import mounts

MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
22 27 0:21 / /proc rw,relatime - proc proc rw
90 27 254:0 /work/w /work/w rw,relatime shared:400 - ext4 /dev/vda rw
91 90 0:50 / /work/w/fs rw,relatime master:400 - tmpfs tmpfs rw,size=1024k
92 27 0:51 / /mnt/with\\040space rw - tmpfs tmpfs rw
"""


def test_propagation_is_read_from_the_optional_fields():
    found = {m.point: m.propagation for m in mounts.mounts(MOUNTINFO)}
    assert found[Path("/")] == "private"
    assert found[Path("/work/w")] == "shared"
    assert found[Path("/work/w/fs")] == "slave"
    assert found[Path("/mnt/with space")] == "private"  # octal escapes of mountinfo undone


def test_a_path_belongs_to_its_deepest_mount(tmp_path):
    assert mounts.mount_of(Path("/work/w/fs/models"), MOUNTINFO).point == Path("/work/w/fs")
    assert mounts.mount_of(Path("/work/w/x"), MOUNTINFO).propagation == "shared"
    assert mounts.mount_of(Path("/work/other"), MOUNTINFO).point == Path("/")


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder a shared mount needs root")
def test_private_folder_is_shared_for_the_block_and_restored(tmp_path):
    folder = tmp_path / "work"
    before = mounts.mount_of(tmp_path)
    if before.propagation != "private":
        pytest.skip(f"{tmp_path} is already on a {before.propagation} mount here: nothing to change")
    with mounts.propagating(folder) as bound:
        assert bound == folder.resolve()
        assert mounts.mount_of(folder) == mounts.Mount(folder.resolve(), "shared")
    assert mounts.mount_of(folder) == before  # the bind is gone: nothing left behind
    with mounts.propagating(folder):
        with mounts.propagating(folder / "inner") as inner:
            assert inner is None  # already on a shared mount: left as it is


def test_without_root_the_error_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(mounts, "mount_of", lambda path: mounts.Mount(Path("/"), "private"))
    with pytest.raises(mounts.MountError) as raised:
        with mounts.propagating(tmp_path):
            pass
    message = str(raised.value)
    assert f"{tmp_path} is on the private mount /; expected a shared or slave mount" in message
    assert f"mount --bind {tmp_path} {tmp_path} && mount --make-shared {tmp_path}" in message
