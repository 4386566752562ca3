"""What the test teacher answers: a responder turns a request into a `Reply`.

Tests pick the answer semantics they need (labels with a known distribution, free text,
or exact scripted tokens and logprobs) without caring which provider shape carries it;
the server wraps the same `Reply` as an OpenAI chat completion, a legacy completion or
an Anthropic message.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labeler.testing.hashing import mix, text_hash, unit
from labeler.testing.tokens import tokenize


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer.

    With only `text`, the server tokenizes it and makes up deterministic logprobs. With
    `tokens` and/or `top_logprobs` it serves exactly those, position by position, so a
    test can assert soft labels against known numbers; a chosen token that appears in
    its position's `top_logprobs` gets that logprob. `finish_reason` overrides the
    computed one (OpenAI vocabulary: "stop", "length", "content_filter"). `reasoning` is
    the trace a reasoning model wrote first; served only where the server or the request
    asks for thinking, and made up per prompt (`reasoning_trace`) where a responder
    leaves it None.
    """

    text: str
    top_logprobs: list[list[tuple[str, float]]] | None = None
    tokens: list[str] | None = None
    finish_reason: str | None = None
    reasoning: str | None = None


@dataclass(frozen=True, slots=True)
class RequestView:
    """The provider-neutral facts a responder may base its answer on.

    `prompt` is the flattened conversation (`"system: ...\\nuser: ..."`, one line per
    message) or the raw completion prompt, so the same question asked through any
    provider gets the same answer. `call` counts earlier answers to the same prompt on
    the same endpoint (each of n choices is one call), which lets sampled answers vary
    across calls yet repeat exactly across runs. `temperature` is the request's, or the
    server's `default_temperature` (1.0, as at the providers) when it set none. `choice`
    is this answer's index among the request's n choices.
    """

    provider: str
    prompt: str
    last_user: str
    model: str
    temperature: float
    seed: int | None
    max_tokens: int | None
    call: int
    prompt_hash: int
    body: Mapping[str, Any]
    choice: int = 0

    @property
    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens}

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    @property
    def sample_id(self) -> int:
        """What a sampled answer is seeded by: the call counter or, when the request pins a
        `seed`, that seed and the choice index, so a seeded request repeats its samples as
        OpenAI's `seed` intends."""
        return self.call if self.seed is None else mix(0x5EED, self.seed, self.choice)


Responder = Callable[[RequestView], Reply]


def reasoning_trace(view: RequestView, answer: str) -> str:
    """A reasoning model's thinking for one answer: it quotes the row it read and names
    the answer it reached, so a test can tell each row's trace from every other's."""
    words = _WORD_RE.findall(view.last_user or view.prompt)
    quoted = " ".join(words[-12:]) if words else "the request"
    return (
        f"The user wrote: {quoted}.\nWeighing it (check {view.prompt_hash % 9973}), "
        f"the answer is {answer.strip() or 'empty'}."
    )


_DISTRACTORS = (("The", 0.5), ("\n", 0.3))
_CONTINUE_P = 0.995


