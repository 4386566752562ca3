"""One SQLite file that is both the response cache and the run journal.

Every paid response is committed here before anything parses or exports it, so a crash,
kill -9 or teacher outage loses nothing that was paid for, and a rerun of the same work
sends no request (the key is a hash of the full canonical request, see request.py).

WAL journal with synchronous=FULL: a committed response survives a power cut; commits are
batched by the orchestrator so the fsync costs little per row. Schema changes are an
ordered list of migrations recorded in ``meta``; opening an older store upgrades it, a
newer one is refused with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from labeler.answer_checks import (
    KEPT_BODY_BYTES,
    MAX_COUNT,
    counts_problem,
    samples_problem,
    token_rows_problem,
)
from labeler.completion import Completion, stored_completion
from labeler.errors import StoreError
from labeler.redact import configured_keys, redact, redact_known

T = TypeVar("T")


def _m001_initial(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE responses (
            key TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            model TEXT,
            text TEXT NOT NULL,
            tokens BLOB,
            samples BLOB,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            cached_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            finish_reason TEXT,
            latency_ms INTEGER,
            cost_usd REAL,
            source TEXT NOT NULL DEFAULT 'live'
        ) WITHOUT ROWID;
        CREATE TABLE failures (
            key TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            message TEXT,
            status INTEGER,
            attempts INTEGER NOT NULL DEFAULT 1,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            finished_at REAL,
            task TEXT,
            teacher TEXT,
            outcome TEXT,
            summary TEXT
        );
        """,
    )


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run statements one by one: executescript would commit the migration's transaction."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def _m002_batches(db: sqlite3.Connection) -> None:
    """The batch journal (labeler/batch/journal.py owns the queries): a batch is written
    here before it is submitted, so a crash at any step can be resumed or adopted."""
    _script(
        db,
        """
        CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            remote_id TEXT,
            run_tag TEXT NOT NULL,
            teacher TEXT NOT NULL,
            base_url TEXT,
            endpoint TEXT,
            input_file_id TEXT,
            state TEXT NOT NULL,
            remote_status TEXT,
            n_items INTEGER NOT NULL,
            n_bytes INTEGER NOT NULL DEFAULT 0,
            counts TEXT,
            error TEXT,
            cost_usd REAL,
            created_at REAL NOT NULL,
            submitted_at REAL,
            updated_at REAL NOT NULL,
            collected_at REAL,
            owner TEXT
        );
        CREATE INDEX batches_state ON batches (state);
        CREATE UNIQUE INDEX batches_remote ON batches (provider, remote_id);
        CREATE TABLE batch_items (
            batch_id TEXT NOT NULL REFERENCES batches (id),
            key TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            PRIMARY KEY (batch_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX batch_items_key ON batch_items (key);
        """,
    )


def _m003_claims(db: sqlite3.Connection) -> None:
    """Claims on items being requested (labeler/claims.py owns the queries), so that two
    processes on one store never pay for the same request twice."""
    _script(
        db,
        """
        CREATE TABLE claims (
            key TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            host TEXT NOT NULL,
            boot TEXT NOT NULL,
            pid INTEGER NOT NULL,
            expires_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX claims_owner ON claims (owner);
        """,
    )


def _m004_human_labels(db: sqlite3.Connection) -> None:
    """Labels a person gave on the review page (labeler/human.py owns the queries), keyed
    like the answers they judge, with who decided and when; exports prefer them."""
    _script(
        db,
        """
        CREATE TABLE IF NOT EXISTS human_labels (
            key TEXT PRIMARY KEY,
            label TEXT NOT NULL,
            teacher_label TEXT,
            reviewer TEXT NOT NULL,
            decided_at REAL NOT NULL,
            row_id TEXT,
            task TEXT
        ) WITHOUT ROWID;
        """,
    )


