"""Human labels: what a person decided on the review page, kept in the store.

A human label is keyed like the answer it judges (the request key), so every place that
finds a teacher's answer for a row finds the person's decision the same way: exports
prefer it over the teacher's label and `labeler eval --gold human` scores against it.
Each decision is its own committed transaction: closing the page or killing the server
loses nothing that was decided.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from labeler.store import Store
from labeler.store_access import StoreAccess

LABEL_SOURCES = ("teacher", "human")


@dataclass(frozen=True, slots=True)
class HumanLabel:
    key: str
    label: str
    teacher_label: str | None
    reviewer: str
    decided_at: float
    row_id: str | None = None
    task: str | None = None


def record_label(
    store: Store,
    key: str,
    label: str,
    *,
    reviewer: str,
    teacher_label: str | None = None,
    row_id: str | None = None,
    task: str | None = None,
) -> HumanLabel:
    """Commit one decision (a later decision on the same row replaces it)."""
    decided = HumanLabel(key, label, teacher_label, reviewer, time.time(), row_id, task)
    store.execute_write(
        lambda db: db.execute(
            "INSERT OR REPLACE INTO human_labels VALUES (?,?,?,?,?,?,?)",
            (
                decided.key,
                decided.label,
                decided.teacher_label,
                decided.reviewer,
                decided.decided_at,
                decided.row_id,
                decided.task,
            ),
        )
    )
    return decided


def remove_label(store: Store, key: str) -> None:
    """Take a decision back (the review page's undo)."""
    store.execute_write(lambda db: db.execute("DELETE FROM human_labels WHERE key = ?", (key,)))


def any_human_labels(store: Store | StoreAccess) -> bool:
    """One cheap probe, so a store nobody reviewed costs an export no query per chunk."""
    return store.execute_read(
        lambda db: db.execute("SELECT 1 FROM human_labels LIMIT 1").fetchone() is not None
    )


def human_labels(store: Store | StoreAccess, keys: Sequence[str]) -> dict[str, HumanLabel]:
    """The decisions for these keys (one query per 500 keys); keys without one are absent."""

    def read(db: sqlite3.Connection) -> dict[str, HumanLabel]:
        out: dict[str, HumanLabel] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in db.execute(
                "SELECT key, label, teacher_label, reviewer, decided_at, row_id, task"
                f" FROM human_labels WHERE key IN ({marks})",
                chunk,
            ):
                out[row[0]] = HumanLabel(*row)
        return out

    return store.execute_read(read)