class LabelResponder:
    """A classifier teacher with a known, per-prompt distribution over `labels`.

    For each prompt it fixes (from a hash of seed and prompt) a most likely label and a
    distribution over all labels; the first token of each label is served in
    `top_logprobs` in two variants, bare and with a leading space, plus two non-label
    distractors, as a real model would spread its mass. In chat the bare variant is the
    likely one; on the completions endpoint (a few-shot prefix such as `"Label:"`) the
    spaced one is, so the text there is e.g. `" positive"`. At temperature 0 the answer
    is the most likely label; above it, a label is sampled (seeded by prompt and call
    counter) from the label tokens only, so n samples give an empirical soft label. A
    request that sets no temperature samples at the server's default (1.0, as the
    providers do): send temperature 0 to get `label_for`'s answer every time.
    Labels should have distinct first tokens, or no teacher could tell them apart.
    """

    def __init__(self, labels: Sequence[str], seed: int = 0) -> None:
        if not labels:
            raise ValueError("LabelResponder needs at least one label")
        self.labels = tuple(labels)
        self.seed = seed
        self._tokens = [tokenize(label.strip()) or [label] for label in self.labels]
        self._first_tokens = {toks[0].lstrip() for toks in self._tokens}

    def label_distribution(self, prompt: str) -> dict[str, float]:
        """Each label's probability for this prompt (sums to 1), as a test's ground truth."""
        masses = self._draw(text_hash(prompt)).masses
        return dict(zip(self.labels, masses, strict=True))

    def label_for(self, prompt: str) -> str:
        """The label a greedy (temperature 0) request for this prompt answers."""
        dist = self.label_distribution(prompt)
        return max(self.labels, key=lambda label: dist[label])

    def token_distribution(self, prompt: str, provider: str = "openai-chat") -> list[tuple[str, float]]:
        """The first position's served alternatives as (token, probability), best first."""
        return self._first_position(self._draw(text_hash(prompt)), provider == "openai-completions")

    def __call__(self, view: RequestView) -> Reply:
        h = view.prompt_hash
        draw = self._draw(h)
        first = self._first_position(draw, view.provider == "openai-completions")
        candidates = [(tok, p) for tok, p in first if tok.lstrip() in self._first_tokens]
        temp = view.temperature if view.sampling else None
        chosen = _choose(candidates, temp, unit(self.seed, h, view.sample_id, 0))
        tokens = [chosen]
        tops: list[list[tuple[str, float]]] = [[(tok, math.log(p)) for tok, p in first]]
        alive = [i for i, toks in enumerate(self._tokens) if toks[0].lstrip() == chosen.lstrip()]
        pos = 1
        while True:
            nxt: dict[str, float] = {}
            for i in alive:
                if len(self._tokens[i]) > pos:
                    tok = self._tokens[i][pos]
                    nxt[tok] = nxt.get(tok, 0.0) + draw.masses[i]
            if not nxt or any(len(self._tokens[i]) == pos for i in alive):
                break
            total = sum(nxt.values())
            options = sorted(((tok, _CONTINUE_P * m / total) for tok, m in nxt.items()), key=lambda e: -e[1])
            tok = _choose(options, temp, unit(self.seed, h, view.sample_id, pos))
            top = [(t, math.log(p)) for t, p in options]
            top.append(("\n", math.log((1.0 - _CONTINUE_P) / 2)))
            tokens.append(tok)
            tops.append(top)
            alive = [i for i in alive if len(self._tokens[i]) > pos and self._tokens[i][pos] == tok]
            pos += 1
        return Reply(text="".join(tokens), top_logprobs=tops, tokens=tokens)

    def _draw(self, h: int) -> _Draw:
        """Every per-prompt number from one seeded generator, in a fixed order."""
        rng = random.Random(mix(self.seed, h))
        n = len(self.labels)
        best = rng.randrange(n)
        p_best = 0.55 + 0.42 * rng.random() if n > 1 else 1.0
        weights = [0.2 + rng.random() for _ in range(n)]
        rest = sum(weights) - weights[best]
        masses = [p_best if i == best else (1.0 - p_best) * w / rest for i, w in enumerate(weights)]
        leftover = 0.01 + 0.05 * rng.random()
        shares = [0.03 + 0.12 * rng.random() for _ in range(n)]
        return _Draw(masses, leftover, shares)

    def _first_position(self, draw: _Draw, spaced_first: bool) -> list[tuple[str, float]]:
        scale = 1.0 - draw.leftover
        probs: dict[str, float] = {}
        for i, mass in enumerate(draw.masses):
            bare = self._tokens[i][0].lstrip()
            share = draw.shares[i]
            likely, other = (" " + bare, bare) if spaced_first else (bare, " " + bare)
            probs[likely] = probs.get(likely, 0.0) + mass * scale * (1.0 - share)
            probs[other] = probs.get(other, 0.0) + mass * scale * share
        for tok, share in _DISTRACTORS:
            if tok not in probs:
                probs[tok] = draw.leftover * share
        return sorted(((t, p) for t, p in probs.items() if p > 0.0), key=lambda e: -e[1])


@dataclass(frozen=True, slots=True)
class _Draw:
    masses: list[float]
    leftover: float
    shares: list[float]


