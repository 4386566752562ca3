"""Who holds a claim on shared work, and whether that holder is still alive.

Several processes (two `labeler run` on one store, or workers sharing it) must never pay
for the same request twice, so the store records which process has an item in flight:
an `Owner` is this process on this machine since its last boot, plus a random part so
that two labelers inside one process are different owners too. A claim of an owner
that is provably gone (same machine and boot, its PID no longer running) is taken over
at once; one on another machine is trusted until its lease runs out.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Owner:
    """One holder of claims: `id` is unique; host, boot and pid say where it runs."""

    id: str
    host: str
    boot: str
    pid: int

    @classmethod
    def current(cls) -> Owner:
        """A new owner for this process (each call a distinct one)."""
        host, boot, pid = socket.gethostname(), boot_id(), os.getpid()
        return cls(f"{host}:{pid}:{secrets.token_hex(4)}", host, boot, pid)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def gone(host: str, boot: str, pid: int) -> bool:
    """Whether the process that wrote (host, boot, pid) has surely ended: only knowable
    on this machine (a reboot ends every process of the boot before it)."""
    if host != socket.gethostname():
        return False
    if boot and boot_id() and boot != boot_id():
        return True
    return not alive(pid)


def alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, killed but not reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


@cache
def boot_id() -> str:
    """This boot's identity (Linux), or "" where the system does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
