"""How good the teacher's labels are, measured against gold labels.

Before paying to label a million rows, a user labels a few hundred with gold answers and
asks two questions: is the teacher accurate enough, and does its confidence know when it is
wrong? The second decides whether confidence filters help, and at which threshold.

Conventions shared by every function here:

* Inputs are parallel sequences: gold labels, predicted labels (None = the answer named no
  valid label) and, per confidence measure, one score per row (None = no score).
* An invalid prediction is a wrong prediction: it counts against accuracy and as a false
  negative of its gold class, but as a false positive of no class.
* Scores are oriented so that higher means more confident; measures named in
  `LOWER_IS_BETTER` (entropy) are negated for ranking and reported in their own units.
  A missing or NaN score ranks as the least confident.
* Rankings break ties stably (input order), so results are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labeler.confidence import LOWER_IS_BETTER, MEASURES, Confidence
from labeler.errors import ConfigError

__all__ = [
    "COVERAGE_LEVELS",
    "LOWER_IS_BETTER",
    "TARGET_ACCURACIES",
    "CalibrationScore",
    "ConfusionMatrix",
    "EvalReport",
    "ReliabilityBin",
    "Threshold",
    "accuracy",
    "accuracy_at_coverage",
    "auroc",
    "clopper_pearson_lower",
    "confidence_measures",
    "confusion_matrix",
    "correctness",
    "coverage_curve",
    "distribution_scores",
    "evaluate",
    "expected_calibration_error",
    "macro_f1",
    "reliability_bins",
    "save_plot",
    "threshold_for_accuracy",
]

COVERAGE_LEVELS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
TARGET_ACCURACIES: tuple[float, ...] = (0.9, 0.95, 0.99)
# Thresholds promise an accuracy only where the kept rows support it at this confidence.
BOUND_CONFIDENCE = 0.95
INVALID = "invalid"
_EPS = 1e-12
# Thresholds the fixed-sequence search tests: one per 1/20 of the gold rows kept.
SEQUENCE_STEPS = 20


def _check_lengths(gold: Sequence[Any], *others: Sequence[Any]) -> int:
    n = len(gold)
    for other in others:
        if len(other) != n:
            raise ValueError(f"parallel inputs differ in length: {n} vs {len(other)}")
    return n


def correctness(gold: Sequence[str], pred: Sequence[str | None]) -> list[bool]:
    """Per row, whether the prediction is valid and equals gold."""
    _check_lengths(gold, pred)
    return [p is not None and p == g for g, p in zip(gold, pred, strict=True)]


def accuracy(gold: Sequence[str], pred: Sequence[str | None]) -> float:
    """Share of rows predicted correctly; invalid predictions count as wrong."""
    if not gold:
        raise ValueError("accuracy of an empty set is undefined")
    right = correctness(gold, pred)
    return sum(right) / len(right)


def macro_f1(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of per-label F1, so rare labels weigh as much as common ones.

    F1 = 2·TP / (2·TP + FP + FN) per label. Labels default to those seen in gold or in valid
    predictions; a label given in ``labels`` that never occurs on either side has no F1 and
    is left out of the mean rather than scored 0.
    """
    _check_lengths(gold, pred)
    if labels is None:
        labels = sorted(set(gold) | {p for p in pred if p is not None})
    index = {label: i for i, label in enumerate(labels)}
    tp = np.zeros(len(labels))
    fp = np.zeros(len(labels))
    fn = np.zeros(len(labels))
    for g, p in zip(gold, pred, strict=True):
        if p is not None and p == g:
            if g in index:
                tp[index[g]] += 1
            continue
        if g in index:
            fn[index[g]] += 1
        if p is not None and p in index:
            fp[index[p]] += 1
    return _mean_f1(tp, fp, fn)


