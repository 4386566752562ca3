"""From a `Reply` to what a provider would return: tokens, logprobs, finish reason.

Provider limits (max tokens, stop sequences, the context window) apply here, once, so
every wire format truncates the same way. Logprobs the reply does not pin are made up
deterministically per (seed, prompt, position, token), with a valid distribution: the
chosen token first, then alternatives whose probabilities sum to less than one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from zlib import crc32

from labeler.testing.responders import Reply
from labeler.testing.tokens import tokenize

TopList = list[tuple[str, float]]

_LN2 = math.log(2.0)
_COMMON = (" the", ",", ".", " a", "\n", " and", " of", " to", " is", " in", " that", " it", " for")
_RARER = (" on", " with", " as", " was", " be", " by", " this", " I", " you", " not", " are", "The", "A")
_FILLERS = (*_COMMON, *_RARER)


@dataclass(slots=True)
class Generation:
    """One choice. `text` is None when a content filter withheld the answer."""

    text: str | None
    tokens: list[str]
    logprobs: list[float] | None
    tops: list[TopList] | None
    finish: str
    stop_sequence: str | None = None
    reasoning: str | None = None  # the thinking before the answer, where it was asked for


FILTERED = Generation(text=None, tokens=[], logprobs=None, tops=None, finish="content_filter")


def generate(
    reply: Reply,
    *,
    salt: int,
    limit: int | None,
    stop: Sequence[str] = (),
    top_k: int | None = None,
) -> Generation:
    """Apply stop sequences, then the token limit, then attach logprobs if asked.

    `limit` is the smaller of max tokens and what the context window leaves; `top_k` is
    None when the request asked for no logprobs, else the number of alternatives.
    """
    tokens = list(reply.tokens) if reply.tokens is not None else tokenize(reply.text)
    text = reply.text
    finish = "stop"
    stop_sequence = None
    if stop:
        cut = -1
        for seq in stop:
            at = text.find(seq) if seq else -1
            if at >= 0 and (cut < 0 or at < cut):
                cut, stop_sequence = at, seq
        if cut >= 0:
            text = text[:cut]
            kept, end = 0, 0
            while kept < len(tokens) and end + len(tokens[kept]) <= cut:
                end += len(tokens[kept])
                kept += 1
            tokens = tokens[:kept]
    if limit is not None and len(tokens) > limit:
        tokens = tokens[: max(limit, 0)]
        text = "".join(tokens)
        finish = "length"
        stop_sequence = None
    if reply.finish_reason:
        finish = reply.finish_reason
    if top_k is None:
        return Generation(text, tokens, None, None, finish, stop_sequence)
    logprobs, tops = _attach(tokens, reply.top_logprobs, salt, top_k)
    return Generation(text, tokens, logprobs, tops, finish, stop_sequence)


def _attach(
    tokens: list[str], given: list[TopList] | None, salt: int, top_k: int
) -> tuple[list[float], list[TopList]]:
    logprobs: list[float] = []
    tops: list[TopList] = []
    for i, tok in enumerate(tokens):
        alts = given[i] if given is not None and i < len(given) else None
        if alts:
            lp = next((a for t, a in alts if t == tok), None)
            if lp is None:
                lp = min(a for _, a in alts) - 1.0
            top = sorted(alts, key=lambda e: -e[1])[:top_k]
        else:
            lp, top = _synthesize(tok, crc32(tok.encode(), (salt + i * 0x9E3779B1) & 0xFFFFFFFF), top_k)
            if alts is not None:
                top = []
        logprobs.append(lp)
        tops.append(top)
    return logprobs, tops


def _synthesize(token: str, h: int, k: int) -> tuple[float, TopList]:
    """Logprobs for one position from a 32-bit hash `h` (cheap: this runs per token)."""
    p_chosen = 0.35 + 0.64 * h / 0x1_0000_0000
    lp = math.log(p_chosen)
    if k <= 0:
        return lp, []
    rest = math.log1p(-p_chosen)
    alts = _ROTATIONS[h % len(_FILLERS)]
    if token in alts:
        alts = tuple(a for a in alts if a != token)
    top: TopList = [(alt, rest - d) for alt, d in zip(alts[: k - 1], _HALVINGS, strict=False)]
    top.insert(0, (token, lp))
    return lp, top


_ROTATIONS = tuple(_FILLERS[i:] + _FILLERS[:i] for i in range(len(_FILLERS)))
_HALVINGS = tuple(step * _LN2 for step in range(1, len(_FILLERS) + 1))
