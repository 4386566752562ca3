"""The batch journal: the `batches` and `batch_items` tables of the store (migration m002).

A batch is written here, with every request key it carries, *before* anything is sent,
and each later step (input file uploaded, batch created, results stored) is written
before the next one starts. So at any crash the journal says what may exist at the
provider, and the next run can resume it: poll a batch whose id is known, look up by
metadata (or by size and time) one whose create call may have landed, or release the
keys of one that was never created. A key held by a live batch is never submitted again.

Local states of a batch: ``preparing`` (journaled, nothing sent) → ``uploaded`` (OpenAI's
input file exists) → ``submitted`` (the provider's id is known) → ``collected`` (results
stored; terminal), or ``abandoned`` (it never reached the provider; terminal). Item states:
``pending`` → ``done`` | ``failed`` | ``unfinished`` (never attempted: sent again later).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from labeler.batch.base import RemoteBatch
from labeler.redact import redact
from labeler.store import Store

PREPARING, UPLOADED, SUBMITTED, COLLECTED, ABANDONED = (
    "preparing",
    "uploaded",
    "submitted",
    "collected",
    "abandoned",
)
LIVE = (PREPARING, UPLOADED, SUBMITTED)
_COLUMNS = (
    "id, provider, remote_id, run_tag, teacher, base_url, endpoint, input_file_id, state,"
    " remote_status, n_items, n_bytes, counts, error, cost_usd, created_at, submitted_at,"
    " updated_at, collected_at, owner"
)


@dataclass(slots=True)
class JournalBatch:
    """One row of `batches`."""

    id: str
    provider: str
    remote_id: str | None
    run_tag: str
    teacher: str
    base_url: str | None
    endpoint: str | None
    input_file_id: str | None
    state: str
    remote_status: str | None
    n_items: int
    n_bytes: int
    counts: dict[str, int] | None
    error: str | None
    cost_usd: float | None
    created_at: float
    submitted_at: float | None
    updated_at: float
    collected_at: float | None
    owner: str | None

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def model(self) -> str:
        return self.teacher.partition(":")[2]

    @property
    def shown_id(self) -> str:
        """The provider's id once known, else the local one."""
        return self.remote_id or self.id


def _row(r: Sequence[Any]) -> JournalBatch:
    values = list(r)
    values[12] = orjson.loads(values[12]) if values[12] else None
    return JournalBatch(*values)


# -- writes ------------------------------------------------------------------------------


def prepare(
    store: Store,
    *,
    uid: str,
    provider: str,
    run_tag: str,
    teacher: str,
    base_url: str,
    endpoint: str,
    keys: Sequence[str],
    n_requests: int,
    n_bytes: int,
    owner: str,
) -> None:
    """Journal a batch and its keys in one transaction, before anything is sent.
    `n_requests` is what the provider will count (a sampling teacher sends a key several
    times), so that a batch whose id was lost can be recognised by its size."""
    now = time.time()

    def write(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO batches (id, provider, run_tag, teacher, base_url, endpoint, state,"
            " n_items, n_bytes, created_at, updated_at, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                uid,
                provider,
                run_tag,
                teacher,
                base_url,
                endpoint,
                PREPARING,
                n_requests,
                n_bytes,
                now,
                now,
                owner,
            ),
        )
        db.executemany("INSERT INTO batch_items (batch_id, key) VALUES (?, ?)", [(uid, k) for k in keys])

    store.execute_write(write)


def set_uploaded(store: Store, uid: str, file_id: str) -> None:
    store.execute_write(
        lambda db: db.execute(
            "UPDATE batches SET input_file_id=?, state=?, updated_at=? WHERE id=?",
            (file_id, UPLOADED, time.time(), uid),
        )
    )


def set_submitted(store: Store, uid: str, remote: RemoteBatch, *, note: str | None = None) -> None:
    now = time.time()
    store.execute_write(
        lambda db: db.execute(
            "UPDATE batches SET remote_id=?, state=?, remote_status=?, counts=?, submitted_at=?,"
            " updated_at=?, error=coalesce(?, error) WHERE id=?",
            (
                remote.id,
                SUBMITTED,
                remote.status,
                orjson.dumps(remote.counts()).decode(),
                remote.created_at or now,
                now,
                _said(note),
                uid,
            ),
        )
    )


def update_remote(store: Store, uid: str, remote: RemoteBatch) -> None:
    store.execute_write(
        lambda db: db.execute(
            "UPDATE batches SET remote_status=?, counts=?, error=coalesce(?, error), updated_at=? WHERE id=?",
            (remote.status, orjson.dumps(remote.counts()).decode(), _said(remote.error), time.time(), uid),
        )
    )