def _mean_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    denom = 2 * tp + fp + fn
    scored = denom > 0
    if not scored.any():
        raise ValueError("macro-F1 needs at least one row on the given labels")
    return float(np.mean(2 * tp[scored] / denom[scored]))


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of gold label (rows) × predicted label (columns, plus a final "invalid")."""

    labels: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.labels, INVALID)

    def top_confusions(self, limit: int = 10) -> list[tuple[str, str, int]]:
        """The most frequent (gold, predicted) errors, for label sets too big to print."""
        cells = [
            (self.labels[r], self.columns[c], count)
            for r, row in enumerate(self.counts)
            for c, count in enumerate(row)
            if count and c != r
        ]
        cells.sort(key=lambda cell: -cell[2])
        return cells[:limit]

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "columns": list(self.columns),
            "counts": [list(row) for row in self.counts],
        }


def confusion_matrix(
    gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str] | None = None
) -> ConfusionMatrix:
    """Gold × predicted counts; a prediction outside ``labels`` lands in "invalid"."""
    _check_lengths(gold, pred)
    if labels is None:
        labels = sorted(set(gold) | {p for p in pred if p is not None})
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    counts = [[0] * (k + 1) for _ in range(k)]
    for g, p in zip(gold, pred, strict=True):
        row = index.get(g)
        if row is None:
            raise ValueError(f"gold label {g!r} is not one of the labels")
        col = index.get(p, k) if p is not None else k
        counts[row][col] += 1
    return ConfusionMatrix(tuple(labels), tuple(tuple(row) for row in counts))


def _oriented(scores: Sequence[float | None], lower_is_better: bool = False) -> np.ndarray:
    arr = np.array(scores, dtype=float)  # None becomes NaN
    if lower_is_better:
        arr = -arr
    arr[np.isnan(arr)] = -np.inf
    return arr


def _as_bool(correct: Sequence[bool]) -> np.ndarray:
    return np.asarray(correct, dtype=bool)


def _kept_count(coverage: float, n: int) -> int:
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
    return max(1, math.ceil(coverage * n - 1e-9))


class _Ranking:
    """One measure's rows sorted most confident first, ties in input order.

    Every ranking number (AUROC, accuracy at coverage, the curve, thresholds) is read off
    this one sort, so a million-row evaluation sorts once per measure.
    """

    def __init__(
        self, scores: Sequence[float | None], correct: Sequence[bool], lower_is_better: bool
    ) -> None:
        self.n = _check_lengths(scores, correct)
        self.lower_is_better = lower_is_better
        s = _oriented(scores, lower_is_better)
        order = np.argsort(-s, kind="stable")
        self.scores = s[order]
        self.right = _as_bool(correct)[order]
        self.cum = np.cumsum(self.right)
        # Tie groups by equality, not by difference: -inf - -inf is NaN.
        self.group_start = (
            np.r_[True, self.scores[1:] != self.scores[:-1]] if self.n else np.zeros(0, dtype=bool)
        )

    def auroc(self) -> float | None:
        n_pos = int(self.cum[-1]) if self.n else 0
        n_neg = self.n - n_pos
        if n_pos == 0 or n_neg == 0:
            return None
        starts = np.flatnonzero(self.group_start)
        ends = np.r_[starts[1:], self.n]
        # Descending position i has ascending 1-based rank n - i; a tie group at positions
        # start..end-1 shares the mean rank n - (start + end - 1) / 2.
        mean_rank = self.n - (starts + ends - 1) / 2.0
        ranks = mean_rank[np.cumsum(self.group_start) - 1]
        u = ranks[self.right].sum() - n_pos * (n_pos + 1) / 2.0
        return float(u / (n_pos * n_neg))

    def accuracy_at(self, coverage: float) -> float:
        if self.n == 0:
            raise ValueError("accuracy at coverage of an empty set is undefined")
        k = _kept_count(coverage, self.n)
        return float(self.cum[k - 1] / k)

    def curve(self, points: int | None) -> list[tuple[float, float]]:
        n = self.n
        if n == 0:
            return []
        if points is None:
            ks = np.arange(1, n + 1)
        else:
            ks = np.unique([_kept_count(i / points, n) for i in range(1, points + 1)])
        return [(int(k) / n, float(self.cum[k - 1] / k)) for k in ks]

    def operating_points(self) -> _OperatingPoints:
        if self.n == 0:
            empty = np.array([], dtype=float)
            return _OperatingPoints(empty, empty, empty, 0, self.lower_is_better)
        ends = np.flatnonzero(np.r_[self.group_start[1:], True])
        ends = ends[np.isfinite(self.scores[ends])]  # rows without a score are no threshold
        return _OperatingPoints(self.scores[ends], ends + 1, self.cum[ends], self.n, self.lower_is_better)


def auroc(
    scores: Sequence[float | None], correct: Sequence[bool], *, lower_is_better: bool = False
) -> float | None:
    """Probability that a correct row outranks a wrong one (ties count half).

    This is the Mann–Whitney U statistic from average ranks, so tied scores are handled
    exactly. None when every row is correct or every row is wrong: there is nothing to
    separate.
    """
    return _Ranking(scores, correct, lower_is_better).auroc()


def accuracy_at_coverage(
    scores: Sequence[float | None],
    correct: Sequence[bool],
    coverage: float,
    *,
    lower_is_better: bool = False,
) -> float:
    """Accuracy of the ⌈coverage·n⌉ most confident rows: what a filter keeping that share buys."""
    return _Ranking(scores, correct, lower_is_better).accuracy_at(coverage)


def coverage_curve(
    scores: Sequence[float | None],
    correct: Sequence[bool],
    points: int | None = None,
    *,
    lower_is_better: bool = False,
) -> list[tuple[float, float]]:
    """(coverage, accuracy) when keeping the k most confident rows.

    Every k from 1 to n by default; with ``points`` only at that many evenly spaced
    coverage levels, which keeps reports and plots small for large datasets.
    """
    return _Ranking(scores, correct, lower_is_better).curve(points)


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin (lower, upper]: its size, mean confidence and accuracy."""

    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None


