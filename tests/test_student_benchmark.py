"""benchmarks.student: every registered student learns a separable toy task from soft targets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from benchmarks.student import STUDENTS

GOOD = ["great", "lovely", "superb", "fine"]
BAD = ["awful", "dull", "boring", "poor"]


def sentence(rng: random.Random, positive: bool) -> str:
    return " ".join([*rng.sample(GOOD if positive else BAD, 2), "film"])


@pytest.mark.parametrize("student", STUDENTS, ids=lambda s: s.name)
def test_student_learns_from_soft_targets(student) -> None:
    rng = random.Random(0)
    train = [i % 2 == 0 for i in range(80)]
    texts = [sentence(rng, p) for p in train]
    soft = np.array([[0.3, 0.7] if p else [0.65, 0.35] for p in train])
    test = [i % 2 == 0 for i in range(40)]
    acc = student.fit_and_score(
        texts, soft, [sentence(rng, p) for p in test], np.array([int(p) for p in test]), 0
    )
    assert acc >= 0.9