def _choose(options: list[tuple[str, float]], temperature: float | None, u: float) -> str:
    """Greedy pick, or a temperature-scaled draw using the given uniform `u`."""
    if temperature is None or len(options) == 1:
        return max(options, key=lambda e: e[1])[0]
    weights = [p ** (1.0 / temperature) for _, p in options]
    target = u * sum(weights)
    acc = 0.0
    for (tok, _), w in zip(options, weights, strict=True):
        acc += w
        if target < acc:
            return tok
    return options[-1][0]


class VerbalizedResponder:
    """A teacher that states its confidence as JSON, ``{"label": L, "confidence": P}``:
    L is `LabelResponder`'s greedy label for the prompt and P its probability under that
    responder's known distribution, pushed towards 1 by `overconfidence` (0: honest;
    0.5: halves the stated doubt), the fault a calibration fitted on gold corrects."""

    def __init__(self, labels: Sequence[str], seed: int = 0, overconfidence: float = 0.0) -> None:
        if not 0.0 <= overconfidence < 1.0:
            raise ValueError("overconfidence must be within [0, 1)")
        self.labels = LabelResponder(labels, seed)
        self.overconfidence = overconfidence

    def stated(self, prompt: str) -> tuple[str, float]:
        """(label, stated confidence) for a prompt, as a test's ground truth."""
        dist = self.labels.label_distribution(prompt)
        label = max(dist, key=lambda name: dist[name])
        return label, round(1.0 - (1.0 - dist[label]) * (1.0 - self.overconfidence), 3)

    def __call__(self, view: RequestView) -> Reply:
        label, p = self.stated(view.prompt)
        return Reply(text=f'{{"label": "{label}", "confidence": {p}}}')


_WORD_RE = re.compile(r"\w+")
_OPENERS = (
    "Here is a short answer about {topic}.",
    "There are two sides to {topic}, and both deserve a fair hearing.",
    "To summarise, {topic} is worth a closer look.",
    "That said, {topic} has exceptions worth noting.",
)
_SENTENCES = (
    "The main point is that {word} matters more than it first seems.",
    "In practice, most cases like this come down to a few simple checks.",
    "A careful reader would start by looking at {word} again.",
    "This is consistent with what is usually observed.",
    "One caveat: the evidence for {word} is thinner than people assume.",
    "Nothing here is surprising once {word} is taken into account.",
    "The simplest explanation is usually the right one.",
    "Further detail would depend on the exact context.",
)


class EchoResponder:
    """A free-text teacher: a few sentences derived from the last user message.

    The first sentence names the message's first words (its "topic") and later ones
    reuse a word of it, so different inputs get visibly different targets; which
    sentences appear is a hash of the prompt (and, when sampling, of the sample), so
    reruns reproduce them exactly.
    """

    def __init__(self, seed: int = 0, sentences: int = 3) -> None:
        self.seed = seed
        self.sentences = max(1, min(sentences, len(_SENTENCES) + 1))

    def __call__(self, view: RequestView) -> Reply:
        words = _WORD_RE.findall(view.last_user or view.prompt)
        topic = " ".join(words[:4]) if words else "your request"
        h = mix(self.seed, view.prompt_hash, view.sample_id if view.sampling else 0)
        word = words[h % len(words)] if words else "context"
        parts = [_OPENERS[h % len(_OPENERS)].format(topic=topic)]
        picked: list[int] = []
        i = 0
        while len(picked) < self.sentences - 1:
            idx = mix(h, i) % len(_SENTENCES)
            i += 1
            if idx not in picked:
                picked.append(idx)
        parts += [_SENTENCES[j].format(word=word) for j in picked]
        return Reply(text=" ".join(parts))


class ScriptedResponder:
    """Exact answers for chosen prompts: the first rule whose substring is in the prompt wins.

    Everything else goes to `default` (an `EchoResponder` unless given), so a test can
    pin the few cases it asserts on and let the rest flow.
    """

    def __init__(self, rules: Sequence[tuple[str, Reply]], default: Responder | None = None) -> None:
        self.rules = list(rules)
        self.default: Responder = default if default is not None else EchoResponder()

    def __call__(self, view: RequestView) -> Reply:
        for needle, reply in self.rules:
            if needle in view.prompt:
                return reply
        return self.default(view)
