"""Mount propagation for --target docker: mountinfo read right, a private work folder made shared
for the run and restored after (real mounts, as root)."""

from __future__ import annotations

import os
import subprocess
import sys
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


# -- root without the right to mount (an unprivileged container): the mount faults skip, saying why --

ROOT = Path(__file__).resolve().parent.parent
NO_CAP_SYS_ADMIN = ["capsh", "--drop=cap_sys_admin", "--", "-c"]
NO_MOUNT_NAMESPACE = ["unshare", "--user", "--map-root-user", "bash", "-c"]  # root of a user namespace


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping the right to mount is only meaningful for root")
@pytest.mark.parametrize(
    "wrapper, reason",
    [
        (NO_CAP_SYS_ADMIN, "they need CAP_SYS_ADMIN, which this root process does not have"),
        (NO_MOUNT_NAMESPACE, "mount is refused here: mount: {temp}/gate-mount-probe-"),
    ],
    ids=["no-cap-sys-admin", "mount-refused"],
)
def test_root_that_may_not_mount_is_told_why(wrapper, reason, tmp_path):
    probe = f"{sys.executable} -c 'from suite.faults import mount_faults_unavailable as m; print(m())'"
    # The probe's own temp folder: under xdist (`make test`) other tests' gates probe in /tmp meanwhile.
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    seen = subprocess.run([*wrapper, probe], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert reason.format(temp=temp) in seen.stdout, seen.stdout + seen.stderr
    assert not [line for line in Path("/proc/mounts").read_text().splitlines() if str(temp) in line]
    assert list(temp.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping the right to mount is only meaningful for root")
def test_the_gate_skips_the_mount_faults_when_it_may_not_mount(tmp_path):
    """The gate as root in an unprivileged container: a skip with the reason, not a failed mount."""
    gate = (
        f"{sys.executable} -m pytest scenarios -k 'repository-read-only or test_full_repository' "
        f"-rs -q -p no:cacheprovider --report-dir {tmp_path / 'out'} --basetemp {tmp_path / 'tmp'}"
    )
    seen = subprocess.run([*NO_CAP_SYS_ADMIN, gate], cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = seen.stdout + seen.stderr
    assert seen.returncode == 0 and "2 skipped" in output, output[-3000:]
    assert output.count("they need CAP_SYS_ADMIN") == 2, output[-3000:]
