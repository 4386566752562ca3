"""The providers' batch APIs on the teacher server, shaped so the official SDKs drive them.

OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}``,
``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``; ``POST /v1/batches``
(``input_file_id``, ``endpoint``, ``completion_window="24h"``, ``metadata``),
``GET /v1/batches[/{id}]`` and ``POST /v1/batches/{id}/cancel``. Statuses go validating →
in_progress → finalizing → completed (or failed, expired, cancelling → cancelled); results
are an output file and an error file of ``{id, custom_id, response: {status_code,
request_id, body}, error}`` lines. Anthropic: ``POST|GET /v1/messages/batches``,
``GET|DELETE /v1/messages/batches/{id}``, ``POST .../{id}/cancel`` and ``GET .../{id}/results``
(JSONL of ``{custom_id, result: {type: succeeded|errored|canceled|expired, ...}}``), with
``processing_status`` in_progress → canceling → ended.

Each request line is answered through the same pipeline as a live request (parser,
`status_for`, context window, responder, provider body), so a batch answer equals the
live one for the same prompt. A batch takes `batch_speed_s` seconds instead of up to 24
hours. Faults, fixed when a batch is created: `batch_fault="fail"` (OpenAI: validation
fails; Anthropic, which has no failed state: every request errors), `batch_fault="expire"`
(ends with half its requests answered, the rest expired), and `batch_error_rate` (that
share of requests answered with an HTTP 500 error). ``GET /_batches`` counts what was
submitted, for tests that must prove nothing was sent twice.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from labeler.testing import faults, hostile
from labeler.testing.answers import Answer, Answers
from labeler.testing.hashing import mix, unit
from labeler.testing.prompts import (
    ANTHROPIC,
    OPENAI_CHAT,
    OPENAI_COMPLETIONS,
    BadRequest,
    parse_anthropic,
    parse_openai_chat,
    parse_openai_completions,
)

if TYPE_CHECKING:
    from labeler.testing.app import TeacherApp

OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_FILE_BYTES = 200 * 1000 * 1000
ANTHROPIC_MAX_REQUESTS = 100_000
ANTHROPIC_MAX_BYTES = 256 * 1000 * 1000
_ENDPOINTS = {"/v1/chat/completions": OPENAI_CHAT, "/v1/completions": OPENAI_COMPLETIONS}
_PARSERS = {
    OPENAI_CHAT: parse_openai_chat,
    OPENAI_COMPLETIONS: parse_openai_completions,
    ANTHROPIC: parse_anthropic,
}
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_EXPIRED_MSG = "This request could not be executed before the completion window expired."
_CANCELLED_MSG = "This request was not executed because the batch was cancelled."

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int


@dataclass(slots=True)
class Batch:
    """One batch of either provider; `lines` are (custom_id, body) in submission order."""

    provider: str  # OPENAI_CHAT | OPENAI_COMPLETIONS | ANTHROPIC
    id: str
    created: float
    lines: list[tuple[str, dict[str, Any]]]
    fault: str | None
    speed: float
    endpoint: str = ""
    input_file_id: str = ""
    metadata: dict[str, str] | None = None
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)
    ok: list[bytes] = field(default_factory=list)  # output lines (OpenAI) / result lines
    errors: list[bytes] = field(default_factory=list)
    answered: int = 0
    failed: int = 0
    cancelling: bool = False
    validation: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # Anthropic result types, once ended
    ended_at: float | None = None
    cancel_at: float | None = None

    @property
    def anthropic(self) -> bool:
        return self.provider == ANTHROPIC


class BatchAPI:
    """Batch endpoints of one `TeacherApp`; `route` finds the handler of a request."""

    def __init__(self, app: TeacherApp) -> None:
        self.app = app
        self._ids = itertools.count(1)
        # Ids differ between servers, as a provider's are unique: two test servers behind
        # one store (a cascade's stages) must not hand out the same batch id.
        self._server_tag = secrets.randbits(32)
        self.reset()

    def reset(self) -> None:
        """Forget every file, batch and count (a running batch stops at its next step)."""
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self.counts = {p: {"batches": 0, "requests": 0, "files": 0} for p in ("openai", "anthropic")}
        self._tasks: set[asyncio.Task[None]] = set()

    def route(self, method: str, path: str) -> Handler | None:
        parts = path.strip("/").split("/")
        if parts[:1] == ["_batches"] and method == "GET":
            return self._counts
        if parts[:1] != ["v1"]:
            return None
        rest = parts[1:]
        table: list[tuple[str, list[str], Callable[..., Awaitable[web.StreamResponse]]]] = [
            ("POST", ["files"], self._upload),
            ("GET", ["files", "*"], self._file),
            ("DELETE", ["files", "*"], self._delete_file),
            ("GET", ["files", "*", "content"], self._file_content),
            ("POST", ["batches"], self._openai_create),
            ("GET", ["batches"], self._openai_list),
            ("GET", ["batches", "*"], self._openai_get),
            ("POST", ["batches", "*", "cancel"], self._openai_cancel),
            ("POST", ["messages", "batches"], self._anthropic_create),
            ("GET", ["messages", "batches"], self._anthropic_list),
            ("GET", ["messages", "batches", "*"], self._anthropic_get),
            ("DELETE", ["messages", "batches", "*"], self._anthropic_delete),
            ("POST", ["messages", "batches", "*", "cancel"], self._anthropic_cancel),
            ("GET", ["messages", "batches", "*", "results"], self._anthropic_results),
        ]
        for verb, pattern, handler in table:
            if (
                verb == method
                and len(pattern) == len(rest)
                and all(p == "*" or p == r for p, r in zip(pattern, rest, strict=True))
            ):
                args = [r for p, r in zip(pattern, rest, strict=True) if p == "*"]
                return functools.partial(handler, *args) if args else handler
        return None

    # -- shared -----------------------------------------------------------------------------

    def _answers(self, provider: str) -> Answers:
        return self.app._answers(provider, self.app.config)

    def _denied(self, request: web.BaseRequest, provider: str) -> web.Response | None:
        key = self.app.config.api_key
        if key is None:
            return None
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.startswith("Bearer "):
            given = auth[7:]
        if given is not None and hmac.compare_digest(given.encode(), key.encode()):
            return None
        echo = (auth or given) if self.app.config.echo_key else None
        return self.app._finish(
            request, provider, self._answers(provider).unauthorized(given is not None, echo)
        )

    def _ok(self, request: web.BaseRequest, provider: str, data: Any) -> web.Response:
        return self.app._finish(request, provider, self._answers(provider).ok(orjson.dumps(data)))

    def _error(
        self, request: web.BaseRequest, provider: str, status: int, message: str, **fields: Any
    ) -> web.Response:
        answer = self._answers(provider).error(status, message, **fields)
        return self.app._finish(request, provider, answer)

    def _new_id(self, prefix: str) -> str:
        n = next(self._ids)
        return f"{prefix}{(n * 0x9E3779B1) & 0xFFFFFFFFFF:010x}{self._server_tag:08x}{n:08x}"

    def _start(self, batch: Batch) -> None:
        task = asyncio.get_running_loop().create_task(self._process(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _counts(self, request: web.BaseRequest) -> web.StreamResponse:
        data = {
            **self.counts,
            "batches": [
                {
                    "id": b.id,
                    "provider": "anthropic" if b.anthropic else "openai",
                    "status": b.status,
                    "requests": len(b.lines),
                    "metadata": b.metadata,
                }
                for b in self.batches.values()
            ],
        }
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    # -- OpenAI files ---------------------------------------------------------------------

    async def _upload(self, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, OPENAI_CHAT)) is not None:
            return denied
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return self._error(request, OPENAI_CHAT, 413, "File is too large.")
        except ValueError:
            form = None
        upload = form.get("file") if form is not None else None
        purpose = form.get("purpose") if form is not None else None
        if not isinstance(upload, web.FileField):
            return self._error(
                request,
                OPENAI_CHAT,
                400,
                "Missing required parameter: 'file'.",
                param="file",
                type="invalid_request_error",
            )
        if not isinstance(purpose, str) or not purpose:
            return self._error(
                request,
                OPENAI_CHAT,
                400,
                "Missing required parameter: 'purpose'.",
                param="purpose",
                type="invalid_request_error",
            )
        data = upload.file.read()
        f = StoredFile(self._new_id("file-"), upload.filename or "upload", purpose, data, int(time.time()))
        self.files[f.id] = f
        self.counts["openai"]["files"] += 1
        return self._ok(request, OPENAI_CHAT, _file_object(f))

    async def _file(self, file_id: str, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, OPENAI_CHAT)) is not None:
            return denied
        f = self.files.get(file_id)
        if f is None:
            return self._error(request, OPENAI_CHAT, 404, f"No such File object: {file_id}")
        return self._ok(request, OPENAI_CHAT, _file_object(f))

    async def _delete_file(self, file_id: str, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, OPENAI_CHAT)) is not None:
            return denied
        if self.files.pop(file_id, None) is None:
            return self._error(request, OPENAI_CHAT, 404, f"No such File object: {file_id}")
        return self._ok(request, OPENAI_CHAT, {"id": file_id, "object": "file", "deleted": True})

    async def _file_content(self, file_id: str, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, OPENAI_CHAT)) is not None:
            return denied
        f = self.files.get(file_id)
        if f is None:
            return self._error(request, OPENAI_CHAT, 404, f"No such File object: {file_id}")
        answer = self._answers(OPENAI_CHAT).ok(f.data, content_type="application/octet-stream")
        return self.app._finish(request, OPENAI_CHAT, answer)

    # -- OpenAI batches -------------------------------------------------------------------

    async def _openai_create(self, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, OPENAI_CHAT)) is not None:
            return denied
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._answer(request, OPENAI_CHAT, self._answers(OPENAI_CHAT).bad_json())
        endpoint = body.get("endpoint")
        if endpoint not in _ENDPOINTS:
            return self._error(
                request,
                OPENAI_CHAT,
                400,
                f"Invalid value for 'endpoint': {endpoint!r}.",
                param="endpoint",
                type="invalid_request_error",
            )
        if body.get("completion_window") != "24h":
            return self._error(
                request,
                OPENAI_CHAT,
                400,
                "Invalid value for 'completion_window': only '24h' is supported.",
                param="completion_window",
                type="invalid_request_error",
            )
        metadata = body.get("metadata")
        problem = _metadata_problem(metadata)
        if problem:
            return self._error(
                request, OPENAI_CHAT, 400, problem, param="metadata", type="invalid_request_error"
            )
        f = self.files.get(str(body.get("input_file_id")))
        if f is None:
            return self._error(request, OPENAI_CHAT, 404, f"No such File object: {body.get('input_file_id')}")
        if f.purpose != "batch":
            return self._error(
                request,
                OPENAI_CHAT,
                400,
                f"File {f.id} has purpose {f.purpose!r}, not 'batch'.",
                param="input_file_id",
                type="invalid_request_error",
            )
        cfg = self.app.config
        lines, errors = _openai_lines(f.data, endpoint)
        batch = Batch(
            _ENDPOINTS[endpoint],
            self._new_id("batch_"),
            time.time(),
            lines,
            cfg.batch_fault,
            cfg.batch_speed_s,
            endpoint=endpoint,
            input_file_id=f.id,
            metadata=dict(metadata) if metadata else None,
            validation=errors,
        )
        batch.times["created_at"] = int(batch.created)
        self.batches[batch.id] = batch
        self.counts["openai"]["batches"] += 1
        self.counts["openai"]["requests"] += len(lines)
        self._start(batch)
        return self._ok(request, OPENAI_CHAT, _openai_object(batch))

    def _openai_batch(self, batch_id: str) -> Batch | None:
        b = self.batches.get(batch_id)
        return b if b is not None and not b.anthropic else None

    async def _openai_get(self, batch_id: str, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, OPENAI_CHAT)) is not None:
            return denied
        b = self._openai_batch(batch_id)
        if b is None:
            return self._error(request, OPENAI_CHAT, 404, f"No batch found with id '{batch_id}'.")
        return self._ok(request, OPENAI_CHAT, _openai_object(b))

    async def _openai_list(self, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, OPENAI_CHAT)) is not None:
            return denied
        newest = [b for b in reversed(self.batches.values()) if not b.anthropic]
        page, more = _page(newest, request.query.get("after"), None, request.query.get("limit"), 20)
        return self._ok(
            request,
            OPENAI_CHAT,
            {
                "object": "list",
                "data": [_openai_object(b) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": more,
            },
        )

    async def _openai_cancel(self, batch_id: str, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, OPENAI_CHAT)) is not None:
            return denied
        b = self._openai_batch(batch_id)
        if b is None:
            return self._error(request, OPENAI_CHAT, 404, f"No batch found with id '{batch_id}'.")
        if b.status not in ("validating", "in_progress", "finalizing", "cancelling"):
            return self._error(request, OPENAI_CHAT, 409, f"Cannot cancel a batch with status '{b.status}'.")
        if not b.cancelling:
            b.cancelling = True
            b.status = "cancelling"
            b.times["cancelling_at"] = int(time.time())
        return self._ok(request, OPENAI_CHAT, _openai_object(b))

    # -- Anthropic batches ----------------------------------------------------------------

    async def _anthropic_create(self, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, ANTHROPIC)) is not None:
            return denied
        raw = await request.read()
        if len(raw) > ANTHROPIC_MAX_BYTES:
            return self._error(
                request, ANTHROPIC, 413, "Request exceeds the maximum allowed number of bytes."
            )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._answer(request, ANTHROPIC, self._answers(ANTHROPIC).bad_json())
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return self._error(request, ANTHROPIC, 400, "requests: Field required (a non-empty list)")
        if len(requests) > ANTHROPIC_MAX_REQUESTS:
            return self._error(
                request, ANTHROPIC, 400, f"requests: at most {ANTHROPIC_MAX_REQUESTS} requests per batch"
            )
        lines: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for i, item in enumerate(requests):
            cid = item.get("custom_id") if isinstance(item, dict) else None
            params = item.get("params") if isinstance(item, dict) else None
            if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
                return self._error(
                    request,
                    ANTHROPIC,
                    400,
                    f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
                )
            if cid in seen:
                return self._error(request, ANTHROPIC, 400, f"Duplicate custom_id: {cid}")
            if not isinstance(params, dict):
                return self._error(request, ANTHROPIC, 400, f"requests.{i}.params: Field required")
            seen.add(cid)
            lines.append((cid, params))
        cfg = self.app.config
        batch = Batch(
            ANTHROPIC,
            self._new_id("msgbatch_"),
            time.time(),
            lines,
            cfg.batch_fault,
            cfg.batch_speed_s,
            status="in_progress",
        )
        self.batches[batch.id] = batch
        self.counts["anthropic"]["batches"] += 1
        self.counts["anthropic"]["requests"] += len(lines)
        self._start(batch)
        return self._ok(request, ANTHROPIC, _anthropic_object(batch, _origin(request)))

    def _anthropic_batch(self, batch_id: str) -> Batch | None:
        b = self.batches.get(batch_id)
        return b if b is not None and b.anthropic else None

    def _anthropic_missing(self, request: web.BaseRequest, batch_id: str) -> web.Response:
        return self._error(request, ANTHROPIC, 404, f"Message batch {batch_id} not found")

    async def _anthropic_get(self, batch_id: str, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, ANTHROPIC)) is not None:
            return denied
        b = self._anthropic_batch(batch_id)
        if b is None:
            return self._anthropic_missing(request, batch_id)
        return self._ok(request, ANTHROPIC, _anthropic_object(b, _origin(request)))

    async def _anthropic_list(self, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, ANTHROPIC)) is not None:
            return denied
        newest = [b for b in reversed(self.batches.values()) if b.anthropic]
        q = request.query
        page, more = _page(newest, q.get("after_id"), q.get("before_id"), q.get("limit"), 20)
        origin = _origin(request)
        return self._ok(
            request,
            ANTHROPIC,
            {
                "data": [_anthropic_object(b, origin) for b in page],
                "has_more": more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            },
        )

    async def _anthropic_cancel(self, batch_id: str, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, ANTHROPIC)) is not None:
            return denied
        b = self._anthropic_batch(batch_id)
        if b is None:
            return self._anthropic_missing(request, batch_id)
        if b.status == "in_progress":
            b.cancelling = True
            b.status = "canceling"
            b.cancel_at = time.time()
        return self._ok(request, ANTHROPIC, _anthropic_object(b, _origin(request)))

    async def _anthropic_delete(self, batch_id: str, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, ANTHROPIC)) is not None:
            return denied
        b = self._anthropic_batch(batch_id)
        if b is None:
            return self._anthropic_missing(request, batch_id)
        if b.status != "ended":
            return self._error(
                request,
                ANTHROPIC,
                400,
                "Message batches can only be deleted once they have finished processing; cancel it first.",
            )
        del self.batches[batch_id]
        return self._ok(request, ANTHROPIC, {"id": batch_id, "type": "message_batch_deleted"})

    async def _anthropic_results(self, batch_id: str, request: web.BaseRequest) -> web.StreamResponse:
        if (denied := self._denied(request, ANTHROPIC)) is not None:
            return denied
        b = self._anthropic_batch(batch_id)
        if b is None:
            return self._anthropic_missing(request, batch_id)
        if b.status != "ended":
            return self._error(
                request,
                ANTHROPIC,
                400,
                f"Message batch {batch_id} has not finished processing; results are not available yet.",
            )
        body = b"".join(line + b"\n" for line in (*b.ok, *b.errors))
        answer = self._answers(ANTHROPIC).ok(body, content_type="application/binary")
        return self.app._finish(request, ANTHROPIC, answer)

    def _answer(self, request: web.BaseRequest, provider: str, answer: Answer) -> web.Response:
        return self.app._finish(request, provider, answer)

    # -- processing -----------------------------------------------------------------------

    async def _process(self, b: Batch) -> None:
        """Move a batch through its states in about `b.speed` seconds, answering its lines."""
        n = len(b.lines)
        await asyncio.sleep(0.1 * b.speed)
        if self.batches.get(b.id) is not b:
            return  # the server was reset
        if not b.anthropic and (b.validation or b.fault == "fail" or b.cancelling):
            if b.cancelling:
                self._end(b, "cancelled", 0)
            else:
                if not b.validation:
                    b.validation = [
                        {
                            "code": "invalid_request",
                            "message": "The batch input file failed validation (injected fault).",
                            "param": None,
                            "line": None,
                        }
                    ]
                b.status = "failed"
                b.times["failed_at"] = int(time.time())
                b.ended_at = time.time()
            return
        if not b.anthropic:
            b.status = "in_progress"
            b.times["in_progress_at"] = int(time.time())
        stop = n // 2 if b.fault == "expire" else n
        step = max(1, n // 20)
        i = 0
        while i < stop and not b.cancelling:
            end = min(i + step, stop)
            for k in range(i, end):
                self._answer_line(b, k)
            await asyncio.sleep(0.8 * b.speed * (end - i) / max(n, 1))
            i = end
            if self.batches.get(b.id) is not b:
                return
        if not b.anthropic:
            b.status = "finalizing"
            b.times["finalizing_at"] = int(time.time())
            await asyncio.sleep(0.1 * b.speed)
        if b.cancelling:
            self._end(b, "cancelled", i)
        elif b.fault == "expire":
            self._end(b, "expired", i)
        else:
            self._end(b, "completed", i)

    def _answer_line(self, b: Batch, index: int) -> None:
        """One request through the live pipeline's steps; its result line is kept."""
        cfg = self.app.config
        custom, body = b.lines[index]
        provider = b.provider
        answers = self._answers(provider)
        fault = "fail" if b.anthropic and b.fault == "fail" else None
        try:
            parsed = _PARSERS[provider](body)
        except BadRequest as exc:
            openai_fields: dict[str, Any] = {} if b.anthropic else {"param": exc.param, "code": exc.code}
            answer = answers.error(400, exc.message, **openai_fields)
        else:
            pinned = faults.scheduled_status(cfg, parsed.text)
            if fault is not None:
                answer = answers.error(500, "The batch could not be processed (injected fault).")
            elif pinned is not None:
                answer = answers.error(pinned, model=parsed.model, fault=faults.STATUS_FOR)
            elif parsed.longest_prompt > cfg.context_tokens:
                answer = answers.context_exceeded(
                    cfg.context_tokens, parsed.longest_prompt, parsed.max_tokens
                )
            elif cfg.batch_error_rate and unit(cfg.seed, parsed.hash, 0xBA7C) < cfg.batch_error_rate:
                answer = answers.error(500, model=parsed.model, fault=faults.ERROR)
            else:
                payload = self.app._complete(cfg, parsed, body, answers.rid, False)
                if cfg.hostile_rate and unit(cfg.seed, parsed.hash, 0x405B) < cfg.hostile_rate:
                    # A result line holds the body as JSON: only modes that keep it JSON fit.
                    shape = hostile.pick(cfg.hostile, mix(cfg.seed, parsed.hash, 0x405))
                    payload = hostile.corrupt(payload, shape, provider)[0]
                answer = answers.ok(payload)
        status = answer.status or 500
        if status == 200:
            b.answered += 1
        else:
            b.failed += 1
        if b.anthropic:
            kind = b'"succeeded","message"' if status == 200 else b'"errored","error"'
            line = (
                b'{"custom_id":'
                + orjson.dumps(custom)
                + b',"result":{"type":'
                + kind
                + b":"
                + answer.body
                + b"}}"
            )
        else:
            line = (
                b'{"id":'
                + orjson.dumps(f"batch_req_{answers.rid}")
                + b',"custom_id":'
                + orjson.dumps(custom)
                + b',"response":{"status_code":'
                + str(status).encode()
                + b',"request_id":'
                + orjson.dumps(f"req_{answers.rid}")
                + b',"body":'
                + answer.body
                + b'},"error":null}'
            )
        (b.ok if status == 200 else b.errors).append(line)

    def _end(self, b: Batch, outcome: str, attempted: int) -> None:
        """Close a batch: the requests it never attempted become expired or cancelled."""
        now = time.time()
        for custom, _ in b.lines[attempted:]:
            if b.anthropic:
                kind = "expired" if outcome == "expired" else "canceled"
                b.errors.append(orjson.dumps({"custom_id": custom, "result": {"type": kind}}))
            else:
                code, msg = (
                    ("batch_expired", _EXPIRED_MSG)
                    if outcome == "expired"
                    else ("batch_cancelled", _CANCELLED_MSG)
                )
                b.errors.append(
                    orjson.dumps(
                        {
                            "id": self._new_id("batch_req_"),
                            "custom_id": custom,
                            "response": None,
                            "error": {"code": code, "message": msg},
                        }
                    )
                )
        b.ended_at = now
        if b.anthropic:
            left = len(b.lines) - attempted
            b.counts = {
                "succeeded": b.answered,
                "errored": b.failed,
                "canceled": left if outcome == "cancelled" else 0,
                "expired": left if outcome == "expired" else 0,
                "processing": 0,
            }
            b.status = "ended"
            return
        b.status = outcome
        b.times[
            {"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[outcome]
        ] = int(now)
        if b.ok:
            f = StoredFile(
                self._new_id("file-"),
                f"{b.id}_output.jsonl",
                "batch_output",
                b"".join(line + b"\n" for line in b.ok),
                int(now),
            )
            self.files[f.id] = f
            b.output_file_id = f.id
        if b.errors:
            f = StoredFile(
                self._new_id("file-"),
                f"{b.id}_error.jsonl",
                "batch_output",
                b"".join(line + b"\n" for line in b.errors),
                int(now),
            )
            self.files[f.id] = f
            b.error_file_id = f.id


# -- shapes ---------------------------------------------------------------------------------


Lines = list[tuple[str, dict[str, Any]]]


def _openai_lines(data: bytes, endpoint: str) -> tuple[Lines, list[dict[str, Any]]]:
    """Parse and validate an input file as OpenAI does: JSONL of {custom_id, method, url,
    body}, unique custom_ids, one endpoint and one model, within the size limits."""
    lines: Lines = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()

    def err(code: str, message: str, line: int | None) -> None:
        if len(errors) < 10:
            errors.append({"code": code, "message": message, "param": None, "line": line})

    if len(data) > OPENAI_MAX_FILE_BYTES:
        err("file_too_large", f"The input file exceeds the {OPENAI_MAX_FILE_BYTES} byte limit.", None)
    for no, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            err("invalid_json_line", "This line is not parseable as valid JSON.", no)
            continue
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("custom_id"), str)
            or not isinstance(obj.get("body"), dict)
        ):
            err("invalid_request", "Each line needs a string custom_id and an object body.", no)
            continue
        if obj.get("method") != "POST":
            err("invalid_method", "Only POST is supported.", no)
        if obj.get("url") != endpoint:
            err(
                "mismatched_endpoint",
                f"The url {obj.get('url')!r} does not match the batch endpoint {endpoint!r}.",
                no,
            )
        if obj["custom_id"] in seen:
            err(
                "duplicate_custom_id",
                "The custom_id for this request is a duplicate of another "
                "request. The custom_id parameter must be unique for each request in a batch.",
                no,
            )
        seen.add(obj["custom_id"])
        models.add(str(obj["body"].get("model")))
        lines.append((obj["custom_id"], obj["body"]))
    if len(models) > 1:
        err("mismatched_model", "All requests in a batch must use the same model.", None)
    if len(lines) > OPENAI_MAX_REQUESTS:
        err("too_many_requests", f"A batch may contain at most {OPENAI_MAX_REQUESTS} requests.", None)
    if not lines and not errors:
        err("empty_file", "The input file contains no requests.", None)
    return lines, errors