def _m005_reasoning(db: sqlite3.Connection) -> None:
    """A reasoning teacher's trace beside its answer: the thinking text, Anthropic's
    thinking blocks as they came (JSON: signatures and redacted data, which only the API
    can read back), and the reasoning tokens (a subset of completion_tokens). Older rows
    read NULL, NULL and 0: no trace. The partial index holds only rows with a trace, so
    asking whether a store has any costs one probe, however many answers it keeps."""
    _script(
        db,
        """
        ALTER TABLE responses ADD COLUMN reasoning TEXT;
        ALTER TABLE responses ADD COLUMN reasoning_blocks BLOB;
        ALTER TABLE responses ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX responses_reasoning ON responses (key)
            WHERE reasoning IS NOT NULL OR reasoning_blocks IS NOT NULL;
        """,
    )


def _m006_teacher_params(db: sqlite3.Connection) -> None:
    """What each teacher refused or took of the request parameters (labeler/teacher_params.py
    owns the queries), so that a run, an export and a refresh send what it takes from the
    first request on. `teacher` is the teacher's whole identity; provider and model are
    kept apart for `labeler forget-refusals --teacher`."""
    _script(
        db,
        """
        CREATE TABLE IF NOT EXISTS teacher_params (
            teacher TEXT NOT NULL,
            param TEXT NOT NULL,
            verdict TEXT NOT NULL,
            status INTEGER,
            message TEXT,
            learned_at REAL NOT NULL,
            provider TEXT,
            model TEXT,
            PRIMARY KEY (teacher, param)
        ) WITHOUT ROWID;
        """,
    )


def _m007_verdicts(db: sqlite3.Connection) -> None:
    """Verdicts of `--verify` on stored answers (labeler/verify/verdicts.py owns the
    queries): one per answer sample and verifier key (the spec's digest and the row
    values it compares with), so a changed verifier checks again from the stored answers
    and an unchanged one reads what it decided."""
    _script(
        db,
        """
        CREATE TABLE verdicts (
            key TEXT NOT NULL,
            sample INTEGER NOT NULL,
            verifier TEXT NOT NULL,
            status TEXT NOT NULL,
            score REAL,
            detail TEXT,
            checked_at REAL NOT NULL,
            PRIMARY KEY (key, verifier, sample)
        ) WITHOUT ROWID;
        """,
    )


