"""A lean OpenAI(-compatible) teacher: one pooled aiohttp session, no SDK on the hot path.

Against a fast self-hosted teacher (vLLM, llama.cpp, a cluster behind a gateway) the
client's own cost per request bounds the labeling rate. The official SDK spends most of
its time building request objects, validating options and wrapping the response, none
of which labeler needs: it reads the raw body and parses it once (`openai_answers`). This
teacher sends the same JSON body as `OpenAITeacher` (built here from the same parameter
lists), parses the answer with the same parser, and classifies every failure into the
same `RetryableError`/`FinalError` reasons as `openai.classify`, so the orchestrator, the
cache key and the store cannot tell the two apart. `python -m benchmarks` measures both.

It is the default (`openai_teacher`, the registry's factory for ``openai:`` and
``openai-compatible:``); ``transport="aiohttp"``/``"httpx"`` or $LABELER_TRANSPORT builds
the SDK teacher instead. Like the SDK it sends OPENAI_ORG_ID / OPENAI_PROJECT_ID as the
organization and project headers to OpenAI itself.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from labeler.answer_checks import MAX_BODY_BYTES, too_large
from labeler.completion import Completion
from labeler.errors import RetryableError, TeacherError, short
from labeler.request import Request
from labeler.teachers import openai_answers
from labeler.teachers.base import BaseTeacher, HeaderObserver, Teacher
from labeler.teachers.openai_protocol import (
    classify_status,
    completions_unserved,
    endpoint,
    request_body,
)
from labeler.teachers.refusals import check_logprobs, error_fields
from labeler.teachers.sampling import SampledTeacher, Sampler, Sampling
from labeler.teachers.transport import LEAN, failure_reason, openai_transport

if TYPE_CHECKING:  # imported when a request is sent: export, eval and stats never pay for it
    import aiohttp

_USER_AGENT = "labeler-lean/1"


class FastOpenAITeacher(SampledTeacher, BaseTeacher):
    """Chat completions and completions over one aiohttp session, parsed by `openai_answers`."""

    def __init__(
        self,
        model: str,
        *,
        provider: str = "openai",
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_connections: int = 1000,
        extra_headers: Mapping[str, str] | None = None,
        samples: int | None = None,
        soft_labels: str = "auto",
        n_supported: bool | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.base_url, api_key = endpoint(provider, model, base_url, api_key)
        self.sampler = Sampler(Sampling(samples, soft_labels), n_supported=n_supported)
        org_headers = {}
        if provider == "openai":
            for env, header in (
                ("OPENAI_ORG_ID", "OpenAI-Organization"),
                ("OPENAI_PROJECT_ID", "OpenAI-Project"),
            ):
                if os.environ.get(env):
                    org_headers[header] = os.environ[env]
        self._chat_url = self.base_url + "/chat/completions"
        self._completions_url = self.base_url + "/completions"
        # Built once: every request sends the same headers, so aiohttp merges nothing.
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
            **org_headers,
            **dict(extra_headers or {}),
        }
        self._timeout_s = timeout
        self._timeout: aiohttp.ClientTimeout | None = None
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: HeaderObserver | None = None

    # -- Teacher protocol ----------------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        """The same identity as `OpenAITeacher`: switching transport never misses the cache."""
        return {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            **self.sampler.identity(),
        }

    def observe_headers(self, observer: HeaderObserver | None) -> None:
        self._observer = observer

    async def complete(self, request: Request) -> Completion:
        return await self.sampler.complete(request, self._send)

    async def _send(self, request: Request) -> Completion:
        """One HTTP request."""
        import aiohttp

        chat = request.messages is not None
        body = orjson.dumps(request_body(self.model, self.provider, request))
        session = self._session_for_loop()
        start = time.perf_counter()
        try:
            async with session.post(
                self._chat_url if chat else self._completions_url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
            ) as resp:
                raw = await read_capped(resp)
                status = resp.status
                headers = resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _connection_error(exc) from exc
        if status >= 400:
            if not chat:
                code, _, message = error_fields(_error_body(raw))
                unserved = completions_unserved(
                    status, code, message or f"Error code: {status}", self._completions_url
                )
                if unserved is not None:
                    raise unserved
            raise status_error(status, headers, raw)
        if self._observer is not None:
            self._observer(headers)
        completion = openai_answers.parse_body(raw, chat=chat, latency_s=time.perf_counter() - start)
        return check_logprobs(request, completion)

    def request_body(self, request: Request) -> dict[str, Any]:
        """The JSON body sent for `request`, identical to `OpenAITeacher.request_body`."""
        return request_body(self.model, self.provider, self.sampler.as_sent(request))

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    # -- the session ---------------------------------------------------------------------

    def _session_for_loop(self) -> aiohttp.ClientSession:
        """One session per event loop: a session cannot outlive or change its loop."""
        import aiohttp

        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            self._timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeout_s, sock_read=self._timeout_s
            )
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300)
            # No cookie jar (an API client sends exactly what it is told); HTTP(S)_PROXY and
            # NO_PROXY are honoured as the SDK's httpx client honours them, looked up per
            # request only when a proxy is configured at all.
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                auto_decompress=True,
                trust_env=bool(urllib.request.getproxies()),
            )
            self._session, self._loop = session, loop
        return session


async def read_capped(resp: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused past `limit` bytes after decompression (`answer_checks`): a body
    of known length without an encoding is read at once (the common case), any other one
    piece by piece, as aiohttp inflates it in bounded steps, so a compressed bomb is
    stopped after `limit` bytes rather than inflated whole."""
    length = resp.content_length
    if length is not None and length > limit:
        raise too_large(length)
    if length is not None and not resp.headers.get("Content-Encoding"):
        return await resp.read()
    parts, size = [], 0
    async for piece in resp.content.iter_any():
        size += len(piece)
        if size > limit:
            resp.close()
            raise too_large()
        parts.append(piece)
    return b"".join(parts)


