"""OpenAI response bodies -> Completion, parsed once from the raw JSON.

Kept apart from the client so that live calls, batch result files and any lean transport
share one parser. Accepts both logprob shapes a completions endpoint returns: OpenAI's
legacy one (``tokens`` / ``token_logprobs`` / ``top_logprobs`` dicts) and the chat-style
``content[].top_logprobs`` lists that llama.cpp's server puts in completions too.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from labeler import answer_checks as check
from labeler.answer_checks import list_at, malformed, object_at, optional_text
from labeler.completion import Completion, TokenLogprob, Usage
from labeler.errors import FinalError, RetryableError, TeacherError

# What a shape nobody foresaw raises in the parser below: told as a malformed answer.
_SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RecursionError)


def parse_body(raw: bytes, *, chat: bool, latency_s: float = 0.0) -> Completion:
    """A 200's raw body -> Completion; a failure carries the raw body for the store."""
    try:
        body = check.load_json(raw)
        if chat:
            return parse_chat(body, latency_s=latency_s)
        return parse_completions(body, latency_s=latency_s)
    except TeacherError as exc:
        check.keep_body(exc, raw)
        raise


def parse_chat(body: Any, *, latency_s: float = 0.0) -> Completion:
    """A chat completion's JSON -> Completion, every field checked (`answer_checks`)."""
    try:
        return _parse_chat(body, latency_s)
    except _SHAPE_ERRORS as exc:
        raise _unforeseen(exc, body) from exc
    except TeacherError as exc:
        _with_body(exc, body)
        raise


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
    """A legacy completion's JSON -> Completion, every field checked (`answer_checks`)."""
    try:
        return _parse_completions(body, latency_s)
    except _SHAPE_ERRORS as exc:
        raise _unforeseen(exc, body) from exc
    except TeacherError as exc:
        _with_body(exc, body)
        raise


def _unforeseen(exc: BaseException, body: Any) -> TeacherError:
    return _with_body(malformed("response", f"unexpected shape ({type(exc).__name__}: {exc})"), body)


def _with_body(exc: TeacherError, body: Any) -> TeacherError:
    """`exc` carrying the answer it is about (re-encoded: batch result lines arrive parsed)."""
    if exc.body is None:
        with contextlib.suppress(TypeError, ValueError, OverflowError, RecursionError):
            check.keep_body(exc, orjson.dumps(body))
    return exc


def _parse_chat(body: Any, latency_s: float) -> Completion:
    choices = _choices(body)
    first = choices[0]
    text = _message_text(first, "choices[0]")
    finish = optional_text(first.get("finish_reason"), "choices[0].finish_reason")
    if finish == "content_filter":
        raise FinalError("content_filter", "the provider's content filter stopped the answer")
    lp = first.get("logprobs")
    tokens = None
    if lp is not None:
        content = object_at(lp, "choices[0].logprobs").get("content")
        if content is not None:
            tokens = _chat_tokens(content, "choices[0].logprobs.content")
    samples = None
    if len(choices) > 1:
        samples = [
            _message_text(c, f"choices[{i}]", refusal_final=False) if i else text
            for i, c in enumerate(choices)
        ]
    return Completion(
        text=text,
        tokens=tokens,
        usage=parse_usage(body.get("usage")),
        finish_reason=finish,
        model=_model(body),
        latency_s=latency_s,
        samples=samples,
        reasoning=_reasoning(first.get("message")),
    )


def _message_text(choice: dict[str, Any], where: str, *, refusal_final: bool = True) -> str:
    """A choice's answer text. `content` may be a string or, from some servers, a list of
    parts whose text parts are joined; a refusal with no content is final (in the first
    choice: a refused sample among n is an empty answer)."""
    message = choice.get("message")
    if message is None:
        return ""
    message = object_at(message, f"{where}.message")
    content = message.get("content")
    if type(content) is str:
        return content
    if content is None:
        refusal = optional_text(message.get("refusal"), f"{where}.message.refusal")
        if refusal and refusal_final:
            raise FinalError("refusal", refusal[:200])
        return ""
    parts = list_at(content, f"{where}.message.content", check.MAX_POSITIONS)
    texts = []
    for i, part in enumerate(parts):
        part = object_at(part, f"{where}.message.content[{i}]")
        if part.get("type") in ("text", "output_text"):
            text = optional_text(part.get("text"), f"{where}.message.content[{i}].text")
            texts.append(text or "")
    return "".join(texts)


def _parse_completions(body: Any, latency_s: float) -> Completion:
    choices = _choices(body)
    first = choices[0]
    text = optional_text(first.get("text"), "choices[0].text") or ""
    finish = optional_text(first.get("finish_reason"), "choices[0].finish_reason")
    if finish == "content_filter":
        raise FinalError("content_filter", "the provider's content filter stopped the answer")
    lp = first.get("logprobs")
    tokens = None
    if lp is not None:
        lp = object_at(lp, "choices[0].logprobs")
        if lp.get("content") is not None:
            tokens = _chat_tokens(lp["content"], "choices[0].logprobs.content")
        elif lp.get("tokens") is not None:
            tokens = _legacy_tokens(lp, "choices[0].logprobs")
    samples = None
    if len(choices) > 1:
        samples = [optional_text(c.get("text"), f"choices[{i}].text") or "" for i, c in enumerate(choices)]
    return Completion(
        text=text,
        tokens=tokens,
        usage=parse_usage(body.get("usage")),
        finish_reason=finish,
        model=_model(body),
        latency_s=latency_s,
        samples=samples,
    )


