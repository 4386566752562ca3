"""Calibration fitted on gold, and thresholds on a lower bound: hand-computable fixtures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from labeler.answer import Answer
from labeler.calibration import (
    Calibration,
    batch_calibration,
    calibrate_answer,
    contextual_bias,
    cross_validated,
    fit,
    fit_bias,
    fit_temperature,
    load_calibration,
)
from labeler.errors import ConfigError
from labeler.evaluate import clopper_pearson_lower, evaluate, threshold_for_accuracy
from labeler.soft_labels import Confidence, LabelSpace, SoftLabel

TEACHER = {"provider": "local", "model": "tiny"}


def test_temperature_two_takes_the_square_root() -> None:
    cal = Calibration(("a", "b"), temperature=2.0)
    # sqrt(.8) : sqrt(.2) = 2 : 1
    assert cal.apply_probs([0.8, 0.2]) == pytest.approx((2 / 3, 1 / 3), abs=1e-12)
    assert Calibration(("a", "b")).apply_probs([0.8, 0.2]) == pytest.approx((0.8, 0.2))


def test_no_mass_on_any_label_stays_as_it_is() -> None:
    assert Calibration(("a", "b"), temperature=0.5).apply_probs([0.0, 0.0]) == (0.0, 0.0)


def test_contextual_bias_divides_out_the_content_free_distribution() -> None:
    bias = contextual_bias([[0.7, 0.3], [0.8, 0.2]])  # mean (.75, .25)
    cal = Calibration(("pos", "neg"), bias=tuple(bias))
    # (.6, .4) / (.75, .25) = (.8, 1.6) -> (1/3, 2/3): the argmax flips.
    assert cal.apply_probs([0.6, 0.4]) == pytest.approx((1 / 3, 2 / 3), abs=1e-9)


def test_batch_calibration_divides_out_the_mean_of_the_rows_it_is_given() -> None:
    # Rows normalised over the labels first ((.3, .1) counts as (.75, .25)); the all-zero
    # row has no prior to give and is left out of the mean: (.75, .25), as above.
    cal = batch_calibration([[0.9, 0.1], [0.6, 0.4], [0.3, 0.1], [0.0, 0.0]], ("pos", "neg"))
    assert cal.method == "batch" and cal.temperature == 1.0 and cal.fitted_rows == 0
    assert cal.details["rows"] == 3
    assert cal.details["mean"] == pytest.approx([0.75, 0.25])
    assert cal.apply_probs([0.6, 0.4]) == pytest.approx((1 / 3, 2 / 3), abs=1e-9)
    assert cal.describe().endswith("the teacher's mean over 3 rows, no gold")
    with pytest.raises(ConfigError, match="no mass on any label"):
        batch_calibration([[0.0, 0.0]], ("pos", "neg"))


def test_fit_temperature_matches_the_closed_form() -> None:
    # Every row says (.9, .1); gold is label 0 on 80% of rows. The likelihood is best when
    # the calibrated probability is .8: 9^(1/T) = 4, T = ln 9 / ln 4.
    probs = np.array([[0.9, 0.1]] * 10)
    gold = np.array([0] * 8 + [1] * 2)
    assert fit_temperature(probs, gold) == pytest.approx(math.log(9) / math.log(4), rel=1e-6)


def test_fit_bias_removes_a_label_prior_and_matches_label_frequencies() -> None:
    # The teacher favours "a" everywhere; its ranking is right: rows it gives .7 are "a",
    # rows it gives .55 are "b". A per-label bias makes both groups right; temperature alone
    # cannot change an argmax.
    probs = np.array([[0.7, 0.3]] * 6 + [[0.55, 0.45]] * 6)
    gold = np.array([0] * 6 + [1] * 6)
    t, b = fit_bias(probs, gold, ridge=1e-6)
    cal = Calibration(("a", "b"), temperature=t, bias=tuple(b))
    out = np.array([cal.apply_probs(p) for p in probs])
    assert (out.argmax(axis=1) == gold).all()
    # At a likelihood optimum with per-label intercepts, mean probability = label frequency.
    assert out.mean(axis=0) == pytest.approx([0.5, 0.5], abs=1e-4)
    assert fit_temperature(probs, gold) > 0  # and temperature alone keeps the argmax:
    t_only = Calibration(("a", "b"), temperature=fit_temperature(probs, gold))
    assert all(np.argmax(t_only.apply_probs(p)) == 0 for p in probs)


def test_fit_skips_rows_without_label_mass_and_records_its_key() -> None:
    cal = fit(
        "temperature",
        [[0.9, 0.1]] * 10 + [[0.0, 0.0]],
        [0] * 8 + [1] * 2 + [0],
        ["a", "b"],
        template="t@1",
        teacher=TEACHER,
    )
    assert cal.fitted_rows == 10 and cal.template == "t@1" and cal.teacher == TEACHER
    with pytest.raises(ConfigError, match="content-free"):
        fit("contextual", [[0.9, 0.1]], [0], ["a", "b"])
    with pytest.raises(ConfigError, match="expected one of"):
        fit("isotonic", [[0.9, 0.1]], [0], ["a", "b"])


def test_cross_validation_scores_every_row_with_a_fit_that_did_not_see_it() -> None:
    probs = np.array([[0.9, 0.1]] * 10)
    gold = np.array([0] * 8 + [1] * 2)
    seen: list[int] = []

    def fitter(p: np.ndarray, g: np.ndarray) -> Calibration:
        seen.append(len(g))
        return Calibration(("a", "b"), temperature=fit_temperature(p, g))

    out, rows = cross_validated(fitter, probs, gold, folds=5)
    assert list(rows) == list(range(10)) and seen == [8] * 5
    assert out.sum(axis=1) == pytest.approx(1.0)
    seen.clear()
    out, rows = cross_validated(fitter, probs, gold, fit_fraction=0.3)
    assert seen == [3] and len(rows) == 7 and out.shape == (7, 2)
    with pytest.raises(ConfigError, match="fit-fraction"):
        cross_validated(fitter, probs, gold, fit_fraction=1.0)


def test_calibrate_answer_moves_label_soft_label_and_confidence() -> None:
    space = LabelSpace(("pos", "neg"))
    soft = SoftLabel((0.6, 0.4), 0.1, "logprobs")
    answer = Answer("pos", "pos", soft, Confidence(0.6, 0.2, 0.673, -0.5))
    cal = Calibration(("pos", "neg"), bias=tuple(contextual_bias([[0.75, 0.25]])))
    out = calibrate_answer(answer, cal, space)
    assert out.label == "neg" and out.text == "pos"
    assert out.soft is not None and out.soft.probs == pytest.approx((1 / 3, 2 / 3))
    assert out.soft.outside == 0.1
    assert out.confidence is not None
    assert out.confidence.max_prob == pytest.approx(2 / 3)
    assert out.confidence.margin == pytest.approx(1 / 3)
    assert out.confidence.mean_logprob == -0.5
    empty = Answer("?", None, SoftLabel((0.0, 0.0), 1.0, "logprobs"), None, valid=False)
    assert calibrate_answer(empty, cal, space) is empty


def test_save_load_round_trip_and_key_checks(tmp_path: Path) -> None:
    cal = Calibration(
        ("a", "b"),
        temperature=1.5,
        bias=(0.25, -0.25),
        method="bias",
        template="t@1",
        teacher=TEACHER,
        fitted_rows=40,
    )
    path = cal.save(tmp_path / "cal.json")
    back = load_calibration(path)
    assert back == cal
    back.check("t@1", TEACHER, ["a", "b"])
    with pytest.raises(ConfigError, match="template t@1, not t@2"):
        back.check("t@2", TEACHER, ["a", "b"])
    with pytest.raises(ConfigError, match="teacher local:tiny, not local:big"):
        back.check("t@1", {"provider": "local", "model": "big"}, ["a", "b"])
    with pytest.raises(ConfigError, match="labels"):
        back.check("t@1", TEACHER, ["b", "a"])


def test_damaged_calibration_file_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "labeler-calibration/1", "labels": ["a"]}')
    with pytest.raises(ConfigError, match=r"bad\.json: calibration file lacks field 'temperature'"):
        load_calibration(bad)
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match=r"bad\.json:1: not JSON"):
        load_calibration(bad)
    bad.write_text('{"labels": ["a"]}')
    with pytest.raises(ConfigError, match="not a labeler calibration file"):
        load_calibration(bad)


def test_clopper_pearson_lower_bound() -> None:
    # 22 of 22: the bound solves p^22 = .025.
    assert clopper_pearson_lower(22, 22) == pytest.approx(0.025 ** (1 / 22), abs=1e-12)
    assert clopper_pearson_lower(22, 22) == pytest.approx(0.8456, abs=1e-4)
    # 8 of 10: the textbook exact interval is (0.4439, 0.9748).
    assert clopper_pearson_lower(8, 10) == pytest.approx(0.4439, abs=1e-4)
    assert clopper_pearson_lower(0, 10) == 0.0
    # 1 of 5: P(X >= 1) = 1 - (1-p)^5 = .025.
    assert clopper_pearson_lower(1, 5) == pytest.approx(1 - 0.975**0.2, abs=1e-10)
    with pytest.raises(ValueError):
        clopper_pearson_lower(3, 2)


def test_threshold_needs_the_lower_bound_to_reach_the_target() -> None:
    # The 22 most confident rows are right, the rest wrong: 22/22 promises 0.85, not 0.99.
    scores = [1.0 - i / 100 for i in range(30)]
    right = [True] * 22 + [False] * 8
    assert threshold_for_accuracy(scores, right, 0.99) is None
    point = threshold_for_accuracy(scores, right, 0.99, confidence=None)
    assert point is not None and point.kept == 22
    # The search tests a fixed sequence of coverage steps (1/20 of the rows: 17, 18, 20,
    # 21, 23 kept...) and stops at the first that fails (22/23): 21 of 30 kept.
    t = threshold_for_accuracy(scores, right, 0.8)
    assert t is not None and t.kept == 21 and t.accuracy == 1.0
    assert t.lower_bound == pytest.approx(0.025 ** (1 / 21), abs=1e-4)
    # 0.85 is just above what 22/22 supports; 0.84 just below.
    assert threshold_for_accuracy(scores, right, 0.85) is None
    assert threshold_for_accuracy(scores, right, 0.84) is not None


def test_report_prints_the_bound_beside_the_point_estimate() -> None:
    gold = ["a"] * 30
    pred = ["a"] * 22 + ["b"] * 8
    scores = [1.0 - i / 100 for i in range(30)]
    r = evaluate(gold, pred, {"max_prob": scores}, labels=["a", "b"], targets=(0.8, 0.99))
    assert r.thresholds[0.99] is None
    assert r.to_dict()["thresholds"]["0.8"]["accuracy_lower_bound"] == pytest.approx(0.8389, abs=1e-4)
    assert "accuracy 1.0000  (95% lower bound 0.8389)" in r.to_table()
