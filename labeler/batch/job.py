"""`labeler run --batch`: one job through a batch API, then the same export as a live run.

`labeler.job.run_job` hands a `Job` with ``batch=True`` to `run_batch_job`; the CLI's
`labeler batches` listing and cancel use `list_batches` and `cancel_batch`. The clients are
built from the teacher (its identity is part of every request key, so the batch answers
land under the keys a live run would use) or, for a journaled batch, from the provider
and endpoint written in the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labeler import aio
from labeler.batch import journal
from labeler.batch.base import BatchClient, RemoteBatch
from labeler.batch.runner import BatchRunner, fingerprint
from labeler.errors import ConfigError
from labeler.export_guard import check_out_folder, export_to
from labeler.inputs import RejectsWriter
from labeler.job import Job, JobResult, _spool_stdin
from labeler.store import Store
from labeler.teachers.base import Teacher


def make_client(teacher: Teacher, api_key: str | None = None) -> BatchClient:
    """The batch API of `teacher`'s provider, at the teacher's endpoint."""
    identity = teacher.identity
    provider = identity.get("provider")
    if "base_url" not in identity:
        raise ConfigError("--batch sends to one endpoint: give a single --base-url "
                          "(and no cache identity)")
    if provider in ("openai", "openai-compatible"):
        from labeler.batch.openai import OpenAIBatchClient

        body = getattr(teacher, "request_body", None)
        if body is None:  # the batch file must carry exactly the live request body
            raise ConfigError(f"--batch: this {provider} teacher cannot say what body it sends")
        return OpenAIBatchClient(identity.get("base_url"), api_key, body=body,
                                 compatible=provider != "openai")
    if provider == "anthropic":
        from labeler.batch.anthropic import AnthropicBatchClient

        return AnthropicBatchClient(identity.get("base_url"), api_key, teacher=teacher)
    raise ConfigError(
        f"--batch: teacher '{provider}:{teacher.model}' has no batch API; use openai:, "
        "anthropic:, or openai-compatible: with a server that implements /v1/batches"
    )


def client_for(batch: journal.JournalBatch, api_key: str | None = None) -> BatchClient:
    """A client able to poll or cancel a journaled batch (not to submit). Each provider's
    SDK is imported only when used: the anthropic one alone takes seconds to import."""
    if batch.provider == "anthropic":
        from labeler.batch.anthropic import AnthropicBatchClient

        return AnthropicBatchClient(batch.base_url, api_key)
    from labeler.batch.openai import OpenAIBatchClient

    return OpenAIBatchClient(batch.base_url, api_key,
                             compatible=not batch.teacher.startswith("openai:"))


async def run_batch_job(
    job: Job,
    *,
    teacher: Teacher | None = None,
    client: BatchClient | None = None,
    on_warning: Callable[[str], None] | None = None,
    handle_signals: bool = False,
) -> JobResult:
    """Submit what the store lacks, wait (unless `job.no_wait`), store the answers, export.

    The export runs only when no answer is pending, so a dataset is never written from a
    half-collected job; a later run (cron) collects and exports it.
    """
    task = job.load_task()
    if job.out is not None:
        check_out_folder(Path(job.out), job.store_path())
    spooled = _spool_stdin(job)
    warnings = list(task.warnings)
    for w in task.warnings:
        if on_warning:
            on_warning(f"{task.path}: {w}")
    store = Store(job.store_path())
    own_teacher = teacher is None
    teacher = teacher or job.make_teacher()
    rejects_path = job.rejects_path()
    if rejects_path is not None and rejects_path.exists():
        rejects_path.unlink()
    rejects = RejectsWriter(rejects_path) if rejects_path is not None else None
    own_client = client is None
    try:
        client = client or make_client(teacher, job.api_key)
        runner = BatchRunner(
            task, teacher, client, store, prices=job.prices, rejects=rejects,
            retry_failed=job.retry_failed, max_attempts=job.max_attempts, budget_usd=job.budget_usd,
            max_age_s=job.max_age_days * 86400 if job.max_age_days is not None else None,
            no_wait=job.no_wait, progress=job.progress,
            run_tag=fingerprint(task, teacher.identity, str(Path(str(job.input)).resolve()),
                                str(job.store_path().resolve())),
            on_warning=on_warning,
        )
        with aio.stop_on_signals(runner, enabled=handle_signals):
            summary = await runner.run(job.rows(task))
        report = None
        if job.out is not None and summary.outcome not in ("pending", "interrupted"):
            report = await asyncio.to_thread(
                export_to, task, teacher.identity, job.rows(task), store, Path(job.out), job.export
            )
    finally:
        if own_client and client is not None:
            await client.aclose()
        if own_teacher:
            with contextlib.suppress(Exception):
                await teacher.aclose()
        if rejects is not None:
            rejects.close()
        store.close()
        if spooled is not None:
            spooled.unlink(missing_ok=True)
            job.input = "-"
    rejects_out = rejects_path if rejects_path is not None and rejects_path.exists() else None
    return JobResult(summary, report, job.store_path(), rejects_out, warnings)


def list_batches(store_path: str | Path, *, live_only: bool = False) -> list[dict[str, Any]]:
    """The journal's batches, newest first, as plain data for the CLI (no network)."""
    if not Path(store_path).exists():
        return []
    with Store(store_path) as store:
        rows = journal.listing(store, live_only=live_only)
    return [
        {
            "provider": b.provider, "id": b.shown_id, "local_id": b.id, "state": _state(b),
            "remote_status": b.remote_status, "teacher": b.teacher, "requests": b.n_items,
            "counts": b.counts or {}, "created_at": b.created_at, "cost_usd": b.cost_usd,
            "error": b.error, "run": b.run_tag,
        }
        for b in rows
    ]


async def cancel_batch(store_path: str | Path, ident: str, api_key: str | None = None) -> RemoteBatch:
    """Ask the provider to cancel a journaled batch. Its answers so far are kept: the next
    run collects them and sends the rest again."""
    if not Path(store_path).exists():
        raise ConfigError(f"{store_path}: no such store")
    with Store(store_path) as store:
        b = journal.find(store, ident)
        if b is None:
            raise ConfigError(f"no batch '{ident}' in {store_path} (see `labeler batches`)")
        if b.remote_id is None or b.state != journal.SUBMITTED:
            raise ConfigError(f"batch '{ident}' is {_state(b)}: nothing to cancel")
        client = client_for(b, api_key)
        try:
            remote = await client.cancel(b.remote_id)
        finally:
            await client.aclose()
        journal.update_remote(store, b.id, remote)
    return remote


def _state(b: journal.JournalBatch) -> str:
    """The state worth showing: the provider's while it runs, the journal's after."""
    if b.state == journal.SUBMITTED:
        return b.remote_status or "submitted"
    if b.state == journal.COLLECTED:
        return f"collected ({b.remote_status})" if b.remote_status else "collected"
    return b.state
