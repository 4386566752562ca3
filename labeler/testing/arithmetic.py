"""A teacher that solves arithmetic with a known correctness rate, for verification.

`ArithmeticResponder` reads the last question of the form ``A + B``, ``A - B`` or
``A * B`` in the user's message and answers with its working and a final line
``Answer: X``. Each answer is right with probability `p_correct`, drawn per (question,
sample): a request's n choices and a sampling teacher's repeated requests get their own
draws, a rerun the same ones. `right(question, sample)` tells a test which answers are
right, so it can hold a verifier's verdicts to the truth, answer by answer.
"""

from __future__ import annotations

import math
import re

from labeler.testing.hashing import mix, text_hash, unit
from labeler.testing.responders import Reply, RequestView

_QUESTION = re.compile(r"(-?\d+)\s*([-+*])\s*(-?\d+)")


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


# Sampled answers differ in their working, as a sampled model's do, not only when wrong.
_WORKINGS = (
    "{a} {op} {b} = {got}.",
    "Taking {a} and applying {op} {b} gives {got}.",
    "Step by step: {a} {op} {b} comes to {got}.",
    "We compute {a} {op} {b}, which is {got}.",
)


class ArithmeticResponder:
    """Right with probability `p_correct` per answer; a wrong answer is off by 1 to 9.
    `format` may set how the result is written (`{work}`, `{answer}`)."""

    def __init__(
        self, p_correct: float = 0.5, seed: int = 0, format: str = "{work}\nAnswer: {answer}"
    ) -> None:
        self.p_correct = p_correct
        self.seed = seed
        self.format = format

    def right(self, question: str, sample: int) -> bool:
        """Whether the answer to `question` (the user's text) in draw `sample` is right."""
        return unit(self.seed, text_hash(question), sample) < self.p_correct

    def __call__(self, view: RequestView) -> Reply:
        question = view.last_user or view.prompt
        found = _QUESTION.findall(question)
        if not found:
            return Reply(text="I see no arithmetic to do here.")
        a, op, b = found[-1]
        truth = solve(int(a), op, int(b))
        sample = view.sample_id if view.sampling else 0
        got = truth
        if not self.right(question, sample):
            off = 1 + mix(self.seed, text_hash(question), sample, 7) % 9
            got = truth + off if mix(self.seed, sample) % 2 else truth - off
        phrasing = _WORKINGS[mix(self.seed, text_hash(question), sample, 11) % len(_WORKINGS)]
        work = phrasing.format(a=a, op=op, b=b, got=got)
        return Reply(text=self.format.format(work=work, answer=got))


_REQUEST = re.compile(r"<request>(.*?)</request>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d+")


class ArithmeticJudge:
    """A judge of arithmetic answers (`--verify judge:`): it reads the request between
    ``<request>`` tags (the shipped judge template's layout), solves its last ``A op B``,
    and labels the answer between ``<answer>`` tags ``correct`` when the last number in
    it is the result, else ``incorrect``, putting `p_sure` of the first position's mass
    on that label and the rest on the other, so a test knows every judged score.

    With `p_right` below 1 the judge is wrong on that share of answers (which ones is a
    pure function of the request and the answer, `seed` aside: the same on every run), as
    sure of its wrong verdicts as of its right ones: an overconfident judge, whose
    calibration a test can fit (`p_sure` 0.99 and `p_right` 0.7 is honest at a temperature
    that brings 0.99 down to about 0.7)."""

    def __init__(self, p_sure: float = 0.9, p_right: float = 1.0, seed: int = 0) -> None:
        self.p_sure = p_sure
        self.p_right = p_right
        self.seed = seed

    def wrong(self, request: str, answer: str) -> bool:
        """Whether this judge gets this answer wrong (deterministic per answer)."""
        return unit(self.seed, text_hash(request), text_hash(answer)) >= self.p_right

    def verdict(self, request: str, answer: str) -> str | None:
        """The label this judge gives, or None where it sees nothing to judge."""
        found = _QUESTION.findall(request)
        if not found:
            return None
        a, op, b = found[-1]
        numbers = _NUMBER.findall(answer)
        return "correct" if numbers and int(numbers[-1]) == solve(int(a), op, int(b)) else "incorrect"

    def __call__(self, view: RequestView) -> Reply:
        text = view.last_user or view.prompt
        request, answer = _REQUEST.search(text), _ANSWER.search(text)
        label = self.verdict(request.group(1), answer.group(1)) if request and answer else None
        if label is None:
            return Reply(text="I see nothing to judge here.")
        assert request is not None and answer is not None
        other = "incorrect" if label == "correct" else "correct"
        if self.wrong(request.group(1), answer.group(1)):
            label, other = other, label
        top = [(label, math.log(self.p_sure)), (other, math.log(1.0 - self.p_sure))]
        return Reply(text=label, tokens=[label], top_logprobs=[top])