def _m008_failure_bodies(db: sqlite3.Connection) -> None:
    """The raw body of an answer that failed its checks (malformed, not JSON), capped, kept
    beside its failure so that what the server sent can be inspected."""
    _script(
        db,
        """
        CREATE TABLE IF NOT EXISTS failure_bodies (
            key TEXT PRIMARY KEY,
            body BLOB NOT NULL,
            size INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m001_initial,
    _m002_batches,
    _m003_claims,
    _m004_human_labels,
    _m005_reasoning,
    _m006_teacher_params,
    _m007_verdicts,
    _m008_failure_bodies,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class Failure:
    key: str
    reason: str
    message: str
    status: int | None
    attempts: int


class Store:
    """Thread-safe handle on the store; writes are transactions of many rows."""

    def __init__(
        self, path: str | Path, *, readonly: bool = False, on_warning: Callable[[str], None] | None = None
    ) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # Stored answers left out as unusable (key -> problem), told once at close.
        self.unusable_rows: dict[str, str] = {}
        self._on_warning = on_warning
        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(f"{self.path}: no such store")
                check_is_store(self.path)
                self._db = sqlite3.connect(readonly_uri(self.path), uri=True, check_same_thread=False)
            else:
                check_is_store(self.path)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None, timeout=30.0
                )
            self._db.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                _enable_wal(self._db)
                self._db.execute("PRAGMA synchronous = FULL")
            self._migrate(readonly)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store: {_open_problem(self.path, exc)}") from exc
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the store: {exc}") from exc

    # -- schema ---------------------------------------------------------------------------

    def _migrate(self, readonly: bool) -> None:
        db = self._db
        version = _schema_version(db)
        if version == SCHEMA_VERSION:
            return
        if version < SCHEMA_VERSION and readonly:
            raise StoreError(f"{self.path}: store needs a migration but was opened read-only")
        if version < SCHEMA_VERSION:
            # Under the write lock, and read again there: two runs started at once on a new
            # store must not both create its tables.
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                version = _schema_version(db)
                for number in range(version, SCHEMA_VERSION):
                    MIGRATIONS[number](db)
                    db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                        (str(number + 1),),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {version} is newer than this labeler "
                f"understands ({SCHEMA_VERSION}); upgrade labeler to open it"
            )

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    # -- reads ----------------------------------------------------------------------------

    def known(self, keys: Sequence[str]) -> set[str]:
        """Which of these keys already have a stored response (one query per 500 keys)."""
        found: set[str] = set()
        with self._reading():
            for chunk in _chunks(keys, 500):
                marks = ",".join("?" * len(chunk))
                found.update(
                    r[0] for r in self._db.execute(f"SELECT key FROM responses WHERE key IN ({marks})", chunk)
                )
        return found

    def get_many(
        self, keys: Sequence[str], *, unusable: dict[str, str] | None = None
    ) -> dict[str, Completion]:
        """The stored answers of `keys`. A row that cannot be read or breaks the bounds of
        an answer (`answer_checks`: one stored by an older labeler, or merged in) is left
        out, its key and problem added to `unusable`, and counted for one warning when the
        store closes: nothing read back may stop a command."""
        out: dict[str, Completion] = {}
        with self._reading():
            for chunk in _chunks(keys, 500):
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    "SELECT key, text, tokens, samples, prompt_tokens, completion_tokens,"
                    " cached_tokens, cache_write_tokens, finish_reason, model, latency_ms,"
                    " reasoning_tokens, reasoning, reasoning_blocks"
                    f" FROM responses WHERE key IN ({marks})",
                    chunk,
                ):
                    completion = _completion(row)
                    if isinstance(completion, str):
                        self._unusable(row[0], completion, unusable)
                    else:
                        out[row[0]] = completion
        return out

    def _unusable(self, key: str, problem: str, into: dict[str, str] | None) -> None:
        if into is not None:
            into[key] = problem
        if key not in self.unusable_rows and len(self.unusable_rows) < 100_000:
            self.unusable_rows[key] = problem

    def get(self, key: str) -> Completion | None:
        return self.get_many([key]).get(key)

    def has_reasoning(self) -> bool:
        """Whether any stored answer carries a reasoning trace (one index probe)."""
        with self._reading():
            return (
                self._db.execute(
                    "SELECT 1 FROM responses WHERE reasoning IS NOT NULL OR reasoning_blocks IS NOT"
                    " NULL LIMIT 1"
                ).fetchone()
                is not None
            )

    def cost_of(self, keys: Sequence[str]) -> float:
        """What the stored answers of `keys` cost when they were paid for (USD; 0 where
        unpriced): a cascade's card reports each stage's spend from it."""
        total = 0.0
        with self._reading():
            for chunk in _chunks(list(dict.fromkeys(keys)), 500):
                marks = ",".join("?" * len(chunk))
                total += self._db.execute(
                    f"SELECT coalesce(sum(cost_usd), 0) FROM responses WHERE key IN ({marks})", chunk
                ).fetchone()[0]
        return total

    def unpriced(self, keys: Sequence[str]) -> int:
        """How many of the stored answers of `keys` have no cost (no price was known when
        they were paid for), so a total over them is not a silent zero."""
        n = 0
        with self._reading():
            for chunk in _chunks(list(dict.fromkeys(keys)), 500):
                marks = ",".join("?" * len(chunk))
                n += self._db.execute(
                    f"SELECT count(*) FROM responses WHERE key IN ({marks}) AND cost_usd IS NULL", chunk
                ).fetchone()[0]
        return n

    def failures_for(self, keys: Sequence[str]) -> dict[str, Failure]:
        out: dict[str, Failure] = {}
        with self._reading():
            for chunk in _chunks(keys, 500):
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    f"SELECT key, reason, message, status, attempts FROM failures WHERE key IN ({marks})",
                    chunk,
                ):
                    out[row[0]] = Failure(row[0], row[1], row[2] or "", row[3], row[4])
        return out

    def created_at(self, keys: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        with self._reading():
            for chunk in _chunks(keys, 500):
                marks = ",".join("?" * len(chunk))
                out.update(
                    self._db.execute(
                        f"SELECT key, created_at FROM responses WHERE key IN ({marks})", chunk
                    ).fetchall()
                )
        return out

    # -- writes ---------------------------------------------------------------------------

    def put_many(
        self, items: Iterable[tuple[str, Completion, float | None]], *, source: str = "live"
    ) -> None:
        """Commit responses in one transaction; a key's failure record is cleared with it."""
        now = time.time()
        keys = configured_keys()  # once per batch: the environment is read, not each answer
        rows = [
            (
                key,
                now,
                c.model,
                c.text,
                orjson.dumps(c.tokens_to_json()) if c.tokens is not None else None,
                orjson.dumps(c.samples) if c.samples is not None else None,
                c.usage.prompt_tokens,
                c.usage.completion_tokens,
                c.usage.cached_tokens,
                c.usage.cache_write_tokens,
                c.finish_reason,
                round(c.latency_s * 1000),
                cost,
                source,
                c.reasoning,
                orjson.dumps(c.reasoning_blocks) if c.reasoning_blocks is not None else None,
                c.usage.reasoning_tokens,
            )
            for key, c, cost in (_without_keys(item, keys) for item in items)
        ]
        if not rows:
            return

        def write(db: sqlite3.Connection) -> None:
            db.executemany(_PUT_RESPONSE, rows)
            # One cheap probe per transaction saves a lookup per row when nothing failed.
            if db.execute("SELECT 1 FROM failures LIMIT 1").fetchone() is not None:
                db.executemany("DELETE FROM failures WHERE key = ?", [(r[0],) for r in rows])
                db.executemany("DELETE FROM failure_bodies WHERE key = ?", [(r[0],) for r in rows])
            _release_claims(db, [r[0] for r in rows])

        self._write(write)

    def put(self, key: str, completion: Completion, cost: float | None = None) -> None:
        self.put_many([(key, completion, cost)])

    def record_failures(
        self,
        items: Iterable[tuple[str, str, str, int | None, int]],
        *,
        bodies: Mapping[str, bytes] | None = None,
    ) -> None:
        """(key, reason, message, status, attempts); attempts add up across runs. `bodies`
        holds the raw answer behind a failure, where there was one (capped here too)."""
        now = time.time()
        kept = [(k, b[:KEPT_BODY_BYTES], len(b)) for k, b in (bodies or {}).items()]
        # Messages are redacted where they are made; this second pass keeps a key out of the
        # store whatever path a message took.
        rows = [(k, r, redact(m or ""), s, a, now, now) for k, r, m, s, a in items]
        if not rows:
            return

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO failures VALUES (?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET"
                " reason=excluded.reason, message=excluded.message, status=excluded.status,"
                " attempts=failures.attempts+excluded.attempts, last_at=excluded.last_at",
                rows,
            )
            if kept:
                db.executemany("INSERT OR REPLACE INTO failure_bodies VALUES (?,?,?)", kept)
            _release_claims(db, [r[0] for r in rows])

        self._write(write)

    def start_run(self, task: str, teacher: str) -> int:
        with self._lock:
            cur = self._exec_write(
                "INSERT INTO runs (started_at, task, teacher) VALUES (?,?,?)",
                (time.time(), task, teacher),
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str, summary: dict[str, Any]) -> None:
        with self._lock:
            self._exec_write(
                "UPDATE runs SET finished_at=?, outcome=?, summary=? WHERE id=?",
                (time.time(), outcome, orjson.dumps(summary).decode(), run_id),
            )

    def execute_write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `fn` in one write transaction and return its result: for modules that own
        tables of their own (the batch journal, claims), so their SQL stays out of this file.

        ``durable=False`` commits without waiting for the disk: for state a power cut may
        lose harmlessly (a claim is a lease, and a reboot voids it anyway). The next durable
        commit writes it to disk with its own frames."""
        result: list[T] = []
        self._write(lambda db: result.append(fn(db)), durable=durable)
        return result[0]

    def execute_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` under the store's lock (reads need no transaction in WAL mode)."""
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{self.path}: cannot read the store: {_damage_hint(self.path, exc)}"
                ) from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """The store's lock, with SQLite's errors told as one line naming the file: a store
        damaged in the middle fails on the first lookup that touches the bad page."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{self.path}: cannot read the store: {_damage_hint(self.path, exc)}"
                ) from exc

    def _exec_write(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    def _write(self, fn: Callable[[sqlite3.Connection], Any], *, durable: bool = True) -> None:
        with self._lock:
            db = self._db
            try:
                if not durable:
                    db.execute("PRAGMA synchronous = NORMAL")
                try:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        fn(db)
                        db.execute("COMMIT")
                    except BaseException:
                        if db.in_transaction:
                            db.execute("ROLLBACK")
                        raise
                finally:
                    if not durable:  # under the same lock: no paid answer is ever unsynced
                        db.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc

    # -- reporting ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What `labeler stats` shows: counts by outcome, source and failure reason, tokens,
        cost (None when some answer had no price) and the last runs."""
        with self._reading():
            db = self._db
            n, p, c, cached, cost, priced = db.execute(
                "SELECT count(*), coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0),"
                " coalesce(sum(cached_tokens),0), coalesce(sum(cost_usd),0), count(cost_usd) FROM responses"
            ).fetchone()
            by_source = dict(db.execute("SELECT source, count(*) FROM responses GROUP BY source"))
            by_finish = dict(
                db.execute(
                    "SELECT coalesce(finish_reason,'?'), count(*) FROM responses GROUP BY finish_reason"
                )
            )
            reasons = dict(
                db.execute("SELECT reason, count(*) FROM failures GROUP BY reason ORDER BY 2 DESC")
            )
            runs = db.execute(
                "SELECT id, started_at, finished_at, task, teacher, outcome FROM runs"
                " ORDER BY id DESC LIMIT 10"
            ).fetchall()
        return {
            "store": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "responses": n,
            "failed": sum(reasons.values()),
            "failures_by_reason": reasons,
            "responses_by_source": by_source,
            "responses_by_finish_reason": by_finish,
            "prompt_tokens": p,
            "completion_tokens": c,
            "cached_tokens": cached,
            # An answer paid for without a known price has no cost (NULL), not a zero: the
            # total is then unknown (None), and what the priced ones cost is said apart.
            "cost_usd": round(cost, 6) if priced == n else None,
            "priced_cost_usd": round(cost, 6),
            "unpriced_responses": n - priced,
            "recent_runs": [
                {
                    "id": r[0],
                    "started_at": r[1],
                    "finished_at": r[2],
                    "task": r[3],
                    "teacher": r[4],
                    "outcome": r[5],
                }
                for r in runs
            ],
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self.unusable_rows:
            self._warn_unusable()

    def _warn_unusable(self) -> None:
        """One line for every unusable stored answer this handle met (see `get_many`)."""
        key, problem = next(iter(self.unusable_rows.items()))
        n = len(self.unusable_rows)
        message = (
            f"labeler: warning: {self.path}: {n} stored answer{'s' if n > 1 else ''} "
            f"cannot be used and {'were' if n > 1 else 'was'} left out as failed "
            f"(first: {key[:20]}: {problem})"
        )
        self.unusable_rows = {}
        if self._on_warning is not None:
            self._on_warning(message)
        else:
            print(message, file=sys.stderr)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _without_keys(
    item: tuple[str, Completion, float | None], keys: Sequence[str]
) -> tuple[str, Completion, float | None]:
    """The answer with any configured API key it quotes masked (a gateway may put the
    request's key into a 200 answer): stored, it would be exported with the dataset. Its
    token logprobs spell the key too, one piece per token, so they are dropped with it;
    an answer that quotes a key is no label anyway. `keys`: `configured_keys()`, read once
    for the batch (none configured: nothing to mask)."""
    if not keys:
        return item
    key, c, cost = item
    text = redact_known(c.text, keys)
    samples = None if c.samples is None else [redact_known(x, keys) for x in c.samples]
    reasoning = None if c.reasoning is None else redact_known(c.reasoning, keys)
    if text == c.text and samples == c.samples and reasoning == c.reasoning:
        return item
    return key, dataclasses.replace(c, text=text, samples=samples, reasoning=reasoning, tokens=None), cost


_PUT_RESPONSE = (
    "INSERT OR REPLACE INTO responses (key, created_at, model, text, tokens, samples,"
    " prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, finish_reason,"
    " latency_ms, cost_usd, source, reasoning, reasoning_blocks, reasoning_tokens)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
ANSWER_COLUMNS = (
    "key",
    "text",
    "tokens",
    "samples",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "finish_reason",
    "model",
    "latency_ms",
    "reasoning_tokens",
    "reasoning",
    "reasoning_blocks",
)
_COUNTS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")


def answer_problem(row: Mapping[str, Any]) -> str | None:
    """What makes a `responses` row (by column name; columns an older store lacks take
    their defaults) unusable, or None: what `get_many` checks, for a row about to be
    copied in from another store."""
    values = tuple(row.get(c, 0 if c in _COUNTS else None) for c in ANSWER_COLUMNS)
    problem = _completion(values)
    if type(problem) is str:
        return problem
    created = row.get("created_at")
    if created is not None and not (type(created) in (int, float) and math.isfinite(created)):
        return f"created_at: {created!r}"
    return None


def _completion(row: tuple[Any, ...]) -> Completion | str:
    """A stored answer, or what makes it unusable (a string). Every export and plan reads
    each stored answer through here, so the checks are written out inline: on a typical
    label answer they cost about as much as decoding its tokens."""
    (
        _,
        text,
        tokens,
        samples,
        p,
        c,
        cached,
        cw,
        finish,
        model,
        latency_ms,
        reasoning_tokens,
        reasoning,
        blocks,
    ) = row
    try:
        token_rows = orjson.loads(tokens) if tokens is not None else None
        sample_list = orjson.loads(samples) if samples is not None else None
        block_list = orjson.loads(blocks) if blocks is not None else None
    except orjson.JSONDecodeError as exc:
        return f"not JSON ({exc})"
    if token_rows is not None:
        problem = token_rows_problem(token_rows)
        if problem is not None:
            return problem
    if sample_list is not None:
        problem = samples_problem(sample_list)
        if problem is not None:
            return problem
    rt = reasoning_tokens
    if not (
        type(p) is int
        and type(c) is int
        and type(cached) is int
        and type(cw) is int
        and type(rt) is int
        and 0 <= p <= MAX_COUNT
        and 0 <= c <= MAX_COUNT
        and 0 <= cached <= MAX_COUNT
        and 0 <= cw <= MAX_COUNT
        and 0 <= rt <= MAX_COUNT
    ):
        return counts_problem((p, c, cached, cw, rt)) or "token counts"
    if (
        type(text) is not str
        or not (finish is None or type(finish) is str)
        or not (model is None or type(model) is str)
        or not (latency_ms is None or type(latency_ms) is int)
    ):
        return "text, finish reason, model or latency of the wrong type"
    if not (reasoning is None or type(reasoning) is str) or not (
        block_list is None or (type(block_list) is list and all(type(b) is dict for b in block_list))
    ):
        return "reasoning or its blocks of the wrong type"
    return stored_completion(
        text,
        token_rows,
        (p, c, cached, cw, rt),
        finish,
        model or "",
        (latency_ms or 0) / 1000.0,
        sample_list,
        reasoning,
        block_list,
    )


def _release_claims(db: sqlite3.Connection, keys: list[str]) -> None:
    """An item whose answer (or failure) is stored needs no claim any more: whoever held
    it, other processes waiting for it now read it (one probe when nobody claims)."""
    if db.execute("SELECT 1 FROM claims LIMIT 1").fetchone() is not None:
        db.executemany("DELETE FROM claims WHERE key = ?", [(k,) for k in keys])


def readonly_uri(path: str | Path) -> str:
    """The URI that opens `path` read-only: `as_uri` escapes what a URI would read as its
    own syntax ('#' starts a fragment, '?' the parameters, '%' an escape), so a store at
    `runs#3/labels.sqlite` opens that file and not `runs`."""
    return f"{Path(path).resolve().as_uri()}?mode=ro"


SQLITE_HEADER = b"SQLite format 3\x00"
# Every table any version of the store has had: a SQLite file with other tables and no
# labeler schema version is somebody else's database.
STORE_TABLES = frozenset(
    {
        "meta",
        "responses",
        "failures",
        "runs",
        "batches",
        "batch_items",
        "claims",
        "human_labels",
        "teacher_traits",
        "sqlite_sequence",
    }
)


def check_is_store(path: Path) -> None:
    """Refuse, before anything writes to it, a file that is not a labeler store: opening a
    store switches it to WAL and adds tables, which would change another program's
    database; a file that is not SQLite at all is told as such, not as a damaged store.
    A missing or empty file is a new store.

    The file is read through SQLite only: closing a descriptor of our own on it would drop
    the locks every SQLite connection of this process holds on it (POSIX locks belong to
    the process), and another process could then change the file under them. Its first
    bytes are read directly only once SQLite has refused it, when no connection can hold it.
    """
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"{path}: is a folder; --store names the store's file")
    try:
        db = sqlite3.connect(readonly_uri(path), uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            has_version = (
                "meta" in tables
                and db.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone() is not None
            )
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) and not _has_sqlite_header(path):
            raise StoreError(
                f"{path}: not a SQLite file, so not a labeler store; name a new file or an existing store"
            ) from exc
        raise StoreError(f"{path}: cannot open the store: {_open_problem(path, exc)}") from exc
    if tables and not has_version and tables - STORE_TABLES:
        raise StoreError(
            f"{path}: a SQLite database but not a labeler store (it has tables "
            f"{', '.join(sorted(tables - STORE_TABLES)[:5])}); it was left as it "
            "was; name a new file or an existing store"
        )


def _has_sqlite_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return True  # unreadable: let SQLite's own reason stand


def _enable_wal(db: sqlite3.Connection, wait_s: float = 30.0) -> None:
    """Switch a store to WAL. On a new file this needs a lock that SQLite does not wait for
    (its busy handler is not called), so two processes opening one new store at once would
    see "database is locked": wait for it here, as the busy timeout does elsewhere."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def schema_version_of(path: Path) -> int:
    """The schema version a store file records (0 for none), read without writing to it:
    `merge-stores` asks before it opens a shard an older release wrote."""
    db = sqlite3.connect(readonly_uri(path), uri=True)
    try:
        return _schema_version(db)
    finally:
        db.close()


def _schema_version(db: sqlite3.Connection) -> int:
    if not _has_table(db, "meta"):
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return (
        db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
        is not None
    )


def _chunks(seq: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _open_problem(path: Path, exc: sqlite3.Error) -> str:
    """SQLite's reason, plus the likely cause when it is vague: on a read-only file or
    folder (the WAL needs files beside the store) it says only "unable to open database
    file" or "attempt to write a readonly database"."""
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return _damage_hint(path, exc)
    if "full" in text:
        return f"{text}: the disk is full; free space and rerun"
    for target in (path, path.parent):
        if target.exists() and not os.access(target, os.W_OK):  # also sees read-only mounts
            return (
                f"{text}: the store is read-only ({target} is not writable); labeler "
                "needs write access to the store and its folder"
            )
    return text


def _damage_hint(path: Path, exc: sqlite3.Error) -> str:
    """SQLite's reason, and what to do when the file itself is damaged."""
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return (
            f"{text}: the file is damaged; recover what it holds with `sqlite3 {path} "
            f'".recover" | sqlite3 {path.name}.recovered` and pass that as --store, or '
            "move it aside to start an empty store (its answers would be paid for again)"
        )
    return text


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return StoreError(f"{path}: cannot write to the store: {_damage_hint(path, exc)}")
    if "full" in text:
        hint = "the disk is full; free space and rerun (nothing stored so far is lost)"
    elif "readonly" in text or "read-only" in text:
        hint = "the store is read-only; fix its permissions and rerun"
    else:
        hint = text
    return StoreError(f"{path}: cannot write to the store: {hint}")
