"""A teacher whose labels span several tokens and share their first ones, with a known
token-level distribution, so a test can compute each label's probability by brute force.

The labels, tokenized as the server tokenizes (words with their leading space), form a
tree. For a prompt whose answer starts after the last `cue` (``"Answer:"``), every node
of the tree shared by several labels has its own next-token distribution, drawn from a
hash of the prompt up to the cue and the path: one share per child, and a share for a
word that starts no label (" maybe"). Past the point where only one label is left, its
remaining tokens follow with certainty. The greedy answer walks the most likely child at
each node, then ends the line.

A prompt that goes on past the cue (the prompt of a request that scores a continuation,
``"...Answer: card"``) is answered from the node that text reaches: its alternatives are
that node's distribution, which is what llama.cpp's or vLLM's server would answer for
the same extended prompt. `next_tokens` gives a test the same numbers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from labeler.testing.hashing import mix, text_hash
from labeler.testing.responders import Reply, RequestView
from labeler.testing.tokens import tokenize

OFF_LABEL = " maybe"  # a first word of no label: mass a soft label counts outside
END = "\n"


class SharedPrefixResponder:
    """Multi-token labels sharing first tokens (module doc), on the completions endpoint."""

    def __init__(self, labels: Sequence[str], seed: int = 0, cue: str = "Answer:") -> None:
        if len(labels) < 2:
            raise ValueError("SharedPrefixResponder needs at least two labels")
        self.labels = tuple(labels)
        self.seed = seed
        self.cue = cue
        self._tokens = [tuple(tokenize(" " + label.strip())) for label in self.labels]

    def split(self, prompt: str) -> tuple[str, tuple[str, ...]]:
        """(the prompt up to and including the cue, the answer tokens written after it)."""
        at = prompt.rfind(self.cue)
        if at < 0:
            return prompt, ()
        end = at + len(self.cue)
        return prompt[:end], tuple(tokenize(prompt[end:]))

    def next_tokens(self, base: str, path: Sequence[str]) -> list[tuple[str, float]]:
        """The next-token distribution after `path` (answer tokens) for the prompt `base`
        (ending with the cue), best first; empty where `path` is on no label's way."""
        path = tuple(path)
        alive = [toks for toks in self._tokens if toks[: len(path)] == path]
        if not alive:
            return []
        if len(alive) == 1:
            toks = alive[0]
            return [(toks[len(path)], 1.0)] if len(path) < len(toks) else [(END, 1.0)]
        children: list[str] = []
        for toks in alive:
            nxt = toks[len(path)] if len(path) < len(toks) else END
            if nxt not in children:
                children.append(nxt)
        rng = random.Random(mix(self.seed, text_hash(base), text_hash("\x1f".join(path))))
        weights = [0.2 + rng.random() for _ in children]
        weights.append(0.05 + 0.1 * rng.random())  # the word of no label
        total = sum(weights)
        out = [(tok, w / total) for tok, w in zip([*children, OFF_LABEL], weights, strict=True)]
        return sorted(out, key=lambda e: -e[1])

    def __call__(self, view: RequestView) -> Reply:
        base, path = self.split(view.prompt)
        tokens: list[str] = []
        tops: list[list[tuple[str, float]]] = []
        while True:
            options = self.next_tokens(base, path)
            if not options:
                options = [(END, 1.0)]
            best = options[0][0]
            tokens.append(best)
            tops.append([(tok, math.log(p)) for tok, p in options])
            if best in (END, OFF_LABEL):
                break
            path = (*path, best)
        return Reply(text="".join(tokens), top_logprobs=tops, tokens=tokens)


__all__ = ["SharedPrefixResponder"]