def _scored(probs: Sequence[float | None], correct: Sequence[bool]) -> tuple[np.ndarray, ...]:
    _check_lengths(probs, correct)
    p = np.array(probs, dtype=float)  # None becomes NaN
    keep = ~np.isnan(p)
    p = p[keep]
    if ((p < -1e-9) | (p > 1 + 1e-9)).any():
        raise ValueError("calibration needs probabilities in [0, 1]")
    return np.clip(p, 0.0, 1.0), _as_bool(correct)[keep]


def reliability_bins(
    probs: Sequence[float | None], correct: Sequence[bool], bins: int = 10
) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]; bin i holds (i/bins, (i+1)/bins], the first also 0.

    Rows without a probability cannot be placed and are left out.
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    p, y = _scored(probs, correct)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="left") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        out.append(
            ReliabilityBin(
                float(edges[b]),
                float(edges[b + 1]),
                count,
                float(p[mask].mean()) if count else None,
                float(y[mask].mean()) if count else None,
            )
        )
    return out


def expected_calibration_error(
    probs: Sequence[float | None], correct: Sequence[bool], bins: int = 10
) -> float | None:
    """ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b| over equal-width bins.

    ``probs`` is the probability the teacher gave its predicted label (`Confidence.max_prob`).
    None when no row has a probability.
    """
    table = reliability_bins(probs, correct, bins)
    n = sum(b.count for b in table)
    if n == 0:
        return None
    return float(
        sum(
            b.count / n * abs(b.accuracy - b.confidence)
            for b in table
            if b.count and b.accuracy is not None and b.confidence is not None
        )
    )


@dataclass(frozen=True)
class Threshold:
    """A filter setting and what it keeps: rows with score ``direction`` ``threshold``."""

    threshold: float
    direction: str  # ">=" or "<="
    coverage: float
    accuracy: float
    kept: int
    lower_bound: float | None = None  # Clopper–Pearson lower bound of ``accuracy``

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "direction": self.direction,
            "coverage": self.coverage,
            "accuracy": self.accuracy,
            "accuracy_lower_bound": self.lower_bound,
            "kept": self.kept,
        }


