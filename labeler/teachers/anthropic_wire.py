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

Extended thinking. A request whose params carry ``thinking_budget`` (a template's or
``--thinking-budget``) is sent with ``thinking: {"type": "enabled", "budget_tokens": N}``
and what the API requires with it: temperature 1 (where sampling parameters are sent at
all) and no top_p below 0.95. max_tokens counts the thinking too; the template's check
(labeler/reasoning.py) has already made it larger than the budget. The answer's
``thinking`` blocks (text and signature) and ``redacted_thinking`` blocks (encrypted
``data``) are kept in `Completion.reasoning_blocks` as they came, and the thinking text in
`Completion.reasoning`.

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
from typing import Any

import orjson

from labeler import answer_checks as check
from labeler.answer_checks import list_at, malformed, object_at, optional_text
from labeler.completion import Completion, Usage
from labeler.errors import FinalError, RetryableError, TeacherError
from labeler.reasoning import THINKING_TEMPERATURE, THINKING_TOP_P_MIN, thinking_budget
from labeler.request import Request
from labeler.teachers.sampling import combine

__all__ = [
    "EPHEMERAL",
    "build_params",
    "combine",
    "parse_message",
    "parse_usage",
    "prefix_key",
    "split_messages",
    "wants_samples",
]

EPHEMERAL = {"type": "ephemeral"}
DEFAULT_MAX_TOKENS = 1024
SAMPLING_API_BEFORE = "2026-10-21"  # API versions before this accept temperature/top_p
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "length",
}


def build_params(
    request: Request,
    *,
    sampling_params: bool,
    temperature: float | None = None,
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
    budget = thinking_budget(params)
    if budget is not None:
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if sampling_params:
        extra: dict[str, Any] = {}
        temp = temperature if temperature is not None else params.get("temperature")
        if budget is not None:
            temp = THINKING_TEMPERATURE  # the only temperature thinking accepts
        if temp is not None:
            extra["temperature"] = min(float(temp), 1.0)  # Anthropic's range is 0..1
        top_p = params.get("top_p")
        if top_p is not None and (budget is None or float(top_p) >= THINKING_TOP_P_MIN):
            extra["top_p"] = float(top_p)
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
    except (
        TypeError,
        ValueError,
        AttributeError,
        KeyError,
        IndexError,
        OverflowError,
        RecursionError,
    ) as exc:
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
    blocks = _thinking_blocks(content)
    thoughts = [b["thinking"] for b in blocks or () if b["type"] == "thinking" and b["thinking"]]
    return Completion(
        text="".join(texts),
        usage=parse_usage(body.get("usage")),
        finish_reason=_FINISH.get(stop, stop) if stop is not None else None,
        model=optional_text(body.get("model"), "model") or "",
        latency_s=latency_s,
        reasoning="\n\n".join(thoughts) or None,
        reasoning_blocks=blocks,
    )


def _thinking_blocks(content: list[Any]) -> list[dict[str, Any]] | None:
    """The answer's thinking and redacted-thinking blocks, in order, with the fields the
    API needs to take them back (text and signature; the encrypted data); None if none."""
    out: list[dict[str, Any]] = []
    for b in content:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "thinking":
            out.append(
                {
                    "type": "thinking",
                    "thinking": str(b.get("thinking") or ""),
                    "signature": str(b.get("signature") or ""),
                }
            )
        elif b.get("type") == "redacted_thinking":
            out.append({"type": "redacted_thinking", "data": str(b.get("data") or "")})
    return out or None


def parse_usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    usage = object_at(usage, "usage")
    fresh = check.count(usage.get("input_tokens"), "usage.input_tokens")
    read = check.count(usage.get("cache_read_input_tokens"), "usage.cache_read_input_tokens")
    written = check.count(usage.get("cache_creation_input_tokens"), "usage.cache_creation_input_tokens")
    return Usage(
        prompt_tokens=fresh + read,
        completion_tokens=check.count(usage.get("output_tokens"), "usage.output_tokens"),
        cached_tokens=read,
        cache_write_tokens=written,
    )


def wants_samples(request: Request) -> bool:
    """Soft targets asked for: with no logprobs, they come from n sampled answers."""
    return request.wants_soft_targets()
