"""Label through a provider's batch API: half the price, answers within 24 hours.

    rows ─► render ─► key ─► stored? held by a live batch? ─no─► plan (split by the
    provider's count and byte limits) ─► journal ─► upload ─► journal ─► create ─► journal
                                                                                   │
    store (same rows as live answers, source="batch") ◄─ results ◄─ poll ◄─────────┘

Every step is journaled in the store before the next one starts (journal.py), so a run
that dies anywhere, or a cron run that returns at once (`no_wait`), is resumed by the
next run: it re-attaches to live batches, adopts a batch whose create call landed just
before a crash (found by its metadata, or for Anthropic by its size and creation time),
and never submits a key that a live batch holds. Answers are stored under the same
request keys as live answers, so the export is the same whichever way they came.

Expired, cancelled and failed batches keep what they answered; what they never attempted
is sent again by the next run (not by this one, so a batch that keeps failing cannot
loop). Per-request errors are recorded as failures with their reason, like live ones; a
transient one (429, 5xx) is sent again by later runs until `max_attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from labeler import owner
from labeler.batch import journal
from labeler.batch.base import (
    CALL_TIMEOUT_S,
    META_BATCH,
    META_RUN,
    META_TASK,
    BatchClient,
    RemoteBatch,
    custom_id,
    key_of,
)
from labeler.completion import Completion
from labeler.errors import LabelerError, StoreError, TeacherError
from labeler.inputs import Reject, RejectsWriter, Row
from labeler.plan import CACHED, FAILED, REJECTED, SEND, Planner
from labeler.request import Request, canonical_json
from labeler.settings import LabelSettings
from labeler.store import Store
from labeler.summary import RunSummary
from labeler.task import Task
from labeler.teachers.base import Teacher, request_shape

CHUNK = 1024  # rows read, keyed and looked up per store query
COMMIT_EVERY = 2000  # results stored per transaction while collecting
POLL_FIRST_S = 0.25  # a real batch takes minutes to hours; a local test one about a second
POLL_GROWTH = 1.5
POLL_MAX_S = 30.0
ADOPT_WINDOW_S = 600.0  # how far before its journal entry a crashed run's batch may be dated
FOREIGN_OWNER_S = 3600.0  # a batch being prepared on another host is left alone this long
CLOCK_SKEW_S = 120.0  # how much earlier than its journal entry a provider may date a batch
CRASH_ENV = "LABELER_TEST_CRASH_AFTER"


class BatchError(LabelerError):
    """A batch could not be submitted (the provider refused it, or the answer was lost)."""


@dataclass
class BatchSummary(RunSummary):
    """A run's counts, plus where its batches stand.

    `pending` rows wait on a live batch (rerun later to collect them); `unfinished` rows
    were in a batch that ended without attempting them (expired, cancelled, failed): the
    next run sends them again.
    """

    pending: int = 0
    unfinished: int = 0
    batches_created: int = 0
    batches_adopted: int = 0
    batches_collected: int = 0
    batches_live: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.pending:
            return "pending"
        if self.budget_stopped:
            return "budget"
        if self.unfinished:  # the next run sends them again: not the same as nothing
            return "partial"
        if self.empty:
            return "empty"
        if self.failed or self.skipped:
            return "partial"
        return "ok"


@dataclass
class _Open:
    """The batch being filled: one endpoint, within the provider's count and byte limits."""

    endpoint: str = ""
    keys: list[str] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    size: int = 0


