"""The labeling actor of a Ray Data stage: one event loop, one teacher, one store handle.

Ray Data hands each actor of the pool one batch of input rows at a time. The actor labels
the batch with the live `Labeler` (the same plan → claim → send → commit path as
`labeler run`) on an event loop of its own that lives as long as the actor, so its
connection pool, learned limits and in-flight target carry over from batch to batch.
The store is the fleet's (labeler/ray/fleet_store.py): one store actor on the driver's
node, reached from every node, so the cache and the claims are the whole fleet's.
The batch is planned against the store first: cached rows are not requested again, keys
another actor holds are waited for (store claims), and the call returns only once every
answer it paid for is committed. Then the batch is planned once more, read-only, to build
the output exactly as the export builds its rows; with `verify`, every answer is checked
here as the export checks it (its verdicts stored in the fleet's store, so a rerun reads
them) and the rows carry the verified `records` export's columns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import orjson
import pyarrow as pa

from labeler import aio
from labeler.engine import Labeler
from labeler.exports.build import records_table
from labeler.human import any_human_labels, human_labels
from labeler.inputs import Reject, Row, read_records
from labeler.job import Job
from labeler.plan import Planner
from labeler.ray.fleet import FleetLimiter
from labeler.ray.fleet_store import RemoteClaims, RemoteStore
from labeler.store import Store
from labeler.summary import RunSummary
from labeler.verify import Verifier, VerifyStage

RECORDS = "records"  # the output: the records export's columns, one row per answered input row
SUMMARY = "summary"  # the output: one row of counts per batch (a job that exports from the store)
RAW_JSONL = "__labeler_jsonl__"  # a batch column of raw JSON lines, parsed as labeler reads JSONL
CALLS = 2  # batches an actor labels at once (map_batches' max_concurrency)
# RunSummary's counters, summed over batches; the rest are per-run, not per-batch.
COUNTS = (
    "rows",
    "labeled",
    "cached",
    "failed",
    "rejected",
    "skipped",
    "requests",
    "retries",
    "http_requests",
    "rate_limited",
    "overloaded",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "unpriced",
    "failed_transient",
    "failed_final",
)


class LabelStage:
    """A callable class for `Dataset.map_batches` (one instance per actor)."""

    def __init__(self, job: Job, keeper: Any, output: str = RECORDS, store: Any = None) -> None:
        """`store`: the fleet's store actor (labeler/ray/fleet_store.py), which every
        actor on every node reaches; None opens `job.store` here (one machine only: the
        actors of one host share the file through its claims)."""
        self.job = job
        self.output = output
        self.task = job.load_task()
        factory = aio.loop_factory()
        self.loop = factory() if factory is not None else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="labeler-loop", daemon=True)
        self.thread.start()
        self.store: Store | RemoteStore = Store(job.store_path()) if store is None else RemoteStore(store)
        self.teacher = job.make_teacher()
        # The fleet's limit: every request also takes its charge from the job's RateKeeper.
        limiter = FleetLimiter(keeper, job.concurrency, rpm=job.rpm, tpm=job.tpm)
        # Ray Data gives an actor CALLS batches at once, so one batch's last slow answers
        # do not idle the actor: each call labels with a labeler of its own (its own store
        # claims), all sharing the teacher's connections and the one limiter.
        self.labelers: queue.SimpleQueue[Labeler] = queue.SimpleQueue()
        # No progress bar in an actor; a budget is refused before a fleet starts.
        settings = dataclasses.replace(job.label_settings(), progress=False, budget_usd=None)
        for _ in range(CALLS):
            self.labelers.put(
                Labeler(
                    self.task,
                    self.teacher,
                    store=self.store,
                    settings=settings,
                    limiter=limiter,
                    on_warning=_warn,
                    close_teacher=False,
                    claims=None if store is None else RemoteClaims(store),
                )
            )
        self._call(self.teacher.start())
        self.reader = Planner(self.task, self.teacher.identity, self.store, failures=False)
        self.verify = self._verify_stage()
        # The verifier is one per actor (a Python checker's worker serves one call at a
        # time): the actor's concurrent batches take turns checking.
        self.verifying = threading.Lock()

    def _verify_stage(self) -> VerifyStage | None:
        """The rows' `verify` (`label`'s option): checked in the actor, against the
        fleet's store. A judge is refused in the driver (labeler/ray/__init__.py)."""
        opts = self.job.export
        if self.output != RECORDS or opts.verify is None:
            return None
        verifier = Verifier(opts.verify, task=self.task, timeout_s=opts.verify_timeout)
        verifier.start()  # a checker this node cannot import: told before any request
        return VerifyStage(verifier, self.store, opts.keep)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = list(batch_rows(batch, self.job.id_field, self.task.fields))
        if self.verify is not None:  # a row without a field the checks read: told before a request
            self.verify.verifier.check_input(rows)
        lb = self.labelers.get()
        try:
            lb.summary = RunSummary()
            summary = self._call(lb.run(rows))
        finally:
            self.labelers.put(lb)
        if self.output == SUMMARY:
            counts = asdict(summary)
            return pa.Table.from_pylist(
                [
                    {
                        **{k: counts[k] for k in COUNTS},
                        "failures_by_reason": orjson.dumps(summary.failures_by_reason).decode(),
                    }
                ]
            )
        items = [i for chunk in self.reader.plan_rows(rows) for i in chunk]
        if self.job.id_field is None:
            # A row's position in a batch names nothing: without an id, its key names it.
            for item in items:
                if item.key is not None and item.row.data.get("id") is None:
                    item.row = Row(item.row.source, item.row.line, item.key, item.row.data)
        humans = (
            {}
            if not self.job.export.human_labels or self.task.output_kind != "label"
            else self._human_labels([i.key for i in items if i.completion is not None and i.key is not None])
        )
        if self.verify is None:
            return records_table(self.task, self.reader.identity, items, self.job.export, humans)
        with self.verifying:
            return records_table(self.task, self.reader.identity, items, self.job.export, humans, self.verify)

    def _human_labels(self, keys: list[str]) -> dict[str, Any]:
        """The review decisions for these keys, from whichever store the actor uses."""
        if isinstance(self.store, RemoteStore):
            return self.store.human_labels(keys)
        return human_labels(self.store, keys) if any_human_labels(self.store) else {}

    def __del__(self) -> None:
        """Close the teacher's connections when Ray ends the actor (nothing is pending
        then: every answer was committed before its batch was handed on)."""
        verify = getattr(self, "verify", None)
        if verify is not None:
            verify.verifier.close()
        loop = getattr(self, "loop", None)
        if loop is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.teacher.aclose(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)


def batch_rows(
    batch: pa.Table, id_field: str | None, required: tuple[str, ...] | list[str]
) -> Iterator[Row | Reject]:
    """A batch's rows as labeler reads them: the same checks and rejects as a file, a
    column named `id` naming the row (else its id field, else its cache key later)."""
    source = "<ray batch>"  # a row's line is its place in its batch
    if RAW_JSONL in batch.column_names:
        records: list[Any] = []
        bad: list[Reject] = []
        for n, raw in enumerate(batch.column(RAW_JSONL).to_pylist(), 1):
            if not raw or not raw.strip():
                continue
            try:
                records.append(orjson.loads(raw))
            except orjson.JSONDecodeError as exc:
                bad.append(Reject(source, n, f"invalid JSON: {exc.msg} (col {exc.colno})", raw))
        yield from bad
    else:
        records = batch.to_pylist()
    yield from read_records(
        records,
        source,
        id_field=id_field,
        id_column="id" if id_field is None else None,
        required_fields=required,
    )


def _warn(message: str) -> None:
    print(f"labeler: {message}", file=sys.stderr)


__all__ = ["COUNTS", "RAW_JSONL", "RECORDS", "SUMMARY", "LabelStage", "batch_rows"]
