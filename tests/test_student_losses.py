"""labeler.student's losses, collator and kd adapter on values computed by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip(
    "torch", reason="labeler.student needs torch: pip install 'labeler-distill[student]'"
)

from labeler.student import (  # noqa: E402
    IGNORE_INDEX,
    SoftLabelCollator,
    distillation_loss,
    kd_tensors,
    soft_cross_entropy,
    tempered,
    topk_kd_loss,
)

LN2 = math.log(2.0)


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(list(rows), dtype=torch.float32)


def test_soft_cross_entropy_is_kl_to_the_targets() -> None:
    # uniform student vs a one-hot target: KL = log 2; vs a uniform target: 0
    assert soft_cross_entropy(t([0.0, 0.0]), t([1.0, 0.0])).item() == pytest.approx(LN2)
    assert soft_cross_entropy(t([0.0, 0.0]), t([0.5, 0.5])).item() == pytest.approx(0.0, abs=1e-7)


def test_temperature_tempers_both_sides_and_scales_by_t_squared() -> None:
    # p = (0.8, 0.2) at T=2 is (2/3, 1/3); logits (ln 4, 0) / 2 give the same: KL 0
    assert tempered(t([0.8, 0.2]), 2.0).tolist()[0] == pytest.approx([2 / 3, 1 / 3])
    assert soft_cross_entropy(
        t([math.log(4.0), 0.0]), t([0.8, 0.2]), temperature=2.0
    ).item() == pytest.approx(0.0, abs=1e-6)
    # one-hot stays one-hot at any T; uniform student: log 2, times T² = 4
    assert soft_cross_entropy(t([0.0, 0.0]), t([1.0, 0.0]), temperature=2.0).item() == pytest.approx(4 * LN2)


def test_alpha_mixes_the_soft_and_hard_terms() -> None:
    # soft term 0 (student matches (0.5, 0.5)), hard CE log 2: 0.25·0 + 0.75·log 2
    loss = distillation_loss(t([0.0, 0.0]), t([0.5, 0.5]), torch.tensor([0]), alpha=0.25)
    assert loss.item() == pytest.approx(0.75 * LN2)


def test_a_row_without_a_soft_label_falls_back_to_its_hard_label() -> None:
    loss = distillation_loss(
        t([0.0, 0.0]), t([0.0, 0.0]), torch.tensor([1]), has_soft=torch.tensor([False]), alpha=1.0
    )
    assert loss.item() == pytest.approx(LN2)


def test_a_row_with_neither_label_is_skipped_not_averaged_in() -> None:
    # row 1: fallback to hard (log 2); row 2: label -100, no soft label: not counted
    loss = distillation_loss(
        t([0.0, 0.0], [5.0, -5.0]),
        t([0.0, 0.0], [0.0, 0.0]),
        torch.tensor([1, IGNORE_INDEX]),
        has_soft=torch.tensor([False, False]),
    )
    assert loss.item() == pytest.approx(LN2)
    nothing = distillation_loss(t([0.0, 0.0]), None, torch.tensor([IGNORE_INDEX]))
    assert nothing.item() == 0.0


def test_bad_alpha_or_temperature_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(t([0.0, 0.0]), t([1.0, 0.0]), None, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        soft_cross_entropy(t([0.0, 0.0]), t([1.0, 0.0]), temperature=0.0)


def test_topk_kd_folds_the_rest_of_the_vocabulary_into_a_tail_bucket() -> None:
    # V = 4, uniform student: (0.25, 0.25 | tail 0.5); teacher top-2 (0.5, 0.25 | tail 0.25)
    # KL = 0.5 ln(0.5/0.25) + 0.25 ln(0.25/0.25) + 0.25 ln(0.25/0.5) = 0.25 ln 2
    logits = torch.zeros(1, 2, 4, requires_grad=True)
    ids = torch.tensor([[[0, 1], [2, -1]]])
    lps = torch.tensor([[[math.log(0.5), math.log(0.25)], [0.0, float("-inf")]]])
    mask = torch.tensor([[True, False]])  # position 2 is prompt or padding: ignored
    loss = topk_kd_loss(logits, ids, lps, mask)
    assert loss.item() == pytest.approx(0.25 * LN2, abs=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad[0, 1].abs().sum() == 0  # masked: no gradient


def test_topk_kd_is_zero_when_the_student_matches_the_teacher() -> None:
    probs = torch.tensor([0.6, 0.3, 0.1, 0.0])
    logits = torch.log(probs.clamp_min(1e-12)).view(1, 1, 4)
    ids = torch.tensor([[[0, 1]]])
    lps = torch.log(torch.tensor([[[0.6, 0.3]]]))
    assert topk_kd_loss(logits, ids, lps, torch.tensor([[True]])).item() == pytest.approx(0.0, abs=1e-5)


def test_topk_kd_refuses_misaligned_shapes() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        topk_kd_loss(
            torch.zeros(1, 3, 4),
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.zeros(1, 2, 2),
            torch.ones(1, 2, dtype=torch.bool),
        )


def test_kd_tensors_pads_positions_and_alternatives() -> None:
    rows = [
        [
            [{"id": 5, "logprob": -0.1, "token": "a"}, {"id": 7, "logprob": -2.5, "token": "b"}],
            [{"id": 3, "logprob": -0.01}],
        ],
        [[(9, -0.2)]],
        [[{"token": "zz", "logprob": -0.3}, {"token": "??", "logprob": -1.0}]],  # ids from strings
    ]
    ids, lps, mask = kd_tensors(rows, token_to_id={"zz": 11}.get)
    assert ids.shape == (3, 2, 2) and lps.shape == (3, 2, 2)
    assert ids[0].tolist() == [[5, 7], [3, -1]]
    assert ids[1].tolist() == [[9, -1], [-1, -1]] and lps[1, 0, 0].item() == pytest.approx(-0.2)
    assert ids[2, 0].tolist() == [11, -1]  # an unknown token is dropped, not guessed
    assert mask.tolist() == [[True, True], [True, False], [True, False]]
    assert torch.isinf(lps[0, 1, 1]) and lps[0, 1, 1] < 0
    top1, _, _ = kd_tensors(rows, k=1)
    assert top1.shape == (3, 2, 1) and top1[0, 0, 0].item() == 5


class _Tokenizer:
    """Just enough of a tokenizer for the collator: one id per word, padded with 0."""

    def __call__(self, texts: list[str], **kw: object) -> dict[str, torch.Tensor]:
        ids = [[len(w) for w in text.split()] for text in texts]
        width = max(len(i) for i in ids)
        return {
            "input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids]),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]),
        }


def test_collator_keeps_soft_labels_and_drops_the_id_column() -> None:
    rows = [
        {"id": "r1", "text": "good film", "label": 1, "soft_label": [0.2, 0.8], "outside_mass": 0.0},
        {"id": "r2", "text": "bad", "label": -100, "soft_label": None},  # invalid answer
        {"id": "r3", "text": "meh plot ok", "label": -1, "soft_label": [0.9, 0.1]},  # older export
        {"id": "r4", "text": "fine", "label": 0, "soft_label": [0.6, 0.4]},
    ]
    batch = SoftLabelCollator(_Tokenizer())(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "soft_labels", "has_soft_label"}
    assert batch["labels"].tolist() == [1, IGNORE_INDEX, IGNORE_INDEX, 0]
    assert batch["has_soft_label"].tolist() == [True, False, False, True]
    assert batch["soft_labels"][0].tolist() == pytest.approx([0.2, 0.8])
    assert batch["soft_labels"][1].tolist() == [0.0, 0.0]


def test_collator_without_soft_labels_gives_hard_labels_only() -> None:
    batch = SoftLabelCollator(_Tokenizer())([{"text": "a b", "label": 0}, {"text": "c", "label": 1}])
    assert "soft_labels" not in batch and batch["labels"].tolist() == [0, 1]


def test_kd_tensors_reads_a_kd_export(teacher_server: Any, tmp_path: Any) -> None:
    """The adapter takes the `kd` export's per-token top-k as it is written today (token
    strings; ids where the teacher gives them), and the loss runs on what it returns."""
    import labeler

    rows = [
        {"id": "a", "text": "A warm and funny film."},
        {"id": "b", "text": "Dull, slow and far too long."},
    ]
    ds = labeler.label(
        rows,
        "sentiment",
        "openai-compatible:teacher-test",
        kind="kd",
        base_url=teacher_server.url + "/v1",
        store=tmp_path / "s.sqlite",
    )
    vocab: dict[str, int] = {}
    for position in (p for row in ds["top_logprobs"] for p in row):
        for alt in position:
            vocab.setdefault(alt["token"], len(vocab))
    ids, lps, mask = kd_tensors(ds["top_logprobs"], token_to_id=vocab.get)
    assert mask.sum(-1).tolist() == [len(t) for t in ds["tokens"]]
    assert bool((ids[mask][:, 0] >= 0).all())  # every answer position has its top-1
    logits = torch.zeros(ids.shape[0], ids.shape[1], len(vocab), requires_grad=True)
    loss = topk_kd_loss(logits, ids, lps, mask)
    loss.backward()
    assert loss.item() > 0 and logits.grad is not None
