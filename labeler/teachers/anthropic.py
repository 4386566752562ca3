"""The Anthropic teacher: Claude over the official async SDK's Messages API.

Like the OpenAI teacher it uses the SDK for auth, request shapes and error types, turns
the SDK's own retries off (labeler's retry policy is the only one), reads the body raw
and parses it once with orjson, so a 200 whose body is broken is a retryable error
instead of a crash deep in the SDK's models.

Soft targets without logprobs. Anthropic returns no logprobs, so when a template asks
for soft targets (a label template does by default) the teacher asks the same question
``samples`` times (default 5, the `--samples` every teacher takes; teachers/sampling.py)
concurrently, the API having no ``n``, and returns every answer in `Completion.samples`:
the soft label is then the empirical distribution of the parsed samples, the `text` the
majority answer, and usage the sum over all samples. Logprobs a free-text template keeps
only for token-level distillation do not trigger sampling. If some samples of a request
fail with a retryable error, the answers that did arrive are kept and the retry asks only
for the missing ones, so a 429 on one sample does not pay for the other four twice.

Caching. The shared prefix (system prompt and few-shot turns) carries a cache
breakpoint (teachers/anthropic_wire.py), so from the second row on it is read from
Anthropic's prompt cache at a tenth of the input price; the read and written tokens are
reported as `Usage.cached_tokens` and `Usage.cache_write_tokens`. A cache entry exists
only once its first response has started, so the first request with a new prefix goes
alone and the rest wait for it: otherwise every request of the opening burst (16 rows x
5 samples) would pay to write the same prefix.

Completion-mode templates are sent as one user message (the API has no raw completion
endpoint).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anthropic

from labeler.apikeys import clean_key
from labeler.completion import Completion
from labeler.errors import (
    ConfigError,
    RetryableError,
    TeacherError,
    classify_status,
    short,
)
from labeler.redact import remember
from labeler.request import Request
from labeler.teachers import anthropic_wire
from labeler.teachers import transport as http
from labeler.teachers.base import BaseTeacher, HeaderObserver, parse_retry_after
from labeler.teachers.refusals import refused
from labeler.teachers.sampling import DEFAULT_SAMPLES, EXACT, PartialSamples, Sampling

ANTHROPIC_URL = "https://api.anthropic.com"
_MAX_PREFIXES = 1_000  # cached prefixes remembered as warm


class AnthropicTeacher(BaseTeacher):
    """Messages API teacher; samples ``samples`` answers when soft targets are wanted."""

    def __init__(
        self,
        model: str,
        *,
        provider: str = "anthropic",
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        samples: int | None = DEFAULT_SAMPLES,
        soft_labels: str = "auto",
        api_version: str | None = None,
        cache_prompt: bool = True,
        max_connections: int = 1000,
        transport: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        api_key = api_key or clean_key(
            os.environ.get("ANTHROPIC_API_KEY", ""), "environment variable ANTHROPIC_API_KEY"
        )
        if not api_key:
            raise ConfigError("no Anthropic API key: set ANTHROPIC_API_KEY (or pass --api-key-file FILE)")
        remember(api_key)
        try:
            sampling = Sampling(samples, soft_labels)
        except ConfigError as exc:
            raise ConfigError(f"anthropic teacher: {exc}") from None
        if sampling.soft_labels in ("logprobs", EXACT):
            raise ConfigError(
                f"anthropic teacher: Anthropic returns no logprobs; its soft labels "
                f"come from samples (--soft-labels auto or samples, not {sampling.soft_labels})"
            )
        self.base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL).rstrip("/")
        self.samples = sampling.n
        self.api_version = api_version
        # The SDK's default API version accepts no sampling parameters; older ones do.
        self._sampling_params = api_version is not None and api_version < anthropic_wire.SAMPLING_API_BEFORE
        self.cache_prompt = cache_prompt
        self._observer: HeaderObserver | None = None
        self._partial = PartialSamples()
        # Each HTTP request's outcome (one `complete` may send `samples` of them), so a
        # run's summary counts what the server saw (`teachers.base.http_outcomes`).
        self.http_outcomes: Counter[str] = Counter()
        self._warming: dict[bytes, asyncio.Future[None]] = {}
        headers = dict(extra_headers or {})
        if api_version:
            headers["anthropic-version"] = api_version
        self._client = anthropic.AsyncAnthropic(
            base_url=self.base_url,
            api_key=api_key,
            max_retries=0,
            timeout=timeout,
            default_headers=headers,
            http_client=http.http_client(
                anthropic,
                transport=transport,
                timeout=timeout,
                max_connections=max_connections,
            ),
        )

    @property
    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "samples": self.samples,
        }
        if self.api_version:
            ident["api_version"] = self.api_version
        return ident

    def observe_headers(self, observer: HeaderObserver | None) -> None:
        self._observer = observer

    def request_shape(self, request: Request) -> tuple[int, int]:
        """(HTTP requests, answers per request) one `complete` sends: for rate and budget."""
        return self._fanout(request), 1

    def _fanout(self, request: Request) -> int:
        if anthropic_wire.wants_samples(request):
            return self.samples
        return max(1, int(request.params.get("n") or 1))

    async def complete(self, request: Request) -> Completion:
        n = self._fanout(request)
        if n == 1:
            return await self._one(request, None)
        return await self._sampled(request, n)

    async def _sampled(self, request: Request, n: int) -> Completion:
        temperature = None
        if self._sampling_params:
            t = float(request.params.get("temperature") or 0.0)
            temperature = t if t > 0 else 1.0
        return await self._partial.gather(request, n, lambda: self._one(request, temperature))

    async def _one(self, request: Request, temperature: float | None) -> Completion:
        prefix = anthropic_wire.prefix_key(request) if self.cache_prompt else None
        if prefix is None:
            return await self._send(request, temperature)
        warming = self._warming.get(prefix)
        if warming is not None:
            if not warming.done():
                await asyncio.shield(warming)
            return await self._send(request, temperature)
        if len(self._warming) > _MAX_PREFIXES:
            self._warming.clear()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._warming[prefix] = done
        try:
            completion = await self._send(request, temperature)
        except BaseException:
            self._warming.pop(prefix, None)  # not cached: the next request warms it again
            raise
        finally:
            if not done.done():
                done.set_result(None)
        return completion

    async def _send(self, request: Request, temperature: float | None) -> Completion:
        start = time.perf_counter()
        kwargs = anthropic_wire.build_params(
            request,
            sampling_params=self._sampling_params,
            temperature=temperature,
            cache=self.cache_prompt,
        )
        try:
            raw = await self._client.messages.with_raw_response.create(model=self.model, **kwargs)
        except anthropic.APIError as exc:
            error = classify(exc)
            self.http_outcomes[error.reason] += 1
            raise error from exc
        if self._observer is not None:
            self._observer(raw.headers)
        try:
            completion = anthropic_wire.parse_body(
                raw.http_response.content, latency_s=time.perf_counter() - start
            )
        except TeacherError as exc:
            self.http_outcomes[exc.reason] += 1
            raise
        self.http_outcomes["ok"] += 1
        return completion

    async def aclose(self) -> None:
        await self._client.close()


def classify(exc: anthropic.APIError) -> TeacherError:
    """Map an SDK exception onto labeler's two kinds of failure, once."""
    own = http.own_error(exc)
    if own is not None:  # raised by labeler's own hook inside the SDK (a body too large)
        return own
    if isinstance(exc, anthropic.APIConnectionError):  # timeouts are a subclass
        reason = http.failure_reason(exc)
        text = "the request timed out" if reason == "timeout" else http.failure_message(exc)
        return RetryableError(reason, short(text))
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers if exc.response is not None else None
        kind, message = _error_fields(exc)
        return classify_status(
            status,
            message,
            provider="anthropic",
            code=kind,
            retry_after=parse_retry_after(headers),
            # e.g. temperature with thinking on
            refusal=refused(status, kind, None, message),
        )
    if isinstance(exc, anthropic.APIResponseValidationError):
        return RetryableError("invalid_json", short(str(exc)))
    return RetryableError("api_error", short(str(exc)))


def _error_fields(exc: anthropic.APIStatusError) -> tuple[str | None, str]:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return err.get("type"), short(str(err.get("message") or exc.message))
    return None, short(exc.message)