def abandon(store: Store, uid: str, reason: str) -> None:
    """The batch never reached the provider: release its keys for a later batch."""

    def write(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE batches SET state=?, error=?, updated_at=? WHERE id=?",
            (ABANDONED, _said(reason), time.time(), uid),
        )
        db.execute("DELETE FROM batch_items WHERE batch_id=?", (uid,))

    store.execute_write(write)


def mark_items(store: Store, uid: str, states: Iterable[tuple[str, str]]) -> None:
    """(state, key) pairs of one batch's items."""
    rows = [(state, uid, key) for state, key in states]
    if rows:
        store.execute_write(
            lambda db: db.executemany("UPDATE batch_items SET state=? WHERE batch_id=? AND key=?", rows)
        )


def set_collected(store: Store, uid: str, remote: RemoteBatch, cost_usd: float | None) -> None:
    """Results are stored: the batch holds its keys no more (unfinished ones are free)."""
    now = time.time()
    store.execute_write(
        lambda db: db.execute(
            "UPDATE batches SET state=?, remote_status=?, counts=?, error=coalesce(?, error),"
            " cost_usd=?, collected_at=?, updated_at=? WHERE id=?",
            (
                COLLECTED,
                remote.status,
                orjson.dumps(remote.counts()).decode(),
                _said(remote.error),
                cost_usd,
                now,
                now,
                uid,
            ),
        )
    )


def _said(text: str | None) -> str | None:
    """A provider's or runner's message as stored: never with an API key in it."""
    return redact(text) if text else text


# -- reads -------------------------------------------------------------------------------


def unresolved(store: Store, provider: str, base_url: str) -> list[JournalBatch]:
    """Batches journaled for this endpoint whose provider id is not known (yet)."""
    return store.execute_read(
        lambda db: [
            _row(r)
            for r in db.execute(
                f"SELECT {_COLUMNS} FROM batches WHERE state IN (?, ?) AND provider=? AND base_url=?"
                " ORDER BY created_at",
                (PREPARING, UPLOADED, provider, base_url),
            )
        ]
    )


def submitted(store: Store, provider: str, base_url: str) -> list[JournalBatch]:
    """Live batches at this endpoint whose provider id is known: the ones to poll."""
    return store.execute_read(
        lambda db: [
            _row(r)
            for r in db.execute(
                f"SELECT {_COLUMNS} FROM batches WHERE state=? AND provider=? AND base_url=?"
                " ORDER BY created_at",
                (SUBMITTED, provider, base_url),
            )
        ]
    )


def find(store: Store, ident: str) -> JournalBatch | None:
    """A batch by the provider's id or the local one."""
    rows = store.execute_read(
        lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM batches WHERE remote_id=? OR id=? LIMIT 1", (ident, ident)
        ).fetchall()
    )
    return _row(rows[0]) if rows else None


def listing(store: Store, *, live_only: bool = False, limit: int = 200) -> list[JournalBatch]:
    where = f"WHERE state IN ({','.join('?' * len(LIVE))})" if live_only else ""
    params: tuple[Any, ...] = (*LIVE, limit) if live_only else (limit,)
    return store.execute_read(
        lambda db: [
            _row(r)
            for r in db.execute(
                f"SELECT {_COLUMNS} FROM batches {where} ORDER BY created_at DESC LIMIT ?", params
            )
        ]
    )


def remote_ids(store: Store, provider: str) -> set[str]:
    return store.execute_read(
        lambda db: {
            r[0]
            for r in db.execute(
                "SELECT remote_id FROM batches WHERE provider=? AND remote_id IS NOT NULL", (provider,)
            )
        }
    )


def held(store: Store, keys: Sequence[str]) -> dict[str, str]:
    """Which of these keys a live batch holds, and which batch (one query per 500 keys)."""
    out: dict[str, str] = {}

    def read(db: sqlite3.Connection) -> None:
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(
                db.execute(
                    "SELECT i.key, i.batch_id FROM batch_items i JOIN batches b ON b.id = i.batch_id"
                    f" WHERE i.key IN ({marks}) AND i.state = 'pending'"
                    f" AND b.state IN ({','.join('?' * len(LIVE))})",
                    (*chunk, *LIVE),
                ).fetchall()
            )

    store.execute_read(read)
    return out


def item_states(store: Store, uid: str) -> dict[str, str]:
    return store.execute_read(
        lambda db: dict(db.execute("SELECT key, state FROM batch_items WHERE batch_id=?", (uid,)).fetchall())
    )