def openai_teacher(
    model: str, *, provider: str = "openai", transport: str | None = None, **options: Any
) -> Teacher:
    """`FastOpenAITeacher` (transport ``lean``, the default), or `OpenAITeacher` over the
    SDK transport named by `transport` or $LABELER_TRANSPORT: one factory for the
    registry, so the transport is a teacher option rather than a provider of its own."""
    if openai_transport(transport) == LEAN:
        return FastOpenAITeacher(model, provider=provider, **options)
    from labeler.teachers.openai_sdk import OpenAITeacher  # the SDK: imported only when chosen

    return OpenAITeacher(model, provider=provider, transport=transport, **options)


def _factory_signature() -> inspect.Signature:
    """`openai_teacher`'s options as both transports take them (the SDK one's are the
    same), so a check of a config's teacher_options sees the real names and defaults."""
    own = inspect.signature(FastOpenAITeacher.__init__).parameters
    params = [p for name, p in own.items() if name != "self"]
    transport = inspect.Parameter("transport", inspect.Parameter.KEYWORD_ONLY, default=None)
    return inspect.Signature([*params, transport])


openai_teacher.__signature__ = _factory_signature()  # type: ignore[attr-defined]


def status_error(status: int, headers: Mapping[str, str] | None, raw: bytes) -> TeacherError:
    """Classify an HTTP error answer exactly as `openai.classify` does for the SDK's
    exception: the same reason, message, status and retry-after."""
    code, param, message = error_fields(_error_body(raw))
    # The SDK's message when the body carries none: "Error code: N".
    return classify_status(status, headers, code, message or f"Error code: {status}", param)


def _error_body(raw: bytes) -> Any:
    """An error answer's JSON body, or None when it has none (an HTML page, nothing)."""
    try:
        return orjson.loads(raw.strip()) if raw.strip() else None
    except orjson.JSONDecodeError:
        return None


def _connection_error(exc: BaseException) -> RetryableError:
    """A failure with no HTTP answer: timeout, refused, or cut mid-request (the same
    reasons the SDK teacher derives from the same aiohttp exceptions)."""
    reason = failure_reason(exc)
    if reason == "timeout":
        return RetryableError("timeout", "the request timed out")
    return RetryableError(reason, short(str(exc) or type(exc).__name__))


__all__ = ["LEAN", "FastOpenAITeacher", "openai_teacher", "status_error"]
