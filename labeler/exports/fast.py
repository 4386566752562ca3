"""A classification row read straight from its answer's numbers, beside the general way.

The fast path of `--kind classification` (labeler/exports/kinds.py, `Classification`):
the same values as the general way, kept equal to them by tests/test_export_golden.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labeler.exports.rows import RowBuilder, coerce_value
from labeler.soft_labels import IGNORE_LABEL, Confidence, LabelNumbers, label_numbers

if TYPE_CHECKING:
    from labeler.completion import Completion
    from labeler.inputs import Row
    from labeler.task import Task


class FastClassification:
    """A classification row straight from its answer's numbers (`label_numbers`): no
    `Answer`, `SoftLabel` or `Confidence`, no record dict, no per-column coercion. The
    values are those `RowBuilder.row` and `coerce` give (tests/test_export_golden.py holds
    the files to that); any answer `label_numbers` does not read goes the general way."""

    COLUMNS = (
        "id",
        "text",
        "label",
        "valid",
        "soft_label",
        "outside_mass",
        "soft_label_source",
        "max_prob",
        "margin",
        "entropy",
        "mean_logprob",
        "agreement",
        "label_source",
    )

    def __init__(self, task: Task, builder: RowBuilder) -> None:
        assert task.label_space is not None  # a classification export is of a label task
        self.space = task.label_space
        self.labels = task.labels
        self.completion_mode = task.mode == "completion"
        self.text = builder.text
        spec = builder.opts.filters
        self.thresholds = (
            spec.min_confidence is not None or spec.min_margin is not None or spec.max_entropy is not None
        )
        self.traced = builder.reasoning_column  # a `reasoning` column after the others
        columns = (*self.COLUMNS, "reasoning") if self.traced else self.COLUMNS
        # a verbalized answer's numbers are in its text, not its tokens: the general way
        self.active = tuple(builder.features(None)) == columns and not task.verbalized

    def numbers(self, completion: Completion) -> LabelNumbers | None:
        if not self.active:
            return None
        return label_numbers(completion, self.space, self.completion_mode)

    def label(self, numbers: LabelNumbers) -> str | None:
        index = numbers[0]
        return None if index is None else self.labels[index]

    def confidence(self, numbers: LabelNumbers) -> Confidence | None:
        """What a filter reads; built only when a threshold will read it."""
        if not self.thresholds:
            return None
        return Confidence(numbers[3], numbers[4], numbers[5], numbers[6])

    def values(self, row: Row, numbers: LabelNumbers, completion: Completion) -> list[Any]:
        index, probs, outside, max_prob, margin, entropy, mean_logprob = numbers
        rid = row.id if type(row.id) is str else coerce_value(row.id, "string")
        if index is None:  # named no label (kept with --keep-invalid): see `RowBuilder.label_cols`
            out = [
                rid,
                self.text(row),
                IGNORE_LABEL,
                False,
                None,
                outside,
                None,
                None,
                None,
                None,
                mean_logprob,
                None,
                "teacher",
            ]
        else:
            out = [
                rid,
                self.text(row),
                index,
                True,
                list(probs),
                outside,
                "logprobs",
                max_prob,
                margin,
                entropy,
                mean_logprob,
                None,
                "teacher",
            ]
        if self.traced:
            out.append(completion.reasoning)
        return out