class BatchRunner:
    """Label rows through `client`'s batch API, journaling in `store`; see the module doc."""

    def __init__(
        self,
        task: Task,
        teacher: Teacher,
        client: BatchClient,
        store: Store,
        *,
        settings: LabelSettings | None = None,
        rejects: RejectsWriter | None = None,
        run_tag: str | None = None,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        poll_max_s: float = POLL_MAX_S,
        on_warning: Callable[[str], None] | None = None,
        **options: Any,
    ) -> None:
        """`settings` as for `Labeler` (`options` override its fields by name); the
        provider's count and byte limits may be lowered with `max_requests`/`max_bytes`."""
        settings = settings or LabelSettings()
        if options:
            settings = dataclasses.replace(settings, **options)
        self.settings = settings
        self.task = task
        self.teacher = teacher
        self.client = client
        self.store = store
        self.prices = settings.price_table
        self.rejects = rejects
        self.retry_failed = settings.retry_failed
        self.max_attempts = settings.retry.max_attempts
        self.budget_usd = settings.budget_usd
        self.max_age_s = settings.max_age_s
        self.no_wait = settings.no_wait
        self.progress = settings.progress
        self.identity = teacher.identity
        self.teacher_name = f"{self.identity.get('provider')}:{self.identity.get('model')}"
        self.run_tag = run_tag or fingerprint(task, self.identity)
        self.max_requests = min(max_requests or client.max_requests, client.max_requests)
        self.max_bytes = min(max_bytes or client.max_bytes, client.max_bytes)
        self.poll_max_s = poll_max_s
        self.on_warning = on_warning or (lambda msg: print(f"labeler: {msg}", file=sys.stderr))
        self.summary = BatchSummary()
        self._stop = asyncio.Event()
        self._rows: dict[str, int] = {}  # keys this run needs -> how many rows carry them
        self._needed: set[str] = set()  # local ids of batches holding keys this run needs
        self._budget_skipped: set[str] = set()
        self._broken: set[str] = set()  # batches that cannot be polled or read this run
        self._reserved_usd = 0.0
        self._planner = Planner(
            task,
            self.identity,
            store,
            completions=False,
            max_age_s=self.max_age_s,
            retry_failed=self.retry_failed,
            max_attempts=self.max_attempts,
        )

    def stop(self) -> None:
        """Graceful stop: the step under way finishes and is journaled; nothing new starts."""
        self.summary.interrupted = True
        self._stop.set()

    def stop_notice(self) -> str:
        """What a graceful stop waits for, told to whoever pressed Ctrl-C: no request is
        in flight here, only a call to the batch API, and the batches already submitted
        go on at the provider (their answers are not lost by stopping)."""
        return (
            f"finishing the batch API call under way (up to {CALL_TIMEOUT_S:g}s a try); "
            "submitted batches keep running at the provider and the next run collects them"
        )

    async def aclose(self) -> None:
        """Nothing to close: the client, store and rejects file are the caller's (a stage
        of a cascade is closed as a live one is)."""

    # -- the run -------------------------------------------------------------------------

    async def run(self, rows: Iterable[Row | Reject | Mapping[str, Any]]) -> BatchSummary:
        start = time.monotonic()
        run_id = await asyncio.to_thread(
            self.store.start_run, self.task.identity, f"{self.teacher_name} (batch)"
        )
        try:
            await self._reconcile()
            await self._plan(rows)
            await self._wait()
            await asyncio.to_thread(self._tally)
        finally:
            self.summary.elapsed_s = time.monotonic() - start
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(
                    self.store.finish_run, run_id, self.summary.outcome, self.summary.to_dict()
                )
        return self.summary

    # -- 1. batches an earlier run left without a provider id ----------------------------

    async def _reconcile(self) -> None:
        """Adopt a batch whose create call landed before its run died; release the keys of
        one that never reached the provider."""
        client = self.client
        stale = [
            b
            for b in await asyncio.to_thread(journal.unresolved, self.store, client.provider, client.base_url)
            if not _owner_alive(b)
        ]
        if not stale:
            return
        try:
            remotes = await client.recent(min(b.created_at for b in stale) - ADOPT_WINDOW_S)
        except TeacherError as exc:
            self.on_warning(
                f"cannot list batches to resume {len(stale)} unconfirmed one(s): "
                f"{exc}; their rows wait for the next run"
            )
            return
        taken = await asyncio.to_thread(journal.remote_ids, self.store, client.provider)
        for b in stale:
            found = _match(b, remotes, taken, by_metadata=client.tags_metadata)
            if found is None:
                await asyncio.to_thread(
                    journal.abandon,
                    self.store,
                    b.id,
                    "never created: the run stopped before the provider had it",
                )
                continue
            taken.add(found.id)
            how = "its metadata" if client.tags_metadata else "its size and creation time"
            await asyncio.to_thread(
                journal.set_submitted,
                self.store,
                b.id,
                found,
                note=f"adopted after a crash (matched by {how})",
            )
            self.summary.batches_adopted += 1
            self.on_warning(
                f"batch {found.id} was created before a crash and never recorded: "
                f"adopted (matched by {how}), not submitted again"
            )

    # -- 2. what to send, in batches within the provider's limits -------------------------

    async def _plan(self, rows: Iterable[Row | Reject | Mapping[str, Any]]) -> None:
        it = iter(rows)
        open_ = _Open()
        while not self._stop.is_set():
            chunk = await asyncio.to_thread(_take, it, CHUNK)
            if not chunk:
                break
            for key, request in await asyncio.to_thread(self._sort, chunk):
                if self._stop.is_set():
                    break
                if not self._within_budget(request):
                    self._budget_skipped.add(key)
                    continue
                lines = self.client.encode(custom_id(key), request)
                size = sum(len(line) + 1 for line in lines)
                if size > self.max_bytes or len(lines) > self.max_requests:
                    await asyncio.to_thread(
                        self.store.record_failures,
                        [
                            (
                                key,
                                "request_too_large",
                                f"{size} bytes in {len(lines)} request(s): more "
                                f"than a whole batch may hold ({self.max_bytes})",
                                None,
                                1,
                            )
                        ],
                    )
                    continue
                endpoint = self.client.endpoint(request)
                if open_.keys and (
                    endpoint != open_.endpoint
                    or len(open_.lines) + len(lines) > self.max_requests
                    or open_.size + size > self.max_bytes
                ):
                    await self._submit(open_)
                    open_ = _Open()
                open_.endpoint = endpoint
                open_.keys.append(key)
                open_.lines.extend(lines)
                open_.size += size
        if open_.keys and not self._stop.is_set():
            await self._submit(open_)

    def _sort(self, chunk: list[Row | Reject | Mapping[str, Any]]) -> list[tuple[str, Request]]:
        """Count one chunk of planned rows and return the (key, request) pairs to submit;
        runs in a thread: rendering, hashing and the store lookups are the CPU-bound part."""
        s = self.summary
        planned = self._planner.plan(chunk)
        fresh = list(
            dict.fromkeys(
                i.key for i in planned if i.status == SEND and i.key is not None and i.key not in self._rows
            )
        )
        held = journal.held(self.store, fresh)
        out: list[tuple[str, Request]] = []
        for item in planned:
            s.rows += 1
            key = item.key
            if item.status == REJECTED:
                if self.rejects is not None and item.reject is not None:
                    self.rejects.write(item.reject)
                s.rejected += 1
            elif key in self._rows:
                self._rows[key] += 1  # a duplicate row: answered by the same request
            elif item.status == CACHED:
                s.cached += 1
            elif item.status == FAILED:
                assert item.failure is not None
                s.count_failure(item.failure.reason, message=item.failure.message)
            else:
                assert key is not None and item.request is not None
                self._rows[key] = 1
                if key in held:
                    self._needed.add(held[key])
                else:
                    out.append((key, item.request))
        return out

    def _within_budget(self, request: Request) -> bool:
        if self.budget_usd is None:
            return True
        max_tokens = int(self.task.params.get("max_tokens") or 0)
        estimate = self.prices.estimate_request(
            self.teacher.model, request, max_tokens, batch=True, shape=request_shape(self.teacher, request)
        )
        if self._reserved_usd + estimate > self.budget_usd:
            self.summary.budget_stopped = True
            return False
        self._reserved_usd += estimate
        return True

    async def _submit(self, b: _Open) -> None:
        """Journal, upload, journal, create, journal: a crash between any two is resumable."""
        client, store = self.client, self.store
        uid = "lb_" + uuid.uuid4().hex[:24]
        await asyncio.to_thread(
            journal.prepare,
            store,
            uid=uid,
            provider=client.provider,
            run_tag=self.run_tag,
            teacher=self.teacher_name,
            base_url=client.base_url,
            endpoint=b.endpoint,
            keys=b.keys,
            n_requests=len(b.lines),
            n_bytes=b.size,
            owner=_owner(),
        )
        try:
            file_id = await client.upload(uid, b.lines)
        except TeacherError as exc:
            await asyncio.to_thread(journal.abandon, store, uid, f"upload failed: {exc}")
            hint = " (does this server implement the Batch API?)" if exc.status == 404 else ""
            raise BatchError(
                f"cannot upload a batch of {len(b.keys)} requests to {client.base_url}: {exc}{hint}"
            ) from exc
        if file_id is not None:
            crash_point("file_uploaded")
            await asyncio.to_thread(journal.set_uploaded, store, uid, file_id)
        metadata = {META_RUN: self.run_tag, META_BATCH: uid, META_TASK: self.task.identity[:500]}
        try:
            remote = await client.create(b.lines, endpoint=b.endpoint, file_id=file_id, metadata=metadata)
        except TeacherError as exc:
            if exc.retryable:  # the create may have landed: the next run adopts or releases it
                raise BatchError(
                    f"no answer to the creation of a batch of {len(b.keys)} requests "
                    f"({exc}); rerun to resume: a batch created anyway is adopted, "
                    "not submitted twice"
                ) from exc
            await asyncio.to_thread(journal.abandon, store, uid, f"refused: {exc}")
            raise BatchError(f"{client.base_url} refused a batch of {len(b.keys)} requests: {exc}") from exc
        crash_point("batch_created")
        await asyncio.to_thread(journal.set_submitted, store, uid, remote)
        self._needed.add(uid)
        self.summary.batches_created += 1
        self.summary.requests += len(b.lines)

    # -- 3. poll, and collect what has ended ------------------------------------------------

    async def _wait(self) -> None:
        delay = POLL_FIRST_S
        bar = _Bar(self.progress)
        try:
            while True:
                live = [
                    b
                    for b in await asyncio.to_thread(
                        journal.submitted, self.store, self.client.provider, self.client.base_url
                    )
                    if b.id not in self._broken
                ]
                if not live:
                    return
                remotes = await asyncio.gather(
                    *(self.client.retrieve(b.remote_id or "") for b in live), return_exceptions=True
                )
                waiting: list[RemoteBatch] = []
                for b, r in zip(live, remotes, strict=True):
                    if isinstance(r, BaseException):
                        if not isinstance(r, TeacherError):
                            raise r
                        if not r.retryable:  # refused (404, 401...): asking again cannot help
                            self._broken.add(b.id)
                            self.on_warning(
                                f"cannot poll batch {b.remote_id}: {r}; its rows stay "
                                "pending (`labeler batches` lists it)"
                            )
                        elif b.id in self._needed:  # a passing fault: keep waiting
                            self.on_warning(f"cannot poll batch {b.remote_id} now: {r}")
                            waiting.append(
                                RemoteBatch(b.shown_id, "unknown", False, None, b.n_items, 0, 0, b.created_at)
                            )
                        continue
                    if r.ended:
                        await self._collect(b, r)
                    else:
                        await asyncio.to_thread(journal.update_remote, self.store, b.id, r)
                        if b.id in self._needed:
                            waiting.append(r)
                bar.show(waiting)
                if not waiting or self.no_wait or self._stop.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                delay = min(delay * POLL_GROWTH, self.poll_max_s)
        finally:
            bar.close()

    async def _collect(self, b: journal.JournalBatch, remote: RemoteBatch) -> None:
        """Store an ended batch's results: answers under their request keys (source
        "batch", cost at the batch rate), errors as failures; the rest is left unfinished."""
        store, s = self.store, self.summary
        states = await asyncio.to_thread(journal.item_states, store, b.id)
        ok: list[tuple[str, Completion, float | None]] = []
        bad: list[tuple[str, str, str, int | None, int]] = []
        bodies: dict[str, bytes] = {}  # the raw answers behind failures, to keep
        marks: list[tuple[str, str]] = []
        seen: set[str] = set()
        cost_total: float | None = None

        async def flush() -> None:
            if bad:
                await asyncio.to_thread(lambda: store.record_failures(list(bad), bodies=dict(bodies)))
            if ok:
                await asyncio.to_thread(lambda: store.put_many(list(ok), source="batch"))
            await asyncio.to_thread(journal.mark_items, store, b.id, list(marks))
            ok.clear()
            bad.clear()
            bodies.clear()
            marks.clear()

        try:
            async for item in self.client.results(remote):
                key = key_of(item.custom_id)
                seen.add(key)
                if item.completion is not None:
                    c = item.completion
                    cost = self.prices.cost(b.model, c.usage, batch=True)
                    ok.append((key, c, cost))
                    marks.append(("done", key))
                    if cost is not None:
                        cost_total = (cost_total or 0.0) + cost
                        s.cost_usd += cost
                    else:
                        s.unpriced += 1
                    s.prompt_tokens += c.usage.prompt_tokens
                    s.completion_tokens += c.usage.completion_tokens
                    s.cached_tokens += c.usage.cached_tokens
                elif item.error is not None:
                    if states.get(key) == "pending":  # a re-collection never counts twice
                        e = item.error
                        bad.append((key, e.reason, e.message or str(e), e.status, 1))
                        if e.body is not None:
                            bodies[key] = e.body
                    marks.append(("failed", key))
                else:
                    marks.append(("unfinished", key))
                if len(ok) + len(bad) >= COMMIT_EVERY:
                    await flush()
                    crash_point("results_partly_stored")
        except TeacherError as exc:
            await flush()
            self._broken.add(b.id)
            self.on_warning(f"cannot read the results of batch {remote.id}: {exc}; the next run tries again")
            return
        never = [k for k, st in states.items() if st == "pending" and k not in seen]
        marks.extend(("unfinished", k) for k in never)
        await flush()
        await asyncio.to_thread(journal.set_collected, store, b.id, remote, cost_total)
        s.batches_collected += 1
        if remote.outcome != "completed":
            why = f": {remote.error}" if remote.error else ""
            self.on_warning(
                f"batch {remote.id} {remote.outcome}{why}; its answers are stored, "
                f"the requests it did not attempt are sent again by the next run"
            )

    # -- 4. where every row stands --------------------------------------------------------

    def _tally(self) -> None:
        s = self.summary
        keys = list(self._rows)
        known = self.store.known(keys)
        rest = [k for k in keys if k not in known]
        held = journal.held(self.store, rest)
        failures = self.store.failures_for(rest)
        for key, n in self._rows.items():
            if key in known:
                s.labeled += 1
                s.cached += n - 1
            elif key in held:
                s.pending += n
            elif key in self._budget_skipped:
                s.skipped += n
            elif key in failures:
                s.count_failure(failures[key].reason, n, failures[key].message)
            else:
                s.unfinished += n
        holding = set(held.values())
        s.batches_live = [b.shown_id for b in journal.listing(self.store, live_only=True) if b.id in holding]


