"""Answers are read through per-string memos (an export reads every stored answer):
the memo gives what the reading itself gives, and stays bounded."""

from __future__ import annotations

from labeler import soft_labels
from labeler.completion import Completion, TokenLogprob
from labeler.soft_labels import LabelSpace, parse_label, soft_label

TEXTS = [
    "positive",
    " Positive.",
    "**negative**",
    "Label: pos",
    "I think so",
    "",
    "\n",
    "positive\n\nReview: x",
    "neg",
    "NEGATIVE!",
    "x" * 100,
    "Sentiment = positive",
]


def space() -> LabelSpace:
    return LabelSpace(("negative", "positive"), {"positive": ("positive", "pos")})


def test_parse_label_memo_answers_as_the_parser_does() -> None:
    s = space()
    for _ in range(2):  # the second round reads the memo
        for text in TEXTS:
            assert parse_label(text, s) == soft_labels._parse_label(text, s), text
    assert "x" * 100 not in s._parsed  # long answers are not remembered


def test_memos_stay_bounded() -> None:
    s = space()
    for i in range(soft_labels._PARSE_MEMO_SIZE + 10):
        parse_label(f"answer {i}", s)
    assert len(s._parsed) <= soft_labels._PARSE_MEMO_SIZE


def test_soft_label_is_the_same_from_a_warm_memo() -> None:
    top = (("pos", -0.5), (" negative", -1.5), ("The", -3.0), ("positive", -2.0))
    c = Completion("pos", [TokenLogprob("pos", -0.5, top)])
    cold = soft_label(c, space())
    warm = space()
    soft_label(c, warm)
    assert soft_label(c, warm) == cold and warm._pieces
