"""The verdicts table (created by the store's migration 7): one verdict per stored answer
sample and verifier key, so a rerun reads what was checked and a changed verifier (a new
key) checks again from the stored answers, never from the teacher."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence

from labeler.store import Store
from labeler.store_access import StoreAccess
from labeler.verify.kinds import Verdict

Slot = tuple[str, int, str]  # (response key, sample index, verifier key)


def read(store: Store | StoreAccess, slots: Sequence[Slot]) -> dict[Slot, Verdict]:
    """The stored verdicts of these slots (those checked before)."""

    def query(db: sqlite3.Connection) -> dict[Slot, Verdict]:
        out: dict[Slot, Verdict] = {}
        by_pair: dict[tuple[str, str], list[int]] = {}
        for key, sample, verifier in slots:
            by_pair.setdefault((key, verifier), []).append(sample)
        pairs = list(by_pair)
        for i in range(0, len(pairs), 400):
            chunk = pairs[i : i + 400]
            where = " OR ".join("(key = ? AND verifier = ?)" for _ in chunk)
            params = [x for pair in chunk for x in pair]
            for key, sample, verifier, status, score, detail in db.execute(
                f"SELECT key, sample, verifier, status, score, detail FROM verdicts WHERE {where}", params
            ):
                out[(key, sample, verifier)] = Verdict(status, score, detail)
        return out

    return store.execute_read(query)


def write(store: Store | StoreAccess, verdicts: Iterable[tuple[Slot, Verdict]]) -> None:
    """Commit verdicts in one transaction (a verdict is cheap to make again, so no fsync)."""
    now = time.time()
    rows = [(k, s, v, d.status, d.score, d.detail, now) for (k, s, v), d in verdicts]
    if not rows:
        return

    def insert(db: sqlite3.Connection) -> None:  # returns nothing: a store actor sends it back
        db.executemany(
            "INSERT OR REPLACE INTO verdicts (key, sample, verifier, status, score, detail,"
            " checked_at) VALUES (?,?,?,?,?,?,?)",
            rows,
        )

    store.execute_write(insert, durable=False)
