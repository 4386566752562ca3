"""Merge stores by key: the shards of a job that ran on several machines, into one.

A SQLite store serves the processes of one machine (its locks and its WAL need one host's
shared memory; on a network file system they are not safe). A job that runs on several
machines (Ray actors on many nodes) gives each node a store of its own on local disk, and
the shards are merged afterwards:

    labeler merge-stores labels.sqlite node1.sqlite node2.sqlite

A key is a request's hash (task, template, teacher, parameters), so the same key in two
shards is the same question: an answer is copied where the destination has none, the newer
answer wins where both have one (a --max-age relabel), a stored failure is copied only for
a key nobody answered, and a key answered anywhere loses its failure. Merging is
idempotent: merging a shard twice changes nothing. Claims and run logs stay behind (they
describe processes on the shard's machine); people's review decisions are copied where
the destination has none for the key.

A shard is only ever read: it may be a node's only copy of what it paid for. One that an
older release wrote (an older schema) is read through a migrated copy beside the
destination, removed afterwards, so the shard stays as it was and that release still
opens it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labeler.errors import StoreError
from labeler.store import (
    SCHEMA_VERSION,
    Store,
    answer_problem,
    check_is_store,
    readonly_uri,
    schema_version_of,
)

CHUNK = 2000


@dataclass
class MergeReport:
    """What each shard added to the destination."""

    answers: dict[str, int] = field(default_factory=dict)  # shard -> answers copied or newer
    failures: dict[str, int] = field(default_factory=dict)  # shard -> failures copied
    human_labels: dict[str, int] = field(default_factory=dict)
    # shard -> answers left behind: unreadable, or breaking the answer checks
    skipped: dict[str, int] = field(default_factory=dict)
    first_skipped: dict[str, str] = field(default_factory=dict)  # shard -> "key: problem"


def merge_stores(dest: str | Path, sources: Sequence[str | Path]) -> MergeReport:
    """Merge every store in `sources` into `dest` (created if missing), by key."""
    report = MergeReport()
    with Store(dest) as target:
        for source in sources:
            path = Path(source)
            if path.resolve() == Path(dest).resolve():
                raise StoreError(f"{path}: is the destination itself")
            name = str(path)
            with _readable(path, Path(dest)) as readable:
                report.answers[name] = _copy(target, readable, name, "responses", report)
                report.failures[name] = _copy(target, readable, name, "failures")
                report.human_labels[name] = _copy(target, readable, name, "human_labels")
    return report


@contextlib.contextmanager
def _readable(path: Path, dest: Path) -> Iterator[Path]:
    """`path` itself when it has this release's schema; for a store an older release
    wrote, a copy of it beside `dest` (where the merged rows go anyway, so the room is
    there), migrated, and removed when done. Migrating the shard in place would write to
    a file the user gave only to be read, and the older release could not open it again."""
    if not _older(path):
        with Store(path, readonly=True):  # a missing, damaged or newer store: one line
            pass
        yield path
        return
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.merging-", suffix=".sqlite", dir=dest.parent)
    os.close(fd)
    copy = Path(name)
    try:
        src = sqlite3.connect(readonly_uri(path), uri=True)
        try:
            with contextlib.closing(sqlite3.connect(copy)) as out:
                src.backup(out)  # a consistent snapshot, its WAL included
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot read the store to merge it: {exc}") from exc
        finally:
            src.close()
        with Store(copy):  # migrates the copy
            pass
        yield copy
    finally:
        for leftover in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
            leftover.unlink(missing_ok=True)


def _older(path: Path) -> bool:
    """Whether `path` is a labeler store with an older schema than this release's. A
    foreign file is refused here (one line); a missing, empty or damaged one is left to
    the read-only open, which says what it is."""
    if not path.is_file():
        return False
    check_is_store(path)
    try:
        return 0 < schema_version_of(path) < SCHEMA_VERSION
    except sqlite3.Error:
        return False


def _answers(columns: list[str]) -> str:
    """An answer where there is none, or over an older one; params: the row."""
    updates = ", ".join(f"{c}=excluded.{c}" for c in columns if c != "key")
    return (
        f"INSERT INTO responses ({', '.join(columns)}) VALUES ({_marks(columns)})"
        f" ON CONFLICT(key) DO UPDATE SET {updates}"
        " WHERE excluded.created_at > responses.created_at"
    )


def _failures(columns: list[str]) -> str:
    """A failure for a key nobody answered and nobody failed; params: the row, then its key."""
    return (
        f"INSERT INTO failures ({', '.join(columns)}) SELECT {_marks(columns)}"
        " WHERE NOT EXISTS (SELECT 1 FROM responses WHERE key = ?)"
        " ON CONFLICT(key) DO NOTHING"
    )


def _human_labels(columns: list[str]) -> str:
    """A person's decision where the destination has none for the key; params: the row."""
    return (
        f"INSERT INTO human_labels ({', '.join(columns)}) VALUES ({_marks(columns)})"
        " ON CONFLICT(key) DO NOTHING"
    )


def _marks(columns: list[str]) -> str:
    return ",".join("?" * len(columns))


def _copy(target: Store, source: Path, name: str, table: str, report: MergeReport | None = None) -> int:
    """Copy `table`'s rows (the columns both stores have) chunk by chunk; rows written.
    Answers are checked first (`store.answer_problem`): one that no command could read
    back is left behind and counted in `report`, so a merge never spreads a bad row.
    `name` is the shard as the user gave it (`source` may be its migrated copy)."""
    statement = {"responses": _answers, "failures": _failures, "human_labels": _human_labels}[table]
    src = sqlite3.connect(readonly_uri(source), uri=True)
    try:
        if not _has_table(src, table) or not target.execute_read(lambda db: _has_table(db, table)):
            return 0
        mine = target.execute_read(lambda db: _columns(db, table))
        columns = [c for c in _columns(src, table) if c in mine]
        at = columns.index("key")
        sql = statement(columns)
        written = 0
        cursor = src.execute(f"SELECT {', '.join(columns)} FROM {table}")
        while rows := cursor.fetchmany(CHUNK):
            if table == "responses" and report is not None:
                rows = _usable(rows, columns, name, report)
                if not rows:
                    continue
            params = [(*r, r[at]) for r in rows] if table == "failures" else rows

            def write(
                db: sqlite3.Connection,
                rows: list[tuple[object, ...]] = rows,
                params: list[tuple[object, ...]] = params,
            ) -> int:
                before = db.total_changes
                db.executemany(sql, params)
                n = db.total_changes - before
                if table == "responses":  # answered now: its failure is history
                    db.executemany("DELETE FROM failures WHERE key = ?", [(r[at],) for r in rows])
                return n

            written += target.execute_write(write)
        return written
    except sqlite3.Error as exc:
        raise StoreError(f"{name}: cannot read the store to merge it: {exc}") from exc
    finally:
        src.close()


def _usable(rows: list[Any], columns: list[str], name: str, report: MergeReport) -> list[Any]:
    """The rows that pass the answer checks; the others counted (and the first named)."""
    kept = []
    for row in rows:
        problem = answer_problem(dict(zip(columns, row, strict=True)))
        if problem is None:
            kept.append(row)
            continue
        report.skipped[name] = report.skipped.get(name, 0) + 1
        key = row[columns.index("key")]
        report.first_skipped.setdefault(name, f"{str(key)[:20]}: {problem}")
    return kept


def _has_table(db: sqlite3.Connection, table: str) -> bool:
    return (
        db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
        is not None
    )


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


__all__ = ["MergeReport", "merge_stores"]
