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
    """One generated token, its logprob, and the top-k alternatives at that position.

    ``id`` and ``top_ids`` are the teacher's vocabulary ids where the server reports them
    (llama.cpp's server does; API teachers do not): with them a student that shares the
    teacher's tokenizer can distil on ids. ``raw`` holds the token's bytes only when they
    differ from its text's UTF-8 (a token that is part of a multi-byte character, whose
    text the server cut), and ``top_raw`` the same per alternative; None means "the text".
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    id: int | None = None
    top_ids: tuple[int | None, ...] = ()
    raw: bytes | None = None
    top_raw: tuple[bytes | None, ...] = ()

    @property
    def token_bytes(self) -> bytes:
        """The token's exact bytes."""
        return self.raw if self.raw is not None else self.token.encode("utf-8")


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them (cached tokens are a subset of prompt).

    `reasoning_tokens` are a subset of `completion_tokens`, as OpenAI-style servers count
    them (``usage.completion_tokens_details.reasoning_tokens``): the thinking is billed as
    output, so a price reads `completion_tokens` alone and never adds them again.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(slots=True)
class Completion:
    """One teacher answer.

    `tokens` is None when the provider returns no logprobs (Anthropic). `samples` holds the
    n answers of a sampled teacher, whose soft label is then an empirical distribution.

    `reasoning` is the thinking a reasoning teacher wrote before `text` (an OpenAI-style
    server's ``reasoning_content`` / ``reasoning``, or Anthropic's thinking blocks joined),
    the part of a paid answer a student distils most from. `reasoning_blocks` keeps
    Anthropic's blocks as they came, each ``thinking`` with its ``signature`` and each
    ``redacted_thinking`` with its encrypted ``data``: only so can they be sent back to
    the API (a later turn, a tool call), and a redacted block has no text to join.
    """

    text: str
    tokens: list[TokenLogprob] | None = None
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str = ""
    latency_s: float = 0.0
    samples: list[str] | None = None
    reasoning: str | None = None
    reasoning_blocks: list[dict[str, Any]] | None = None
    # Labels sharing first tokens, scored (labeler/label_scoring.py): for an answer text
    # prefix (the prompt's continuation as sent), the teacher's next-token alternatives
    # there, (token, logprob). Read from the store beside the answer, never stored in it:
    # each is the answer of its own request, keyed and cached like any.
    scores: dict[str, tuple[tuple[str, float], ...]] | None = field(default=None, compare=False)

    @property
    def sampled(self) -> bool:
        return self.samples is not None and len(self.samples) > 0

    def tokens_to_json(self) -> list[Any] | None:
        """Compact JSON form: [[token, logprob, [[alt, logprob], ...]], ...].

        Ids and raw bytes, when known, follow as optional trailing items ([token, logprob,
        top, id, raw_hex, top_ids, top_raw_hex]), so rows stored before they existed read
        back unchanged and answers without them cost nothing more.
        """
        if self.tokens is None:
            return None
        out: list[Any] = []
        for t in self.tokens:
            item: list[Any] = [t.token, t.logprob, [list(a) for a in t.top]]
            if t.id is not None or t.raw is not None or t.top_ids or t.top_raw:
                item += [
                    t.id,
                    None if t.raw is None else t.raw.hex(),
                    list(t.top_ids),
                    [None if r is None else r.hex() for r in t.top_raw],
                ]
            out.append(item)
        return out

    @staticmethod
    def tokens_from_json(data: list[Any] | None) -> list[TokenLogprob] | None:
        if data is None:
            return None
        out = []
        for item in data:
            tok, lp, top = item[0], item[1], item[2]
            try:  # pairs, as tokens_to_json writes them: unpacked without a list per pair
                alts = tuple([(str(a), float(b)) for a, b in top])
            except ValueError:  # longer entries: their first two items
                alts = tuple([(str(a), float(b)) for a, b, *_ in top])
            if len(item) > 3:
                tid, raw, top_ids, top_raw = item[3], item[4], item[5], item[6]
                out.append(
                    TokenLogprob(
                        tok,
                        float(lp),
                        alts,
                        id=tid,
                        top_ids=tuple(top_ids),
                        raw=None if raw is None else bytes.fromhex(raw),
                        top_raw=tuple(None if r is None else bytes.fromhex(r) for r in top_raw),
                    )
                )
            else:
                out.append(TokenLogprob(tok, float(lp), alts))
        return out


# The slots a Completion keeps its tokens and usage in, behind StoredCompletion's properties.
_TOKENS = Completion.__dict__["tokens"]
_USAGE = Completion.__dict__["usage"]
_COMPARED = tuple(name for name, f in Completion.__dataclass_fields__.items() if f.compare)


class StoredCompletion(Completion):
    """A completion as the store reads it back: its `tokens` are built from their stored
    JSON form (`token_rows`, as `tokens_to_json` wrote it) when first read, and its
    `usage` from the stored counts (`usage_counts`) likewise. Building a `TokenLogprob`
    per token and alternative costs more than decoding the JSON, and an export of a label
    task reads most answers straight from that form (`soft_labels.label_numbers`) without ever
    needing the objects, nor the token counts that only costs and statistics read. Reads,
    compares and copies as the `Completion` it stands for."""

    __slots__ = ("token_rows", "usage_counts")
    token_rows: list[Any] | None
    usage_counts: tuple[int, ...] | None

    def __init__(self, text: str, token_rows: list[Any] | None = None, **fields: Any) -> None:
        super().__init__(text, **fields)
        self.token_rows = token_rows

    @property
    def tokens(self) -> list[TokenLogprob] | None:
        rows = self.token_rows
        if rows is not None:
            _TOKENS.__set__(self, Completion.tokens_from_json(rows))
            self.token_rows = None
        tokens: list[TokenLogprob] | None = _TOKENS.__get__(self, Completion)
        return tokens

    @tokens.setter
    def tokens(self, value: list[TokenLogprob] | None) -> None:
        self.token_rows = None
        _TOKENS.__set__(self, value)

    @property
    def usage(self) -> Usage:
        counts = self.usage_counts
        if counts is not None:
            _USAGE.__set__(self, Usage(*counts))
            self.usage_counts = None
        usage: Usage = _USAGE.__get__(self, Completion)
        return usage

    @usage.setter
    def usage(self, value: Usage) -> None:
        self.usage_counts = None
        _USAGE.__set__(self, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Completion):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _COMPARED)

    __hash__ = None  # type: ignore[assignment]  # as a Completion's


def stored_completion(
    text: str,
    token_rows: list[Any] | None,
    usage_counts: tuple[int, ...],
    finish_reason: str | None,
    model: str,
    latency_s: float,
    samples: list[str] | None,
    reasoning: str | None = None,
    reasoning_blocks: list[dict[str, Any]] | None = None,
) -> StoredCompletion:
    """A completion as a store row holds it: its tokens and usage left in their stored
    form until something reads them."""
    completion = StoredCompletion(
        text,
        token_rows,
        finish_reason=finish_reason,
        model=model,
        latency_s=latency_s,
        samples=samples,
        reasoning=reasoning,
        reasoning_blocks=reasoning_blocks,
    )
    completion.usage_counts = usage_counts
    return completion