@dataclass(frozen=True)
class _OperatingPoints:
    """Every distinct threshold of one measure with the rows it keeps (for fast lookups)."""

    scores: np.ndarray  # oriented score at the end of each tie group, descending
    kept: np.ndarray  # rows kept by "score >= that value"
    right: np.ndarray  # correct rows among them
    n: int
    lower_is_better: bool

    def for_accuracy(self, target: float, confidence: float | None = BOUND_CONFIDENCE) -> Threshold | None:
        if self.n == 0 or len(self.kept) == 0:
            return None
        acc = self.right / self.kept
        if confidence is not None:
            found = self._fixed_sequence(target, (1.0 - confidence) / 2)
            ok = np.asarray([] if found is None else [found], dtype=int)
        else:
            ok = np.flatnonzero(acc >= target - _EPS)
        if len(ok) == 0:
            return None
        i = ok[-1]  # the lowest threshold that still reaches the target keeps the most rows
        value = float(self.scores[i])
        return Threshold(
            -value if self.lower_is_better else value,
            "<=" if self.lower_is_better else ">=",
            float(self.kept[i] / self.n),
            float(acc[i]),
            int(self.kept[i]),
            clopper_pearson_lower(int(self.right[i]), int(self.kept[i]), confidence or BOUND_CONFIDENCE),
        )

    def _fixed_sequence(self, target: float, delta: float) -> int | None:
        """The loosest operating point a fixed-sequence test (Learn-then-Test) certifies.

        Testing every threshold at level ``delta`` and keeping the loosest that passes is a
        multiple comparison: where many thresholds sit just below the target, one of them
        passes by luck far more often than ``delta``. Here the thresholds are tested in an
        order fixed before any correctness is seen (strictest first, on a grid of coverage
        steps that depends on the scores only), each by the exact binomial test of
        "accuracy < target", and the walk stops at the first that fails. The family-wise
        error is then at most ``delta``: the kept rows' accuracy is below the target in at
        most that share of gold sets, after the search. A step keeping too few rows to
        ever pass (``target ** kept > delta``) is skipped, not failed: that too depends
        on the scores only.
        """
        least = math.ceil(math.log(delta) / math.log(target)) if target < 1.0 else None
        if least is None:
            return None  # no finite gold set certifies perfect accuracy
        chosen: int | None = None
        for j in self._grid(least):
            if _upper_tail(int(self.right[j]), int(self.kept[j]), target) > delta:
                break
            chosen = j
        return chosen

    def _grid(self, least: int) -> list[int]:
        """Operating points at coverage steps of 1/SEQUENCE_STEPS, strictest first,
        keeping at least ``least`` rows."""
        out: list[int] = []
        for step in range(1, SEQUENCE_STEPS + 1):
            need = max(least, math.ceil(self.n * step / SEQUENCE_STEPS))
            j = int(np.searchsorted(self.kept, need, side="left"))
            if j < len(self.kept) and (not out or j > out[-1]):
                out.append(j)
        return out


def threshold_for_accuracy(
    scores: Sequence[float | None],
    correct: Sequence[bool],
    target: float,
    *,
    lower_is_better: bool = False,
    confidence: float | None = BOUND_CONFIDENCE,
) -> Threshold | None:
    """The loosest confidence threshold whose kept rows reach ``target`` accuracy.

    Every distinct score is tried as a threshold (keep rows scoring at least as high); the
    lowest one that reaches the target keeps the most data. None if no threshold does.
    Accuracy is not monotone in the threshold, so this scans all of them.

    "Reach" means the exact binomial test rejects "accuracy < target" at (1 − confidence)/2,
    i.e. the Clopper–Pearson lower bound (two-sided, at ``confidence``) of the kept rows'
    accuracy is at least ``target`` (22 right out of 22 supports only 0.85 at 95%), and
    the thresholds are tested in a fixed sequence, strictest first, stopping at the first
    that fails (`_OperatingPoints._fixed_sequence`): so the promise holds after the
    search, not only for each threshold alone. ``confidence=None`` compares the point
    estimate instead (every threshold scanned).
    """
    points = _Ranking(scores, correct, lower_is_better).operating_points()
    return points.for_accuracy(target, confidence)


