"""What a run needs of a store, as a seam: the SQLite `Store` on one machine, or a
fleet's store reached through another process (labeler/ray/fleet_store.py).

A `Labeler` plans, claims and commits through these two protocols only, so the same
plan → claim → send → commit path holds whether the SQLite file is opened here or owned
by one process that serves many machines. Every method works on many keys at once: one
call per chunk or per group commit, whatever is on the other side.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from labeler.completion import Completion
from labeler.owner import Owner
from labeler.store import Failure

T = TypeVar("T")


class StoreAccess(Protocol):
    """The reads and writes of a run (`Store` has them all)."""

    def known(self, keys: Sequence[str]) -> set[str]: ...

    def get_many(
        self, keys: Sequence[str], *, unusable: dict[str, str] | None = None
    ) -> dict[str, Completion]: ...

    def created_at(self, keys: Sequence[str]) -> dict[str, float]: ...

    def failures_for(self, keys: Sequence[str]) -> dict[str, Failure]: ...

    def put_many(self, items: Iterable[tuple[str, Completion, float | None]]) -> None: ...

    def record_failures(
        self,
        items: Iterable[tuple[str, str, str, int | None, int]],
        *,
        bodies: Mapping[str, bytes] | None = None,
    ) -> None: ...

    # What modules with tables of their own run (the teacher's refused parameters, the
    # verdicts); `durable=False`: state cheap to make again (labeler/store.py).
    def execute_read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    def execute_write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T: ...

    def start_run(self, task: str, teacher: str) -> int: ...

    def finish_run(self, run_id: int, outcome: str, summary: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ClaimsAccess(Protocol):
    """One owner's claims (labeler/claims.py's `Claims` is the one-machine kind)."""

    owner: Owner
    lease_s: float

    def claim(self, keys: Sequence[str], *, fresh_since: float | None = None) -> set[str]: ...

    def release(self, keys: Sequence[str]) -> None: ...

    def release_all(self) -> None: ...

    def renew(self) -> None: ...


__all__ = ["ClaimsAccess", "StoreAccess"]
