"""OpenAI and OpenAI-compatible teachers (vLLM, llama.cpp, Ollama, Together, Groq…).

Built on the official async SDK for what it does well (auth, request shapes, error types),
with its own retries turned off: labeler's retry policy is the only one. The body is read
raw and parsed once (teachers/openai_answers.py), which is faster than building the SDK's
models and lets a 200 with a broken body be classified as retryable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import openai

from labeler.completion import Completion
from labeler.errors import RetryableError, TeacherError, short
from labeler.request import Request
from labeler.teachers import openai_answers
from labeler.teachers import transport as http
from labeler.teachers.base import BaseTeacher, HeaderObserver
from labeler.teachers.openai_protocol import (
    OPENAI_URL,
    chat_params,
    classify_status,
    completion_params,
    completions_unserved,
    endpoint,
    request_body,
)
from labeler.teachers.refusals import check_logprobs, error_fields
from labeler.teachers.sampling import SampledTeacher, Sampler, Sampling


class OpenAITeacher(SampledTeacher, BaseTeacher):
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
        samples: int | None = None,
        soft_labels: str = "auto",
        n_supported: bool | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.base_url, api_key = endpoint(provider, model, base_url, api_key)
        self.sampler = Sampler(Sampling(samples, soft_labels), n_supported=n_supported)
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
        start = time.perf_counter()
        try:
            if request.is_chat:
                raw = await self._client.chat.completions.with_raw_response.create(
                    # Plain role/content dicts: what the SDK's message TypedDicts describe.
                    model=self.model,
                    messages=list(request.messages or ()),  # type: ignore[arg-type]
                    **chat_params(request.params, self.provider),
                )
            else:
                raw = await self._client.completions.with_raw_response.create(
                    model=self.model,
                    prompt=request.prompt or "",
                    **completion_params(request.params),
                )
        except openai.APIError as exc:
            if not request.is_chat and isinstance(exc, openai.APIStatusError):
                code, _, message = error_fields(exc.body)
                unserved = completions_unserved(
                    exc.status_code, code, message or short(exc.message), f"{self.base_url}/completions"
                )
                if unserved is not None:
                    raise unserved from None
            raise classify(exc) from exc
        if self._observer is not None:
            self._observer(raw.headers)
        completion = openai_answers.parse_body(
            raw.http_response.content, chat=request.is_chat, latency_s=time.perf_counter() - start
        )
        return check_logprobs(request, completion)

    def request_body(self, request: Request) -> dict[str, Any]:
        """The JSON body `complete` sends for `request`: batch files carry exactly this, so a
        batch answer is the answer the live endpoint would have given."""
        return request_body(self.model, self.provider, self.sampler.as_sent(request))

    async def aclose(self) -> None:
        await self._client.close()


def classify(exc: openai.APIError) -> TeacherError:
    """Map an SDK exception onto labeler's two kinds of failure, once."""
    own = http.own_error(exc)
    if own is not None:  # raised by labeler's own hook inside the SDK (a body too large)
        return own
    if isinstance(exc, openai.APIConnectionError):  # timeouts are a subclass
        reason = http.failure_reason(exc)
        text = "the request timed out" if reason == "timeout" else http.failure_message(exc)
        return RetryableError(reason, short(text))
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers if exc.response is not None else None
        code, param, message = error_fields(exc.body)
        return classify_status(exc.status_code, headers, code, message or short(exc.message), param)
    if isinstance(exc, openai.APIResponseValidationError):
        return RetryableError("invalid_json", short(str(exc)))
    return RetryableError("api_error", short(str(exc)))


__all__ = ["OPENAI_URL", "OpenAITeacher", "classify", "classify_status", "endpoint", "request_body"]
