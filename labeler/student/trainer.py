"""A transformers `Trainer` that trains a classifier on labeler's soft labels.

    from labeler.student import DistillationTrainer
    trainer = DistillationTrainer(model=model, args=args, train_dataset=export["train"],
                                  processing_class=tokenizer, temperature=2.0, alpha=0.5)
    trainer.train()

Unchanged `Trainer` would drop ``soft_label`` (not an argument of the model's forward),
fail on the string ``id`` column in the default collator, and train on the hard label
alone. This subclass keeps the export's columns for `SoftLabelCollator` and computes
`distillation_loss`; everything else (optimiser, schedule, evaluation, saving) is
`Trainer`'s own.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from labeler.student.collate import SoftLabelCollator
from labeler.student.losses import distillation_loss

SOFT_KEYS = ("soft_labels", "has_soft_label")


class DistillationTrainer(Trainer):
    """`Trainer` with the soft-label loss: ``alpha`` · T² · KL(teacher_T ‖ student_T) +
    (1 − ``alpha``) · CE(hard label), per `distillation_loss` (rows without a soft label
    fall back to the hard label; rows with neither are skipped).

    ``alpha=1`` (the default) trains on the teacher's distribution alone; ``alpha=0`` is
    ordinary hard-label training through the same code path, which makes a fair
    comparison. Without a ``data_collator``, a `SoftLabelCollator` over the
    ``processing_class`` tokenizer reads the export's ``text``/``label``/``soft_label``
    columns (``text_field`` names another text column).
    """

    # distillation_loss is a per-batch mean: Trainer divides it for gradient accumulation.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        temperature: float = 1.0,
        alpha: float = 1.0,
        text_field: str = "text",
        max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha
        self.text_field = text_field
        if kwargs.get("data_collator") is None:
            tokenizer = kwargs.get("processing_class")
            if tokenizer is None:
                raise ValueError(
                    "DistillationTrainer needs processing_class=TOKENIZER (or a "
                    "data_collator such as labeler.student.SoftLabelCollator)"
                )
            kwargs["data_collator"] = SoftLabelCollator(
                tokenizer, text_field=text_field, max_length=max_length
            )
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # the model computes no loss here
        if not self.label_names:
            self.label_names = ["labels"]  # so evaluation calls compute_loss

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the export's columns the collator reads; it drops the rest itself."""
        super()._set_signature_columns_if_needed()
        wanted = [self.text_field, "label", "soft_label"]
        # transformers declares the attribute None until the call above fills it.
        known: list[str] = self._signature_columns or []
        self._signature_columns = list(  # type: ignore[assignment]
            dict.fromkeys([*known, *wanted])
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        soft = inputs.pop("soft_labels", None)
        has_soft = inputs.pop("has_soft_label", None)
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        loss = distillation_loss(
            logits, soft, labels, has_soft=has_soft, temperature=self.temperature, alpha=self.alpha
        )
        return (loss, outputs) if return_outputs else loss
