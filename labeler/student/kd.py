"""From a `kd` export's per-token top-k to the tensors `topk_kd_loss` takes.

The loss works on tensors (ids, logprobs, mask) so that it does not depend on how an
export names its columns; this adapter is the one place that knows the row layout. A
row's top-k is a list of positions (one per answer token), each a list of alternatives,
each either a mapping (``{"id": 42, "logprob": -0.1, ...}``; the keys are arguments) or
an ``(id, logprob)`` pair. Exports that carry only token *strings* (API teachers) can be
mapped with `token_to_id`, which is only right when the student shares the teacher's
tokenizer: see `topk_kd_loss` on alignment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

Alternative = Mapping[str, Any] | Sequence[Any]


def kd_tensors(
    rows: Sequence[Sequence[Sequence[Alternative]]],
    *,
    k: int | None = None,
    id_key: str = "id",
    logprob_key: str = "logprob",
    token_key: str = "token",
    token_to_id: Callable[[str], int | None] | None = None,
    length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, logprobs, mask) of shapes (B, L, K), (B, L, K), (B, L) from per-row top-k lists.

    L is the longest row (or `length`, truncating), K the most alternatives at any position
    (or `k`, keeping the k most likely). Missing alternatives are id -1 with logprob -inf
    and padded positions have mask False: `topk_kd_loss` ignores both. An alternative whose
    id is unknown (no id and `token_to_id` gives None) is dropped, not guessed.

    Position t of a row describes the answer's t-th token; to line it up with a causal
    student, take ``student_logits[b, p - 1 : p - 1 + L]`` where p is the number of
    prompt tokens in row b (the logits before each answer token predict it).
    """
    parsed = [
        [_alternatives(pos, id_key, logprob_key, token_key, token_to_id, k) for pos in row] for row in rows
    ]
    width_l = length if length is not None else max((len(r) for r in parsed), default=0)
    width_k = k if k is not None else max((len(p) for r in parsed for p in r), default=0)
    width_k = max(width_k, 1)
    ids = torch.full((len(parsed), width_l, width_k), -1, dtype=torch.long)
    logprobs = torch.full((len(parsed), width_l, width_k), float("-inf"), dtype=torch.float32)
    mask = torch.zeros((len(parsed), width_l), dtype=torch.bool)
    for b, row in enumerate(parsed):
        for t, alts in enumerate(row[:width_l]):
            mask[b, t] = True
            for j, (tid, lp) in enumerate(alts[:width_k]):
                ids[b, t, j] = tid
                logprobs[b, t, j] = lp
    return ids, logprobs, mask


def _alternatives(
    position: Sequence[Alternative],
    id_key: str,
    logprob_key: str,
    token_key: str,
    token_to_id: Callable[[str], int | None] | None,
    k: int | None,
) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []
    for alt in position:
        if isinstance(alt, Mapping):
            tid = alt.get(id_key)
            if tid is None and token_to_id is not None and alt.get(token_key) is not None:
                tid = token_to_id(str(alt[token_key]))
            lp = alt.get(logprob_key)
        else:
            tid, lp = alt[0], alt[1]
        if tid is None or lp is None:
            continue
        out.append((int(tid), float(lp)))
    out.sort(key=lambda a: -a[1])
    return out[:k] if k is not None else out
