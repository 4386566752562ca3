"""What the batch runner needs from a provider's batch API, whatever the provider.

OpenAI (a file upload, then ``/v1/batches``) and Anthropic (``/v1/messages/batches``) differ
in nearly every detail: an upload step or none, metadata or none, their status words, how
results come back. The runner only sees `BatchClient`, so resuming, adopting, splitting and
collecting are written once and behave the same for both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from labeler.completion import Completion
from labeler.errors import TeacherError, classify_status
from labeler.request import Request

# Metadata keys a batch is tagged with where the provider keeps metadata (OpenAI): the run
# names the job, the batch names the journal row, so a batch created just before a crash
# (its id never journaled) is found again by listing, and adopted instead of duplicated.
# How long one call to a batch API (an upload, a status check, a results download) may
# take per try; a graceful stop waits for the call under way, so it says this bound.
CALL_TIMEOUT_S = 300.0
META_RUN = "labeler_run"
META_BATCH = "labeler_batch"
META_TASK = "labeler_task"

# Outcomes of an ended batch, in the runner's words.
COMPLETED, FAILED, EXPIRED, CANCELLED = "completed", "failed", "expired", "cancelled"


def custom_id(key: str) -> str:
    """The request key as a custom_id: Anthropic allows only ``[a-zA-Z0-9_-]{1,64}``, so the
    prefix colon becomes a dash; the mapping is reversible, so no lookup table is needed."""
    return key.replace(":", "-", 1)


def key_of(custom: str) -> str:
    return custom.replace("-", ":", 1)


@dataclass(slots=True)
class RemoteBatch:
    """A provider's batch as the runner sees it."""

    id: str
    status: str  # the provider's own word (validating, in_progress, ended, ...)
    ended: bool  # results (if any) can be fetched and nothing will change any more
    outcome: str | None  # when ended: completed | failed | expired | cancelled
    total: int
    done: int  # requests answered so far (successes and errors), where the provider says
    failed: int
    created_at: float
    metadata: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # why a whole batch failed (validation), if it did
    raw: Any = None  # the SDK object, for the client's own use (result file ids)

    def counts(self) -> dict[str, int]:
        return {"total": self.total, "done": self.done, "failed": self.failed}


@dataclass(slots=True)
class ItemResult:
    """One request's fate. Neither completion nor error: never attempted (the batch expired
    or was cancelled first), so the request is sent again by the next run."""

    custom_id: str
    completion: Completion | None = None
    error: TeacherError | None = None

    @property
    def unfinished(self) -> bool:
        return self.completion is None and self.error is None


@runtime_checkable
class BatchClient(Protocol):
    """One provider's batch API on its official SDK."""

    provider: str  # "openai" | "anthropic"
    base_url: str
    max_requests: int  # per batch, the provider's documented limit
    max_bytes: int  # per batch, the documented limit less headroom for framing
    tags_metadata: bool  # whether batches carry our metadata (else adoption matches by size)

    def endpoint(self, request: Request) -> str:
        """The path a batch of such requests targets (one endpoint per batch)."""
        ...

    def encode(self, custom: str, request: Request) -> list[bytes]:
        """One request as JSON lines (no newlines), usually one; several where the teacher
        asks a question several times (Anthropic sampling). Lengths count toward max_bytes,
        lines toward max_requests."""
        ...

    async def upload(self, uid: str, lines: Sequence[bytes]) -> str | None:
        """Store the requests where the provider needs them first; returns a file id, or
        None where requests travel with the create call (Anthropic)."""
        ...

    async def create(
        self, lines: Sequence[bytes], *, endpoint: str, file_id: str | None, metadata: dict[str, str]
    ) -> RemoteBatch: ...

    async def retrieve(self, remote_id: str) -> RemoteBatch: ...

    async def recent(self, since: float) -> list[RemoteBatch]:
        """Batches created at or after `since` (unix seconds), newest first."""
        ...

    async def cancel(self, remote_id: str) -> RemoteBatch: ...

    def results(self, batch: RemoteBatch) -> AsyncIterator[ItemResult]:
        """Every request's result of an ended batch (unordered; matched by custom_id)."""
        ...

    async def aclose(self) -> None: ...


def status_error(
    status: int, message: str, code: str | None = None, *, provider: str = "openai"
) -> TeacherError:
    """A per-item HTTP error, classified by the ladder the live teachers use
    (`errors.classify_status`), so `labeler stats` counts batch and live failures under
    the same reasons."""
    return classify_status(status, message, provider=provider, code=code)
