"""The async orchestrator: rows in, stored completions out.

    rows ─► render ─► key ─► store hit? ─yes─► Record(cached)
                               │ no
                               ▼
                  limiter slot ─► teacher.complete (retry policy) ─► store commit ─► Record

Rows are read in chunks and looked up in the store in one query per chunk; only misses
reach the teacher, with bounded concurrency and backpressure so memory stays flat however
long the input is. A response is committed (in batched transactions) before its Record is
yielded, so nothing downstream ever sees an answer that a crash could lose. Two rows that
render to the same request are sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from labeler.claims import LEASE_S, Claims
from labeler.completion import Completion
from labeler.errors import (
    ConfigError,
    LabelerError,
    ParameterRefused,
    RetryableError,
    StoreError,
    TeacherError,
    TeacherUnreachable,
    short,
)
from labeler.inputs import Reject, RejectsWriter, Row
from labeler.limits import Limiter
from labeler.owner import Owner
from labeler.plan import CACHED, CHUNK, FAILED, REJECTED, SEND, Item, Planner, raw_json, where
from labeler.progress import Progress
from labeler.redact import redact
from labeler.request import Request
from labeler.retry import RetryLoops
from labeler.settings import LabelSettings
from labeler.store import Store
from labeler.store_access import ClaimsAccess, StoreAccess
from labeler.summary import Record, RunSummary
from labeler.task import Task
from labeler.teacher_params import Refusal, TeacherParams
from labeler.teachers.base import (
    Teacher,
    http_outcomes,
    notices,
    request_shape,
    takes_n,
    tell_refusals,
)
from labeler.template_check import RenderStreak

# How long a request waits for the one finding out whether the teacher takes a parameter.
PROBE_WAIT_S = 10.0
UNREACHABLE_AFTER = 3  # connection failures, before any success, that end the run
PROBLEM_LINES = 20  # rejected/failed rows reported one by one; the rest are counted
WAIT_POLL_S = 0.2  # how often a run looks for answers another process has in flight
# Failures caused by the row itself, not the teacher: the row goes to the rejects file
# too, so that one file lists every row the user has to fix.
INPUT_FAILURES = frozenset({"context_length"})


class Labeler:
    """Label rows with a teacher, caching every answer in a store.

    ``async with Labeler(task, teacher, store="labels.sqlite") as lb:
    async for rec in lb.label(rows): ...``
    """

    def __init__(
        self,
        task: Task,
        teacher: Teacher,
        *,
        store: Store | StoreAccess | str | Path,
        settings: LabelSettings | None = None,
        rejects: RejectsWriter | str | Path | None = None,
        total: int | None = None,
        on_warning: Callable[[str], None] | None = None,
        limiter: Limiter | None = None,
        owner: Owner | None = None,
        claim_lease_s: float = LEASE_S,
        close_teacher: bool = True,
        claims: ClaimsAccess | None = None,
        **options: Any,
    ) -> None:
        """`settings` say how to label (`options`, any of its fields by name, override
        them: ``Labeler(task, teacher, store=..., concurrency=32)``); the rest say where
        this pass reports. `limiter` is shared when several passes must keep one set of
        limits (a fleet's); by default the pass has its own, from the settings."""
        settings = settings or LabelSettings()
        if options:
            settings = dataclasses.replace(settings, **options)
        if settings.budget_usd is not None and settings.price_table.lookup(teacher.model) is None:
            # An unpriced model would cost "0" per request and never stop: refuse instead.
            raise ConfigError(
                f"--budget needs a price for '{teacher.model}': add --price "
                f"{teacher.model}=IN,OUT (USD per 1M tokens)"
            )
        self.settings = settings
        self.task = task
        self.teacher = teacher
        # A path is opened (and closed) here; a store handed in, local or a fleet's
        # (labeler/store_access.py), stays its caller's.
        self._own_store = isinstance(store, str | Path)
        self.store: Store | StoreAccess = Store(store) if isinstance(store, str | Path) else store
        # Other processes on the same store see what this one is requesting, and wait for
        # it instead of paying again (labeler/claims.py); a fleet's store brings its own.
        if claims is None:
            if not isinstance(self.store, Store):
                raise TypeError("a store reached through another process needs its claims")
            claims = Claims(self.store, owner, claim_lease_s)
        self.claims: ClaimsAccess = claims
        self.limiter = limiter or Limiter(settings.concurrency, rpm=settings.rpm, tpm=settings.tpm)
        self.retry = settings.retry
        self.retry_failed = settings.retry_failed
        self._own_rejects = rejects is not None and not isinstance(rejects, RejectsWriter)
        self.rejects: RejectsWriter | None = (
            rejects if rejects is None or isinstance(rejects, RejectsWriter) else RejectsWriter(rejects)
        )
        self.progress = settings.progress
        self.prices = settings.price_table
        self.budget_usd = settings.budget_usd
        self.max_age_s = settings.max_age_s
        self.total = total
        self.close_teacher = close_teacher
        self.on_warning = on_warning or (lambda msg: print(msg, file=sys.stderr))
        self.stop_grace_s = settings.stop_grace_s
        self.request_timeout_s = settings.request_timeout_s
        self.summary = RunSummary()
        self._problems = 0
        self._stop = asyncio.Event()
        self._identity = teacher.identity
        self._max_tokens = int(task.params.get("max_tokens") or 0)
        teacher.observe_headers(self.limiter.observe_headers)

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Labeler:
        await self.teacher.start()  # a teacher that runs a server (local) starts it
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.close_teacher:
            await self.teacher.aclose()
        if self._own_rejects and self.rejects is not None:
            self.rejects.close()
        if self._own_store:
            self.store.close()

    def stop(self) -> None:
        """Graceful stop: no new requests; in-flight ones get `stop_grace_s` to land (then
        they are abandoned and counted as not sent), those only waiting for a limiter
        place end at once; label() then returns."""
        self.summary.interrupted = True
        self._stop.set()

    def stop_notice(self) -> str:
        """What a graceful stop waits for, told to whoever pressed Ctrl-C."""
        return f"waiting up to {self.stop_grace_s:g}s for the requests in flight"

    # -- keys ----------------------------------------------------------------------------

    def key_for(self, request: Request) -> str:
        return request.key(self._identity)

    def prepare(self, row: Row) -> tuple[Request, str]:
        """Render and key one row (raises TemplateError)."""
        request = self.task.render(row.data, row_id=where(row))
        return request, self.key_for(request)

    # -- the run -------------------------------------------------------------------------

    async def run(self, rows: Iterable[Row | Reject | Mapping[str, Any]]) -> RunSummary:
        """Label everything; returns the summary (records are only counted)."""
        async for _ in self.label(rows, with_completions=False):
            pass
        return self.summary

    async def label(
        self,
        rows: Iterable[Row | Reject | Mapping[str, Any]],
        *,
        with_completions: bool = True,
    ) -> AsyncIterator[Record]:
        """Yield one Record per input row, in completion order, each durable when yielded."""
        start = time.monotonic()
        run_id = await asyncio.to_thread(
            self.store.start_run, self.task.identity, _identity_str(self._identity)
        )
        out: asyncio.Queue[Record | None] = asyncio.Queue(maxsize=4 * CHUNK)
        told = len(notices(self.teacher))  # what the teacher learned is said when learned
        state = _RunState(self, out, with_completions)  # tells the teacher what it refuses
        http_before = Counter(http_outcomes(self.teacher) or ())
        producer = asyncio.create_task(state.produce(rows))
        renewer = asyncio.create_task(state.renew_claims())
        unqueuer = asyncio.create_task(state.cancel_queued_on_stop())
        bar = Progress(total=self.total, enabled=self.progress)
        try:
            while True:
                rec = await out.get()
                if rec is None:
                    break
                self._count(rec)
                self._report(rec)
                told = self._tell(told)
                bar.update(rec.status)
                yield rec
            await producer  # re-raise a fatal error from the producer side
        finally:
            bar.close()
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
            renewer.cancel()
            unqueuer.cancel()
            await asyncio.gather(renewer, unqueuer, return_exceptions=True)
            await state.shutdown()
            with contextlib.suppress(StoreError):  # what was claimed and never sent
                await asyncio.to_thread(self.claims.release_all)
            self.summary.elapsed_s = time.monotonic() - start
            self._count_http(state, http_before)
            self._tell(told)
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(state.save_takes_n)
            self.summary.concurrency = self.limiter.inflight.report()
            if self._problems > PROBLEM_LINES:
                self.on_warning(
                    f"{self._problems - PROBLEM_LINES} more rows were rejected or "
                    "failed (see the rejects file and `labeler stats`)"
                )
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(
                    self.store.finish_run, run_id, self.summary.outcome, self.summary.to_dict()
                )

    def _tell(self, told: int) -> int:
        """Say, once each, what the teacher learned about its server since `told` lines (a
        server that refuses `n`); the count said so far."""
        learned = notices(self.teacher)
        if len(learned) <= told:
            return told
        for notice in learned[told:]:
            self.on_warning(redact(notice))
        return len(learned)

    def _count_http(self, state: _RunState, before: Counter[str]) -> None:
        """HTTP requests by outcome, as the server answered them: the teacher's own count
        where it fans calls out (each sample is a request), else one per teacher call;
        both, split where it began to fan out in this run (a refused logprobs)."""
        kept = http_outcomes(self.teacher)
        if kept is None:
            outcomes = state.http
        elif state.fanned_out is not None:
            own, before = state.fanned_out
            outcomes = own + (Counter(kept) - before)
        else:
            outcomes = Counter(kept) - before
        s = self.summary
        s.http_requests = sum(outcomes.values())
        s.rate_limited = outcomes.get("http_429", 0)
        s.overloaded = outcomes.get("overloaded", 0)
        s.http_failures = {k: n for k, n in sorted(outcomes.items()) if k != "ok" and n}

    def _count(self, rec: Record) -> None:
        s = self.summary
        s.rows += 1
        if rec.status == "labeled":
            s.labeled += 1
        elif rec.status == "cached":
            s.cached += 1
        elif rec.status == "failed":
            s.count_failure(rec.reason or "unknown", message=rec.message)
        elif rec.status == "rejected":
            s.rejected += 1
            if rec.message and "rejected" not in s.failure_messages:
                s.failure_messages["rejected"] = short(redact(rec.message))
        else:
            s.skipped += 1

    def _report(self, rec: Record) -> None:
        """Say where each bad row is, as `file:line: reason`, the first PROBLEM_LINES times.

        A row the teacher refused because of what it holds (too long for its context) is
        added to the rejects file as well: it is as much the user's to fix as a bad line.
        """
        if rec.status == "rejected":
            message = rec.message
        elif rec.status == "failed":
            message = f"{rec.row.source}:{rec.row.line}: failed ({rec.reason}): {rec.message}"
            if rec.reason in INPUT_FAILURES and self.rejects is not None:
                self.rejects.write(
                    Reject(rec.row.source, rec.row.line, f"{rec.reason}: {rec.message}", raw_json(rec.row))
                )
        else:
            return
        self._problems += 1
        if self._problems <= PROBLEM_LINES:
            self.on_warning(redact(message))


class _RunState:
    """The moving parts of one label() call: producer, workers, batched store writer."""

    def __init__(self, lb: Labeler, out: asyncio.Queue[Record | None], with_completions: bool):
        self.lb = lb
        self.out = out
        self.with_completions = with_completions
        self.inflight: dict[str, list[Row]] = {}
        # Keys another owner has in flight: their rows wait here for its answer.
        self.waiting: dict[str, tuple[Request, list[Row]]] = {}
        self._next_poll = 0.0
        self.slots = asyncio.Semaphore(max(2 * lb.limiter.concurrency, 8))
        self.workers: set[asyncio.Task[None]] = set()
        self.idle = asyncio.Event()  # set while no worker runs
        self.idle.set()
        self.writer = _BatchWriter(lb.store)
        # A stop cuts retry waits short, so a stopped run never sleeps out a long backoff.
        self.retry_loops = RetryLoops(lb.retry, sleep=self._retry_sleep)
        self.fatal: BaseException | None = None
        self.reserved_usd = 0.0
        self.successes = 0
        self.refused = 0  # connections refused before any success, over the whole run
        self.spent_usd = 0.0
        self.abandoning = False  # set when the stop grace ran out: cancelled workers report
        # Workers waiting for a limiter place (nothing sent yet): a stop cancels them at
        # once rather than letting them wait out the rate limit only to send nothing.
        self.queued: set[asyncio.Task[Any]] = set()
        self.unsent: set[asyncio.Task[Any]] = set()
        self.http: Counter[str] = Counter()  # teacher calls by outcome ("ok" or the reason)
        self.render_streak = RenderStreak()  # the first rows all fail to render: a template bug
        # A plain rerun sends again what failed transiently (every run retries such an item
        # up to --max-attempts); what failed finally waits for --retry-failed.
        # What the teacher refuses (from earlier runs, and learned in this one): the planner
        # plans, and the workers send, every request without it.
        self.known = TeacherParams.load(lb.store, lb._identity)
        tell_refusals(lb.teacher, self.known.refused, self.known.takes_n)
        self.takes_n = takes_n(lb.teacher)  # as the run starts: what it learns is saved
        # (own count, teacher's count) when the teacher began to fan out in this run
        self.fanned_out: tuple[Counter[str], Counter[str]] | None = None
        unused = self.known.unused_samples(lb.task.soft_targets)
        if unused is not None:
            lb.on_warning(unused)
        self.probe = asyncio.Lock()  # one request at a time while a parameter is untried
        self.planner = Planner(
            lb.task,
            lb._identity,
            lb.store,
            completions=with_completions,
            max_age_s=lb.max_age_s,
            retry_failed=lb.retry_failed,
            teacher_params=self.known,
        )

    def save_takes_n(self) -> None:
        """Keep what this run learned of the server's ``n`` for the next run."""
        learned = takes_n(self.lb.teacher)
        if learned is not None and learned != self.takes_n:
            self.known.save_takes_n(self.lb.store, learned)
            self.takes_n = learned

    async def produce(self, rows: Iterable[Row | Reject | Mapping[str, Any]]) -> None:
        try:
            it = iter(rows)
            while not self.lb._stop.is_set() and self.fatal is None and not self.lb.summary.budget_stopped:
                planned, granted = await asyncio.to_thread(self._take_planned, it)
                if not planned:
                    break
                await self._handle_chunk(planned, granted)
                if self.waiting and time.monotonic() >= self._next_poll:
                    await self._poll_waiting()
            bug = self.render_streak.finished()
            if bug is not None:
                self._set_fatal(bug)
            await self._wait_for_others()
            await self._wait_workers()
        finally:
            await self.out.put(None)
        if self.fatal is not None:
            raise self.fatal

    def _take_planned(self, it: Iterator[Any]) -> tuple[list[Item], set[str]]:
        """Read, plan and claim the next chunk in one worker-thread hop: reading, rendering,
        hashing, the store lookups and the claim are the CPU- and I/O-bound part of a
        chunk. Returns the planned items and the keys this run may send."""
        chunk = list(islice(it, CHUNK))
        if not chunk:
            return [], set()
        planned = self.planner.plan(chunk)
        lb = self.lb
        # A key this run already has in flight or waits for is claimed again harmlessly
        # (its own claim stands, another owner's is refused): _handle_chunk routes it.
        wanted = [i.key for i in planned if i.status == SEND and i.key is not None]
        if not wanted or lb._stop.is_set() or self.fatal is not None:
            return planned, set()
        return planned, lb.claims.claim(wanted, fresh_since=self._fresh_since())

    async def _wait_workers(self) -> None:
        """Let in-flight requests land; once a stop is requested, give them at most the
        grace period, then abandon the rest so that an interrupted run ends in bounded
        time even if the teacher hangs (a rerun sends what was abandoned)."""
        stop = asyncio.ensure_future(self.lb._stop.wait())
        idle = asyncio.ensure_future(self.idle.wait())
        try:
            # Two futures, however many workers: waiting on the workers themselves put a
            # callback on each of them for every batch of answers, the run's last ~1,000
            # requests each paying for all those still in flight.
            await asyncio.wait({idle, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            idle.cancel()
        if not self.workers:
            return
        _, pending = await asyncio.wait(set(self.workers), timeout=self.lb.stop_grace_s)
        if pending:
            self.abandoning = True
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _handle_chunk(self, planned: list[Item], granted: set[str]) -> None:
        lb = self.lb
        for item in planned:
            row, request, key = item.row, item.request, item.key
            if item.status == REJECTED:
                reject = item.reject
                assert reject is not None
                if item.error is not None:
                    bug = self.render_streak.failed(item.error)
                    if bug is not None:
                        self._set_fatal(bug)
                if lb.rejects is not None:
                    lb.rejects.write(reject)
                await self.out.put(
                    Record(row, "rejected", reason=item.reason or "input", message=reject.message())
                )
                continue
            assert request is not None and key is not None
            self.render_streak.ok()
            if item.status == CACHED:
                await self.out.put(Record(row, "cached", key, request, item.completion))
            elif item.status == FAILED:
                await self._put_failed(row, key, request, item)
            elif key in self.inflight:
                self.inflight[key].append(row)
            elif key in self.waiting:
                self.waiting[key][1].append(row)
            elif lb._stop.is_set() or self.fatal is not None:
                await self.out.put(Record(row, "skipped", key, request, reason="stopped"))
            elif key not in granted:
                # Another process is requesting it (or just stored it): wait for that answer.
                self.waiting[key] = (request, [row])
            else:
                await self._send(key, request, [row])

    async def _put_failed(self, row: Row, key: str, request: Request, item: Item) -> None:
        f = item.failure
        assert f is not None
        await self.out.put(
            Record(
                row,
                "failed",
                key,
                request,
                reason=f.reason,
                message=f"{f.message} (a final failure stored by an earlier run: "
                "fix its cause, then rerun with --retry-failed)",
            )
        )

    async def _send(self, key: str, request: Request, rows: list[Row]) -> None:
        """Start a worker for a claimed key once a worker place is free (or skip its rows)."""
        lb = self.lb
        await self.slots.acquire()
        reason = None
        if lb._stop.is_set() or self.fatal is not None:
            reason = "stopped"  # the stop came while this row waited for a worker place
        elif not await self._reserve_budget(request):
            reason = "budget"
        if reason is not None:
            self.slots.release()
            for row in rows:
                await self.out.put(Record(row, "skipped", key, request, reason=reason))
            return
        self.inflight[key] = rows
        task = asyncio.create_task(self._work(key, request))
        self.workers.add(task)
        self.idle.clear()
        task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self.workers.discard(task)
        if not self.workers:
            self.idle.set()

    def _fresh_since(self) -> float | None:
        """Answers older than this are due for relabeling (--max-age), None: all count."""
        return None if self.lb.max_age_s is None else time.time() - self.lb.max_age_s

    async def _poll_waiting(self) -> None:
        """Settle rows waiting on another owner: its answer (or stored failure) if it has
        landed, else claim the key again (granted once the owner released it or died)."""
        lb = self.lb
        self._next_poll = time.monotonic() + WAIT_POLL_S
        items = [Item(rows[0], SEND, request, key) for key, (request, rows) in self.waiting.items()]
        await asyncio.to_thread(self.planner.look_up, items)
        wanted = [i.key for i in items if i.status == SEND and i.key is not None]
        granted: set[str] = set()
        if wanted and not lb._stop.is_set() and self.fatal is None:
            granted = await asyncio.to_thread(lb.claims.claim, wanted, fresh_since=self._fresh_since())
        for item in items:
            key = item.key
            assert key is not None and item.request is not None
            if item.status == SEND and key not in granted:
                continue
            request, rows = self.waiting.pop(key)
            if item.status == CACHED:
                for row in rows:
                    await self.out.put(Record(row, "cached", key, request, item.completion))
            elif item.status == FAILED:
                for row in rows:
                    await self._put_failed(row, key, request, item)
            else:
                await self._send(key, request, rows)

    async def _wait_for_others(self) -> None:
        """At the end of the input, wait for the rows whose keys other owners hold; on a
        stop or a fatal error they are skipped (a rerun reads or sends them)."""
        while self.waiting and not self.lb._stop.is_set() and self.fatal is None:
            delay = self._next_poll - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.lb._stop.wait(), delay)
                continue
            await self._poll_waiting()
        for key, (request, rows) in list(self.waiting.items()):
            for row in rows:
                await self.out.put(Record(row, "skipped", key, request, reason="stopped"))
        self.waiting.clear()

    async def cancel_queued_on_stop(self) -> None:
        """On a stop, end at once the workers that are only waiting for a limiter place:
        they would send nothing anyway, and with a low --rpm the wait is long."""
        await self.lb._stop.wait()
        for task in list(self.queued):
            self.unsent.add(task)
            task.cancel()

    async def renew_claims(self) -> None:
        """Keep this run's claims alive while it runs (a lease a third long between)."""
        claims = self.lb.claims
        while True:
            await asyncio.sleep(claims.lease_s / 3)
            try:
                await asyncio.to_thread(claims.renew)
            except StoreError as exc:
                self._set_fatal(exc)
                return

    async def _reserve_budget(self, request: Request) -> bool:
        lb = self.lb
        if lb.budget_usd is None:
            return True
        if lb.summary.budget_stopped:
            return False
        estimate = lb.prices.estimate_request(
            lb.teacher.model, request, lb._max_tokens, shape=request_shape(lb.teacher, request)
        )
        if self.spent_usd + self.reserved_usd + estimate > lb.budget_usd:
            # Not a stop: requests already reserved are paid for and still go (a stop
            # would drop those still waiting for a limiter slot); the producer reads no
            # further chunk.
            lb.summary.budget_stopped = True
            return False
        self.reserved_usd += estimate
        return True

    async def _work(self, key: str, request: Request) -> None:
        lb = self.lb
        record_status, completion, reason, message = "failed", None, None, ""
        estimate = 0.0
        if lb.budget_usd is not None:
            estimate = lb.prices.estimate_request(
                lb.teacher.model, request, lb._max_tokens, shape=request_shape(lb.teacher, request)
            )
        # The request as sent, and its key: a refusal learned while this item waited or
        # was in flight rewrites it (labeler/teacher_params.py), and its answer is stored
        # under the key of what was actually sent.
        sending = _Sending(key, request)
        try:
            completion, cost, cached = await self._call(sending)
            self.spent_usd += cost or 0.0
            lb.summary.cost_usd += cost or 0.0
            if not cached:
                lb.summary.unpriced += cost is None
                lb.summary.prompt_tokens += completion.usage.prompt_tokens
                lb.summary.completion_tokens += completion.usage.completion_tokens
                lb.summary.cached_tokens += completion.usage.cached_tokens
            record_status = "cached" if cached else "labeled"
        except _Stopped:
            record_status, reason = "skipped", "stopped"
        except asyncio.CancelledError:
            if asyncio.current_task() in self.unsent:
                record_status, reason = "skipped", "stopped"  # it never sent anything
            elif not self.abandoning:
                raise
            # The stop grace ran out with this request in flight: it is not sent as far as
            # this run knows; a rerun asks again.
            record_status, reason = "skipped", "stopped"
            message = f"abandoned {lb.stop_grace_s:g}s after the stop"
        except _Unreachable as exc:
            where = lb._identity.get("base_url") or lb._identity.get("provider")
            self._set_fatal(TeacherUnreachable(str(where), str(exc)))
            record_status, reason = "skipped", "unreachable"
        except TeacherError as exc:
            reason, message = exc.reason, exc.message or str(exc)
            try:
                await self.writer.fail(sending.key, exc, getattr(exc, "attempts", 1))
            except StoreError as store_exc:
                self._set_fatal(store_exc)
        except StoreError as exc:
            self._set_fatal(exc)
            record_status, reason, message = "skipped", "store", str(exc)
        except ConfigError as exc:  # the teacher cannot work at all (its server died): stop
            self._set_fatal(exc)
            record_status, reason, message = "skipped", "config", str(exc)
        except LabelerError as exc:
            reason, message = type(exc).__name__, str(exc)
        except Exception as exc:  # a bug: surface it, never lose the row silently
            self._set_fatal(exc)
            record_status, reason, message = "skipped", "internal", repr(exc)
        finally:
            self.reserved_usd -= estimate
            rows = self.inflight.pop(key, [])
            self.slots.release()
        for i, row in enumerate(rows):
            status = record_status
            if status == "labeled" and i > 0:
                status = "cached"  # a duplicate row: answered by the same request
            await self.out.put(
                Record(
                    row,
                    status,
                    sending.key,
                    sending.request,
                    completion if self.with_completions else None,
                    reason,
                    message,
                )
            )

    async def _call(self, sending: _Sending) -> tuple[Completion, float | None, bool]:
        """`_call_once`, sent again without what the teacher turned down: each refusal is
        learned once (`_send_one`), so an item meets at most one refusal per parameter."""
        while True:
            try:
                return await self._call_once(sending)
            except ParameterRefused:
                if self.known.apply(sending.request) is sending.request:
                    raise  # nothing left to leave out: an ordinary final failure

    async def _call_once(self, sending: _Sending) -> tuple[Completion, float | None, bool]:
        """Ask (with retries) and commit the answer; (the answer, its cost, whether it was
        found in the store instead of sent).

        The answer is committed before its limiter place is given back, so the answers
        not yet in the store never outnumber the places (`concurrency`): that is all a
        kill -9 can lose, and only what it had in flight.
        """
        lb = self.lb
        request = sending.request
        calls, answers = request_shape(lb.teacher, request)  # a sampling teacher pays n calls
        prompt_tokens = _estimate_tokens(request) * calls
        attempts = 0
        retrying = self.retry_loops.new()
        try:
            async for attempt in retrying:
                with attempt:
                    if lb._stop.is_set():
                        raise _Stopped()
                    me = asyncio.current_task()
                    self.queued.add(me)  # type: ignore[arg-type]
                    # The first request with an untried parameter goes alone; the others
                    # wait here, holding no limiter place, until its answer settles it.
                    first = await self._first_of_its_kind(sending)
                    try:
                        async with (
                            _Dequeue(self.queued, me),
                            lb.limiter.slot(
                                lb._max_tokens * calls * answers, requests=calls, prompt_tokens=prompt_tokens
                            ),
                        ):
                            self.queued.discard(me)
                            if lb._stop.is_set():  # stopped while waiting: send nothing
                                raise _Stopped()
                            found = await self._as_sent(sending)
                            if found is not None:  # what it is now sent as was answered before
                                return found, None, True
                            attempts += 1
                            lb.summary.requests += 1
                            if attempts > 1:
                                lb.summary.retries += 1
                            try:
                                completion = await self._send_one(sending)
                            except TeacherError as exc:
                                if not isinstance(exc, RetryableError):
                                    raise
                                lb.limiter.on_failure(exc)  # 429s slow the rate, 5xx shrink
                                # Counted over the whole run, not per item: with a low
                                # --max-attempts no item alone would reach the threshold,
                                # and every row would be stored as failed against a typo'd
                                # URL.
                                if exc.reason == "connection" and self.successes == 0:
                                    self.refused += 1
                                if self.refused >= UNREACHABLE_AFTER and self.successes == 0:
                                    raise _Unreachable(exc.message) from exc
                                raise
                            cost = lb.prices.cost(lb.teacher.model, completion.usage)
                            await self.writer.put(sending.key, completion, cost)
                    finally:
                        self.queued.discard(me)
                        if first:
                            self.probe.release()
                    lb.limiter.on_success(prompt_tokens, completion.usage.prompt_tokens)
                    self.successes += 1
                    return completion, cost, False
        except TeacherError as exc:
            exc.attempts = attempts  # type: ignore[attr-defined]
            raise
        finally:
            RetryLoops.done(retrying)
        raise AssertionError("unreachable: the retry loop returns or raises")

    async def _as_sent(self, sending: _Sending) -> Completion | None:
        """Bring `sending` up to what the teacher is known to refuse; when that changes its
        key, the store may already hold the answer (a rerun after `forget-refusals`)."""
        request = self.known.apply(sending.request)
        if request is sending.request:
            return None
        sending.request, sending.key = request, self.lb.key_for(request)
        found = await asyncio.to_thread(self.lb.store.get_many, [sending.key])
        return found.get(sending.key)

    async def _first_of_its_kind(self, sending: _Sending) -> bool:
        """Wait while `sending` carries a parameter the teacher has neither taken nor
        refused yet and another request is finding out; True when this one is to find
        out (it then holds `probe` until its answer is in). A first answer settles it for
        the rest, so a teacher that refuses the parameter turns down one request, not
        every one in flight."""
        known = self.known
        while known.unproven(known.apply(sending.request).params):
            try:
                # A deadline, not `wait_for`: that wraps each waiting request's acquire in
                # a task of its own, and a run starts with every worker place waiting here.
                async with asyncio.timeout(PROBE_WAIT_S):
                    await self.probe.acquire()
            except TimeoutError:
                # The finder's answer is slow (a hung request holds it up to the request
                # timeout): the run goes on rather than stall behind one request, at the
                # cost of what is in flight meeting the refusal, if there is one.
                return False
            if known.unproven(known.apply(sending.request).params):
                return True
            self.probe.release()
        return False

    async def _send_one(self, sending: _Sending) -> Completion:
        """One HTTP attempt. A refusal is learned here, before anything else is sent; an
        answer that left out what was asked (no logprobs) is kept, under the key of the
        request it answers: the row's own answer, or, where samples now take over, one
        answer kept aside while the row is sent again, sampled."""
        try:
            completion = await self._complete(sending.request)
        except ParameterRefused as exc:
            self.http["ok" if exc.answer is not None else exc.reason] += 1
            await self._learn(exc)
            if exc.answer is None:
                raise
            plain = self.known.plain(sending.request)
            if self.known.apply(sending.request) != plain:
                await self._keep(plain, exc.answer)
                raise ParameterRefused(exc.param, exc.message, status=exc.status) from None
            completion = exc.answer
            sending.request, sending.key = plain, self.lb.key_for(plain)
        except TeacherError as exc:
            self.http[exc.reason] += 1
            raise
        else:
            self.http["ok"] += 1
        taken = self.known.accept(sending.request.params)
        if taken:
            await asyncio.to_thread(self.known.save, self.lb.store, (), taken)
        return completion

    async def _keep(self, request: Request, answer: Completion) -> None:
        """Store a paid answer that is not the one its row is labeled with, and count it."""
        lb = self.lb
        cost = lb.prices.cost(lb.teacher.model, answer.usage)
        await self.writer.put(lb.key_for(request), answer, cost)
        self.spent_usd += cost or 0.0
        lb.summary.cost_usd += cost or 0.0
        lb.summary.unpriced += cost is None
        lb.summary.prompt_tokens += answer.usage.prompt_tokens
        lb.summary.completion_tokens += answer.usage.completion_tokens
        lb.summary.cached_tokens += answer.usage.cached_tokens

    async def _learn(self, exc: ParameterRefused) -> None:
        """Remember a refusal for this run and the next (store), tell the teacher, and say
        it once."""
        refusal = Refusal(exc.param, exc.status, exc.message)
        if not self.known.learn(refusal):
            return
        counted = http_outcomes(self.lb.teacher)
        tell_refusals(self.lb.teacher, [refusal.param])
        fanning = http_outcomes(self.lb.teacher)
        if counted is None and fanning is not None and self.fanned_out is None:
            self.fanned_out = (Counter(self.http), Counter(fanning))
        # A refusal names one parameter; the others are still untried (a teacher says
        # one refusal at a time).
        await asyncio.to_thread(self.known.save, self.lb.store, [refusal])
        self.lb.summary.refused_params[exc.param] = short(exc.message)
        self.lb.on_warning(self.known.announcement(refusal))

    async def _complete(self, request: Request) -> Completion:
        """One attempt under the whole-attempt deadline: the transports' own timeouts are
        per read, so a server that trickles its answer would hold the request forever."""
        limit = self.lb.request_timeout_s
        if limit is None:
            return await self.lb.teacher.complete(request)
        try:
            async with asyncio.timeout(limit):
                return await self.lb.teacher.complete(request)
        except TimeoutError:
            raise RetryableError(
                "timeout", f"no complete answer within {limit:g}s (--request-timeout)"
            ) from None

    async def _retry_sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.lb._stop.wait(), seconds)

    def _set_fatal(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
            self.lb._stop.set()

    async def shutdown(self) -> None:
        self.abandoning = False  # nobody reads records any more: cancelled workers just end
        for task in list(self.workers):
            task.cancel()
        if self.workers:
            await asyncio.gather(*list(self.workers), return_exceptions=True)
        await self.writer.close()


class _Sending:
    """The request a worker sends and its key, both rewritten when a refusal is learned."""

    __slots__ = ("key", "request")

    def __init__(self, key: str, request: Request) -> None:
        self.key = key
        self.request = request


class _Dequeue:
    """Drop a worker from the queued set however its wait for a limiter place ends."""

    def __init__(self, queued: set[Any], task: Any) -> None:
        self._queued, self._task = queued, task

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        self._queued.discard(self._task)


class _Unreachable(Exception):
    """Internal: no answer yet in this run and the endpoint keeps refusing connections."""


class _Stopped(Exception):
    """Internal: a stop was requested between retry attempts."""


class _BatchWriter:
    """Group commits: many responses per transaction, each caller resumed after its commit.

    A commit starts as soon as an answer arrives and none is running (after one turn of
    the event loop, so that answers landing together share it); answers that arrive
    during a commit go in the next one. Nothing waits on a timer, so an answer is in the
    store one commit after it arrived, however busy the run, and throughput still batches.
    """

    def __init__(self, store: Store | StoreAccess, max_batch: int = 512, max_delay: float = 0.0) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._ok: list[tuple[str, Completion, float | None]] = []
        self._failed: list[tuple[str, str, str, int | None, int]] = []
        self._bodies: dict[str, bytes] = {}  # the raw answers behind failures, to keep
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    async def put(self, key: str, completion: Completion, cost: float | None) -> None:
        self._ok.append((key, completion, cost))
        await self._wait()

    async def fail(self, key: str, exc: TeacherError, attempts: int) -> None:
        self._failed.append((key, exc.reason, exc.message or str(exc), exc.status, attempts))
        if exc.body is not None:
            self._bodies[key] = exc.body
        await self._wait()

    async def _wait(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if len(self._waiters) >= self.max_batch:
            self._spawn(self._flush())
        elif self._flusher is None or self._flusher.done():
            self._flusher = self._spawn(self._flush_later())
        await fut

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.max_delay)
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            ok, failed, waiters, bodies = self._ok, self._failed, self._waiters, self._bodies
            self._ok, self._failed, self._waiters, self._bodies = [], [], [], {}
            if not waiters:
                return
            try:
                await asyncio.to_thread(self._commit, ok, failed, bodies)
            except BaseException as exc:
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            for w in waiters:
                if not w.done():
                    w.set_result(None)
        if self._waiters:  # arrived during the commit: they need a flush of their own
            self._flusher = self._spawn(self._flush_later())

    def _commit(self, ok: list[Any], failed: list[Any], bodies: dict[str, bytes]) -> None:
        if ok:
            self.store.put_many(ok)
        if failed:
            self.store.record_failures(failed, bodies=bodies)

    async def close(self) -> None:
        await self._flush()


def _identity_str(identity: Mapping[str, Any]) -> str:
    return f"{identity.get('provider')}:{identity.get('model')}"


def _estimate_tokens(request: Request) -> int:
    """Rough prompt size for the TPM bucket: ~4 characters a token."""
    if request.prompt is not None:
        return len(request.prompt) // 4 + 1
    return sum(len(m.get("content") or "") for m in request.messages or ()) // 4 + 4


__all__ = ["Labeler", "Record", "RunSummary"]
