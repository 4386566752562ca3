"""OpenAI response bodies -> Completion, parsed once from the raw JSON.

Kept apart from the client so that live calls, batch result files and any lean transport
share one parser. Accepts both logprob shapes a completions endpoint returns: OpenAI's
legacy one (``tokens`` / ``token_logprobs`` / ``top_logprobs`` dicts) and the chat-style
``content[].top_logprobs`` lists that llama.cpp's server puts in completions too.
"""

from __future__ import annotations

from typing import Any

from labeler.completion import Completion, TokenLogprob, Usage
from labeler.errors import FinalError, RetryableError


def parse_chat(body: Any, *, latency_s: float = 0.0) -> Completion:
    choices = _choices(body)
    first = choices[0]
    message = first.get("message") or {}
    text = message.get("content")
    if text is None:
        refusal = message.get("refusal")
        if refusal:
            raise FinalError("refusal", str(refusal)[:200])
        text = ""
    finish = first.get("finish_reason")
    if finish == "content_filter":
        raise FinalError("content_filter", "the provider's content filter stopped the answer")
    lp = first.get("logprobs")
    tokens = _chat_tokens(lp.get("content")) if isinstance(lp, dict) else None
    samples = None
    if len(choices) > 1:
        samples = [((c.get("message") or {}).get("content") or "") for c in choices]
    return Completion(
        text=text, tokens=tokens, usage=parse_usage(body.get("usage")), finish_reason=finish,
        model=str(body.get("model") or ""), latency_s=latency_s, samples=samples,
        reasoning=_reasoning(message),
    )


def _reasoning(message: Any) -> str | None:
    """The thinking an OpenAI-compatible reasoning server puts beside the answer:
    ``reasoning_content`` (DeepSeek's API, llama.cpp, vLLM before 0.11) or ``reasoning``
    (vLLM since, OpenRouter). None where there is none or it is empty."""
    if not isinstance(message, dict):
        return None
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def parse_completions(body: Any, *, latency_s: float = 0.0) -> Completion:
    choices = _choices(body)
    first = choices[0]
    text = first.get("text") or ""
    finish = first.get("finish_reason")
    if finish == "content_filter":
        raise FinalError("content_filter", "the provider's content filter stopped the answer")
    lp = first.get("logprobs")
    tokens = None
    if isinstance(lp, dict):
        if isinstance(lp.get("content"), list):
            tokens = _chat_tokens(lp["content"])
        elif isinstance(lp.get("tokens"), list):
            tokens = _legacy_tokens(lp)
    samples = [c.get("text") or "" for c in choices] if len(choices) > 1 else None
    return Completion(
        text=text, tokens=tokens, usage=parse_usage(body.get("usage")), finish_reason=finish,
        model=str(body.get("model") or ""), latency_s=latency_s, samples=samples,
    )


def parse_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details") or {}
    output = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int((details.get("cached_tokens") if isinstance(details, dict) else 0) or 0),
        # a subset of completion_tokens, as OpenAI, DeepSeek and vLLM count them
        reasoning_tokens=int((output.get("reasoning_tokens") if isinstance(output, dict)
                              else 0) or 0),
    )


def _choices(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise RetryableError("invalid_json", "the response body is not a JSON object")
    if "error" in body and "choices" not in body:
        err = body.get("error") or {}
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise RetryableError("error_body", str(msg)[:200])
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RetryableError("invalid_json", "the response has no choices")
    return choices


def _chat_tokens(content: Any) -> list[TokenLogprob] | None:
    """Chat-style logprobs; llama.cpp's server adds each token's vocabulary `id`, and every
    server may send `bytes`, kept only where they differ from the text (a cut character)."""
    if not isinstance(content, list):
        return None
    out = []
    for item in content:
        top = item.get("top_logprobs") or ()
        token = str(item.get("token", ""))
        tid = item.get("id")
        raw = _raw(token, item.get("bytes"))
        top_ids: tuple[int | None, ...] = ()
        if tid is not None:
            top_ids = tuple(_int_or_none(t.get("id")) for t in top)
        top_raw = tuple(_raw(str(t.get("token", "")), t.get("bytes")) for t in top)
        if not any(r is not None for r in top_raw):
            top_raw = ()
        out.append(
            TokenLogprob(
                token,
                float(item.get("logprob", 0.0)),
                tuple((str(t.get("token", "")), float(t.get("logprob", 0.0))) for t in top),
                id=_int_or_none(tid),
                top_ids=top_ids,
                raw=raw,
                top_raw=top_raw,
            )
        )
    return out


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _raw(token: str, raw: Any) -> bytes | None:
    """The token's bytes when they are not its text's UTF-8, else None (the common case)."""
    if not isinstance(raw, list) or not raw:
        return None
    try:
        data = bytes(raw)
    except (TypeError, ValueError):
        return None
    return None if data == token.encode("utf-8") else data


def _legacy_tokens(lp: dict[str, Any]) -> list[TokenLogprob]:
    toks = lp.get("tokens") or []
    lps = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or []
    out = []
    for i, tok in enumerate(toks):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        logprob = lps[i] if i < len(lps) and lps[i] is not None else 0.0
        alts = sorted(((str(k), float(v)) for k, v in top.items()), key=lambda kv: -kv[1])
        out.append(TokenLogprob(str(tok), float(logprob), tuple(alts)))
    return out
