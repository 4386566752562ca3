"""OpenAI's wire format: chat and legacy completion bodies, errors, rate-limit headers.

Field names, nesting and error vocabulary follow the public API so that the `openai`
SDK parses every answer into its own types and raises its own exception classes. The
legacy completions endpoint can also answer in llama.cpp's llama-server shape, which
puts chat-style `logprobs.content[]` into completions.
"""

from __future__ import annotations

from typing import Any
from zlib import crc32

import orjson

from labeler.testing.generation import Generation
from labeler.testing.tokens import count_tokens

FINGERPRINT = "fp_7e57ea0c1e"
LLAMA_BUILD = "b4800-7e57ea0"

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", "conflict", "The request conflicts with another request."),
    422: ("invalid_request_error", None, "The request could not be processed."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for {model}. Please try again."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def error_body(
    status: int,
    message: str | None = None,
    *,
    model: str = "",
    type: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    """`{"error": {message, type, param, code}}`; defaults depend on the status."""
    default_type, default_code, default_message = _ERRORS.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}"),
    )
    return orjson.dumps(
        {
            "error": {
                "message": message or default_message.format(model=model),
                "type": type or default_type,
                "param": param,
                "code": code if code is not None or type is not None else default_code,
            }
        }
    )


def n_refused_message(max_n: int) -> str:
    """Groq's answer to a request asking more choices than it serves (its only `n` is 1)."""
    return f"'n' : number must be at most {max_n}"


def rate_limit_message(model: str, unit: str, limit: int, used: int, asked: int, wait: float) -> str:
    what = "requests per min (RPM)" if unit == "requests" else "tokens per min (TPM)"
    return (
        f"Rate limit reached for {model} in organization org-teacher-test on {what}: "
        f"Limit {limit}, Used {used}, Requested {asked}. Please try again in "
        f"{go_duration(wait)}. Visit https://platform.openai.com/account/rate-limits to "
        "learn more."
    )


def context_message(context: int, prompt_tokens: int, completion: int | None, chat: bool) -> str:
    if chat:
        return (
            f"This model's maximum context length is {context} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
        )
    asked = prompt_tokens + (completion or 0)
    return (
        f"This model's maximum context length is {context} tokens, however you requested "
        f"{asked} tokens ({prompt_tokens} in your prompt; {completion or 0} for the "
        "completion). Please reduce your prompt; or completion length."
    )


def llama_context_body(context: int, prompt_tokens: int) -> bytes:
    """llama.cpp's server refusing a prompt over its context (`-c`, per slot): a 400 whose
    `code` is the status and whose `type` names the cause."""
    return orjson.dumps(
        {
            "error": {
                "code": 400,
                "message": f"request ({prompt_tokens} tokens) exceeds the available context size "
                f"({context} tokens), try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt_tokens,
                "n_ctx": context,
            }
        }
    )


