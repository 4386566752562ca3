"""Claims: which process is requesting which item, so that none is paid for twice.

Before sending, a run claims its cache misses in the store, one transaction per chunk
in the same worker-thread hop as the chunk's lookups; a key another live owner holds is
not granted, and the run waits for that owner's answer instead of asking again. Storing
an answer or a failure drops its claim in the same transaction (store.py), so a waiting
process finds the answer the moment the claim is gone. A claim names its owner
(labeler/owner.py) and carries a lease that the owner renews while it runs: a claim
whose owner is provably dead (same machine, PID gone) is taken over at once, one whose
lease ran out (an owner on another machine that stopped renewing) at the next claim.

    claims = Claims(store, Owner.current(), lease_s=60)
    granted = claims.claim(keys)      # the keys this owner may send now
    claims.renew()                    # every lease/3 while it runs
    claims.release_all()              # at the end: what was claimed but not sent

The API is the base for several workers (processes, Ray actors) sharing one store: each
is an Owner, claims what it takes, and the others skip or wait for it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

import orjson

from labeler.owner import Owner, gone
from labeler.store import Store

LEASE_S = 60.0


class Claims:
    """One owner's claims on one store."""

    def __init__(self, store: Store, owner: Owner | None = None, lease_s: float = LEASE_S) -> None:
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self.store = store
        self.owner = owner or Owner.current()
        self.lease_s = lease_s
        self.taken_over = 0  # claims of dead or expired owners this owner took

    def claim(self, keys: Sequence[str], *, fresh_since: float | None = None) -> set[str]:
        """Claim `keys` for this owner, in one transaction; return those granted.

        Not granted: keys a live owner holds, and keys that already have an answer (stored
        since the caller looked, by another process; with `fresh_since`, only answers
        created at or after it count). A claim of a dead owner, or one whose lease ran
        out, is taken over.
        """
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        owner, now = self.owner, time.time()
        row = (owner.id, owner.host, owner.boot, owner.pid, now + self.lease_s)
        # The keys go in as one JSON array that SQLite unpacks (json_each): one statement
        # per step instead of one per key, and no IN (...) lists to build and chunk.
        listed = orjson.dumps(unique).decode()

        def write(db: sqlite3.Connection) -> set[str]:
            db.execute(
                "INSERT INTO claims (key, owner, host, boot, pid, expires_at)"
                " SELECT value, ?, ?, ?, ?, ? FROM json_each(?) WHERE true"
                " ON CONFLICT(key) DO NOTHING",
                (*row, listed),
            )
            refused: set[str] = set()
            takeover: list[str] = []
            dead: dict[tuple[str, str, int], bool] = {}  # one liveness check per owner
            for key, host, boot, pid, until in db.execute(
                "SELECT key, host, boot, pid, expires_at FROM claims"
                " WHERE key IN (SELECT value FROM json_each(?)) AND owner != ?",
                (listed, owner.id),
            ):
                if (host, boot, pid) not in dead:
                    dead[host, boot, pid] = gone(host, boot, pid)
                if until < now or dead[host, boot, pid]:
                    takeover.append(key)
                else:
                    refused.add(key)
            if takeover:
                db.executemany(
                    "UPDATE claims SET owner=?, host=?, boot=?, pid=?, expires_at=? WHERE key=?",
                    [(*row, k) for k in takeover],
                )
                self.taken_over += len(takeover)
            granted = [k for k in unique if k not in refused] if refused else unique
            # Answered since the caller looked (by another process): not to be sent.
            answered = [
                r[0]
                for r in db.execute(
                    "SELECT key FROM responses WHERE key IN (SELECT value FROM json_each(?))"
                    " AND created_at >= ?",
                    (
                        orjson.dumps(granted).decode() if refused else listed,
                        fresh_since if fresh_since is not None else float("-inf"),
                    ),
                )
            ]
            if answered:
                db.executemany(
                    "DELETE FROM claims WHERE key = ? AND owner = ?", [(k, owner.id) for k in answered]
                )
            return set(granted).difference(answered)

        # A claim is a lease: losing one in a power cut is harmless, so it costs no fsync.
        return self.store.execute_write(write, durable=False)

    def release(self, keys: Sequence[str]) -> None:
        """Give up claims on `keys` (sent nothing after all): others may claim them now."""
        if keys:
            self.store.execute_write(
                lambda db: db.executemany(
                    "DELETE FROM claims WHERE key = ? AND owner = ?", [(k, self.owner.id) for k in keys]
                )
            )

    def release_all(self) -> None:
        """Give up every claim of this owner (at the end of a run)."""
        self.store.execute_write(
            lambda db: db.execute("DELETE FROM claims WHERE owner = ?", (self.owner.id,))
        )

    def renew(self) -> None:
        """Extend the lease of every claim this owner holds (one statement)."""
        until = time.time() + self.lease_s
        self.store.execute_write(
            lambda db: db.execute("UPDATE claims SET expires_at = ? WHERE owner = ?", (until, self.owner.id))
        )

    def held(self) -> set[str]:
        """The keys this owner holds (for tests and reports)."""
        return self.store.execute_read(
            lambda db: {r[0] for r in db.execute("SELECT key FROM claims WHERE owner = ?", (self.owner.id,))}
        )
