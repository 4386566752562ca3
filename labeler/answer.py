"""Read a stored completion against its task: hard label, soft label, confidence.

Derived numbers are computed from the stored completion whenever they are needed: that
is cheap and deterministic, while the completion itself (the paid part) is never asked
for again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from labeler.completion import Completion
from labeler.soft_labels import (
    Confidence,
    LabelSpace,
    SoftLabel,
    confidence,
    ensemble_confidence,
    ensemble_soft_label,
    parse_label,
    soft_label,
    verbalized_answer,
)
from labeler.task import Task


@dataclass(frozen=True, slots=True)
class Answer:
    """What the teacher said, as the task understands it."""

    text: str
    label: str | None = None  # label tasks: a valid label, or None
    soft: SoftLabel | None = None
    confidence: Confidence | None = None
    parsed: Any = None  # json tasks: the decoded object, or None when invalid
    valid: bool = True


def read_answers(task: Task, completions: Sequence[Completion]) -> Answer:
    """One row's answer from its completions, one per prompt form of `task` (in
    `Task.members` order). A prompt ensemble's soft label is the mean of its forms' soft
    labels and its label that mean's argmax; `text` is the first form's answer."""
    if len(completions) == 1:
        return read_answer(task, completions[0])
    members = task.members
    if len(completions) != len(members):
        raise ValueError(
            f"{task.identity} asks {len(members)} prompt forms per row, got {len(completions)} completions"
        )
    answers = [read_answer(t, c) for t, c in zip(members, completions, strict=True)]
    space = task.label_space
    assert space is not None  # ensembles are label tasks (checked when the template loads)
    softs = [a.soft for a in answers if a.soft is not None]
    mean = ensemble_soft_label(softs)
    conf = ensemble_confidence(softs, [a.confidence for a in answers if a.confidence], mean)
    label = mean.label(space)
    return Answer(answers[0].text, label, mean, conf, valid=label is not None)


def _untied(soft: SoftLabel, label: str | None, text: str, space: LabelSpace) -> str | None:
    """Labels tied at the top of an approximate soft label are told apart by the text
    the teacher wrote where it names one of them, not by their order in the template."""
    top = max(soft.probs)
    tied = [space.labels[i] for i, p in enumerate(soft.probs) if p == top]
    if len(tied) < 2:
        return label
    named = parse_label(text, space)
    return named if named in tied else label


def read_answer(task: Task, completion: Completion) -> Answer:
    """What one completion says, read against `task` (one prompt form)."""
    if task.output_kind == "label" and task.label_space is not None:
        space = task.label_space
        if task.verbalized:  # the answer states its label and confidence as JSON
            label, soft = verbalized_answer(completion.text, space)
            return Answer(completion.text, label, soft, confidence(completion, soft), valid=label is not None)
        soft = soft_label(completion, space)
        if task.mode == "completion" and soft.valid:
            # A completion-mode template *is* a next-token classifier: its answer is the
            # label with the most mass summed over all its words (" good" and " great"
            # both vote positive), which the one greedy token need not be; and the text
            # runs on past the label anyway ("positive\n\nReview: …").
            label = soft.label(space)
            if soft.ambiguous:
                label = _untied(soft, label, completion.text, space)
        else:
            label = parse_label(completion.text, space)
        index = None if label is None else space.index(label)
        return Answer(
            completion.text, label, soft, confidence(completion, soft, index), valid=label is not None
        )
    if task.output_kind == "json":
        try:
            parsed = orjson.loads(completion.text)
        except orjson.JSONDecodeError:
            return Answer(completion.text, parsed=None, valid=False)
        required = (task.schema or {}).get("required", [])
        ok = isinstance(parsed, dict) and all(k in parsed for k in required)
        return Answer(completion.text, parsed=parsed if ok else None, valid=ok)
    return Answer(completion.text, valid=bool(completion.text.strip()))
