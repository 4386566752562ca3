"""labeler's Request <-> Anthropic's Messages API, as plain data.

Kept apart from the client (teachers/anthropic.py) so live calls and batch result files
share one translation and one parser.

Requests. labeler speaks OpenAI's vocabulary; the Messages API differs in four ways that
matter here:

- The system prompt is not a message but a top-level list of text blocks.
- Caching is explicit. The prefix every row shares (system prompt and few-shot turns)
  is marked with one ``cache_control: {"type": "ephemeral"}`` breakpoint on its last
  block, the last few-shot message when there are examples, else the system prompt, so
  one cache entry covers instructions and examples together and each row pays full
  price only for its own turn. (Prefixes shorter than the model's minimum, 1024-4096
  tokens, are simply not cached; the mark costs nothing then.)
- There is no ``n``, no logprobs and, in the API version the SDK sends (2026-10-21),
  no sampling parameters at all: temperature/top_p are only sent when a teacher is
  pinned to an older ``api_version`` that accepts them.
- A completion-mode request (one text prompt that ends where the label goes) is sent
  as a single user message: the Messages API has no raw completion endpoint, so the
  model answers the prompt as a chat turn.

Whitespace-only stop strings are dropped (the API rejects them); other stop strings
become ``stop_sequences``.

Responses. Anthropic reports ``input_tokens`` *excluding* cache reads and writes.
labeler's `Usage` counts as OpenAI does, cache reads inside the prompt:
``prompt_tokens = input_tokens + cache_read_input_tokens`` with ``cached_tokens`` the
read part, and the tokens written to the cache apart in ``cache_write_tokens`` (they are
billed at their own rate; `PriceTable.cost` prices the three separately). Batch results
(labeler/batch/anthropic.py) are counted the same way, so a stored answer does not
depend on how it was fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from labeler import answer_checks as check
from labeler.answer_checks import list_at, malformed, object_at, optional_text
from labeler.completion import Completion, Usage
from labeler.errors import FinalError, RetryableError, TeacherError
from labeler.request import Request

EPHEMERAL = {"type": "ephemeral"}
DEFAULT_MAX_TOKENS = 1024
SAMPLING_API_BEFORE = "2026-10-21"  # API versions before this accept temperature/top_p
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
           "tool_use": "tool_calls", "pause_turn": "length"}


def build_params(
    request: Request, *, sampling_params: bool, temperature: float | None = None,
    cache: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for ``messages.create`` (minus ``model``) for one request.

    `temperature` overrides the template's (sampled soft targets need one above 0); it
    and top_p are only sent when `sampling_params` is true (an older API version).
    """
    params = request.params
    max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
    out: dict[str, Any] = {"max_tokens": int(max_tokens or DEFAULT_MAX_TOKENS)}
    system, messages = split_messages(request, cache=cache)
    out["messages"] = messages
    if system:
        out["system"] = system
    stops = params.get("stop")
    if isinstance(stops, str):
        stops = [stops]
    if stops:
        kept = [s for s in stops if isinstance(s, str) and s.strip()]
        if kept:
            out["stop_sequences"] = kept
    if sampling_params:
        extra: dict[str, Any] = {}
        temp = temperature if temperature is not None else params.get("temperature")
        if temp is not None:
            extra["temperature"] = min(float(temp), 1.0)  # Anthropic's range is 0..1
        if params.get("top_p") is not None:
            extra["top_p"] = float(params["top_p"])
        if extra:
            out["extra_body"] = extra
    return out


def split_messages(
    request: Request, *, cache: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages) with the cache breakpoint on the shared prefix."""
    if request.prompt is not None:
        return [], [{"role": "user", "content": request.prompt}]
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for m in request.messages or ():
        role, content = m.get("role"), m.get("content") or ""
        if role == "system":
            system.append({"type": "text", "text": content})
        else:
            messages.append({"role": role, "content": content})
    if cache:
        _mark_prefix(system, messages)
    return system, messages


def _mark_prefix(system: list[dict[str, Any]], messages: list[dict[str, Any]]) -> None:
    """Breakpoint on the last message before the row's own turn, else on the system."""
    if len(messages) > 1:
        shot = messages[-2]
        shot["content"] = [{"type": "text", "text": shot["content"], "cache_control": EPHEMERAL}]
    elif system:
        system[-1]["cache_control"] = EPHEMERAL


