"""Putting a finished export in place of the old one with no instant where neither is there.

A trainer, a notebook or a cron job may open `--out` at any moment, and a kill -9 may land
at any moment. Two renames (old aside, new in) leave a gap between them in which `--out`
does not exist, and a crash in that gap leaves no export at all. So the new folder and the
old one trade names in one system call: `renameat2(RENAME_EXCHANGE)` on Linux,
`renamex_np(RENAME_SWAP)` on macOS. `--out` stays a plain folder (not a link), so copying,
`du`, `rm -r` and `load_from_disk` all see what they expect, and an export written by an
earlier release is replaced the same way.

Where the file system has no such call (some network file systems, older ZFS), the two
renames are the fallback; a kill in their gap leaves the old export aside under a name the
next export of the same folder recognises and puts back before it does anything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

from labeler import owner

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h
# What a kernel or file system says when it has no atomic exchange: the caller falls back.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def exchange(a: Path, b: Path) -> bool:
    """Swap the names of two existing paths in one step; False where this system or file
    system cannot (nothing was changed then)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        call = libc.renameat2
        call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        done = call(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        call = libc.renamex_np
        call.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        done = call(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(b))


def staging(out: Path, role: str) -> Path:
    """This process's folder beside `out` for one role (`tmp`: the export being written,
    `work`: scratch files): hidden, and named after its process so that what a killed
    export left is recognised and removed by the next one."""
    return out.parent / f".{out.name}.{role}-{os.getpid()}"


def swap_in(new: Path, out: Path) -> None:
    """Put the folder `new` at `out`, replacing what is there; `out` holds the old folder
    or the new one at every instant. The old one is removed afterwards."""
    try:
        os.rename(new, out)  # nothing there yet (or an empty folder): one rename
        _fsync_dir(out.parent)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if exchange(new, out):  # `new` now names the old export
        _fsync_dir(out.parent)
        shutil.rmtree(new, ignore_errors=True)
        return
    old = staging(out, "old")
    os.replace(out, old)
    os.replace(new, out)
    _fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted(out: Path) -> None:
    """A kill between the fallback's two renames left the last good export aside: put it
    back (the newest, if several runs died there)."""
    if os.path.lexists(out) or not out.parent.is_dir():
        return
    olds = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], out)


def remove_dead_staging(out: Path) -> None:
    """A kill -9 mid-export leaves its staging folders (a whole dataset each, or the old
    export it had just swapped out) beside `out`: remove those whose process is gone,
    never those of an export still running."""
    if not out.parent.is_dir():
        return
    for role in ("tmp", "work", "old"):
        for stale in out.parent.glob(f".{out.name}.{role}-*"):
            pid = stale.name.rpartition("-")[2]
            if pid.isdigit() and int(pid) != os.getpid() and not owner.alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """The rename reaches the disk with the folder's entry, not at the next flush."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["exchange", "recover_interrupted", "remove_dead_staging", "staging", "swap_in"]