def clopper_pearson_lower(successes: int, trials: int, confidence: float = BOUND_CONFIDENCE) -> float:
    """Lower end of the two-sided Clopper–Pearson interval for a binomial proportion.

    The exact ("conservative") interval: the p at which seeing ``successes`` or more out of
    ``trials`` has probability (1 − confidence) / 2. k = n gives ((1 − c)/2)^(1/n).
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    if successes == 0:
        return 0.0
    alpha = (1.0 - confidence) / 2
    if successes == trials:
        return float(alpha ** (1.0 / trials))
    lo, hi = 0.0, successes / trials
    for _ in range(60):  # P(X >= k | p) rises with p: bisect for where it equals alpha
        mid = (lo + hi) / 2
        if _upper_tail(successes, trials, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), as the regularized incomplete beta I_p(k, n-k+1)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return _betainc(float(k), float(n - k + 1), p)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return math.exp(log_front) * h / a


def confidence_measures(confs: Sequence[Confidence | None]) -> dict[str, list[float | None]]:
    """Column-wise confidence measures, the shape `evaluate` takes; all-None ones omitted."""
    out: dict[str, list[float | None]] = {}
    for name in MEASURES:
        values = [None if c is None else getattr(c, name) for c in confs]
        if any(v is not None for v in values):
            out[name] = values
    return out


def distribution_scores(
    gold: Sequence[int] | np.ndarray, probs: Sequence[Sequence[float]] | np.ndarray
) -> dict[str, float | None]:
    """Accuracy, AUROC and ECE of max_prob, and NLL, of label distributions against gold.

    ``gold`` holds label indices; a row with no mass on any label (all zero) predicts
    nothing: it is wrong, has confidence 0, and its NLL uses a uniform distribution.
    """
    p = np.asarray(probs, dtype=float)
    g = np.asarray(gold, dtype=int)
    if len(g) == 0:
        raise ValueError("no rows to score")
    valid = (p > 0).any(axis=1)
    right = (p.argmax(axis=1) == g) & valid
    conf = np.where(valid, p.max(axis=1), 0.0)
    k = p.shape[1]
    own = np.where(valid, p[np.arange(len(g)), g], 1.0 / k)
    return {
        "accuracy": float(right.mean()),
        "auroc": auroc(conf.tolist(), right.tolist()),
        "ece": expected_calibration_error(conf.tolist(), right.tolist()),
        "nll": float(-np.log(np.maximum(own, 1e-12)).mean()),
    }


@dataclass(frozen=True)
class CalibrationScore:
    """One calibration method, scored before and after on rows its fit did not see."""

    method: str
    rows: int
    scheme: str  # how fit and scored rows were kept apart
    before: Mapping[str, float | None]
    after: Mapping[str, float | None]
    fitted: str  # the calibration fitted on all gold rows, in one line

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rows": self.rows,
            "scheme": self.scheme,
            "before": dict(self.before),
            "after": dict(self.after),
            "fitted": self.fitted,
        }


@dataclass
class EvalReport:
    """Quality of one teacher against gold: the numbers a user decides on, in one place."""

    n: int
    n_invalid: int
    accuracy: float
    macro_f1: float
    labels: tuple[str, ...]
    confusion: ConfusionMatrix
    auroc: dict[str, float | None]
    coverage: dict[str, dict[float, float]]
    ece: float | None
    reliability: list[ReliabilityBin]
    curves: dict[str, list[tuple[float, float]]]
    primary: str | None
    thresholds: dict[float, Threshold | None]
    _points: dict[str, _OperatingPoints] = field(default_factory=dict, repr=False)
    calibration: list[CalibrationScore] = field(default_factory=list)
    applied_calibration: str | None = None  # the saved calibration this report reads through

    @property
    def invalid_rate(self) -> float:
        return self.n_invalid / self.n if self.n else 0.0

    def threshold_for_accuracy(
        self, target: float, measure: str | None = None, *, confidence: float | None = BOUND_CONFIDENCE
    ) -> Threshold | None:
        """Loosest threshold of ``measure`` (default: the primary one) reaching ``target``."""
        name = measure or self.primary
        if name is None or name not in self._points:
            raise KeyError(f"no confidence measure {name!r} in this report")
        return self._points[name].for_accuracy(target, confidence)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (string keys, no NaN)."""
        return {
            "n": self.n,
            "invalid": self.n_invalid,
            "invalid_rate": self.invalid_rate,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "ece": self.ece,
            "primary_measure": self.primary,
            "auroc": dict(self.auroc),
            "accuracy_at_coverage": {
                name: {_pct(level): acc for level, acc in levels.items()}
                for name, levels in self.coverage.items()
            },
            "thresholds": {
                f"{target:g}": None if t is None else t.to_dict() for target, t in self.thresholds.items()
            },
            "reliability": [
                {
                    "lower": b.lower,
                    "upper": b.upper,
                    "count": b.count,
                    "confidence": b.confidence,
                    "accuracy": b.accuracy,
                }
                for b in self.reliability
            ],
            "coverage_curve": {name: [[c, a] for c, a in curve] for name, curve in self.curves.items()},
            "confusion": self.confusion.to_dict(),
            "calibration": [c.to_dict() for c in self.calibration],
            "applied_calibration": self.applied_calibration,
        }

    def to_table(self, max_matrix: int = 10) -> str:
        """A terminal summary; big confusion matrices are shown as their top errors."""
        lines = [
            f"Quality against gold: {self.n} rows, {self.n_invalid} invalid ({self.invalid_rate:.1%})",
            *(
                [f"  read through calibration: {self.applied_calibration}"]
                if self.applied_calibration
                else []
            ),
            f"  accuracy      {self.accuracy:.4f}",
            f"  macro-F1      {self.macro_f1:.4f}",
            f"  ECE           {_fmt(self.ece)}"
            + (f"  (max_prob, {len(self.reliability)} bins)" if self.reliability else ""),
        ]
        if self.auroc:
            levels = list(next(iter(self.coverage.values()), {}).keys())
            head = f"  {'measure':<14}{'AUROC':>8}" + "".join(
                f"{'acc@' + _pct(level):>10}" for level in levels
            )
            lines += ["", head]
            for name, value in self.auroc.items():
                accs = self.coverage.get(name, {})
                lines.append(
                    f"  {name:<14}{_fmt(value):>8}"
                    + "".join(f"{_fmt(accs.get(level)):>10}" for level in levels)
                )
        if self.thresholds:
            lines += [
                "",
                f"  thresholds on {self.primary} for a target accuracy"
                " (reached by the 95% Clopper–Pearson lower bound)",
            ]
            for target, t in self.thresholds.items():
                if t is None:
                    lines.append(f"    {target:<6g} unreachable")
                else:
                    lines.append(
                        f"    {target:<6g} keep {self.primary} {t.direction} {t.threshold:.4f}"
                        f"  coverage {t.coverage:.1%}  accuracy {t.accuracy:.4f}"
                        f"  (95% lower bound {_fmt(t.lower_bound)})"
                    )
        if self.calibration:
            lines += ["", _calibration_table(self.calibration)]
        lines.append("")
        if len(self.labels) <= max_matrix:
            lines.append(_matrix_text(self.confusion))
        else:
            top = self.confusion.top_confusions()
            lines.append("  most frequent errors (gold -> predicted: count)")
            lines += [f"    {g} -> {p}: {c}" for g, p, c in top] or ["    none"]
        return "\n".join(lines)

    def save_plot(self, path: str | Path) -> Path:
        """Write the reliability diagram and coverage curves as one PNG."""
        return save_plot(self, path)


