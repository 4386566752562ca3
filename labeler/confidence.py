"""How sure a teacher was: every confidence measure, computed in one place.

A row's confidence is read from its label distribution (``max_prob``, ``margin``,
``entropy``), from its answer tokens (``mean_logprob``) and, where several voters answered
the row (a sampled teacher's N answers, a prompt ensemble's forms, a teacher ensemble's
members), from how many of them back the row's label (``agreement``). Soft labels,
calibration, ensembles, exports, cascades and evaluation all read these numbers, so they
are made here and nowhere else: a filter, a cascade threshold and `labeler eval` then
judge the same value by the same name. A new measure is a field of `Confidence` and a
line of `measure`; `MEASURES` carries its name to evaluation (and `LOWER_IS_BETTER` its
direction); an export that carries it names it as a column.

The arithmetic is written once and kept in one order of operations, so a measure is the
same float whichever path computed it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

__all__ = [
    "DISTRIBUTION_MEASURES",
    "LOWER_IS_BETTER",
    "MEASURES",
    "Confidence",
    "agreement",
    "distribution_measures",
    "mean_logprob",
    "measure",
    "share",
]


@dataclass(frozen=True)
class Confidence:
    """How sure the teacher was, measured several ways so each can be judged against gold.

    ``max_prob``, ``margin`` (top-1 minus top-2) and ``entropy`` (nats) describe the
    renormalised label distribution; with no mass on any label they are 0, 0 and log(K), the
    least confident values. ``mean_logprob`` is the mean logprob of all answer tokens
    (None without logprobs) and ``agreement`` the share of all voters (samples, prompt
    forms or ensemble members), invalid ones included, that name the row's label (None
    where one answer is all there is).
    """

    max_prob: float
    margin: float
    entropy: float
    mean_logprob: float | None = None
    agreement: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "max_prob": self.max_prob,
            "margin": self.margin,
            "entropy": self.entropy,
            "mean_logprob": self.mean_logprob,
            "agreement": self.agreement,
        }


# Every measure's name, in column order: what evaluation scores and exports carry.
MEASURES: tuple[str, ...] = tuple(f.name for f in fields(Confidence))
# The measures every label distribution has, so a cascade can threshold any teacher on them.
DISTRIBUTION_MEASURES: tuple[str, ...] = ("max_prob", "margin", "entropy")
# Measures where a smaller value means surer: ranked and thresholded the other way round.
LOWER_IS_BETTER: frozenset[str] = frozenset({"entropy"})


def distribution_measures(probs: Sequence[float], valid: bool = True) -> tuple[float, float, float]:
    """``(max_prob, margin, entropy)`` of a label distribution; for one with no mass on any
    label (``valid`` False) the least confident values, 0, 0 and log(K)."""
    if not valid:
        return 0.0, 0.0, math.log(len(probs)) if probs else 0.0
    ranked = sorted(probs, reverse=True)
    best = ranked[0]
    margin = best - (ranked[1] if len(ranked) > 1 else 0.0)
    entropy = max(0.0, -sum([p * math.log(p) for p in probs if p > 0.0]))
    return best, margin, entropy


def measure(
    probs: Sequence[float],
    valid: bool = True,
    *,
    mean_logprob: float | None = None,
    agreement: float | None = None,
) -> Confidence:
    """The `Confidence` of a label distribution, with the measures that come from elsewhere
    (the answer's tokens, the voters) passed through."""
    return Confidence(*distribution_measures(probs, valid), mean_logprob, agreement)


def agreement(votes: Iterable[object], label: object) -> float:
    """The share of all ``votes`` that name ``label``; a vote of None (an answer that named
    no label) counts against it, since a voter that strays is no support. No label: 0."""
    votes = list(votes)
    if label is None or not votes:
        return 0.0
    return share(sum(1 for v in votes if v == label), len(votes))


def share(named: int, voters: int) -> float:
    """``agreement`` from counts: ``named`` of ``voters`` name the row's label (a sampled
    teacher's counts come from its soft label, not from a list of votes)."""
    return named / voters


def mean_logprob(logprobs: Sequence[float]) -> float | None:
    """The mean of ``logprobs``; None for none (an answer that came without logprobs)."""
    if not logprobs:
        return None
    return sum(logprobs) / len(logprobs)
