"""OpenAI's Batch API (and OpenAI-compatible servers that implement it) on the official SDK.

Requests go up as a JSONL file (``purpose="batch"``), a batch names that file, and results
come back as two JSONL files, successes and errors, whose lines carry the raw response
body: those bodies are parsed by the same functions as live responses
(teachers/openai_answers.py), so a batch answer is stored exactly as a live one would be.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import openai
import orjson

from labeler.answer_checks import malformed
from labeler.batch.base import (
    CALL_TIMEOUT_S,
    CANCELLED,
    COMPLETED,
    EXPIRED,
    FAILED,
    ItemResult,
    RemoteBatch,
    status_error,
)
from labeler.completion import Completion
from labeler.errors import ConfigError, FinalError, RetryableError, TeacherError, short
from labeler.redact import remember
from labeler.request import Request
from labeler.teachers import openai_answers
from labeler.teachers.base import Teacher
from labeler.teachers.openai_sdk import OPENAI_URL, classify

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
_ENDED = {"completed": COMPLETED, "failed": FAILED, "expired": EXPIRED, "cancelled": CANCELLED}
# Requests the provider never attempted: not failures, they are sent again by the next run.
_NOT_ATTEMPTED = {"batch_expired", "batch_cancelled"}

BodyFn = Callable[[Request], dict[str, Any]]


class OpenAIBatchClient:
    """Files + batches endpoints. `body` turns a Request into the live endpoint's JSON body
    (the teacher's own `request_body`), needed only to submit, not to poll or cancel."""

    provider = "openai"
    max_requests = 50_000
    max_bytes = 190_000_000  # 200 MB per input file, less headroom
    tags_metadata = True

    @classmethod
    def for_teacher(cls, teacher: Teacher, api_key: str | None = None) -> OpenAIBatchClient:
        """A client that submits exactly the bodies `teacher` sends live."""
        body = getattr(teacher, "request_body", None)
        if body is None:  # the batch file must carry exactly the live request body
            raise ConfigError(f"--batch: this {teacher.provider} teacher cannot say what body it sends")
        return cls(
            teacher.identity.get("base_url"), api_key, body=body, compatible=teacher.provider != "openai"
        )

    @classmethod
    def for_journal(cls, base_url: str | None, api_key: str | None, provider: str) -> OpenAIBatchClient:
        """A client able to poll or cancel a journaled batch of `provider`'s teacher."""
        return cls(base_url, api_key, compatible=provider != "openai")

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        body: BodyFn | None = None,
        compatible: bool = False,
        timeout: float = CALL_TIMEOUT_S,
    ) -> None:
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or ("not-needed" if compatible else None)
        if not api_key:
            raise ConfigError("no OpenAI API key: set OPENAI_API_KEY (or pass --api-key-file FILE)")
        if api_key != "not-needed":
            remember(api_key)
        self._body = body
        # Management calls are few and (except create) safe to repeat: let the SDK retry them.
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key, max_retries=3, timeout=timeout
        )

    def endpoint(self, request: Request) -> str:
        return CHAT if request.is_chat else COMPLETIONS

    def encode(self, custom: str, request: Request) -> list[bytes]:
        if self._body is None:
            raise ConfigError("this batch client was built without a teacher; it cannot submit")
        return [
            orjson.dumps(
                {
                    "custom_id": custom,
                    "method": "POST",
                    "url": self.endpoint(request),
                    "body": self._body(request),
                }
            )
        ]

    async def upload(self, uid: str, lines: Sequence[bytes]) -> str | None:
        payload = b"\n".join(lines) + b"\n"
        try:
            f = await self._client.files.create(
                file=(f"labeler-{uid}.jsonl", payload, "application/jsonl"), purpose="batch"
            )
        except openai.APIError as exc:
            raise classify(exc) from exc
        return f.id

    async def create(
        self, lines: Sequence[bytes], *, endpoint: str, file_id: str | None, metadata: dict[str, str]
    ) -> RemoteBatch:
        if file_id is None:
            raise ConfigError("an OpenAI batch needs its uploaded input file")
        try:
            # Never retried blindly: a retry after a lost answer would create a second batch.
            # A lost answer is instead resolved by the next run, which lists and adopts it.
            batch = await self._client.with_options(max_retries=0).batches.create(
                input_file_id=file_id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h",
                metadata=metadata,
            )
        except openai.APIError as exc:
            raise classify(exc) from exc
        return _remote(batch)

    async def retrieve(self, remote_id: str) -> RemoteBatch:
        try:
            return _remote(await self._client.batches.retrieve(remote_id))
        except openai.APIError as exc:
            raise classify(exc) from exc

    async def recent(self, since: float) -> list[RemoteBatch]:
        out: list[RemoteBatch] = []
        try:
            async for batch in self._client.batches.list(limit=100):
                if batch.created_at < since:
                    break  # newest first: everything after is older still
                out.append(_remote(batch))
        except openai.APIError as exc:
            raise classify(exc) from exc
        return out

    async def cancel(self, remote_id: str) -> RemoteBatch:
        try:
            return _remote(await self._client.batches.cancel(remote_id))
        except openai.APIError as exc:
            raise classify(exc) from exc

    async def results(self, batch: RemoteBatch) -> AsyncIterator[ItemResult]:
        raw = batch.raw
        parse = openai_answers.parse_completions if raw.endpoint == COMPLETIONS else openai_answers.parse_chat
        for file_id in (raw.output_file_id, raw.error_file_id):
            if not file_id:
                continue
            try:
                async with self._client.files.with_streaming_response.content(file_id) as resp:
                    async for line in resp.iter_lines():
                        if line.strip():
                            yield result_line(_line_json(line), parse)
            except openai.APIError as exc:
                raise classify(exc) from exc

    async def aclose(self) -> None:
        await self._client.close()


