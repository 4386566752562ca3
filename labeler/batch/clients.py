"""Batch clients from the teacher registry, and the journal's batches for the CLI.

`make_client` builds the batch API client of a teacher's provider (named in the teacher
registry, so no provider is named here); `client_for` one able to poll or cancel a
journaled batch; `list_batches` and `cancel_batch` serve `labeler batches`. The job itself
runs in labeler/job.py, which hands the planned items to `BatchRunner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labeler.batch import journal
from labeler.batch.base import BatchClient, RemoteBatch
from labeler.errors import ConfigError
from labeler.store import Store
from labeler.teachers import load, parse_spec, provider
from labeler.teachers.base import Teacher


def make_client(teacher: Teacher, api_key: str | None = None) -> BatchClient:
    """The batch API of `teacher`'s provider, at the teacher's endpoint."""
    identity = teacher.identity
    name = str(identity.get("provider"))
    if "base_url" not in identity:
        raise ConfigError("--batch sends to one endpoint: give a single --base-url (and no cache identity)")
    ref = provider(name).batch
    if ref is None:
        raise ConfigError(
            f"--batch: teacher '{name}:{teacher.model}' has no batch API; use a provider with "
            "one (openai:, anthropic:, or openai-compatible: with a server that implements "
            "/v1/batches)"
        )
    client: BatchClient = load(ref).for_teacher(teacher, api_key)
    return client


def client_for(batch: journal.JournalBatch, api_key: str | None = None) -> BatchClient:
    """A client able to poll or cancel a journaled batch (not to submit). Each provider's
    SDK is imported only when used: the anthropic one alone takes seconds to import."""
    name, _ = parse_spec(batch.teacher)
    ref = provider(name).batch
    if ref is None:
        raise ConfigError(f"batch '{batch.id}': teacher '{batch.teacher}' has no batch API")
    client: BatchClient = load(ref).for_journal(batch.base_url, api_key, name)
    return client


def list_batches(store_path: str | Path, *, live_only: bool = False) -> list[dict[str, Any]]:
    """The journal's batches, newest first, as plain data for the CLI (no network)."""
    if not Path(store_path).exists():
        return []
    with Store(store_path) as store:
        rows = journal.listing(store, live_only=live_only)
    return [
        {
            "provider": b.provider,
            "id": b.shown_id,
            "local_id": b.id,
            "state": _state(b),
            "remote_status": b.remote_status,
            "teacher": b.teacher,
            "requests": b.n_items,
            "counts": b.counts or {},
            "created_at": b.created_at,
            "cost_usd": b.cost_usd,
            "error": b.error,
            "run": b.run_tag,
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
