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
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from labeler.testing import anthropic_wire, faults, hostile, openai_wire, refusals
from labeler.testing.answers import GARBAGE_HTML, GARBAGE_JSON, Answer, Answers, Limits
from labeler.testing.batches import BatchAPI
from labeler.testing.config import ServerConfig, patched, public_view
from labeler.testing.generation import FILTERED, Generation, generate
from labeler.testing.hashing import mix, text_hash
from labeler.testing.label_tree import SharedPrefixResponder
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
from labeler.testing.responders import (
    EchoResponder,
    LabelResponder,
    RequestView,
    Responder,
    reasoning_trace,
)

logger = logging.getLogger("labeler.testing")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

_PARSERS: dict[str, Callable[[dict[str, Any]], Parsed]] = {
    OPENAI_CHAT: parse_openai_chat,
    OPENAI_COMPLETIONS: parse_openai_completions,
    ANTHROPIC: parse_anthropic,
}


# OpenAI's answer to a chat model asked on the legacy completions endpoint.
CHAT_MODEL_ON_COMPLETIONS = (
    "This is a chat model and not supported in the v1/completions "
    "endpoint. Did you mean to use v1/chat/completions?"
)


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
        self._batches: dict[int, asyncio.Semaphore] = {}  # capacity → its generation slots
        self._ids = itertools.count(1)
        self._responders: dict[tuple[Any, ...], Responder] = {}
        self.batches = BatchAPI(self)  # /v1/files, /v1/batches, /v1/messages/batches
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/v1/messages"): self._messages,
            ("POST", "/v1/messages/count_tokens"): self._count_tokens,
            ("GET", "/v1/models"): self._models,
            ("GET", "/health"): self._health,
            ("GET", "/_stats"): self._stats,
            ("GET", "/_log"): self._log,
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
        self.batches.reset()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            handler = self.batches.route(request.method, request.path)
        if handler is None:
            provider = ANTHROPIC if _is_anthropic(request) else OPENAI_CHAT
            answer = self._answers(provider, self.config).not_found(request.method, request.path)
            return self._finish(request, None, answer)
        return await handler(request)

    # -- generation ---------------------------------------------------------------------

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
            record.headers = {
                k.lower(): "[redacted]" if k.lower() in _SECRET_HEADERS else v
                for k, v in request.headers.items()
            }
            self.log.append(record)
        try:
            answer = await self._attempt(request, cfg, record, self._answers(provider, cfg))
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
            return web.Response(status=500)  # never reaches the aborted socket
        if cfg.trickle_s > 0:
            return await _trickle(request, answer, cfg.trickle_s)
        return _response(answer)

    async def _attempt(
        self, request: web.BaseRequest, cfg: ServerConfig, record: RequestRecord, answers: Answers
    ) -> Answer:
        body = await _read_body(request, answers)
        if isinstance(body, Answer):
            return body
        record.body = body
        parsed = self._admit_request(request, cfg, record, body, answers)
        if isinstance(parsed, Answer):
            return parsed
        return await self._answer(cfg, record, parsed, body, answers)

    def _admit_request(
        self,
        request: web.BaseRequest,
        cfg: ServerConfig,
        record: RequestRecord,
        body: dict[str, Any],
        answers: Answers,
    ) -> Parsed | Answer:
        """What a provider refuses before the request is attempted, in its order: the
        endpoint, the key, the request's shape, a refused parameter, a scheduled status,
        the rate limit, the context window."""
        if cfg.chat_only and answers.provider == OPENAI_COMPLETIONS:
            return answers.error(404, CHAT_MODEL_ON_COMPLETIONS, type="invalid_request_error", param="model")
        if cfg.api_key is not None and not _authorized(request.headers, cfg.api_key):
            return answers.unauthorized(
                "x-api-key" in request.headers or "authorization" in request.headers,
                _echo(request.headers, cfg),
            )
        try:
            parsed = _PARSERS[answers.provider](body)
        except BadRequest as exc:
            return answers.error(400, exc.message, param=exc.param, code=exc.code)
        record.prompt = parsed.text
        # a teacher that turns down a parameter, before any charge
        if answers.anthropic:
            said = refusals.anthropic_refusal(cfg.refuses, body)
            if said is not None:
                return answers.error(400, said, fault=faults.REFUSED)
        else:
            refused = refusals.refusal(cfg.refuses, body)
            if refused is not None:
                return Answer(refused[0], refused[1], answers.headers(), faults.REFUSED)
        if cfg.max_n is not None and parsed.n > cfg.max_n and not answers.anthropic:
            return answers.error(400, openai_wire.n_refused_message(cfg.max_n), param="n")
        if cfg.ignore_n:
            parsed.n = 1
        pinned = faults.scheduled_status(cfg, parsed.text)
        if pinned is not None:
            return answers.error(
                pinned, model=parsed.model, fault=faults.STATUS_FOR, retry_after=cfg.retry_after_s
            )
        if cfg.rpm or cfg.tpm:
            limited = self._admit(cfg, parsed, answers)
            if limited is not None:
                return limited
        if parsed.longest_prompt > cfg.context_tokens:
            return answers.context_exceeded(
                cfg.context_tokens, parsed.longest_prompt, parsed.max_tokens, cfg.context_error_shape
            )
        return parsed

    async def _answer(
        self, cfg: ServerConfig, record: RequestRecord, parsed: Parsed, body: dict[str, Any], answers: Answers
    ) -> Answer:
        """An admitted request's attempt: its latency, then the fault drawn for this
        attempt or the responder's answer."""
        model = parsed.model
        key = (answers.provider, parsed.hash)
        attempt = record.attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        delay = faults.latency(cfg, parsed.hash, attempt)
        if attempt < cfg.fail_first:
            record.fault = faults.FAIL_FIRST
            await _sleep(delay)
            return answers.error(
                cfg.fail_status, model=model, fault=faults.FAIL_FIRST, retry_after=cfg.retry_after_s
            )
        fault = record.fault = faults.draw(cfg, parsed.hash, attempt)
        if cfg.capacity:  # a self-hosted server: past its batch, requests wait their turn
            async with self._capacity(cfg.capacity):
                await _sleep(delay + cfg.hang_s if fault == faults.HANG else delay)
        else:
            await _sleep(delay + cfg.hang_s if fault == faults.HANG else delay)
        failed = _fault_answer(cfg, fault, answers, model)
        if failed is not None:
            return failed
        try:
            payload = self._complete(cfg, parsed, body, answers.rid, fault == faults.CONTENT_FILTER)
        except Exception as exc:
            logger.exception("responder failed")
            message = f"responder raised {type(exc).__name__}: {exc}"
            return answers.error(500, message, fault="responder_error")
        if fault == faults.HOSTILE:
            shape = hostile.pick(cfg.hostile, mix(cfg.seed, parsed.hash, 0x405))
            payload, extra = hostile.corrupt(payload, shape, answers.provider)
            answer = answers.ok(payload, f"{fault}:{shape}")
            answer.headers.update(extra)
            return answer
        return answers.ok(payload, fault)

    def _capacity(self, n: int) -> asyncio.Semaphore:
        slots = self._batches.get(n)
        if slots is None:
            slots = self._batches[n] = asyncio.Semaphore(n)
        return slots

    def _admit(self, cfg: ServerConfig, parsed: Parsed, answers: Answers) -> Answer | None:
        """Charge the rate windows, or the 429 that says which one is full."""
        prompts = len(parsed.prompts) if parsed.prompts else 1
        cost = parsed.prompt_tokens + (parsed.max_tokens or 0) * parsed.n * prompts
        refused = self._limiter.admit(time.monotonic(), cfg.rpm, cfg.tpm, cfg.rate_window_s, cost)
        if refused is None:
            return None
        unit, wait = refused
        used_requests, used_tokens = self._limiter.used()
        if unit == "requests":
            limit, used, asked = cfg.rpm or 0, used_requests, 1
        else:
            limit, used, asked = cfg.tpm or 0, used_tokens, cost
        return answers.over_limit(parsed.model, unit, limit, used, asked, wait, faults.OVER_LIMIT)

    def _complete(
        self, cfg: ServerConfig, parsed: Parsed, body: dict[str, Any], rid: str, filtered: bool
    ) -> bytes:
        if filtered:
            gens = [FILTERED] * (parsed.n * len(parsed.prompts or [parsed.text]))
        else:
            gens = self._generate(cfg, parsed, body)
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
                redacted_thinking=cfg.redacted_thinking,
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
                logprobs=parsed.top_k is not None and refusals.gives_logprobs(cfg.refuses),
                prompt_tokens=parsed.prompt_tokens,
                cached_tokens=cached,
                token_ids=cfg.token_ids or cfg.completions_shape == "llama",
                reasoning_field=cfg.reasoning_field,
            )
        return openai_wire.completion_body(
            rid=rid,
            model=parsed.model,
            created=created,
            gens=gens,
            prompt_lengths=[len(p) for p in parsed.prompts or [parsed.text]],
            n=parsed.n,
            logprobs=parsed.top_k is not None and refusals.gives_logprobs(cfg.refuses),
            prompt_tokens=parsed.prompt_tokens,
            llama=cfg.completions_shape == "llama",
        )

    def _generate(self, cfg: ServerConfig, parsed: Parsed, body: dict[str, Any]) -> list[Generation]:
        """Ask the responder for every choice of every prompt, counting calls per prompt."""
        responder = self._responder(cfg)
        prompts = parsed.prompts or [parsed.text]
        single = len(prompts) == 1
        temperature = cfg.default_temperature if parsed.temperature is None else parsed.temperature
        thinks = (
            parsed.provider == OPENAI_CHAT and cfg.reasoning_field is not None
        ) or parsed.thinking_budget is not None
        gens: list[Generation] = []
        for i, prompt in enumerate(prompts):
            prompt_hash = parsed.hash if single else text_hash(prompt)
            prompt_tokens = parsed.seg_tokens[i] if parsed.prompts else parsed.prompt_tokens
            limit = cfg.context_tokens - prompt_tokens
            if parsed.max_tokens is not None:
                limit = min(limit, parsed.max_tokens)
            key = (parsed.provider, prompt_hash)
            for choice in range(parsed.n):
                call = self._calls.get(key, 0)
                self._calls[key] = call + 1
                view = RequestView(
                    provider=parsed.provider,
                    prompt=prompt,
                    last_user=parsed.last_user if single else prompt,
                    model=parsed.model,
                    temperature=temperature,
                    seed=parsed.seed,
                    max_tokens=parsed.max_tokens,
                    call=call,
                    prompt_hash=prompt_hash,
                    body=body,
                    choice=choice,
                )
                salt = mix(cfg.seed, prompt_hash, view.sample_id if view.sampling else 0)
                reply = responder(view)
                gen = generate(reply, salt=salt, limit=limit, stop=parsed.stop, top_k=parsed.top_k)
                if thinks:
                    gen.reasoning = reply.reasoning or reasoning_trace(view, gen.text or "")
                gens.append(gen)
        return gens

    def _responder(self, cfg: ServerConfig) -> Responder:
        if cfg.responder is not None:
            return cfg.responder
        key: tuple[Any, ...] = (tuple(cfg.labels), cfg.seed) if cfg.labels else ("echo", cfg.seed)
        if cfg.shared_prefix_labels:
            key = ("tree", tuple(cfg.shared_prefix_labels), cfg.seed)
        responder = self._responders.get(key)
        if responder is None:
            if cfg.shared_prefix_labels:
                responder = SharedPrefixResponder(cfg.shared_prefix_labels, cfg.seed)
            else:
                responder = LabelResponder(cfg.labels, cfg.seed) if cfg.labels else EchoResponder(cfg.seed)
            self._responders[key] = responder
        return responder

    def _answers(self, provider: str, cfg: ServerConfig) -> Answers:
        n = next(self._ids)
        rid = f"{mix(cfg.seed, n) & 0xFFFFFFFFFFFF:012x}{n:012x}"

        def limits() -> Limits | None:
            if not (cfg.rpm or cfg.tpm):
                return None
            return self._limiter.states(time.monotonic(), cfg.rpm, cfg.tpm, cfg.rate_window_s)

        return Answers(provider, rid, time.monotonic(), limits)

    # -- listing, health and control ----------------------------------------------------

    def _finish(self, request: web.BaseRequest, provider: str | None, answer: Answer) -> web.Response:
        """Log and count an answer that needed no pipeline."""
        record = RequestRecord(time.monotonic(), request.method, request.path, provider)
        record.status = answer.status
        record.responded = record.received
        if self.config.log_requests:
            self.log.append(record)
        self.stats.count(request.path, answer.status, None)
        return _response(answer)

    async def _models(self, request: web.BaseRequest) -> web.StreamResponse:
        cfg = self.config
        provider = ANTHROPIC if _is_anthropic(request) else OPENAI_CHAT
        answers = self._answers(provider, cfg)
        if cfg.api_key is not None and not _authorized(request.headers, cfg.api_key):
            return self._finish(request, provider, answers.unauthorized(True, _echo(request.headers, cfg)))
        if provider == ANTHROPIC:
            body = anthropic_wire.models_body(cfg.model)
        else:
            body = openai_wire.models_body(cfg.model, int(time.time()))
        return self._finish(request, provider, answers.ok(body))

    async def _count_tokens(self, request: web.BaseRequest) -> web.StreamResponse:
        cfg = self.config
        answers = self._answers(ANTHROPIC, cfg)
        if cfg.api_key is not None and not _authorized(request.headers, cfg.api_key):
            return self._finish(request, ANTHROPIC, answers.unauthorized(True, _echo(request.headers, cfg)))
        try:
            body = orjson.loads(await request.read())
            body.setdefault("max_tokens", 1)
            parsed = parse_anthropic(body)
        except BadRequest as exc:
            return self._finish(request, ANTHROPIC, answers.error(400, exc.message))
        except (orjson.JSONDecodeError, AttributeError):
            return self._finish(request, ANTHROPIC, answers.bad_json())
        return self._finish(
            request, ANTHROPIC, answers.ok(anthropic_wire.count_tokens_body(parsed.prompt_tokens))
        )

    async def _health(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._finish(request, None, Answer(200, b'{"status":"ok"}'))

    async def _stats(self, request: web.BaseRequest) -> web.StreamResponse:
        return _json(self.stats.snapshot())

    async def _log(self, request: web.BaseRequest) -> web.StreamResponse:
        """The request log without bodies, for tests that drive a server in another
        process and must know which prompts were answered, when, and with what status."""
        return _json(
            [
                {
                    "received": r.received,
                    "responded": r.responded,
                    "method": r.method,
                    "path": r.path,
                    "prompt": r.prompt,
                    "attempt": r.attempt,
                    "status": r.status,
                    "fault": r.fault,
                }
                for r in self.log.snapshot()
            ]
        )

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


_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _echo(headers: Mapping[str, str], cfg: ServerConfig) -> str | None:
    """The credential header as sent, for a server configured to quote it back on 401."""
    if not cfg.echo_key:
        return None
    return headers.get("authorization") or headers.get("x-api-key")


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


def _response(answer: Answer) -> web.Response:
    return web.Response(
        body=answer.body,
        status=answer.status or 500,
        headers=answer.headers,
        content_type=answer.content_type,
    )


async def _trickle(request: web.BaseRequest, answer: Answer, every_s: float) -> web.StreamResponse:
    """Headers at once, then the body one byte every `every_s` seconds: a server (or a
    proxy) that keeps a connection alive without ever finishing the answer, which no
    per-read timeout notices."""
    response = web.StreamResponse(status=answer.status or 500, headers=answer.headers)
    response.content_type = answer.content_type
    response.content_length = len(answer.body)
    await response.prepare(request)
    try:
        for i in range(len(answer.body)):
            await response.write(answer.body[i : i + 1])
            await asyncio.sleep(every_s)
        await response.write_eof()
    except (ConnectionError, RuntimeError):  # the client gave up: nothing more to send
        pass
    return response


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _read_body(request: web.BaseRequest, answers: Answers) -> dict[str, Any] | Answer:
    """The request's JSON object, or the provider's answer to a body that is none."""
    try:
        body = orjson.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        return answers.error(413, "Request exceeds the maximum allowed size.")
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return answers.bad_json()
    return body


def _fault_answer(cfg: ServerConfig, fault: str | None, answers: Answers, model: str) -> Answer | None:
    """The answer a drawn fault gives instead of the responder's, or None for none."""
    if fault == faults.ERROR:
        return answers.error(500, model=model, fault=fault)
    if fault == faults.OVERLOADED:
        return answers.error(529 if answers.anthropic else 503, model=model, fault=fault)
    if fault == faults.RATE_LIMIT:
        return answers.error(429, model=model, fault=fault, retry_after=cfg.retry_after_s)
    if fault == faults.GARBAGE:
        garbage = GARBAGE_JSON if "json" in cfg.garbage_content_type else GARBAGE_HTML
        return answers.ok(garbage, fault, cfg.garbage_content_type)
    if fault == faults.DROP:
        return Answer(None, fault=fault)
    return None
