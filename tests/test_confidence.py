"""One meaning per measure: `agreement` is the share of all voters (samples, prompt forms,
ensemble members), invalid ones included, that name the row's label, whichever setup asked."""

from __future__ import annotations

import math

import pytest

from labeler.completion import Completion
from labeler.soft_labels import (
    Confidence,
    LabelSpace,
    SoftLabel,
    confidence,
    ensemble_confidence,
    ensemble_soft_label,
    soft_label,
)

SPACE = LabelSpace(("positive", "negative"))


def test_prompt_forms_agree_with_the_rows_label_not_with_the_plurality() -> None:
    # Two forms lean positive by a hair, one is sure of negative: the mean names negative,
    # which one form of three names.
    softs = [
        SoftLabel((0.51, 0.49), 0.0, "logprobs"),
        SoftLabel((0.51, 0.49), 0.0, "logprobs"),
        SoftLabel((0.0, 1.0), 0.0, "logprobs"),
    ]
    mean = ensemble_soft_label(softs)
    assert mean.label(SPACE) == "negative"
    conf = ensemble_confidence(softs, [Confidence(0.51, 0.02, 0.69)] * 3, mean)
    assert conf.agreement == pytest.approx(1 / 3)


def test_a_sampled_answer_agrees_with_the_label_it_carries() -> None:
    samples = ["positive", "negative", "negative", "junk"]
    c = Completion(text="positive", samples=samples)
    soft = soft_label(c, SPACE)
    assert confidence(c, soft).agreement == pytest.approx(2 / 4)  # the majority's share
    assert confidence(c, soft, SPACE.index("positive")).agreement == pytest.approx(1 / 4)
    assert confidence(c, soft, None).agreement == 0.0  # no label: no voter backs it


def test_the_measures_of_a_distribution() -> None:
    conf = confidence(Completion(text="negative"), SoftLabel((0.25, 0.75), 0.0, "logprobs"))
    assert (conf.max_prob, conf.margin) == (0.75, 0.5)
    assert conf.entropy == -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert conf.agreement is None and conf.mean_logprob is None
