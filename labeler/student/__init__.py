"""Train a student on what the teacher said: losses, a collator and a `Trainer`.

Needs the ``student`` extra (``pip install 'labeler-distill[student]'``: torch and transformers);
the rest of labeler never imports this package, so labeling stays free of torch.

- `distillation_loss` / `soft_cross_entropy`: label-level KD on a `classification`
  export's ``soft_label`` (temperature, alpha mix with the hard label);
- `SoftLabelCollator` and `DistillationTrainer`: the same, inside transformers' `Trainer`;
- `topk_kd_loss` and `kd_tensors`: token-level KD on the teacher's top-k logprobs.

The loss functions need torch only; `DistillationTrainer` is imported from transformers
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "labeler.student needs torch and transformers: pip install 'labeler-distill[student]'"
    ) from exc

from labeler.student.collate import SoftLabelCollator
from labeler.student.kd import kd_tensors
from labeler.student.losses import (
    IGNORE_INDEX,
    distillation_loss,
    soft_cross_entropy,
    tempered,
    topk_kd_loss,
)

if TYPE_CHECKING:
    from labeler.student.trainer import DistillationTrainer


def __getattr__(name: str) -> Any:
    if name == "DistillationTrainer":
        try:
            from labeler.student.trainer import DistillationTrainer
        except ImportError as exc:
            raise ImportError(
                "DistillationTrainer needs transformers: pip install 'labeler-distill[student]'"
            ) from exc
        return DistillationTrainer
    raise AttributeError(f"module 'labeler.student' has no attribute {name!r}")


__all__ = [
    "IGNORE_INDEX",
    "DistillationTrainer",
    "SoftLabelCollator",
    "distillation_loss",
    "kd_tensors",
    "soft_cross_entropy",
    "tempered",
    "topk_kd_loss",
]
