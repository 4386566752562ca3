"""Batches from a `classification` export that keep the soft labels.

transformers' default collators build tensors from every column, so the string ``id``
column makes them fail, and `Trainer` drops ``soft_label`` before they see it (it is not
an argument of the model's ``forward``). This collator picks what a student needs and
nothing else: the model inputs, ``labels`` and, when the batch has any, ``soft_labels``
with a ``has_soft_label`` mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from labeler.student.losses import IGNORE_INDEX

# What a tokenizer produces and a model's forward takes; anything else in a row is left out.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class SoftLabelCollator:
    """Turn export rows into a batch: tokenized inputs, hard labels and soft labels.

    Rows may hold raw text (tokenized here, with padding to the longest row) or already
    tokenized ``input_ids`` (padded here). Label rules, matching `distillation_loss`:

    - ``label`` is the teacher's class id; a missing or negative label (``-100``, and the
      ``-1`` older exports gave invalid answers) becomes ``-100``, which losses ignore;
    - ``soft_label`` is the teacher's distribution in ClassLabel order; a row with none
      (``None``: the teacher's answer was not one of the labels) or with a negative
      label gets an all-zero row and ``has_soft_label`` False, so it falls back to its
      hard label or, having neither, is skipped.
    """

    tokenizer: Any
    text_field: str = "text"
    label_field: str = "label"
    soft_field: str = "soft_label"
    max_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("empty batch")
        batch = dict(self._inputs(rows))
        labels = [_label(row.get(self.label_field)) for row in rows]
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        soft = [
            row.get(self.soft_field) if label != IGNORE_INDEX else None
            for row, label in zip(rows, labels, strict=True)
        ]
        present = [s for s in soft if s is not None]
        if present:
            width = len(present[0])
            for s in present:
                if len(s) != width:
                    raise ValueError(
                        f"'{self.soft_field}' rows of different lengths in one batch "
                        f"({width} and {len(s)}): not one label set"
                    )
            batch["soft_labels"] = torch.tensor(
                [s if s is not None else [0.0] * width for s in soft], dtype=torch.float32
            )
            batch["has_soft_label"] = torch.tensor([s is not None for s in soft], dtype=torch.bool)
        return batch

    def _inputs(self, rows: Sequence[Mapping[str, Any]]) -> Mapping[str, torch.Tensor]:
        if "input_ids" in rows[0]:
            encoded = [{k: row[k] for k in MODEL_INPUTS if k in row} for row in rows]
            padded: Mapping[str, torch.Tensor] = self.tokenizer.pad(
                encoded,
                padding=True,
                max_length=self.max_length,
                pad_to_multiple_of=self.pad_to_multiple_of,
                return_tensors="pt",
            )
            return padded
        if self.text_field not in rows[0]:
            raise KeyError(
                f"rows have neither 'input_ids' nor the text field '{self.text_field}' "
                f"(columns: {', '.join(rows[0])}); set text_field="
            )
        texts = [str(row[self.text_field]) for row in rows]
        tokenized: Mapping[str, torch.Tensor] = self.tokenizer(
            texts,
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        return tokenized


def _label(value: Any) -> int:
    if value is None:
        return IGNORE_INDEX
    label = int(value)
    return IGNORE_INDEX if label < 0 else label
