"""OpenAI and OpenAI-compatible teachers (vLLM, llama.cpp, Ollama, Together, Groq…).

Built on the official async SDK for what it does well (auth, request shapes, error types),
with its own retries turned off: labeler's retry policy is the only one. The body is read
raw and parsed once (teachers/openai_wire.py), which is faster than building the SDK's
models and lets a 200 with a broken body be classified as retryable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import openai
import orjson

from labeler.completion import Completion
from labeler.errors import ConfigError, FinalError, RetryableError, TeacherError
from labeler.redact import remember
from labeler.request import Request
from labeler.teachers import openai_wire
from labeler.teachers import transport as http
from labeler.teachers.base import HeaderObserver, parse_retry_after

OPENAI_URL = "https://api.openai.com/v1"
CHAT_PARAMS = {
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "logprobs", "top_logprobs",
    "n", "stop", "seed", "presence_penalty", "frequency_penalty", "response_format",
    "logit_bias", "reasoning_effort",
}
COMPLETION_PARAMS = {"temperature", "top_p", "max_tokens", "n", "stop", "seed", "logit_bias"}


class OpenAITeacher:
    """Chat completions (and completions, for completion-mode templates) over the SDK."""

    def __init__(
        self,
        model: str,
        *,
        provider: str = "openai",
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_connections: int = 1000,
        transport: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.base_url, api_key = endpoint(provider, model, base_url, api_key)
        self._observer: HeaderObserver | None = None
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key,
            max_retries=0,
            timeout=timeout,
            default_headers=dict(extra_headers or {}),
            http_client=http.http_client(
                openai, transport=transport, timeout=timeout, max_connections=max_connections
            ),
        )

    @property
    def identity(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "base_url": self.base_url}

    def observe_headers(self, observer: HeaderObserver | None) -> None:
        self._observer = observer

    async def complete(self, request: Request) -> Completion:
        start = time.perf_counter()
        try:
            if request.is_chat:
                raw = await self._client.chat.completions.with_raw_response.create(
                    model=self.model, messages=list(request.messages or ()),
                    **chat_params(request.params, self.provider),
                )
            else:
                raw = await self._client.completions.with_raw_response.create(
                    model=self.model, prompt=request.prompt or "",
                    **completion_params(request.params),
                )
        except openai.APIError as exc:
            raise classify(exc) from exc
        if self._observer is not None:
            self._observer(raw.headers)
        latency = time.perf_counter() - start
        try:
            body = orjson.loads(raw.http_response.content)
        except orjson.JSONDecodeError as exc:
            raise RetryableError("invalid_json", "HTTP 200 with a body that is not JSON") from exc
        if request.is_chat:
            return openai_wire.parse_chat(body, latency_s=latency)
        return openai_wire.parse_completions(body, latency_s=latency)

    def request_body(self, request: Request) -> dict[str, Any]:
        """The JSON body `complete` sends for `request`: batch files carry exactly this, so a
        batch answer is the answer the live endpoint would have given."""
        return request_body(self.model, self.provider, request)

    async def aclose(self) -> None:
        await self._client.close()


def endpoint(provider: str, model: str, base_url: str | None,
             api_key: str | None) -> tuple[str, str]:
    """(base URL without a trailing slash, API key) for an OpenAI(-compatible) teacher, as
    the SDK resolves them: OpenAI falls back to OPENAI_BASE_URL and needs a key; any
    other server needs a URL and may take no key."""
    if provider == "openai":
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ConfigError("no OpenAI API key: set OPENAI_API_KEY (or pass --api-key-file FILE)")
        remember(api_key)
    else:
        if not base_url:
            raise ConfigError(
                f"--teacher {provider}:{model} needs --base-url (e.g. http://localhost:8000/v1)"
            )
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        remember(api_key)
        api_key = api_key or "not-needed"
    return base_url.rstrip("/"), api_key


def request_body(model: str, provider: str, request: Request) -> dict[str, Any]:
    """The JSON body for `request`, the one every OpenAI transport and batch file sends."""
    if request.is_chat:
        return {"model": model, "messages": list(request.messages or ()),
                **chat_params(request.params, provider)}
    return {"model": model, "prompt": request.prompt or "", **completion_params(request.params)}


def chat_params(params: Mapping[str, Any], provider: str) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if k in CHAT_PARAMS}
    if provider == "openai" and "max_tokens" in out:
        out["max_completion_tokens"] = out.pop("max_tokens")
    if not out.get("logprobs"):
        out.pop("top_logprobs", None)
    return out


def completion_params(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if k in COMPLETION_PARAMS}
    if params.get("logprobs"):
        out["logprobs"] = int(params.get("top_logprobs") or 1)
    return out


def classify(exc: openai.APIError) -> TeacherError:
    """Map an SDK exception onto labeler's two kinds of failure, once."""
    if isinstance(exc, openai.APIConnectionError):  # timeouts are a subclass
        reason = http.failure_reason(exc)
        text = "the request timed out" if reason == "timeout" else http.failure_message(exc)
        return RetryableError(reason, _short(text))
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers if exc.response is not None else None
        code, message = _error_fields(exc)
        return classify_status(exc.status_code, headers, code, message)
    if isinstance(exc, openai.APIResponseValidationError):
        return RetryableError("invalid_json", _short(str(exc)))
    return RetryableError("api_error", _short(str(exc)))


def classify_status(status: int, headers: Mapping[str, str] | None, code: str | None,
                    message: str) -> TeacherError:
    """An OpenAI-style HTTP error answer as labeler's failure: the one ladder for the SDK's
    exceptions and the lean transport's raw answers."""
    if status == 429:
        return RetryableError("http_429", message, status=status,
                              retry_after=parse_retry_after(headers))
    if status in (408, 409) or status >= 500:
        return RetryableError(f"http_{status}", message, status=status,
                              retry_after=parse_retry_after(headers))
    if code == "context_length_exceeded" or "maximum context length" in message:
        return FinalError("context_length", message, status=status)
    if code == "content_filter" or code == "content_policy_violation":
        return FinalError("content_filter", message, status=status)
    return FinalError(f"http_{status}", message, status=status)


def _error_fields(exc: openai.APIStatusError) -> tuple[str | None, str]:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return err.get("code"), _short(str(err.get("message") or exc.message))
    return None, _short(exc.message)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
