"""What a teacher returned for one request, in a provider-neutral shape.

A `Completion` is the paid artefact: it is committed to the store before anything parses
it, and every later number (label, soft label, confidence) is derived from it, so it keeps
everything the provider said that a student can learn from: the text, each token's logprob
and its top-k alternatives, and the n samples when the distribution had to be sampled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token, its logprob, and the top-k alternatives at that position."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them (cached tokens are a subset of prompt)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(slots=True)
class Completion:
    """One teacher answer.

    `tokens` is None when the provider returns no logprobs (Anthropic). `samples` holds the
    n answers of a sampled teacher, whose soft label is then an empirical distribution.
    """

    text: str
    tokens: list[TokenLogprob] | None = None
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str = ""
    latency_s: float = 0.0
    samples: list[str] | None = None

    @property
    def sampled(self) -> bool:
        return self.samples is not None and len(self.samples) > 0

    def tokens_to_json(self) -> list[Any] | None:
        """Compact JSON form: [[token, logprob, [[alt, logprob], ...]], ...]."""
        if self.tokens is None:
            return None
        return [[t.token, t.logprob, [list(a) for a in t.top]] for t in self.tokens]

    @staticmethod
    def tokens_from_json(data: list[Any] | None) -> list[TokenLogprob] | None:
        if data is None:
            return None
        return [
            TokenLogprob(tok, float(lp), tuple((str(a), float(b)) for a, b in top))
            for tok, lp, top in data
        ]
