"""One labeling job end to end: read → label → export. The CLI and cron both call this.

Keeping the whole path in the library means `labeler run`, `labeler refresh` and a user's
own script do exactly the same thing; the CLI only turns flags into a `Job`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labeler import aio
from labeler.concurrency import DEFAULT_CEILING
from labeler.errors import ConfigError
from labeler.export import ExportOptions, ExportReport, export_dataset
from labeler.inputs import Reject, Row, count_rows, read_rows
from labeler.pricing import PriceTable
from labeler.retry import RetryPolicy
from labeler.run import STOP_GRACE_S, Labeler, RunSummary
from labeler.store import Store
from labeler.task import Task, load_task
from labeler.teachers import make_teacher
from labeler.teachers.base import Teacher


def default_home() -> Path:
    return Path(os.environ.get("LABELER_HOME") or Path.home() / ".cache" / "labeler")


def default_store() -> Path:
    return default_home() / "store.sqlite"


@dataclass
class Job:
    """Everything a run needs; every field has the CLI flag of the same name."""

    task: str | Path
    input: str | Path
    teacher: str
    out: str | Path | None = None
    store: str | Path | None = None
    base_url: str | None = None
    api_key: str | None = None
    teacher_options: dict[str, Any] = field(default_factory=dict)
    concurrency: int = DEFAULT_CEILING  # a ceiling: the in-flight target adapts below it
    rpm: float | None = None
    tpm: float | None = None
    max_attempts: int = 8
    retry_initial_wait: float | None = None  # first backoff step (s); None: RetryPolicy's
    retry_failed: bool = False
    budget_usd: float | None = None
    prices: PriceTable | None = None
    max_age_days: float | None = None
    id_field: str | None = None
    input_format: str | None = None
    delimiter: str | None = None
    input_split: str | None = None
    limit: int | None = None
    rejects: str | Path | None = None
    export: ExportOptions = field(default_factory=ExportOptions)
    progress: bool | None = None
    batch: bool = False  # label through the provider's batch API (labeler/batch/)
    no_wait: bool = False  # with batch: submit and collect what has ended, then return
    stop_grace_s: float = STOP_GRACE_S  # after SIGINT/SIGTERM, how long in-flight requests get

    def retry_policy(self) -> RetryPolicy:
        if self.retry_initial_wait is None:
            return RetryPolicy(max_attempts=self.max_attempts)
        return RetryPolicy(max_attempts=self.max_attempts, initial_wait=self.retry_initial_wait)

    def load_task(self) -> Task:
        return load_task(self.task)

    def make_teacher(self) -> Teacher:
        opts = dict(self.teacher_options)
        if self.base_url:
            opts["base_url"] = self.base_url
        if self.api_key:
            opts["api_key"] = self.api_key
        return make_teacher(self.teacher, **opts)

    def rows(self, task: Task) -> Iterator[Row | Reject]:
        it = read_rows(
            self.input, format=self.input_format, id_field=self.id_field,
            required_fields=task.fields, delimiter=self.delimiter, split=self.input_split,
        )
        if self.limit is not None:
            it = _limited(it, self.limit)
        if self.id_field is None:
            it = _ids_from_id_column(it)
        return it

    def store_path(self) -> Path:
        return Path(self.store) if self.store else default_store()

    def rejects_path(self) -> Path | None:
        if self.rejects:
            return Path(self.rejects)
        if self.out:
            out = Path(self.out)
            return out.parent / f"{out.name}.rejects.jsonl"
        return None


@dataclass
class JobResult:
    summary: RunSummary
    export: ExportReport | None
    store: Path
    rejects: Path | None
    warnings: list[str] = field(default_factory=list)


async def run_job(
    job: Job,
    *,
    teacher: Teacher | None = None,
    on_warning: Callable[[str], None] | None = None,
    handle_signals: bool = False,
) -> JobResult:
    """Label what the store lacks, then export (if `job.out`). Safe to rerun at any time."""
    if job.batch:
        from labeler.batch import run_batch_job

        return await run_batch_job(job, teacher=teacher, on_warning=on_warning,
                                   handle_signals=handle_signals)
    task = job.load_task()
    spooled = _spool_stdin(job)
    warnings = list(task.warnings)
    for w in task.warnings:
        if on_warning:
            on_warning(f"{task.path}: {w}")
    store = Store(job.store_path())
    teacher = teacher or job.make_teacher()
    total = None
    if job.progress is not False:
        with contextlib.suppress(Exception):
            total = count_rows(job.input, format=job.input_format, delimiter=job.delimiter,
                               split=job.input_split)
            if total is not None and job.limit is not None:
                total = min(total, job.limit)
    rejects = job.rejects_path()
    if rejects is not None and rejects.exists():
        rejects.unlink()  # rejects describe this run's input, not history
    lb = Labeler(
        task, teacher, store=store, concurrency=job.concurrency, rpm=job.rpm, tpm=job.tpm,
        retry=job.retry_policy(), retry_failed=job.retry_failed,
        rejects=rejects, progress=job.progress, prices=job.prices, budget_usd=job.budget_usd,
        max_age_s=job.max_age_days * 86400 if job.max_age_days is not None else None,
        total=total, on_warning=on_warning, stop_grace_s=job.stop_grace_s,
    )
    try:
        with aio.stop_on_signals(lb, enabled=handle_signals):
            await start_teacher(teacher)
            summary = await lb.run(job.rows(task))
        report = None
        if job.out is not None and not summary.interrupted:
            identity = teacher.identity
            report = await asyncio.to_thread(
                export_dataset, task, identity, job.rows(task), store, job.out, job.export
            )
    finally:
        await lb.aclose()
        store.close()
        if spooled is not None:
            spooled.unlink(missing_ok=True)
            job.input = "-"
    return JobResult(summary, report, job.store_path(), rejects if rejects and rejects.exists()
                     else None, warnings)


async def start_teacher(teacher: Teacher) -> None:
    """Teachers that run a server (local models) start it here; others have no `start`."""
    start = getattr(teacher, "start", None)
    if start is not None:
        await start()


def export_job(job: Job) -> ExportReport:
    """Export from the store only: no request is sent."""
    if job.out is None:
        raise ConfigError("export needs --out DIR")
    task = job.load_task()
    teacher = job.make_teacher()
    with Store(job.store_path()) as store:
        return export_dataset(task, teacher.identity, job.rows(task), store, job.out, job.export)


def _spool_stdin(job: Job) -> Path | None:
    """stdin can be read once, but a run reads its input twice (label, then export):
    stream it to a file under LABELER_HOME first."""
    if str(job.input) != "-":
        return None
    import shutil
    import sys

    default_home().mkdir(parents=True, exist_ok=True)
    raw = sys.stdin.buffer
    head = raw.read(1 << 16)
    fmt = job.input_format or ("jsonl" if head.lstrip()[:1] in (b"{", b"") else "csv")
    path = default_home() / f"stdin-{os.getpid()}.{fmt}"
    with open(path, "wb") as f:
        f.write(head)
        shutil.copyfileobj(raw, f, 1 << 20)
    job.input = path
    return path


def _ids_from_id_column(it: Iterator[Row | Reject]) -> Iterator[Row | Reject]:
    """Without --id-field, a column named `id` still names the row (else its line)."""
    for item in it:
        if isinstance(item, Row) and "id" in item.data and item.data["id"] is not None:
            yield Row(item.source, item.line, str(item.data["id"]), item.data)
        else:
            yield item


def _limited(it: Iterator[Row | Reject], n: int) -> Iterator[Row | Reject]:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item