def _line_json(line: str | bytes) -> dict[str, Any]:
    """A results line as JSON; one that is not (a file cut short) fails the reading of the
    file, which the next run tries again."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RetryableError("invalid_json", "a batch result line that is not JSON") from exc
    if not isinstance(obj, dict):
        raise RetryableError("invalid_json", "a batch result line that is not a JSON object")
    return obj


def result_line(obj: Any, parse: Callable[[Any], Completion]) -> ItemResult:
    """One line of an output or error file: ``{custom_id, response: {status_code, body},
    error}``; a body is parsed as a live body is, so a 200 with a refusal fails the same,
    and a line whose fields have the wrong types is a malformed answer for its request."""
    custom = str(obj.get("custom_id") or "")
    try:
        return _result(custom, obj, parse)
    except (TypeError, ValueError, AttributeError) as exc:
        return ItemResult(custom, error=malformed("batch result line", f"unexpected shape ({exc})"))


def _result(custom: str, obj: dict[str, Any], parse: Callable[[Any], Completion]) -> ItemResult:
    response = obj.get("response")
    error = obj.get("error")
    if isinstance(response, dict):
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        if status == 200:
            try:
                return ItemResult(custom, completion=parse(body))
            except TeacherError as exc:
                return ItemResult(custom, error=exc)
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        message = short(err.get("message") or f"HTTP {status}")
        return ItemResult(custom, error=status_error(status, message, err.get("code")))
    if isinstance(error, dict):
        code = str(error.get("code") or "batch_error")
        if code in _NOT_ATTEMPTED:
            return ItemResult(custom)
        return ItemResult(custom, error=FinalError(code, short(error.get("message") or code)))
    return ItemResult(
        custom, error=FinalError("invalid_json", "a batch result line with neither response nor error")
    )


def _remote(batch: Any) -> RemoteBatch:
    counts = batch.request_counts
    total = counts.total if counts else 0
    done = (counts.completed + counts.failed) if counts else 0
    error = None
    if batch.errors is not None and batch.errors.data:
        error = "; ".join(
            short(f"{e.code or 'error'}: {e.message or ''}" + (f" (line {e.line})" if e.line else ""))
            for e in batch.errors.data[:5]
        )
    return RemoteBatch(
        id=batch.id,
        status=batch.status,
        ended=batch.status in _ENDED,
        outcome=_ENDED.get(batch.status),
        total=total,
        done=done,
        failed=counts.failed if counts else 0,
        created_at=float(batch.created_at),
        metadata=dict(batch.metadata or {}),
        error=error,
        raw=batch,
    )
