"""Anthropic's wire format: Messages bodies, errors and rate-limit headers.

Shapes follow the public Messages API so that the `anthropic` SDK parses answers into
its own types and maps statuses to its own exceptions (529 to `OverloadedError`).
Anthropic returns no logprobs; prompt-cache usage is reported as the API does, with
`input_tokens` counting only what was neither read from nor written to the cache.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import orjson

from labeler.testing.generation import Generation
from labeler.testing.tokens import count_tokens

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed your organization's rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}


def error_body(status: int, message: str | None = None, *, model: str = "", request_id: str) -> bytes:
    """`{"type": "error", "error": {type, message}, "request_id"}`; type follows the status."""
    kind, default = _ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}")
    )
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": kind, "message": message or default.format(model=model)},
            "request_id": request_id,
        }
    )


def rate_limit_message(unit: str, limit: int) -> str:
    what = "requests per minute" if unit == "requests" else "input tokens per minute"
    return (
        f"This request would exceed the rate limit for your organization of {limit} {what}. "
        "For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the "
        "response headers for current usage. Please reduce the prompt length or the maximum "
        "tokens requested, or try again later."
    )


def context_message(context: int, prompt_tokens: int) -> str:
    return f"prompt is too long: {prompt_tokens} tokens > {context} maximum"


def rfc3339_in(seconds: float) -> str:
    """The wall-clock instant `seconds` from now, as Anthropic's reset headers give it."""
    at = datetime.now(UTC) + timedelta(seconds=max(seconds, 0.0))
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def ratelimit_headers(
    headers: dict[str, str],
    requests: tuple[int, int, float] | None,
    tokens: tuple[int, int, float] | None,
) -> None:
    """Add `anthropic-ratelimit-*`; one token window stands in for input and output limits."""
    groups = [("requests", requests), ("tokens", tokens)]
    if tokens is not None:
        groups += [("input-tokens", tokens), ("output-tokens", tokens)]
    for name, state in groups:
        if state is not None:
            limit, remaining, reset = state
            headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = rfc3339_in(reset)


def message_body(
    *,
    rid: str,
    model: str,
    gen: Generation,
    input_tokens: int,
    cache_read: int,
    cache_write_5m: int,
    cache_write_1h: int,
    redacted_thinking: bool = False,
) -> bytes:
    """A Messages answer; an answer with a trace (the request asked for thinking) starts
    with a `thinking` block and its signature, then, with `redacted_thinking`, an
    encrypted `redacted_thinking` block, as the API orders them before the text; the
    thinking is billed in `output_tokens`."""
    refused = gen.finish == "content_filter"
    stop_reason = _STOP_REASONS.get(gen.finish, gen.finish)
    if gen.stop_sequence is not None:
        stop_reason = "stop_sequence"
    return orjson.dumps(
        {
            "id": f"msg_{rid}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": []
            if refused or not gen.tokens
            else [
                *_thinking_blocks(gen.reasoning, redacted_thinking),
                {"type": "text", "text": gen.text or ""},
            ],
            "stop_reason": stop_reason,
            "stop_sequence": gen.stop_sequence,
            "stop_details": ({"type": "refusal", "category": None, "explanation": None} if refused else None),
            "usage": {
                "input_tokens": input_tokens - cache_read - cache_write_5m - cache_write_1h,
                "cache_creation_input_tokens": cache_write_5m + cache_write_1h,
                "cache_read_input_tokens": cache_read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": cache_write_5m,
                    "ephemeral_1h_input_tokens": cache_write_1h,
                },
                "output_tokens": len(gen.tokens)
                + (count_tokens(gen.reasoning) if gen.reasoning and not refused else 0),
                "service_tier": "standard",
            },
        }
    )


def _thinking_blocks(trace: str | None, redacted: bool) -> list[dict[str, str]]:
    if trace is None:
        return []
    blocks = [{"type": "thinking", "thinking": trace, "signature": signature(trace)}]
    if redacted:
        data = base64.b64encode(
            hashlib.blake2b(trace.encode(), digest_size=48, person=b"redacted").digest()
        ).decode()
        blocks.append({"type": "redacted_thinking", "data": data})
    return blocks


def signature(trace: str) -> str:
    """The opaque signature of a thinking block: a digest of its text, as a server that
    checks a block sent back would compute it."""
    return base64.b64encode(hashlib.blake2b(trace.encode(), digest_size=48).digest()).decode()


def count_tokens_body(input_tokens: int) -> bytes:
    return orjson.dumps({"input_tokens": input_tokens})


def models_body(model: str) -> bytes:
    return orjson.dumps(
        {
            "data": [
                {
                    "type": "model",
                    "id": model,
                    "display_name": model,
                    "created_at": "2025-01-01T00:00:00Z",
                }
            ],
            "has_more": False,
            "first_id": model,
            "last_id": model,
        }
    )