def parse_usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    usage = object_at(usage, "usage")
    details = usage.get("prompt_tokens_details")
    cached = 0
    if details is not None:
        cached = check.count(
            object_at(details, "usage.prompt_tokens_details").get("cached_tokens"),
            "usage.prompt_tokens_details.cached_tokens",
        )
    output = usage.get("completion_tokens_details")
    reasoning = 0
    if output is not None:
        reasoning = check.count(
            object_at(output, "usage.completion_tokens_details").get("reasoning_tokens"),
            "usage.completion_tokens_details.reasoning_tokens",
        )
    return Usage(
        prompt_tokens=check.count(usage.get("prompt_tokens"), "usage.prompt_tokens"),
        completion_tokens=check.count(usage.get("completion_tokens"), "usage.completion_tokens"),
        cached_tokens=cached,
        # a subset of completion_tokens, as OpenAI, DeepSeek and vLLM count them
        reasoning_tokens=reasoning,
    )


def _model(body: dict[str, Any]) -> str:
    return optional_text(body.get("model"), "model") or ""


def _choices(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise RetryableError("invalid_json", "the response body is not a JSON object")
    if "error" in body and "choices" not in body:
        err = body.get("error") or {}
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise RetryableError("error_body", str(msg)[:200])
    choices = body.get("choices")
    if choices is None or choices == []:
        raise RetryableError("invalid_json", "the response has no choices")
    choices = list_at(choices, "choices", check.MAX_CHOICES)
    for i, choice in enumerate(choices):
        object_at(choice, f"choices[{i}]")
    return choices


def _chat_tokens(content: Any, where: str) -> list[TokenLogprob]:
    """Chat-style logprobs; llama.cpp's server adds each token's vocabulary `id`, and every
    server may send `bytes`, kept only where they differ from the text (a cut character).
    Each field is checked as it is read: a type test and a range test per number."""
    content = list_at(content, where, check.MAX_POSITIONS)
    out = []
    floor, ceiling = check.LOGPROB_FLOOR, check.LOGPROB_CEILING
    for i, item in enumerate(content):
        # The checks run on every token of every answer: a type test and one chained
        # comparison each (NaN and inf fail it too); the field is named only on failure.
        if type(item) is not dict:
            raise malformed(f"{where}[{i}]", f"expected an object, got {check.describe(item)}")
        token = item.get("token")
        if type(token) is not str:
            raise malformed(f"{where}[{i}].token", f"expected a string, got {check.describe(token)}")
        lp = item.get("logprob")
        if type(lp) is not float or not floor <= lp <= ceiling:
            lp = check.logprob(lp, f"{where}[{i}].logprob")
        top = item.get("top_logprobs")
        if top is None:
            top = ()
        elif type(top) is not list or len(top) > check.MAX_ALTERNATIVES:
            list_at(top, f"{where}[{i}].top_logprobs", check.MAX_ALTERNATIVES)
        alts = []
        for j, t in enumerate(top):
            if type(t) is not dict or type(t.get("token")) is not str:
                raise malformed(
                    f"{where}[{i}].top_logprobs[{j}]",
                    f"expected an object with a string token, got {check.describe(t)}",
                )
            alt = t.get("logprob")
            if type(alt) is not float or not floor <= alt <= ceiling:
                alt = check.logprob(alt, f"{where}[{i}].top_logprobs[{j}].logprob")
            alts.append((t["token"], alt))
        tid = item.get("id")
        raw = _raw(token, item.get("bytes"))
        top_ids: tuple[int | None, ...] = ()
        if tid is not None:
            top_ids = tuple(_int_or_none(t.get("id")) for t in top)
        top_raw = tuple(_raw(t["token"], t.get("bytes")) for t in top)
        if not any(r is not None for r in top_raw):
            top_raw = ()
        out.append(
            TokenLogprob(
                token, lp, tuple(alts), id=_int_or_none(tid), top_ids=top_ids, raw=raw, top_raw=top_raw
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


def _legacy_tokens(lp: dict[str, Any], where: str) -> list[TokenLogprob]:
    toks = list_at(lp.get("tokens"), f"{where}.tokens", check.MAX_POSITIONS)
    lps = list_at(lp.get("token_logprobs"), f"{where}.token_logprobs", check.MAX_POSITIONS)
    tops = lp.get("top_logprobs")
    tops = [] if tops is None else list_at(tops, f"{where}.top_logprobs", check.MAX_POSITIONS)
    if len(lps) != len(toks):
        raise malformed(f"{where}.token_logprobs", f"{len(lps)} logprobs for {len(toks)} tokens")
    out = []
    floor, ceiling = check.LOGPROB_FLOOR, check.LOGPROB_CEILING
    for i, tok in enumerate(toks):
        if type(tok) is not str:
            raise malformed(f"{where}.tokens[{i}]", f"expected a string, got {check.describe(tok)}")
        top = tops[i] if i < len(tops) and tops[i] is not None else {}
        if type(top) is not dict or len(top) > check.MAX_ALTERNATIVES:
            object_at(top, f"{where}.top_logprobs[{i}]")
            raise malformed(f"{where}.top_logprobs[{i}]", f"more than {check.MAX_ALTERNATIVES} alternatives")
        logprob = lps[i]
        if type(logprob) is not float or not floor <= logprob <= ceiling:
            logprob = check.logprob(logprob, f"{where}.token_logprobs[{i}]")
        alts = []
        for k, v in top.items():
            if type(v) is not float or not floor <= v <= ceiling:
                v = check.logprob(v, f"{where}.top_logprobs[{i}][{k!r}]")
            alts.append((k, v))
        alts.sort(key=lambda kv: -kv[1])
        out.append(TokenLogprob(tok, logprob, tuple(alts)))
    return out