def _calibration_table(scores: Sequence[CalibrationScore]) -> str:
    head = f"  calibration, scored on rows the fit did not see ({scores[0].scheme}, {scores[0].rows} rows)"
    cols = f"  {'method':<13}" + "".join(
        f"{name + ' ' + side:>13}" for name in ("accuracy", "AUROC", "ECE") for side in ("raw", "cal")
    )
    lines = [head, cols]
    for s in scores:
        cells = "".join(
            f"{_fmt(side.get(key)):>13}"
            for key in ("accuracy", "auroc", "ece")
            for side in (s.before, s.after)
        )
        lines.append(f"  {s.method:<13}{cells}")
    lines += [f"  fitted on all rows: {s.fitted}" for s in scores]
    return "\n".join(lines)


def _pct(level: float) -> str:
    return f"{level:.0%}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _matrix_text(cm: ConfusionMatrix) -> str:
    width = max(7, *(len(c) for c in cm.columns)) + 1
    head = "  " + " " * width + "".join(f"{c:>{width}}" for c in cm.columns)
    rows = [
        "  " + f"{label:<{width}}" + "".join(f"{v:>{width}}" for v in row)
        for label, row in zip(cm.labels, cm.counts, strict=True)
    ]
    return "\n".join(["  confusion (rows: gold, columns: predicted)", head, *rows])