# -- helpers -----------------------------------------------------------------------------


def fingerprint(task: Task, identity: Mapping[str, Any], *extra: str) -> str:
    """A short stable name for a job (template and teacher, plus input and store where
    known): the `labeler_run` metadata of its batches."""
    blob = canonical_json({"task": task.identity, "teacher": dict(identity), "extra": list(extra)})
    return "lr_" + hashlib.blake2b(blob, digest_size=8).hexdigest()


def _match(
    b: journal.JournalBatch, remotes: Sequence[RemoteBatch], taken: set[str], *, by_metadata: bool
) -> RemoteBatch | None:
    """The provider's batch that an unconfirmed journal entry became, if any."""
    if by_metadata:
        return next((r for r in remotes if r.metadata.get(META_BATCH) == b.id), None)
    # No metadata (Anthropic): same request count, created after the entry was written, not
    # claimed by another entry; the closest in time wins. A wrong match costs no
    # correctness: answers are stored under the keys their custom_ids name.
    candidates = [
        r
        for r in remotes
        if r.id not in taken and r.total == b.n_items and r.created_at >= b.created_at - CLOCK_SKEW_S
    ]
    return min(candidates, key=lambda r: abs(r.created_at - b.created_at), default=None)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(b: journal.JournalBatch) -> bool:
    """Whether the process that journaled `b` may still be submitting it (then it is not
    ours to adopt or release)."""
    host, _, pid = (b.owner or "").rpartition(":")
    if host != socket.gethostname():
        return time.time() - b.updated_at < FOREIGN_OWNER_S
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    return owner.alive(int(pid))


def crash_point(name: str) -> None:
    """Test hook: die at a named step as a kill -9 would (no cleanup, no flush). It lives in
    the production path on purpose: the crash-safety tests must kill the real code between
    two real journal steps, which no wrapper around it can reach."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)


def _take(it: Iterator[Any], n: int) -> list[Any]:
    return list(islice(it, n))


class _Bar:
    """Requests answered across the batches this run waits for; silent off a terminal."""

    def __init__(self, enabled: bool | None) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=0, unit="req", dynamic_ncols=True, file=sys.stderr, desc="batches", mininterval=0.0
            )

    def show(self, waiting: Sequence[RemoteBatch]) -> None:
        if self._bar is None:
            return
        if not waiting:  # all ended: leave the bar full rather than empty
            self._bar.n = self._bar.total
            self._bar.set_description("batches ended")
            self._bar.set_postfix({}, refresh=False)
            self._bar.refresh()
            return
        total = sum(r.total for r in waiting)
        self._bar.total = total
        self._bar.n = sum(r.done for r in waiting)
        states: dict[str, int] = {}
        for r in waiting:
            states[r.status] = states.get(r.status, 0) + 1
        self._bar.set_description(f"{len(waiting)} batch(es) live")
        self._bar.set_postfix(states, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