def prefix_key(request: Request) -> bytes | None:
    """A digest of the cached prefix (everything before the row's own turn), or None."""
    messages = request.messages
    if not messages or len(messages) < 2:
        return None
    return hashlib.blake2b(orjson.dumps(messages[:-1]), digest_size=16).digest()


def parse_body(raw: bytes, *, latency_s: float = 0.0) -> Completion:
    """A 200's raw body -> Completion; a failure carries the raw body for the store."""
    try:
        return parse_message(check.load_json(raw), latency_s=latency_s)
    except TeacherError as exc:
        check.keep_body(exc, raw)
        raise


def parse_message(body: Any, *, latency_s: float = 0.0) -> Completion:
    """One Messages API response -> Completion; a refusal is final, a broken body retryable,
    a field that breaks the rules (`answer_checks`) a malformed answer."""
    try:
        return _parse_message(body, latency_s)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError) as exc:
        error: TeacherError = malformed("response", f"unexpected shape ({type(exc).__name__}: {exc})")
        raise _with_body(error, body) from exc
    except TeacherError as exc:
        _with_body(exc, body)
        raise


def _with_body(exc: TeacherError, body: Any) -> TeacherError:
    """`exc` carrying the answer it is about (re-encoded: batch results arrive parsed)."""
    if exc.body is None:
        with contextlib.suppress(TypeError, ValueError, OverflowError, RecursionError):
            check.keep_body(exc, orjson.dumps(body))
    return exc


def _parse_message(body: Any, latency_s: float) -> Completion:
    if not isinstance(body, dict):
        raise RetryableError("invalid_json", "the response body is not a JSON object")
    if body.get("type") == "error":
        err = body.get("error") or {}
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise RetryableError("error_body", str(msg)[:200])
    content = body.get("content")
    if content is None:
        raise RetryableError("invalid_json", "the response has no content list")
    content = list_at(content, "content", check.MAX_POSITIONS)
    stop = optional_text(body.get("stop_reason"), "stop_reason")
    if stop == "refusal":
        raise FinalError("refusal", "the model declined to answer (stop_reason: refusal)")
    texts = []
    for i, block in enumerate(content):
        block = object_at(block, f"content[{i}]")
        if block.get("type") == "text":
            texts.append(optional_text(block.get("text"), f"content[{i}].text") or "")
    return Completion(
        text="".join(texts), usage=parse_usage(body.get("usage")),
        finish_reason=_FINISH.get(stop, stop) if stop is not None else None,
        model=optional_text(body.get("model"), "model") or "", latency_s=latency_s,
    )


def parse_usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    usage = object_at(usage, "usage")
    fresh = check.count(usage.get("input_tokens"), "usage.input_tokens")
    read = check.count(usage.get("cache_read_input_tokens"), "usage.cache_read_input_tokens")
    written = check.count(usage.get("cache_creation_input_tokens"),
                          "usage.cache_creation_input_tokens")
    return Usage(
        prompt_tokens=fresh + read,
        completion_tokens=check.count(usage.get("output_tokens"), "usage.output_tokens"),
        cached_tokens=read,
        cache_write_tokens=written,
    )


def combine(samples: Sequence[Completion], *, latency_s: float) -> Completion:
    """n sampled answers -> one Completion: the majority text, every sample, summed usage.

    Ties go to the answer seen first, so the result does not depend on dict order.
    """
    texts = [c.text for c in samples]
    counts = Counter(t.strip() for t in texts)
    best = max(counts.values())
    majority = next(t for t in texts if counts[t.strip()] == best)
    usage = Usage()
    for c in samples:
        usage.prompt_tokens += c.usage.prompt_tokens
        usage.completion_tokens += c.usage.completion_tokens
        usage.cached_tokens += c.usage.cached_tokens
        usage.cache_write_tokens += c.usage.cache_write_tokens
    first = samples[0]
    return Completion(
        text=majority, tokens=None, usage=usage, finish_reason=first.finish_reason,
        model=first.model, latency_s=latency_s, samples=texts,
    )


def wants_samples(request: Request) -> bool:
    """Soft targets asked for: with no logprobs, they come from n sampled answers."""
    return request.wants_soft_targets()