def evaluate(
    gold: Sequence[str],
    pred: Sequence[str | None],
    confidences: Mapping[str, Sequence[float | None]] | None = None,
    *,
    labels: Sequence[str] | None = None,
    primary: str | None = None,
    coverage_levels: Sequence[float] = COVERAGE_LEVELS,
    targets: Sequence[float] = TARGET_ACCURACIES,
    bins: int = 10,
    curve_points: int = 100,
    bound_confidence: float | None = BOUND_CONFIDENCE,
) -> EvalReport:
    """Every quality number for one teacher run against gold labels.

    ``confidences`` maps measure names (as in `confidence_measures`) to one score per row.
    ECE and the reliability diagram read ``max_prob`` as the probability of the predicted
    label; thresholds are reported for ``primary`` (default ``max_prob`` when present),
    each the loosest whose kept rows' accuracy has a Clopper–Pearson lower bound (at
    ``bound_confidence``; None: the point estimate) at or above the target.
    """
    confidences = dict(confidences or {})
    n = _check_lengths(gold, pred, *confidences.values())
    if n == 0:
        raise ValueError("cannot evaluate an empty set")
    if labels is None:
        labels = sorted(set(gold) | {p for p in pred if p is not None})
    correct = correctness(gold, pred)

    auc: dict[str, float | None] = {}
    coverage: dict[str, dict[float, float]] = {}
    curves: dict[str, list[tuple[float, float]]] = {}
    points: dict[str, _OperatingPoints] = {}
    for name, values in confidences.items():
        ranking = _Ranking(values, correct, name in LOWER_IS_BETTER)
        auc[name] = ranking.auroc()
        coverage[name] = {level: ranking.accuracy_at(level) for level in coverage_levels}
        curves[name] = ranking.curve(curve_points)
        points[name] = ranking.operating_points()

    if primary is None and confidences:
        primary = "max_prob" if "max_prob" in confidences else next(iter(confidences))
    if primary is not None and primary not in confidences:
        raise ConfigError(f"primary measure {primary!r} is not among {sorted(confidences)}")

    probs = confidences.get("max_prob")
    reliability = reliability_bins(probs, correct, bins) if probs is not None else []
    ece = expected_calibration_error(probs, correct, bins) if probs is not None else None

    confusion = confusion_matrix(gold, pred, labels)
    counts = np.array(confusion.counts, dtype=float).reshape(len(labels), len(labels) + 1)
    tp = np.diag(counts[:, :-1])
    f1 = _mean_f1(tp, counts[:, :-1].sum(axis=0) - tp, counts.sum(axis=1) - tp)

    return EvalReport(
        n=n,
        n_invalid=sum(p is None for p in pred),
        accuracy=sum(correct) / n,
        macro_f1=f1,
        labels=tuple(labels),
        confusion=confusion,
        auroc=auc,
        coverage=coverage,
        ece=ece,
        reliability=reliability,
        curves=curves,
        primary=primary,
        thresholds=(
            {t: points[primary].for_accuracy(t, bound_confidence) for t in targets} if primary else {}
        ),
        _points=points,
    )


def save_plot(report: EvalReport, path: str | Path) -> Path:
    """Reliability diagram (left) and accuracy-vs-coverage curves (right) as a PNG.

    Uses matplotlib's Agg canvas directly, without pyplot, so it neither needs a display
    nor changes the caller's global backend.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError("plots need matplotlib: pip install 'labeler-distill[plot]'") from exc

    path = Path(path)
    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)

    left.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    filled = [b for b in report.reliability if b.count]
    if filled:
        width = filled[0].upper - filled[0].lower
        left.bar(
            [b.lower for b in filled],
            [b.accuracy or 0.0 for b in filled],
            width=width,
            align="edge",
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        left.plot(
            [b.confidence for b in filled],
            [b.accuracy for b in filled],
            marker="o",
            color="black",
            linewidth=0,
            label="bin (mean confidence, accuracy)",
        )
    else:
        left.text(0.5, 0.5, "no max_prob scores", ha="center", va="center")
    ece = "n/a" if report.ece is None else f"{report.ece:.3f}"
    left.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence (max_prob)",
        ylabel="accuracy",
        title=f"Reliability (ECE {ece})",
    )
    left.legend(loc="upper left", fontsize="small")

    for name, curve in report.curves.items():
        if curve:
            right.plot([c for c, _ in curve], [a for _, a in curve], label=name)
    right.axhline(report.accuracy, color="grey", linestyle=":", label="all rows")
    right.set(
        xlim=(0, 1),
        xlabel="coverage (share of rows kept, most confident first)",
        ylabel="accuracy",
        title="Accuracy vs coverage",
    )
    right.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
