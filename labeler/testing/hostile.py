"""Hostile answers: a 200 whose body breaks the shape a client expects, one mode per shape.

Each mode takes the answer the server would have sent and breaks one thing in it, the way
a buggy gateway, a half-compatible server or an attacker would: a logprob that is a
string, null, absurd or not finite, an item that is not an object, `message` as a
string, `choices` that are not a list, usage that is a string or too large for a 64-bit
integer, JSON nested thousands deep, a gzip body that inflates to 200 MB. One mode,
``content_parts``, is a legitimate shape some servers send (the message's content as a
list of text parts): a client must accept it. Modes that need token logprobs fall back
to ``usage_string`` on an answer that has none.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import orjson

from labeler.testing.prompts import ANTHROPIC, OPENAI_CHAT

NAN = "__hostile_nan__"  # replaced by a bare NaN, which no JSON encoder writes
OVERFLOW = "__hostile_overflow__"  # replaced by 1e999, past any double
DEEP = "__hostile_deep__"  # replaced by lists nested 5,000 deep
BOMB_BYTES = 200 * 1024 * 1024  # what the gzip bomb inflates to
OVERSIZE_BYTES = 65 * 1024 * 1024  # over a client's 64 MiB limit, sent as it is
LEGITIMATE = frozenset({"content_parts"})  # modes a client must accept
HEAVY = frozenset({"gzip_bomb", "oversize"})  # never picked unless named

_bomb: bytes | None = None


def _first(body: dict[str, Any]) -> tuple[Any, Any] | None:
    """(container, key) of the first token's logprob, in whichever shape the body has."""
    choices = body.get("choices")
    lp = choices[0].get("logprobs") if choices else None
    if not isinstance(lp, dict):
        return None
    if lp.get("content"):
        return lp["content"][0], "logprob"
    if lp.get("token_logprobs"):
        return lp["token_logprobs"], 0
    return None


def _logprob(value: Any) -> Callable[[dict[str, Any], str], None]:
    def apply(body: dict[str, Any], provider: str) -> None:
        where = _first(body)
        if where is None:
            _usage_string(body, provider)
            return
        container, key = where
        container[key] = value

    return apply


def _token_not_object(body: dict[str, Any], provider: str) -> None:
    lp = body["choices"][0].get("logprobs") or {} if "choices" in body else {}
    if lp.get("content"):
        lp["content"][0] = "positive"
    elif lp.get("top_logprobs"):
        lp["top_logprobs"][0] = "positive"
    else:
        _usage_string(body, provider)


def _top_not_object(body: dict[str, Any], provider: str) -> None:
    lp = body["choices"][0].get("logprobs") or {} if "choices" in body else {}
    if lp.get("content") and lp["content"][0].get("top_logprobs"):
        lp["content"][0]["top_logprobs"][0] = 7
    elif lp.get("top_logprobs"):
        lp["top_logprobs"][0] = ["positive", -0.1]
    else:
        _usage_string(body, provider)


def _message_string(body: dict[str, Any], provider: str) -> None:
    if provider == OPENAI_CHAT:
        body["choices"][0]["message"] = body["choices"][0]["message"]["content"]
    elif provider == ANTHROPIC:  # the nearest thing: a text block whose text is not text
        body["content"][0]["text"] = {"text": body["content"][0]["text"]}
    else:
        body["choices"][0]["text"] = {"text": body["choices"][0]["text"]}


def _content_parts(body: dict[str, Any], provider: str) -> None:
    if provider != OPENAI_CHAT:
        _usage_string(body, provider)
        return
    message = body["choices"][0]["message"]
    text = message["content"] or ""
    cut = len(text) // 2
    message["content"] = [{"type": "text", "text": text[:cut]}, {"type": "text", "text": text[cut:]}]


def _choices_not_list(body: dict[str, Any], provider: str) -> None:
    if provider == ANTHROPIC:
        body["content"] = body["content"][0]["text"] if body["content"] else "text"
    else:
        body["choices"] = {"0": body["choices"][0]}


def _choice_not_object(body: dict[str, Any], provider: str) -> None:
    if provider == ANTHROPIC:
        body["content"] = [5]
    else:
        body["choices"] = ["positive"]


def _usage_string(body: dict[str, Any], provider: str) -> None:
    body["usage"] = "12 tokens"


def _usage(value: Any) -> Callable[[dict[str, Any], str], None]:
    def apply(body: dict[str, Any], provider: str) -> None:
        usage = body.setdefault("usage", {})
        usage["input_tokens" if provider == ANTHROPIC else "prompt_tokens"] = value

    return apply


def _finish_object(body: dict[str, Any], provider: str) -> None:
    if provider == ANTHROPIC:
        body["stop_reason"] = {"reason": "end_turn"}
    else:
        body["choices"][0]["finish_reason"] = {"reason": "stop"}


def _deep(body: dict[str, Any], provider: str) -> None:
    body["model"] = DEEP


SHAPES: dict[str, Callable[[dict[str, Any], str], None]] = {
    "logprob_string": _logprob("-0.25"),
    "logprob_null": _logprob(None),
    "logprob_absurd": _logprob(-1e308),
    "logprob_positive": _logprob(800.0),
    "logprob_nan": _logprob(NAN),
    "logprob_overflow": _logprob(OVERFLOW),
    "token_not_object": _token_not_object,
    "top_not_object": _top_not_object,
    "message_string": _message_string,
    "content_parts": _content_parts,
    "choices_not_list": _choices_not_list,
    "choice_not_object": _choice_not_object,
    "usage_string": _usage_string,
    "usage_huge": _usage(2**64 - 1),
    "usage_negative": _usage(-5),
    "finish_reason_object": _finish_object,
    "deep_nesting": _deep,
    "gzip_bomb": _usage_string,  # the body itself is replaced (`corrupt`)
    "oversize": _usage_string,
}


def pick(names: list[str] | None, salt: int) -> str:
    """The mode for one answer: one of `names`, else of every light mode, by `salt`."""
    pool = names or [n for n in SHAPES if n not in HEAVY]
    return pool[salt % len(pool)]


def corrupt(payload: bytes, shape: str, provider: str) -> tuple[bytes, dict[str, str]]:
    """(body, extra headers) of answer `payload` broken the `shape` way."""
    if shape == "gzip_bomb":
        return gzip_bomb(), {"Content-Encoding": "gzip"}
    if shape == "oversize":
        return b" " * OVERSIZE_BYTES + payload, {}
    body = orjson.loads(payload)
    SHAPES[shape](body, provider)
    text = orjson.dumps(body)
    return (
        text.replace(f'"{NAN}"'.encode(), b"NaN")
        .replace(f'"{OVERFLOW}"'.encode(), b"1e999")
        .replace(f'"{DEEP}"'.encode(), b"[" * 5000 + b"0" + b"]" * 5000)
    ), {}


def gzip_bomb() -> bytes:
    """A gzip body of about 200 KB that inflates to `BOMB_BYTES` of JSON whitespace."""
    global _bomb
    if _bomb is None:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = b" " * (1 << 20)
        parts = [packer.compress(block) for _ in range(BOMB_BYTES >> 20)]
        parts.append(packer.compress(b"{}") + packer.flush())
        _bomb = b"".join(parts)
    return _bomb
