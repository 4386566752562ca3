"""Labels that share a first token: mass is divided by evidence, never by template order.

An alternative first token consistent with several labels (" New" for New York and New
Delhi) that is not on the generated path has no continuation to descend into. Its mass
goes to those labels in proportion to the mass they have from the rest of the answer,
and the soft label says it holds such an approximation (`soft_label_source`).
"""

from __future__ import annotations

import math

import pytest

from labeler.answer import read_answer
from labeler.completion import Completion, TokenLogprob
from labeler.soft_labels import LabelSpace, soft_label
from labeler.task import task_from_dict

CITIES = LabelSpace(("New York", "New Delhi", "Paris"))


def tok(token: str, p: float, *alts: tuple[str, float]) -> TokenLogprob:
    return TokenLogprob(token, math.log(p), tuple((t, math.log(q)) for t, q in alts))


def test_off_path_shared_mass_follows_the_labels_other_mass() -> None:
    c = Completion(
        text="New York",
        tokens=[
            tok("New", 0.6, ("New", 0.6), (" New", 0.3), ("Paris", 0.1)),
            tok(" York", 0.8, (" York", 0.8), (" Delhi", 0.2)),
        ],
    )
    soft = soft_label(c, CITIES)
    # generated path: York .6·.8, Delhi .6·.2; " New" (.3) divided .8 : .2, not evenly
    assert soft.probs == pytest.approx((0.48 + 0.24, 0.12 + 0.06, 0.1))
    assert soft.ambiguous and soft.source == "logprobs:split"


def test_a_tie_is_settled_by_the_answer_text_not_the_template_order() -> None:
    task = task_from_dict(
        {
            "name": "cities",
            "version": "1",
            "mode": "completion",
            "user": "City: {{ text }}\nAnswer:",
            "output": {"kind": "label", "labels": ["New York", "New Delhi", "Paris"]},
        },
        "cities.yaml",
    )
    # the generated path stops on the shared "New": nothing tells the two apart but the
    # text the teacher wrote
    c = Completion(text=" New Delhi", tokens=[tok(" New", 0.9, (" New", 0.9), (" Paris", 0.1))])
    answer = read_answer(task, c)
    assert answer.soft is not None and answer.soft.probs[0] == answer.soft.probs[1]
    assert answer.label == "New Delhi"


def test_unshared_answers_keep_the_plain_source() -> None:
    c = Completion(text="Paris", tokens=[tok("Paris", 0.9, ("Paris", 0.9), ("New", 0.05))])
    soft = soft_label(c, CITIES)
    assert soft.source == "logprobs:split"  # the " New" alternative was divided
    c = Completion(text="Paris", tokens=[tok("Paris", 0.9, ("Paris", 0.9))])
    assert soft_label(c, CITIES).source == "logprobs"
