"""Is this the same file as before, or a new one that took its place?

An inode number alone cannot tell: once a file is replaced (temporary file + rename) its inode is
free, and the filesystem may give the same number to the next file created there. Seen here on
ext4: a deployer writing current.json by temp file + os.replace twice in a row got the first
file's inode number back, and a check on the inode alone called that a rewrite in place. The birth
time tells them apart: a file rewritten in place keeps it, a new file has its own. Python 3.11's
os.stat has no birth time on Linux, so it comes from statx(2) (glibc >= 2.28).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

_AT_FDCWD = -100
_STATX_INO = 0x100
_STATX_BTIME = 0x800


class _Timestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    # struct statx of <linux/stat.h>: a fixed kernel ABI, 256 bytes.
    _fields_ = [
        ("stx_mask", ctypes.c_uint32),
        ("stx_blksize", ctypes.c_uint32),
        ("stx_attributes", ctypes.c_uint64),
        ("stx_nlink", ctypes.c_uint32),
        ("stx_uid", ctypes.c_uint32),
        ("stx_gid", ctypes.c_uint32),
        ("stx_mode", ctypes.c_uint16),
        ("spare0", ctypes.c_uint16),
        ("stx_ino", ctypes.c_uint64),
        ("stx_size", ctypes.c_uint64),
        ("stx_blocks", ctypes.c_uint64),
        ("stx_attributes_mask", ctypes.c_uint64),
        ("stx_atime", _Timestamp),
        ("stx_btime", _Timestamp),
        ("stx_ctime", _Timestamp),
        ("stx_mtime", _Timestamp),
        ("rest", ctypes.c_uint8 * 128),
    ]


def _load_statx():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.statx
    except (OSError, AttributeError):  # not glibc >= 2.28 (or not Linux): inode numbers only
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_Statx)]
    function.restype = ctypes.c_int
    return function


_statx = _load_statx()


@dataclass(frozen=True)
class FileIdentity:
    inode: int
    birth_ns: Optional[int]  # None where the filesystem records no birth time (NFS, some FUSE)

    def same_file_as(self, other: "FileIdentity") -> Optional[bool]:
        """True: the same file; False: another one; None: the same inode number, and no birth
        times to tell a file kept from a new one that reused the number."""
        if self.inode != other.inode:
            return False
        if self.birth_ns is None or other.birth_ns is None:
            return None
        return self.birth_ns == other.birth_ns


def file_identity(path: Path) -> Optional[FileIdentity]:
    """The identity of the file at `path` (links followed), None when there is none."""
    if _statx is None:
        try:
            return FileIdentity(os.stat(path).st_ino, None)
        except FileNotFoundError:
            return None
    buffer = _Statx()
    if _statx(_AT_FDCWD, os.fsencode(str(path)), 0, _STATX_INO | _STATX_BTIME, ctypes.byref(buffer)) != 0:
        error = ctypes.get_errno()
        if error == 2:  # ENOENT
            return None
        raise OSError(error, os.strerror(error), str(path))
    birth = None
    if buffer.stx_mask & _STATX_BTIME:
        birth = buffer.stx_btime.tv_sec * 1_000_000_000 + buffer.stx_btime.tv_nsec
    return FileIdentity(buffer.stx_ino, birth)