def go_duration(seconds: float) -> str:
    """Go's `time.Duration` text ("20ms", "1s", "6m0s"), as OpenAI's reset headers use."""
    if seconds <= 0:
        return "0s"
    if seconds < 0.9995:
        return f"{max(1, round(seconds * 1000))}ms"
    seconds = round(seconds, 3)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def ratelimit_headers(
    headers: dict[str, str],
    requests: tuple[int, int, float] | None,
    tokens: tuple[int, int, float] | None,
) -> None:
    """Add `x-ratelimit-*` for each configured limit as (limit, remaining, reset_s)."""
    for name, state in (("requests", requests), ("tokens", tokens)):
        if state is not None:
            limit, remaining, reset = state
            headers[f"x-ratelimit-limit-{name}"] = str(limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(remaining)
            headers[f"x-ratelimit-reset-{name}"] = go_duration(reset)


_BYTES: dict[str, list[int]] = {}


def _bytes(token: str) -> list[int]:
    """UTF-8 bytes of a token, memoised: the same few tokens recur in every answer."""
    cached = _BYTES.get(token)
    if cached is None:
        if len(_BYTES) > 100_000:
            _BYTES.clear()
        cached = _BYTES[token] = list(token.encode())
    return cached


def _content(gen: Generation, llama: bool) -> list[dict[str, Any]]:
    assert gen.logprobs is not None and gen.tops is not None
    items = []
    for tok, lp, top in zip(gen.tokens, gen.logprobs, gen.tops, strict=True):
        if llama:
            items.append(
                {
                    "id": token_id(tok),
                    "token": tok,
                    "bytes": _bytes(tok),
                    "logprob": lp,
                    "top_logprobs": [
                        {"id": token_id(t), "token": t, "bytes": _bytes(t), "logprob": alt} for t, alt in top
                    ],
                }
            )
        else:
            items.append(
                {
                    "token": tok,
                    "logprob": lp,
                    "bytes": _bytes(tok),
                    "top_logprobs": [{"token": t, "logprob": alt, "bytes": _bytes(t)} for t, alt in top],
                }
            )
    return items


def token_id(token: str) -> int:
    """The server's vocabulary id of a token: stable, as a real tokenizer's would be."""
    return crc32(token.encode()) % 151_936


def chat_body(
    *,
    rid: str,
    model: str,
    created: int,
    gens: list[Generation],
    logprobs: bool,
    prompt_tokens: int,
    cached_tokens: int,
    token_ids: bool = False,
    reasoning_field: str | None = None,
) -> bytes:
    """A chat completion; with `reasoning_field`, each message carries its choice's trace
    in that field (as DeepSeek's API, llama.cpp and vLLM do) and usage counts the trace's
    tokens in `completion_tokens` and again, apart, in `reasoning_tokens`."""
    choices = []
    reasoning_tokens = 0
    for i, gen in enumerate(gens):
        lp = None
        if logprobs and gen.logprobs is not None:
            lp = {"content": _content(gen, llama=token_ids), "refusal": None}
        message: dict[str, Any] = {
            "role": "assistant",
            "content": gen.text,
            "refusal": None,
            "annotations": [],
        }
        if reasoning_field is not None and gen.reasoning is not None:
            message[reasoning_field] = gen.reasoning
            reasoning_tokens += count_tokens(gen.reasoning)
        choices.append(
            {
                "index": i,
                "message": message,
                "logprobs": lp,
                "finish_reason": gen.finish,
            }
        )
    completion_tokens = sum(len(g.tokens) for g in gens) + reasoning_tokens
    return orjson.dumps(
        {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": reasoning_tokens,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )


def _legacy_logprobs(gen: Generation, offset: int) -> dict[str, Any]:
    assert gen.logprobs is not None and gen.tops is not None
    offsets = []
    for tok in gen.tokens:
        offsets.append(offset)
        offset += len(tok)
    return {
        "tokens": gen.tokens,
        "token_logprobs": gen.logprobs,
        "top_logprobs": [dict(top) for top in gen.tops],
        "text_offset": offsets,
    }


def completion_body(
    *,
    rid: str,
    model: str,
    created: int,
    gens: list[Generation],
    prompt_lengths: list[int],
    n: int,
    logprobs: bool,
    prompt_tokens: int,
    llama: bool,
) -> bytes:
    """Choices are ordered prompt by prompt, n per prompt, as OpenAI orders a batch."""
    choices = []
    for i, gen in enumerate(gens):
        lp = None
        if logprobs and gen.logprobs is not None:
            if llama:
                lp = {"content": _content(gen, llama=True)}
            else:
                lp = _legacy_logprobs(gen, prompt_lengths[i // n])
        choices.append(
            {
                "text": gen.text or "",
                "index": i,
                "logprobs": lp,
                "finish_reason": gen.finish,
            }
        )
    completion_tokens = sum(len(g.tokens) for g in gens)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if not llama:
        return orjson.dumps(
            {
                "id": f"cmpl-{rid}",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": choices,
                "usage": usage,
            }
        )
    return orjson.dumps(
        {
            "choices": choices,
            "created": created,
            "model": model,
            "system_fingerprint": LLAMA_BUILD,
            "object": "text_completion",
            "usage": {
                "completion_tokens": completion_tokens,
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "id": f"chatcmpl-{rid}",
            "timings": {
                "prompt_n": prompt_tokens,
                "prompt_ms": 0.0,
                "predicted_n": completion_tokens,
                "predicted_ms": 0.0,
            },
        }
    )


def models_body(model: str, created: int) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": created, "owned_by": "system"}],
        }
    )
