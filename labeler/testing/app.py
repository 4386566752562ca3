"""The request pipeline behind every endpoint: auth, validation, limits, faults, answer.

Order matters and follows the providers: a bad key is refused before anything else, a
malformed request before it costs rate-limit capacity, a request over the limit before
it is attempted, and only an admitted, valid attempt can meet a scheduled or random
fault. Handlers run on one event loop, so the counters need no locks; the log and stats
that tests read from another thread carry their own.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from labeler.testing import anthropic_wire, faults, openai_wire
from labeler.testing.config import ServerConfig, patched, public_view
from labeler.testing.generation import FILTERED, Generation, generate
from labeler.testing.hashing import mix, text_hash
from labeler.testing.prompt_cache import PromptCaches
from labeler.testing.prompts import (
    ANTHROPIC,
    OPENAI_CHAT,
    OPENAI_COMPLETIONS,
    BadRequest,
    Parsed,
    parse_anthropic,
    parse_openai_chat,
    parse_openai_completions,
)
from labeler.testing.ratelimit import RateLimiter
from labeler.testing.records import RequestLog, RequestRecord, Stats
from labeler.testing.responders import EchoResponder, LabelResponder, RequestView, Responder

logger = logging.getLogger("labeler.testing")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

_PARSERS: dict[str, Callable[[dict[str, Any]], Parsed]] = {
    OPENAI_CHAT: parse_openai_chat,
    OPENAI_COMPLETIONS: parse_openai_completions,
    ANTHROPIC: parse_anthropic,
}
_GARBAGE_JSON = b'{"id": "chatcmpl-7e57", "object": "chat.completion", "choices": [{"ind'
_GARBAGE_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)
_BAD_JSON = {
    OPENAI_CHAT: "We could not parse the JSON body of your request. The API expects a JSON "
    "payload, but what was sent was not valid JSON.",
    ANTHROPIC: "There was an error parsing the body of your request.",
}


@dataclass(slots=True)
class Answer:
    status: int | None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    content_type: str = "application/json"


class TeacherApp:
    """State and handlers of one teacher server; `handle` is the aiohttp entry point."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.log = RequestLog()
        self.stats = Stats()
        self._attempts: dict[tuple[str, int], int] = {}
        self._calls: dict[tuple[str, int], int] = {}
        self._limiter = RateLimiter()
        self._caches = PromptCaches()
        self._ids = itertools.count(1)
        self._responders: dict[tuple[Any, ...], Responder] = {}
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/v1/messages"): self._messages,
            ("POST", "/v1/messages/count_tokens"): self._count_tokens,
            ("GET", "/v1/models"): self._models,
            ("GET", "/health"): self._health,
            ("GET", "/_stats"): self._stats,
            ("GET", "/_config"): self._get_config,
            ("POST", "/_config"): self._set_config,
            ("POST", "/_reset"): self._reset,
        }

    def reset(self) -> None:
        """Forget every request: log, counters, rate windows, caches, attempt numbers."""
        self.log.clear()
        self.stats = Stats()
        self._attempts = {}
        self._calls = {}
        self._limiter = RateLimiter()
        self._caches = PromptCaches()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            return self._not_found(request)
        return await handler(request)

    # -- generation endpoints -------------------------------------------------------

    async def _chat(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._generation(request, OPENAI_CHAT)

    async def _completions(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._generation(request, OPENAI_COMPLETIONS)

    async def _messages(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._generation(request, ANTHROPIC)

    async def _generation(self, request: web.BaseRequest, provider: str) -> web.StreamResponse:
        cfg = self.config
        record = RequestRecord(time.monotonic(), request.method, request.path, provider)
        if cfg.log_requests:
            self.log.append(record)
        rid = self._rid()
        try:
            answer = await self._answer(request, cfg, provider, record, rid)
        except asyncio.CancelledError:
            self.stats.count(record.path, "cancelled", record.fault)
            raise
        record.status = answer.status
        record.fault = answer.fault
        record.responded = time.monotonic()
        self.stats.count(record.path, answer.status, answer.fault)
        if answer.status is None:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        return web.Response(
            body=answer.body,
            status=answer.status,
            headers=answer.headers,
            content_type=answer.content_type,
        )

    async def _answer(
        self,
        request: web.BaseRequest,
        cfg: ServerConfig,
        provider: str,
        record: RequestRecord,
        rid: str,
    ) -> Answer:
        started = record.received
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            message = _BAD_JSON[ANTHROPIC if provider == ANTHROPIC else OPENAI_CHAT]
            return self._error(provider, cfg, 400, rid, started, message)
        record.body = body
        model = str(body.get("model") or cfg.model)
        if cfg.api_key is not None and not _authorized(request.headers, cfg.api_key):
            return self._auth_error(provider, cfg, request, rid, started)
        try:
            parsed = _PARSERS[provider](body)
        except BadRequest as exc:
            return self._error(provider, cfg, 400, rid, started, exc.message, param=exc.param, code=exc.code)
        record.prompt = parsed.text
        pinned = faults.scheduled_status(cfg, parsed.text)
        if pinned is not None:
            return self._error(provider, cfg, pinned, rid, started, model=model, fault=faults.STATUS_FOR)
        if cfg.rpm or cfg.tpm:
            refused = self._admit(cfg, parsed)
            if refused is not None:
                return self._rate_limited(provider, cfg, rid, started, model, parsed, *refused)
        if parsed.longest_prompt > cfg.context_tokens:
            return self._context_error(provider, cfg, rid, started, parsed)
        key = (provider, parsed.hash)
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        record.attempt = attempt
        if attempt < cfg.fail_first:
            record.fault = faults.FAIL_FIRST
            await _sleep(faults.latency(cfg, parsed.hash, attempt))
            return self._error(
                provider, cfg, cfg.fail_status, rid, started, model=model, fault=faults.FAIL_FIRST
            )
        fault = faults.draw(cfg, parsed.hash, attempt)
        record.fault = fault
        delay = faults.latency(cfg, parsed.hash, attempt)
        await _sleep(delay + cfg.hang_s if fault == faults.HANG else delay)
        if fault is not None and fault not in (faults.HANG, faults.CONTENT_FILTER):
            return self._fault_answer(provider, cfg, rid, started, model, fault)
        try:
            payload = self._success(cfg, parsed, body, rid, fault == faults.CONTENT_FILTER)
        except Exception as exc:
            logger.exception("responder failed")
            return self._error(
                provider,
                cfg,
                500,
                rid,
                started,
                f"responder raised {type(exc).__name__}: {exc}",
                fault="responder_error",
            )
        return Answer(200, payload, self._headers(provider, cfg, rid, started), fault)

    def _admit(self, cfg: ServerConfig, parsed: Parsed) -> tuple[str, float, int] | None:
        prompts = len(parsed.prompts) if parsed.prompts else 1
        cost = parsed.prompt_tokens + (parsed.max_tokens or 0) * parsed.n * prompts
        refused = self._limiter.admit(time.monotonic(), cfg.rpm, cfg.tpm, cfg.rate_window_s, cost)
        if refused is None:
            return None
        return refused[0], refused[1], cost

    def _success(
        self,
        cfg: ServerConfig,
        parsed: Parsed,
        body: dict[str, Any],
        rid: str,
        filtered: bool,
    ) -> bytes:
        responder = self._responder(cfg)
        prompts = parsed.prompts or [parsed.text]
        gens: list[Generation] = []
        for i, prompt in enumerate(prompts):
            single = len(prompts) == 1
            prompt_hash = parsed.hash if single else text_hash(prompt)
            prompt_tokens = parsed.seg_tokens[i] if parsed.prompts else parsed.prompt_tokens
            limit = cfg.context_tokens - prompt_tokens
            if parsed.max_tokens is not None:
                limit = min(limit, parsed.max_tokens)
            for _ in range(parsed.n):
                if filtered:
                    gens.append(FILTERED)
                    continue
                key = (parsed.provider, prompt_hash)
                call = self._calls.get(key, 0)
                self._calls[key] = call + 1
                view = RequestView(
                    provider=parsed.provider,
                    prompt=prompt,
                    last_user=parsed.last_user if single else prompt,
                    model=parsed.model,
                    temperature=parsed.temperature,
                    seed=parsed.seed,
                    max_tokens=parsed.max_tokens,
                    call=call,
                    prompt_hash=prompt_hash,
                    body=body,
                )
                reply = responder(view)
                salt = mix(cfg.seed, prompt_hash, call if view.sampling else 0)
                gens.append(generate(reply, salt=salt, limit=limit, stop=parsed.stop, top_k=parsed.top_k))
        created = int(time.time())
        if parsed.provider == ANTHROPIC:
            read, write_5m, write_1h = self._caches.anthropic(
                parsed.model,
                parsed.segments,
                parsed.seg_tokens,
                parsed.cache_marks,
                time.monotonic(),
                cfg.cache_min_tokens,
            )
            return anthropic_wire.message_body(
                rid=rid,
                model=parsed.model,
                gen=gens[0],
                input_tokens=parsed.prompt_tokens,
                cache_read=read,
                cache_write_5m=write_5m,
                cache_write_1h=write_1h,
            )
        if parsed.provider == OPENAI_CHAT:
            cached = 0
            if parsed.prompt_tokens >= cfg.openai_cache_min_tokens:
                cached = self._caches.openai(
                    parsed.model, parsed.segments, time.monotonic(), cfg.openai_cache_min_tokens
                )
            return openai_wire.chat_body(
                rid=rid,
                model=parsed.model,
                created=created,
                gens=gens,
                logprobs=parsed.top_k is not None,
                prompt_tokens=parsed.prompt_tokens,
                cached_tokens=cached,
            )
        return openai_wire.completion_body(
            rid=rid,
            model=parsed.model,
            created=created,
            gens=gens,
            prompt_lengths=[len(p) for p in prompts],
            n=parsed.n,
            logprobs=parsed.top_k is not None,
            prompt_tokens=parsed.prompt_tokens,
            llama=cfg.completions_shape == "llama",
        )

    def _responder(self, cfg: ServerConfig) -> Responder:
        if cfg.responder is not None:
            return cfg.responder
        key: tuple[Any, ...] = (tuple(cfg.labels), cfg.seed) if cfg.labels else ("echo", cfg.seed)
        responder = self._responders.get(key)
        if responder is None:
            responder = LabelResponder(cfg.labels, cfg.seed) if cfg.labels else EchoResponder(cfg.seed)
            self._responders[key] = responder
        return responder

    # -- answers other than success --------------------------------------------------

    def _fault_answer(
        self, provider: str, cfg: ServerConfig, rid: str, started: float, model: str, fault: str
    ) -> Answer:
        if fault == faults.ERROR:
            return self._error(provider, cfg, 500, rid, started, model=model, fault=fault)
        if fault == faults.OVERLOADED:
            status = 529 if provider == ANTHROPIC else 503
            return self._error(provider, cfg, status, rid, started, model=model, fault=fault)
        if fault == faults.RATE_LIMIT:
            return self._error(provider, cfg, 429, rid, started, model=model, fault=fault)
        if fault == faults.GARBAGE:
            garbage = _GARBAGE_JSON if "json" in cfg.garbage_content_type else _GARBAGE_HTML
            headers = self._headers(provider, cfg, rid, started)
            return Answer(200, garbage, headers, fault, cfg.garbage_content_type)
        return Answer(None, fault=fault)

    def _error(
        self,
        provider: str,
        cfg: ServerConfig,
        status: int,
        rid: str,
        started: float,
        message: str | None = None,
        *,
        model: str = "",
        fault: str | None = None,
        retry_after: float | None = None,
        **openai_fields: Any,
    ) -> Answer:
        headers = self._headers(provider, cfg, rid, started)
        if provider == ANTHROPIC:
            body = anthropic_wire.error_body(status, message, model=model, request_id=f"req_{rid}")
        else:
            body = openai_wire.error_body(status, message, model=model, **openai_fields)
        if status == 429:
            wait = cfg.retry_after_s if retry_after is None else retry_after
            headers["retry-after"] = str(max(math.ceil(wait), 0))
            headers["retry-after-ms"] = str(max(math.ceil(wait * 1000), 0))
        return Answer(status, body, headers, fault)

    def _rate_limited(
        self,
        provider: str,
        cfg: ServerConfig,
        rid: str,
        started: float,
        model: str,
        parsed: Parsed,
        unit: str,
        wait: float,
        cost: int,
    ) -> Answer:
        limit = int((cfg.rpm if unit == "requests" else cfg.tpm) or 0)
        used_requests, used_tokens = self._limiter.used()
        if provider == ANTHROPIC:
            message = anthropic_wire.rate_limit_message(unit, limit)
            return self._error(
                provider, cfg, 429, rid, started, message, fault=faults.OVER_LIMIT, retry_after=wait
            )
        used = used_requests if unit == "requests" else used_tokens
        asked = 1 if unit == "requests" else cost
        message = openai_wire.rate_limit_message(model, unit, limit, used, asked, wait)
        return self._error(
            provider,
            cfg,
            429,
            rid,
            started,
            message,
            fault=faults.OVER_LIMIT,
            retry_after=wait,
            type=unit,
            code="rate_limit_exceeded",
        )

    def _context_error(
        self, provider: str, cfg: ServerConfig, rid: str, started: float, parsed: Parsed
    ) -> Answer:
        if provider == ANTHROPIC:
            message = anthropic_wire.context_message(cfg.context_tokens, parsed.longest_prompt)
            return self._error(provider, cfg, 400, rid, started, message)
        chat = provider == OPENAI_CHAT
        message = openai_wire.context_message(
            cfg.context_tokens, parsed.longest_prompt, parsed.max_tokens, chat
        )
        return self._error(
            provider,
            cfg,
            400,
            rid,
            started,
            message,
            type="invalid_request_error",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )

    def _auth_error(
        self, provider: str, cfg: ServerConfig, request: web.BaseRequest, rid: str, started: float
    ) -> Answer:
        present = "x-api-key" in request.headers or "authorization" in request.headers
        if provider == ANTHROPIC:
            message = "invalid x-api-key" if present else "x-api-key header is required"
            return self._error(provider, cfg, 401, rid, started, message)
        if present:
            return self._error(provider, cfg, 401, rid, started)
        return self._error(
            provider,
            cfg,
            401,
            rid,
            started,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            type="invalid_request_error",
        )

    def _headers(self, provider: str, cfg: ServerConfig, rid: str, started: float) -> dict[str, str]:
        if provider == ANTHROPIC:
            headers = {"request-id": f"req_{rid}"}
            add_limits = anthropic_wire.ratelimit_headers
        else:
            elapsed_ms = int((time.monotonic() - started) * 1000)
            headers = {
                "x-request-id": f"req_{rid}",
                "openai-processing-ms": str(elapsed_ms),
                "openai-version": "2020-10-01",
            }
            add_limits = openai_wire.ratelimit_headers
        if cfg.rpm or cfg.tpm:
            requests, tokens = self._limiter.states(time.monotonic(), cfg.rpm, cfg.tpm, cfg.rate_window_s)
            add_limits(headers, requests, tokens)
        return headers

    def _rid(self) -> str:
        n = next(self._ids)
        return f"{mix(self.config.seed, n) & 0xFFFFFFFFFFFF:012x}{n:012x}"

    # -- listing, health and control -------------------------------------------------

    def _simple(self, request: web.BaseRequest, provider: str | None, answer: Answer) -> web.Response:
        record = RequestRecord(time.monotonic(), request.method, request.path, provider)
        record.status = answer.status
        record.responded = time.monotonic()
        if self.config.log_requests:
            self.log.append(record)
        self.stats.count(request.path, answer.status, None)
        return web.Response(
            body=answer.body,
            status=answer.status,
            headers=answer.headers,
            content_type=answer.content_type,
        )

    def _not_found(self, request: web.BaseRequest) -> web.Response:
        rid = self._rid()
        started = time.monotonic()
        if _is_anthropic(request):
            answer = self._error(ANTHROPIC, self.config, 404, rid, started, "Not Found")
        else:
            answer = self._error(
                OPENAI_CHAT,
                self.config,
                404,
                rid,
                started,
                f"Invalid URL ({request.method} {request.path})",
                type="invalid_request_error",
            )
        return self._simple(request, None, answer)

    async def _models(self, request: web.BaseRequest) -> web.StreamResponse:
        cfg = self.config
        rid = self._rid()
        started = time.monotonic()
        provider = ANTHROPIC if _is_anthropic(request) else OPENAI_CHAT
        if cfg.api_key is not None and not _authorized(request.headers, cfg.api_key):
            return self._simple(request, provider, self._auth_error(provider, cfg, request, rid, started))
        if provider == ANTHROPIC:
            body = anthropic_wire.models_body(cfg.model)
        else:
            body = openai_wire.models_body(cfg.model, int(time.time()))
        return self._simple(request, provider, Answer(200, body, self._headers(provider, cfg, rid, started)))

    async def _count_tokens(self, request: web.BaseRequest) -> web.StreamResponse:
        cfg = self.config
        rid = self._rid()
        started = time.monotonic()
        if cfg.api_key is not None and not _authorized(request.headers, cfg.api_key):
            return self._simple(request, ANTHROPIC, self._auth_error(ANTHROPIC, cfg, request, rid, started))
        try:
            body = orjson.loads(await request.read())
            body.setdefault("max_tokens", 1)
            parsed = parse_anthropic(body)
        except (orjson.JSONDecodeError, AttributeError, BadRequest) as exc:
            message = exc.message if isinstance(exc, BadRequest) else _BAD_JSON[ANTHROPIC]
            return self._simple(request, ANTHROPIC, self._error(ANTHROPIC, cfg, 400, rid, started, message))
        headers = self._headers(ANTHROPIC, cfg, rid, started)
        return self._simple(
            request,
            ANTHROPIC,
            Answer(200, anthropic_wire.count_tokens_body(parsed.prompt_tokens), headers),
        )

    async def _health(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._simple(request, None, Answer(200, b'{"status":"ok"}'))

    async def _stats(self, request: web.BaseRequest) -> web.StreamResponse:
        return _json(self.stats.snapshot())

    async def _get_config(self, request: web.BaseRequest) -> web.StreamResponse:
        return _json(public_view(self.config))

    async def _set_config(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of config fields")
            self.config = patched(self.config, changes)
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(public_view(self.config))

    async def _reset(self, request: web.BaseRequest) -> web.StreamResponse:
        self.reset()
        return _json({"reset": True})


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _authorized(headers: Mapping[str, str], key: str) -> bool:
    given = headers.get("x-api-key")
    if given is None:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return False
        given = auth[7:]
    return hmac.compare_digest(given.encode(), key.encode())


def _is_anthropic(request: web.BaseRequest) -> bool:
    return "anthropic-version" in request.headers or request.path.startswith("/v1/messages")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
