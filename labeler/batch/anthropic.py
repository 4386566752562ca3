"""Anthropic's Message Batches API on the official SDK.

Requests travel inside the create call (``{custom_id, params}`` each, no upload step);
results are one JSONL stream whose lines say succeeded, errored, canceled or expired.
Message Batches carry no metadata, so a batch created just before a crash is recognised
on the next run by its creation time and request count instead (see runner.py).

Params are built and answers parsed by teachers/anthropic_wire.py, the live teacher's own
translation (system blocks, prompt-cache breakpoint, stop sequences, usage with cache
reads and writes), so a batch answer is stored exactly as a live one. A teacher that
samples soft targets (no logprobs at Anthropic: the same question asked ``samples``
times) sends one batch request per sample, ``<custom_id>_s<i>_<n>``; the samples are
combined as the live teacher combines them once all have come back.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anthropic
import orjson

from labeler.batch.base import (
    CALL_TIMEOUT_S,
    CANCELLED,
    COMPLETED,
    EXPIRED,
    ItemResult,
    RemoteBatch,
    status_error,
)
from labeler.completion import Completion
from labeler.errors import ConfigError, TeacherError, short
from labeler.redact import remember
from labeler.request import Request
from labeler.teachers import anthropic_wire
from labeler.teachers.anthropic import ANTHROPIC_URL, AnthropicTeacher, classify
from labeler.teachers.base import Teacher, request_shape

MESSAGES = "/v1/messages"
# Error types inside an errored result, as the HTTP status the live endpoint would answer.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def batch_params(teacher: AnthropicTeacher, request: Request) -> tuple[dict[str, Any], int]:
    """Messages params for one request as the live teacher sends them, and how many times
    it asks them (its sample count when it samples soft targets, else 1)."""
    version = teacher.api_version
    sampling = version is not None and version < anthropic_wire.SAMPLING_API_BEFORE
    calls = request_shape(teacher, request)[0]
    temperature = None
    if calls > 1 and sampling:  # as the live teacher samples: a temperature above 0
        t = float(request.params.get("temperature") or 0.0)
        temperature = t if t > 0 else 1.0
    params = anthropic_wire.build_params(
        request,
        sampling_params=sampling,
        temperature=temperature,
        cache=teacher.cache_prompt,
    )
    params.update(params.pop("extra_body", None) or {})  # an SDK-only wrapper; batches take JSON
    return {"model": teacher.model, **params}, calls


class AnthropicBatchClient:
    """Message Batches; `teacher` is needed only to submit, not to poll or cancel."""

    provider = "anthropic"
    max_requests = 100_000
    max_bytes = 243_000_000  # 256 MB per batch, less headroom for the JSON framing
    tags_metadata = False

    @classmethod
    def for_teacher(cls, teacher: Teacher, api_key: str | None = None) -> AnthropicBatchClient:
        """A client that submits what `teacher` sends live (params, samples, cache marks)."""
        if not isinstance(teacher, AnthropicTeacher):
            raise ConfigError(f"--batch: {teacher.provider}:{teacher.model} is not an Anthropic teacher")
        return cls(teacher.identity.get("base_url"), api_key, teacher=teacher)

    @classmethod
    def for_journal(cls, base_url: str | None, api_key: str | None, provider: str) -> AnthropicBatchClient:
        """A client able to poll or cancel a journaled batch."""
        return cls(base_url, api_key)

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        teacher: AnthropicTeacher | None = None,
        timeout: float = CALL_TIMEOUT_S,
    ) -> None:
        self.base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL).rstrip("/")
        api_key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not api_key:
            raise ConfigError("no Anthropic API key: set ANTHROPIC_API_KEY (or pass --api-key-file FILE)")
        remember(api_key)
        self._teacher = teacher
        version = teacher.api_version if teacher is not None else None
        # Management calls are few and (except create) safe to repeat: let the SDK retry them.
        self._client = anthropic.AsyncAnthropic(
            base_url=self.base_url,
            api_key=api_key,
            max_retries=3,
            timeout=timeout,
            default_headers={"anthropic-version": version} if version else None,
        )

    def endpoint(self, request: Request) -> str:
        return MESSAGES

    def encode(self, custom: str, request: Request) -> list[bytes]:
        if self._teacher is None:
            raise ConfigError("this batch client was built without a teacher; it cannot submit")
        params, calls = batch_params(self._teacher, request)
        if calls == 1:
            return [orjson.dumps({"custom_id": custom, "params": params})]
        body = orjson.dumps(params)
        return [
            b'{"custom_id":' + orjson.dumps(f"{custom}_s{i}_{calls}") + b',"params":' + body + b"}"
            for i in range(calls)
        ]

    async def upload(self, uid: str, lines: Sequence[bytes]) -> str | None:
        return None  # requests travel with the create call

    async def create(
        self, lines: Sequence[bytes], *, endpoint: str, file_id: str | None, metadata: dict[str, str]
    ) -> RemoteBatch:
        requests = [orjson.loads(line) for line in lines]
        try:
            # Never retried blindly (a lost answer would mean a second batch); the next run
            # finds a batch whose answer was lost and adopts it.
            batch = await self._client.with_options(max_retries=0).messages.batches.create(requests=requests)
        except anthropic.APIError as exc:
            raise classify(exc) from exc
        return _remote(batch)

    async def retrieve(self, remote_id: str) -> RemoteBatch:
        try:
            return _remote(await self._client.messages.batches.retrieve(remote_id))
        except anthropic.APIError as exc:
            raise classify(exc) from exc

    async def recent(self, since: float) -> list[RemoteBatch]:
        out: list[RemoteBatch] = []
        try:
            async for batch in self._client.messages.batches.list(limit=100):
                if batch.created_at.timestamp() < since:
                    break  # newest first: everything after is older still
                out.append(_remote(batch))
        except anthropic.APIError as exc:
            raise classify(exc) from exc
        return out

    async def cancel(self, remote_id: str) -> RemoteBatch:
        try:
            return _remote(await self._client.messages.batches.cancel(remote_id))
        except anthropic.APIError as exc:
            raise classify(exc) from exc

    async def results(self, batch: RemoteBatch) -> AsyncIterator[ItemResult]:
        samples: dict[str, list[ItemResult | None]] = {}  # custom_id -> its samples so far
        try:
            decoder = await self._client.messages.batches.results(batch.id)
            async for entry in decoder:
                item = result_entry(entry.custom_id, entry.result.to_dict())
                base, _, tail = entry.custom_id.partition("_s")
                if not tail:
                    yield item
                    continue
                i, _, n = tail.partition("_")
                parts = samples.setdefault(base, [None] * int(n))
                parts[int(i)] = item
                if all(p is not None for p in parts):
                    yield _combined(base, samples.pop(base))
        except anthropic.APIError as exc:
            raise classify(exc) from exc
        for base, parts in samples.items():  # some samples never came back
            yield _combined(base, parts)

    async def aclose(self) -> None:
        await self._client.close()


def result_entry(custom: str, result: Mapping[str, Any]) -> ItemResult:
    """One results line: succeeded (a message), errored (an error response), or canceled /
    expired (never attempted: sent again by the next run)."""
    kind = result.get("type")
    if kind == "succeeded":
        try:
            return ItemResult(custom, completion=anthropic_wire.parse_message(result.get("message")))
        except TeacherError as exc:
            return ItemResult(custom, error=exc)
    if kind == "errored":
        outer = result.get("error") or {}
        inner = outer.get("error")
        err = inner if isinstance(inner, dict) else outer
        etype = str(err.get("type") or "api_error")
        message = short(err.get("message") or etype)
        return ItemResult(
            custom, error=status_error(_ERROR_STATUS.get(etype, 500), message, etype, provider="anthropic")
        )
    return ItemResult(custom)


def _combined(custom: str, parts: Sequence[ItemResult | None]) -> ItemResult:
    """A sampled request's samples as one result: an error if any sample failed (a final
    one first), unfinished if any never ran, else the live teacher's combination."""
    errors = [p.error for p in parts if p is not None and p.error is not None]
    if errors:
        return ItemResult(custom, error=next((e for e in errors if not e.retryable), errors[0]))
    done: list[Completion] = [p.completion for p in parts if p is not None and p.completion is not None]
    if len(done) < len(parts):
        return ItemResult(custom)
    return ItemResult(custom, completion=anthropic_wire.combine(done, latency_s=0.0))


def _remote(batch: Any) -> RemoteBatch:
    c = batch.request_counts
    total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
    ended = batch.processing_status == "ended"
    outcome = None
    if ended:
        if c.expired:
            outcome = EXPIRED
        elif batch.cancel_initiated_at is not None:
            outcome = CANCELLED
        else:
            outcome = COMPLETED
    return RemoteBatch(
        id=batch.id,
        status=batch.processing_status,
        ended=ended,
        outcome=outcome,
        total=total,
        done=total - c.processing,
        failed=c.errored,
        created_at=batch.created_at.timestamp(),
        raw=batch,
    )
