"""The HTTP transport under every teacher, chosen in one place.

OpenAI(-compatible) teachers default to ``lean`` (teachers/openai_lean.py): one pooled
aiohttp session and no SDK on the hot path, because against a fast server the SDK's own
per-request cost is most of labeler's (``python -m benchmarks``: the lean path reaches
several times the SDK's rate). ``LABELER_TRANSPORT=aiohttp`` or ``httpx`` (or a teacher's
``transport=`` option) puts the official SDK back, on that HTTP client.

Both official SDKs build on an httpx-style client and can swap its transport for aiohttp
(``DefaultAioHttpClient``). Labeling is many small concurrent requests, where the
client's per-request overhead, not the network, bounds throughput against a fast server
(vLLM, llama.cpp), so the choice is a measured one: ``python benchmarks/transport.py``
sends the same requests through every (SDK, transport) pair against the local teacher
server at 64 in flight. aiohttp won clearly for both SDKs (see the table in that
script's docstring), so it is the default under an SDK (and the only choice for
Anthropic, which has no lean path).

The aiohttp adapter reports a refused connection and a dropped one as httpx *timeouts*,
so `failure_reason` looks at the underlying exception to tell a timeout from a
connection that could not be made or was cut: the orchestrator ends a run early only
when the endpoint cannot be reached at all.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from labeler.answer_checks import MAX_BODY_BYTES, too_large
from labeler.errors import ConfigError, TeacherError

LEAN = "lean"
TRANSPORTS = ("aiohttp", "httpx")  # under an SDK
DEFAULT_TRANSPORT = "aiohttp"


def openai_transport(transport: str | None = None) -> str:
    """The transport an OpenAI(-compatible) teacher uses: ``lean`` (no SDK on the hot path,
    the default) or an SDK transport; the explicit choice, else $LABELER_TRANSPORT."""
    kind = transport or os.environ.get("LABELER_TRANSPORT") or LEAN
    if kind != LEAN and kind not in TRANSPORTS:
        raise ConfigError(f"transport '{kind}': expected one of {', '.join((LEAN, *TRANSPORTS))}")
    return kind


def pick(transport: str | None = None) -> str:
    """The transport to use: the explicit choice, else $LABELER_TRANSPORT, else the default.

    ``lean`` (the SDK-free OpenAI teacher, teachers/openai_lean.py) is chosen before an SDK
    teacher is built; an SDK teacher that still sees it (Anthropic has no lean path) uses
    the default.
    """
    kind = transport or os.environ.get("LABELER_TRANSPORT") or DEFAULT_TRANSPORT
    if kind == LEAN:
        return DEFAULT_TRANSPORT
    if kind not in TRANSPORTS:
        raise ConfigError(f"transport '{kind}': expected one of {', '.join(TRANSPORTS)}")
    return kind


def http_client(
    sdk: ModuleType, *, transport: str | None = None, timeout: float, max_connections: int
) -> Any:
    """An async HTTP client for `sdk` (the ``openai`` or ``anthropic`` module).

    The SDK's own client classes are used so that its defaults (redirects, headers) hold;
    only the pool size and timeout are labeler's: the concurrency cap lives in the
    limiter, so the pool must never be the narrower bottleneck.
    """
    limits = _http_module(sdk).Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    hooks = {"response": [cap_body]}
    if pick(transport) == "aiohttp":
        return sdk.DefaultAioHttpClient(limits=limits, timeout=timeout, event_hooks=hooks)
    return sdk.DefaultAsyncHttpxClient(limits=limits, timeout=timeout, event_hooks=hooks)


_ANSWER_PATHS = ("/chat/completions", "/completions", "/messages")


async def cap_body(response: Any) -> None:
    """Read an answer's body under the size limit (`answer_checks.MAX_BODY_BYTES`, after
    decompression) before the SDK reads it whole: a body that says it is larger is refused
    unread, and a compressed one is inflated piece by piece and dropped past the limit.
    Runs as the SDK client's response hook, on the answer endpoints only (batch files are
    larger by design); the `FinalError` it raises comes back wrapped in the SDK's
    connection error, and `own_error` finds it there."""
    if not response.request.url.path.endswith(_ANSWER_PATHS):
        return
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        await response.aclose()
        raise too_large(int(length))
    if length is not None and not response.headers.get("content-encoding"):
        return  # bounded by its stated length: the SDK reads it as usual
    parts, size = [], 0
    async for piece in response.aiter_bytes():
        size += len(piece)
        if size > MAX_BODY_BYTES:
            await response.aclose()
            raise too_large()
        parts.append(piece)
    response._content = b"".join(parts)  # what `aread` would have set: the SDK reads it


def own_error(exc: BaseException) -> TeacherError | None:
    """A failure labeler raised inside the SDK's client (`cap_body`), found under the
    SDK's wrapping exception."""
    cause = exc.__cause__ or exc.__context__
    seen = 0
    while cause is not None and seen < 10:
        if isinstance(cause, TeacherError):
            return cause
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None


def _http_module(sdk: ModuleType) -> ModuleType:
    """The httpx flavour the installed SDK is built on (httpx, or httpx2 in newer SDKs)."""
    base = sdk.DefaultAsyncHttpxClient.__mro__[1]
    return importlib.import_module(base.__module__.split(".")[0])


def failure_reason(exc: BaseException) -> str:
    """``timeout``, ``connection`` (could not connect) or ``disconnected`` (cut mid-request)
    for an SDK connection or timeout error, from the exception that caused it."""
    import aiohttp

    cause: BaseException | None = exc
    seen = 0
    saw_timeout = False
    while cause is not None and seen < 10:
        name = type(cause).__name__
        if isinstance(cause, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
            saw_timeout = True
        elif isinstance(cause, aiohttp.ClientConnectorError | ConnectionRefusedError):
            return "connection"
        elif isinstance(cause, aiohttp.ClientConnectionError | ConnectionResetError):
            return "disconnected"
        elif name == "ConnectError":  # httpx / httpx2: the connection was never made
            return "connection"
        elif name in ("RemoteProtocolError", "ReadError", "WriteError"):
            return "disconnected"
        elif "Timeout" in name and name != "ConnectTimeout":
            saw_timeout = True
        cause = cause.__cause__ or cause.__context__
        seen += 1
    if saw_timeout:
        return "timeout"
    return "timeout" if "Timeout" in type(exc).__name__ else "connection"


def failure_message(exc: BaseException) -> str:
    """What went wrong on the wire, from the innermost cause (the SDKs' own message is
    "Request timed out" even for a refused connection when aiohttp carries it)."""
    inner: BaseException = exc
    seen = 0
    while seen < 10:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner, seen = nxt, seen + 1
    text = str(inner) or type(inner).__name__
    return text if inner is exc else f"{text} ({type(inner).__name__})"
