"""What `--verify judge:...` adds to `labeler estimate`: the judge's own requests.

A judge is asked once per distinct answer, so a row the teacher answers N times costs up
to N judge requests (equal answers are one request, which only a run can know: the
estimate counts N). Each judge prompt holds an answer that is not written yet; it is
counted at the teacher's expected answer length (max_tokens for free text, an upper
bound). The judge's requests are priced with the judge's model, never the teacher's,
and a judge samples as its provider does (the run's `--samples` is the teacher's).
Nothing is sent and no key is needed: only the spec and the template are read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from labeler.errors import ConfigError, LabelerError
from labeler.estimate import Estimate, estimate
from labeler.inputs import Reject, Row
from labeler.pricing import PriceTable
from labeler.task import Task, load_task
from labeler.verify.judge import Judge, JudgeSpec, judge_data
from labeler.verify.spec import split_steps


def judge_specs(spec: str | None) -> list[JudgeSpec]:
    """The judges a `--verify` SPEC names, in order (none for a spec without one)."""
    if spec is None:
        return []
    from labeler.verify.registry import REGISTRY

    return [JudgeSpec.parse(arg or "") for kind, arg in split_steps(spec, REGISTRY) if kind == Judge.kind]


def estimate_judge(
    judge: JudgeSpec,
    answered: Task,
    rows: Iterable[Row | Reject | Mapping[str, Any]],
    teacher: Estimate,
    prices: PriceTable | None = None,
) -> Estimate:
    """The judge's requests for the answers `teacher` (the answering estimate of the same
    `rows`) predicts: one per answer, each prompt the judge template over the row's
    request and an answer of the teacher's expected length."""
    try:
        task = load_task(judge.template)
    except LabelerError as exc:
        raise ConfigError(f"--verify judge:{judge.teacher}: judge template {exc}") from None
    per_request = math.ceil(teacher.answers / teacher.requests) if teacher.requests else 0
    answer_tokens = teacher.output_tokens // teacher.answers if teacher.answers else 0
    est = estimate(
        task,
        _judged(answered, rows) if per_request else [],
        judge.teacher,
        prices,
        copies=per_request,
        padding_tokens=answer_tokens,
    )
    est.notes.append(
        f"judge {judge.teacher}: up to {per_request} request(s) per row, one per distinct "
        f"answer, each with an answer of ~{answer_tokens} tokens"
        + (" (max_tokens: an upper bound)" if teacher.output_is_upper_bound else "")
    )
    return est


def _judged(answered: Task, rows: Iterable[Row | Reject | Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """The judge's rows, one per input row the teacher would be asked about (the answer
    left empty: its tokens are added apart)."""
    for row in rows:
        if isinstance(row, Reject):
            continue
        data = row.data if isinstance(row, Row) else row
        try:
            yield judge_data(answered, data, "")
        except LabelerError:  # the teacher's template rejects it: no answer to judge
            continue


__all__ = ["estimate_judge", "judge_specs"]
