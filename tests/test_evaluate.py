"""Quality numbers against gold, each checked against a hand computation."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest

from labeler.errors import ConfigError
from labeler.evaluate import (
    accuracy,
    accuracy_at_coverage,
    auroc,
    confidence_measures,
    confusion_matrix,
    correctness,
    coverage_curve,
    evaluate,
    expected_calibration_error,
    macro_f1,
    reliability_bins,
    save_plot,
)
from labeler.evaluate import threshold_for_accuracy as _threshold
from labeler.soft_labels import Confidence

GOLD = ["a", "a", "b", "b", "c", "a", "b", "c"]
PRED: list[str | None] = ["a", "b", "b", None, "c", "a", "a", "c"]
RIGHT = [True, False, True, False, True, True, False, True]
# Ties: three rows at .8 (one right), two at .9.
SCORES = [0.9, 0.8, 0.8, 0.1, 0.7, 0.9, 0.8, 0.6]
# Off bin edges, for ECE.
PROBS = [0.95, 0.85, 0.82, 0.15, 0.65, 0.92, 0.78, 0.55]
ENTROPY = [0.1, 0.9, 0.3, 2.0, 0.4, 0.2, 0.5, 0.6]


def test_accuracy_counts_invalid_as_wrong() -> None:
    assert correctness(GOLD, PRED) == RIGHT
    assert accuracy(GOLD, PRED) == pytest.approx(5 / 8, abs=1e-9)
    with pytest.raises(ValueError):
        accuracy(GOLD, PRED[:-1])


def test_macro_f1() -> None:
    # a: TP 2, FP 1 (row 6), FN 1 (row 1) -> 4/6; b: TP 1, FP 1, FN 2 (incl. invalid) -> 2/5;
    # c: TP 2 -> 1.
    expected = (4 / 6 + 2 / 5 + 1.0) / 3
    assert macro_f1(GOLD, PRED) == pytest.approx(expected, abs=1e-9)
    # A label that never occurs has no F1 and does not drag the mean down.
    assert macro_f1(GOLD, PRED, ["a", "b", "c", "d"]) == pytest.approx(expected, abs=1e-9)


def test_confusion_matrix_has_an_invalid_column() -> None:
    cm = confusion_matrix(GOLD, PRED, ["a", "b", "c"])
    assert cm.columns == ("a", "b", "c", "invalid")
    assert cm.counts == ((2, 1, 0, 0), (1, 1, 0, 1), (0, 0, 2, 0))
    assert cm.top_confusions(2) == [("a", "b", 1), ("b", "a", 1)]
    # A prediction outside the given labels is invalid too.
    assert confusion_matrix(["a"], ["z"], ["a"]).counts == ((0, 1),)
    with pytest.raises(ValueError):
        confusion_matrix(["q"], ["a"], ["a"])


def test_auroc_with_ties() -> None:
    # Right rows: .9 .8 .7 .9 .6; wrong rows: .8 .1 .8. Pairs won (ties count half):
    # .9 -> 3 (twice), .8 -> .5 + 1 + .5, .7 -> 1, .6 -> 1; total 10 of 15.
    assert auroc(SCORES, RIGHT) == pytest.approx(10 / 15, abs=1e-9)
    assert auroc([0.5, 0.5, 0.5], [True, False, True]) == pytest.approx(0.5, abs=1e-9)
    assert auroc(SCORES, [True] * 8) is None
    assert auroc(SCORES, [False] * 8) is None
    # A missing score ranks lowest.
    assert auroc([None, 0.5, 0.3], [False, True, False]) == pytest.approx(1.0, abs=1e-9)
    # Lower-is-better measures are flipped.
    assert auroc([0.1, 0.5, 0.2], [True, False, True], lower_is_better=True) == 1.0


def test_accuracy_at_coverage_breaks_ties_stably() -> None:
    # Most confident first, ties in input order: rows 0 5 1 2 6 4 7 3 -> T T F T F T T F.
    assert accuracy_at_coverage(SCORES, RIGHT, 1.0) == pytest.approx(5 / 8, abs=1e-9)
    assert accuracy_at_coverage(SCORES, RIGHT, 0.75) == pytest.approx(4 / 6, abs=1e-9)
    assert accuracy_at_coverage(SCORES, RIGHT, 0.5) == pytest.approx(3 / 4, abs=1e-9)
    assert accuracy_at_coverage(SCORES, RIGHT, 0.25) == pytest.approx(1.0, abs=1e-9)
    assert accuracy_at_coverage(SCORES, RIGHT, 0.375) == pytest.approx(2 / 3, abs=1e-9)
    with pytest.raises(ValueError):
        accuracy_at_coverage(SCORES, RIGHT, 0.0)


def test_coverage_curve() -> None:
    curve = coverage_curve(SCORES, RIGHT)
    expected = [1, 1, 2 / 3, 3 / 4, 3 / 5, 4 / 6, 5 / 7, 5 / 8]
    assert [c for c, _ in curve] == pytest.approx([k / 8 for k in range(1, 9)], abs=1e-9)
    assert [a for _, a in curve] == pytest.approx(expected, abs=1e-9)
    sparse = coverage_curve(SCORES, RIGHT, points=4)
    assert [c for c, _ in sparse] == pytest.approx([0.25, 0.5, 0.75, 1.0], abs=1e-9)
    assert [a for _, a in sparse] == pytest.approx([1.0, 0.75, 4 / 6, 5 / 8], abs=1e-9)


def test_expected_calibration_error() -> None:
    # Bins (.9,1]: .95 T, .92 T -> |1 - .935|; (.8,.9]: .85 F, .82 T -> |.5 - .835|;
    # then one row each: .15 F, .65 T, .78 F, .55 T.
    expected = (2 * 0.065 + 2 * 0.335 + 0.15 + 0.35 + 0.78 + 0.45) / 8
    assert expected_calibration_error(PROBS, RIGHT) == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.31625, abs=1e-12)
    assert expected_calibration_error([0.3, 1.0], [True, True]) == pytest.approx(0.35, abs=1e-9)
    assert expected_calibration_error([None, None], [True, False]) is None


def test_reliability_bins_are_right_closed() -> None:
    bins = reliability_bins([0.0, 0.1, 0.3, 0.30001, 1.0], [False, True, True, False, True])
    counts = [b.count for b in bins]
    assert counts == [2, 0, 1, 1, 0, 0, 0, 0, 0, 1]
    assert bins[0].accuracy == 0.5 and bins[0].confidence == pytest.approx(0.05, abs=1e-12)
    assert bins[1].accuracy is None and bins[1].confidence is None
    with pytest.raises(ValueError):
        reliability_bins([1.5], [True])


def test_threshold_for_accuracy_on_the_point_estimate() -> None:
    # Thresholds keep score >= t. t=.9: 2/2; .8: 3/5; .7: 4/6; .6: 5/7; .1: 5/8.
    threshold_for_accuracy = functools.partial(_threshold, confidence=None)
    t = threshold_for_accuracy(SCORES, RIGHT, 0.7)
    assert t is not None
    assert (t.threshold, t.direction, t.kept) == (0.6, ">=", 7)
    assert t.coverage == pytest.approx(7 / 8, abs=1e-9)
    assert t.accuracy == pytest.approx(5 / 7, abs=1e-9)
    t = threshold_for_accuracy(SCORES, RIGHT, 0.75)
    assert t is not None and (t.threshold, t.kept, t.accuracy) == (0.9, 2, 1.0)
    t = threshold_for_accuracy(SCORES, RIGHT, 0.6)
    assert t is not None and (t.threshold, t.coverage) == (0.1, 1.0)
    assert threshold_for_accuracy([0.9, 0.5], [False, True], 0.99) is None
    # Entropy: keep entropy <= t.
    t = threshold_for_accuracy([0.1, 0.5, 0.2], [True, False, True], 1.0, lower_is_better=True)
    assert t is not None
    assert (t.threshold, t.direction, t.kept) == (0.2, "<=", 2)
    assert t.coverage == pytest.approx(2 / 3, abs=1e-9)


def test_confidence_measures_columns() -> None:
    confs = [Confidence(0.9, 0.8, 0.1, -0.2), None, Confidence(0.5, 0.0, 0.7, None)]
    cols = confidence_measures(confs)
    assert cols == {
        "max_prob": [0.9, None, 0.5],
        "margin": [0.8, None, 0.0],
        "entropy": [0.1, None, 0.7],
        "mean_logprob": [-0.2, None, None],
    }


def report():
    return evaluate(
        GOLD,
        PRED,
        {"max_prob": PROBS, "entropy": ENTROPY, "margin": SCORES},
        labels=["a", "b", "c"],
        bound_confidence=None,  # these 8 rows support no target at 95%; see test_calibration
    )


def test_evaluate_report() -> None:
    r = report()
    assert (r.n, r.n_invalid) == (8, 1)
    assert r.invalid_rate == pytest.approx(1 / 8, abs=1e-12)
    assert r.accuracy == pytest.approx(5 / 8, abs=1e-9)
    assert r.macro_f1 == pytest.approx((4 / 6 + 2 / 5 + 1.0) / 3, abs=1e-9)
    assert r.ece == pytest.approx(0.31625, abs=1e-9)
    assert r.primary == "max_prob"
    assert r.auroc["margin"] == pytest.approx(10 / 15, abs=1e-9)
    # max_prob: right .95 .82 .65 .92 .55, wrong .85 .15 .78 -> 3+2+1+3+1 = 10 of 15 won.
    assert r.auroc["max_prob"] == pytest.approx(10 / 15, abs=1e-9)
    # entropy, lower is better: right .1 .3 .4 .2 .6, wrong .9 2.0 .5 -> 3+3+3+3+2 = 14.
    assert r.auroc["entropy"] == pytest.approx(14 / 15, abs=1e-9)
    assert r.coverage["margin"][0.5] == pytest.approx(3 / 4, abs=1e-9)
    assert list(r.coverage["max_prob"]) == [1.0, 0.75, 0.5, 0.25]
    assert r.confusion.counts[1] == (1, 1, 0, 1)
    assert r.thresholds[0.9] is not None and r.thresholds[0.9].threshold == 0.92
    t = r.threshold_for_accuracy(0.7, "margin", confidence=None)
    assert t is not None and t.threshold == 0.6
    with pytest.raises(KeyError):
        r.threshold_for_accuracy(0.7, "nope")


def test_report_renders() -> None:
    r = report()
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["accuracy"] == pytest.approx(0.625)
    assert d["accuracy_at_coverage"]["margin"]["50%"] == pytest.approx(0.75)
    assert d["thresholds"]["0.99"]["threshold"] == 0.92
    assert d["confusion"]["columns"][-1] == "invalid"
    assert len(d["reliability"]) == 10
    table = r.to_table()
    assert "accuracy      0.6250" in table
    assert "acc@75%" in table and "entropy" in table
    assert "invalid" in table
    big = evaluate([f"l{i}" for i in range(12)], [f"l{(i + 1) % 12}" for i in range(12)])
    assert "most frequent errors" in big.to_table()
    assert big.primary is None and big.thresholds == {}


def test_evaluate_without_confidences_and_errors() -> None:
    r = evaluate(["a", "b"], ["a", None])
    assert r.ece is None and r.auroc == {} and r.reliability == []
    with pytest.raises(ValueError):
        evaluate([], [])
    with pytest.raises(ConfigError):
        evaluate(["a"], ["a"], {"max_prob": [0.5]}, primary="margin")


def test_save_plot_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = report().save_plot(tmp_path / "plots" / "quality.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_plot_without_matplotlib_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"pip install 'labeler-distill\[plot\]'"):
        save_plot(report(), tmp_path / "x.png")
