"""Distillation losses over plain tensors: label-level soft targets and token-level top-k.

Kept free of `transformers` and of labeler's export column names, so the same functions
serve a `Trainer`, a hand-written loop or another framework's step; the adapters that
turn export rows into these tensors live in `collate.py` and `kd.py`.

Conventions shared by every function here:
- ``temperature`` T softens (T > 1) or sharpens (T < 1) both distributions before they
  are compared, and the soft term is multiplied by T² so its gradients keep the scale of
  the hard term as T changes (Hinton et al., 2015). T = 1 is the plain distribution.
- A target that is absent is skipped, never guessed: a class row whose label is
  ``IGNORE_INDEX`` (-100, what transformers ignores) and that has no soft label adds
  nothing, and the mean is over the rows that count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def tempered(probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """`probs` ** (1/T), renormalised over the last axis: softmax(log p / T) without the
    -inf of log 0 (a class the teacher gave no mass keeps none)."""
    _check_temperature(temperature)
    p = probs.clamp_min(0).to(torch.float32)
    if temperature != 1.0:
        p = p ** (1.0 / temperature)
    total = p.sum(-1, keepdim=True)
    return p / total.clamp_min(torch.finfo(p.dtype).tiny)


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """Per-row KL(targets_T ‖ softmax(logits / T)) · T², shape ``logits.shape[:-1]``.

    KL rather than cross-entropy: the two differ by the targets' entropy, a constant with
    the same gradient, and KL is 0 when the student matches the teacher, which makes the
    number readable in a training log. `targets` are probabilities in the same class order
    as `logits` (labeler's ``soft_label`` is in ClassLabel order); rows are renormalised.
    """
    p = tempered(targets, temperature)
    log_q = F.log_softmax(logits.to(torch.float32) / temperature, dim=-1)
    kl: torch.Tensor = (torch.special.xlogy(p, p) - p * log_q).sum(-1)
    return kl * (temperature * temperature)


def distillation_loss(
    logits: torch.Tensor,
    soft_labels: torch.Tensor | None,
    labels: torch.Tensor | None,
    *,
    has_soft: torch.Tensor | None = None,
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> torch.Tensor:
    """The classification student's loss: ``alpha`` · soft term + (1 − ``alpha``) · hard CE.

    Shapes: `logits` (N, C); `soft_labels` (N, C) probabilities; `labels` (N,) class ids,
    ``IGNORE_INDEX`` where there is none; `has_soft` (N,) bool, False where a row has no
    soft label (its `soft_labels` row is then ignored). Per row:

    - soft and hard label: ``alpha * soft + (1 - alpha) * hard``;
    - soft label only: the soft term alone;
    - hard label only (no soft label): the hard cross-entropy alone, so such a row still
      teaches what the teacher said rather than being dropped;
    - neither (an invalid teacher answer exported with ``label = -100``): skipped.

    Returns the mean over the rows that count (0, with a gradient, when none does).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    n = logits.shape[0]
    device = logits.device
    hard = torch.zeros(n, device=device)
    has_hard = torch.zeros(n, dtype=torch.bool, device=device)
    if labels is not None:
        labels = labels.to(device).long()
        has_hard = labels != IGNORE_INDEX
        safe = torch.where(has_hard, labels, torch.zeros_like(labels))
        hard = F.cross_entropy(logits.to(torch.float32), safe, reduction="none") * has_hard
    soft = torch.zeros(n, device=device)
    if soft_labels is None:
        has_soft = torch.zeros(n, dtype=torch.bool, device=device)
    else:
        if has_soft is None:
            has_soft = torch.ones(n, dtype=torch.bool, device=device)
        has_soft = has_soft.to(device).bool()
        soft = soft_cross_entropy(logits, soft_labels.to(device), temperature=temperature)
        soft = torch.where(has_soft, soft, torch.zeros_like(soft))
    hard_weight = torch.where(has_soft, torch.full_like(hard, 1.0 - alpha), torch.ones_like(hard))
    soft_weight = torch.where(has_hard, torch.full_like(soft, alpha), torch.ones_like(soft))
    per_row = soft_weight * soft * has_soft + hard_weight * hard * has_hard
    counted = (has_soft | has_hard).sum()
    return per_row.sum() / counted.clamp_min(1)


def topk_kd_loss(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Forward KL from the teacher's top-k (plus a tail bucket) to the student, per token.

    Shapes: `student_logits` (B, L, V); `teacher_ids` (B, L, K) token ids in the student's
    vocabulary, -1 where the teacher gave fewer than K alternatives; `teacher_logprobs`
    (B, L, K) the teacher's log-probabilities of those ids; `mask` (B, L) True at the
    positions to train (the teacher's answer, not the prompt or padding).

    The teacher's distribution is known only on its top-k, so the vocabulary is folded
    into K + 1 buckets: the K ids, and a *tail* holding everything else (teacher:
    1 − Σ top-k probabilities; student: 1 − Σ of its probabilities on the same ids). The
    loss is KL(teacher ‖ student) over those buckets, averaged over the masked positions.
    Without the tail, a student would be rewarded for piling all its mass on the top-k.
    With T ≠ 1 the teacher's top-k and tail are each raised to 1/T and renormalised: exact
    for the top-k, an approximation for the tail (its inner spread is unknown).

    Token alignment. ``student_logits[b, t]`` must be the student's distribution for the
    very token whose teacher top-k is at ``[b, t]``; for a causal LM that is the logits
    at the position *before* the token (shift by one, as for cross-entropy). That holds
    position by position only when the student uses the teacher's tokenizer (same
    vocabulary, same ids: a local llama.cpp or vLLM teacher serving the student's family)
    and the ids come from the teacher. An API teacher (OpenAI, Anthropic) tokenizes with
    its own private vocabulary: its top-k strings do not map onto a student's ids one for
    one, and token-level KD then needs cross-tokenizer alignment (matching spans of text
    across the two tokenizations, as in ULD or MinED alignment), which this function does
    not do. For classification, labeler's ``soft_label`` is the label-level equivalent
    that needs no alignment: use `distillation_loss`.
    """
    _check_temperature(temperature)
    if student_logits.dim() != 3 or teacher_ids.dim() != 3:
        raise ValueError("student_logits must be (B, L, V) and teacher_ids (B, L, K)")
    if teacher_ids.shape != teacher_logprobs.shape or teacher_ids.shape[:2] != student_logits.shape[:2]:
        raise ValueError(
            f"shape mismatch: student {tuple(student_logits.shape)}, teacher ids "
            f"{tuple(teacher_ids.shape)}, logprobs {tuple(teacher_logprobs.shape)}"
        )
    vocab = student_logits.shape[-1]
    valid = (teacher_ids >= 0) & (teacher_ids < vocab) & torch.isfinite(teacher_logprobs)
    ids = torch.where(valid, teacher_ids, torch.zeros_like(teacher_ids)).long()

    # Teacher: K probabilities and the tail, as one (B, L, K+1) distribution.
    p_top = torch.where(
        valid,
        teacher_logprobs.to(torch.float32).exp(),
        torch.zeros_like(teacher_logprobs, dtype=torch.float32),
    )
    p_tail = (1.0 - p_top.sum(-1, keepdim=True)).clamp_min(0.0)
    p = tempered(torch.cat([p_top, p_tail], dim=-1), temperature)

    # Student: log-probabilities on the same ids and on everything else.
    log_q_all = F.log_softmax(student_logits.to(torch.float32) / temperature, dim=-1)
    log_q_top = log_q_all.gather(-1, ids)
    q_top = torch.where(valid, log_q_top.exp(), torch.zeros_like(log_q_top))
    q_tail = (1.0 - q_top.sum(-1, keepdim=True)).clamp_min(torch.finfo(torch.float32).tiny)
    log_q = torch.cat([torch.where(valid, log_q_top, torch.zeros_like(log_q_top)), q_tail.log()], dim=-1)

    kl: torch.Tensor = (torch.special.xlogy(p, p) - p * log_q).sum(-1) * (temperature * temperature)
    m = mask.to(kl.device).bool()
    return (kl * m).sum() / m.sum().clamp_min(1)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