def _metadata_problem(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        return "Invalid 'metadata': expected an object with at most 16 pairs."
    for k, v in metadata.items():
        if len(k) > 64 or not isinstance(v, str) or len(v) > 512:
            return "Invalid 'metadata': keys are at most 64 characters, values strings of at most 512."
    return None


def _openai_object(b: Batch) -> dict[str, Any]:
    total = len(b.lines)
    out: dict[str, Any] = {
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "model": _model(b),
        "errors": ({"object": "list", "data": b.validation} if b.status == "failed" else None),
        "input_file_id": b.input_file_id,
        "completion_window": "24h",
        "status": b.status,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": int(b.created),
        "in_progress_at": None,
        "expires_at": int(b.created) + 86400,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {
            "total": total if b.status != "failed" else 0,
            "completed": b.answered,
            "failed": b.failed,
        },
        "metadata": b.metadata,
    }
    out.update(b.times)
    return out


def _model(b: Batch) -> str | None:
    return str(b.lines[0][1].get("model")) if b.lines else None


def _anthropic_object(b: Batch, origin: str) -> dict[str, Any]:
    ended = b.status == "ended"
    counts = (
        b.counts
        if ended
        else {
            "processing": len(b.lines),
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
    )
    return {
        "id": b.id,
        "type": "message_batch",
        "processing_status": b.status,
        "request_counts": counts,
        "ended_at": _rfc3339(b.ended_at) if ended and b.ended_at is not None else None,
        "created_at": _rfc3339(b.created),
        "expires_at": _rfc3339(b.created + 86400),
        "archived_at": None,
        "cancel_initiated_at": _rfc3339(b.cancel_at) if b.cancel_at else None,
        "results_url": f"{origin}/v1/messages/batches/{b.id}/results" if ended else None,
    }


def _file_object(f: StoredFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": len(f.data),
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "expires_at": f.created_at + 30 * 86400,
        "status_details": None,
    }


def _page(
    items: list[Batch], after: str | None, before: str | None, limit: str | None, default: int
) -> tuple[list[Batch], bool]:
    """Cursor pagination over a newest-first list, as both providers page."""
    try:
        n = max(1, min(int(limit), 1000)) if limit else default
    except ValueError:
        n = default
    ids = [b.id for b in items]
    if after in ids:
        items = items[ids.index(after) + 1 :]
    elif before in ids:
        items = items[: ids.index(before)][-n:]
        return items, False
    return items[:n], len(items) > n


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _origin(request: web.BaseRequest) -> str:
    return f"{request.scheme}://{request.host}"
