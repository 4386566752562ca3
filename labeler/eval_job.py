"""`labeler eval`: the stored answers of a run against a gold column of its input.

No request is sent for the gold rows: they are rendered and keyed as the run did, and
answers come from the store. Gold values may be label names, or integers (class indices in
the template's label order, unless a `gold_map` says otherwise, e.g. AG News' 1-based
classes). The gold name ``human`` means the labels people gave on the review page
(labeler/human.py).

With ``calibrate`` the gold rows also fit calibrations of the teacher's label distribution
(labeler.calibration), each scored before/after on rows its fit did not see. Contextual
calibration needs the teacher's answer to a few content-free inputs ("N/A", "[MASK]", ""):
those are sent through the normal labeling path, so they are cached in the store like any
answer and cost nothing the second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from labeler import bounds
from labeler.answer import read_answer, read_answers
from labeler.calibration import METHODS, Calibration, calibrate_answer, cross_validated, fit
from labeler.cascade_eval import CascadeEval, evaluate_cascade
from labeler.engine import Labeler
from labeler.errors import ConfigError
from labeler.evaluate import (
    CalibrationScore,
    EvalReport,
    confidence_measures,
    distribution_scores,
    evaluate,
)
from labeler.gold import gold_label as _gold_label
from labeler.gold import parse_gold_map as parse_gold_map  # the CLI's import
from labeler.human import human_labels
from labeler.inputs import Row
from labeler.job import Job
from labeler.plan import REJECTED, Planner, by_row, where
from labeler.setups import Cascade, setup_for
from labeler.store import Store
from labeler.task import Task

CONTENT_FREE: tuple[str, ...] = ("N/A", "[MASK]", "")
HUMAN_GOLD = "human"  # `--gold human`: the review page's labels, not an input column


@dataclass(frozen=True)
class CalibrationOptions:
    """What `labeler eval` fits: methods, how fit and scored rows are kept apart, where to save."""

    methods: Sequence[str] = ()
    fit_fraction: float | None = None  # None: k-fold cross-validation
    folds: int = 5
    seed: int = 0
    save: str | Path | None = None  # the method with the best held-out likelihood, fitted on all rows

    def __post_init__(self) -> None:
        """A share of rows without a method to fit on it, or outside (0, 1), would be
        ignored or fit on nothing; both are told before anything is read."""
        bounds.check([("fit_fraction", self.fit_fraction)])
        if self.fit_fraction is not None and not self.methods:
            raise ConfigError(
                "--fit-fraction goes with --calibrate METHOD (it says how many "
                "gold rows the calibration is fitted on)"
            )
        if self.save is not None and not self.methods:
            raise ConfigError("--save-calibration needs --calibrate METHOD")


@dataclass
class _Scored:
    """The gold rows that have an answer, read as the report reads them: the gold label, the
    teacher's label, its confidence and its label distribution, one entry per row."""

    gold: list[str]
    pred: list[str | None]
    confs: list[Any]
    probs: list[tuple[float, ...]]


def evaluate_job(
    job: Job,
    gold_field: str,
    *,
    gold_map: Mapping[str, str] | None = None,
    targets: tuple[float, ...] = (0.9, 0.95, 0.99),
    calibrate: CalibrationOptions | None = None,
    calibration: Calibration | None = None,
) -> EvalReport:
    """Score the stored answers against gold; optionally fit and score calibrations.

    ``calibration`` (a saved one) makes the whole report read the answers through it, as an
    export with ``--calibration`` would.
    """
    bounds.check([("target_accuracy", t) for t in targets])
    task = job.load_task()
    if task.output_kind != "label" or task.label_space is None:
        raise ConfigError(f"eval needs a label task; {task.path} is '{task.output_kind}'")
    labels = task.labels
    teacher = job.make_teacher()
    identity = teacher.identity
    if calibration is not None:
        calibration.check(task.identity, identity, labels)
    scored = _score_stored(job, task, identity, gold_field, gold_map or {}, calibration)
    measures = {k: v for k, v in confidence_measures(scored.confs).items() if any(x is not None for x in v)}
    report = evaluate(scored.gold, scored.pred, measures, labels=list(labels), targets=targets)
    if calibration is not None:
        report.applied_calibration = calibration.describe()
    if calibrate is not None and calibrate.methods:
        report.calibration = _fit_calibrations(job, task, identity, calibrate, scored)
    return report


def _score_stored(
    job: Job,
    task: Task,
    identity: Mapping[str, Any],
    gold_field: str,
    gold_map: Mapping[str, str],
    calibration: Calibration | None,
) -> _Scored:
    """Each input row with a gold label and a stored answer; rows with neither are left
    out (a row not yet labeled is not the teacher's mistake)."""
    assert task.label_space is not None
    labels = task.labels
    scored = _Scored([], [], [], [])
    from_people = gold_field == HUMAN_GOLD
    with Store(job.store_path()) as store:
        planner = Planner(task, identity, store, failures=False, single_answers=True)
        for planned in planner.plan_rows(job.rows(task), 512):
            people = (
                human_labels(
                    store, [i.key for i in planned if i.completion is not None and i.key is not None]
                )
                if from_people
                else {}
            )
            for forms in by_row(planned):
                item = forms[0]
                if item.status == REJECTED:
                    continue  # never labeled: not part of the evaluation
                if from_people:
                    if item.key not in people:
                        continue  # nobody reviewed this row
                    g = people[item.key].label
                else:
                    raw = item.row.data.get(gold_field)
                    if raw is None or raw == "":
                        continue  # no gold: not part of the evaluation
                    g = _gold_label(raw, labels, gold_map, where(item.row), gold_field)
                completions = [f.completion for f in forms if f.completion is not None]
                if len(completions) < len(forms):
                    continue  # not labeled (yet): not part of the evaluation
                answer = read_answers(task, completions)
                if calibration is not None:
                    answer = calibrate_answer(answer, calibration, task.label_space)
                scored.gold.append(g)
                scored.pred.append(answer.label)
                scored.confs.append(answer.confidence)
                scored.probs.append(answer.soft.probs if answer.soft else (0.0,) * len(labels))
    if from_people and not scored.gold:
        raise ConfigError(
            "no reviewed rows: label some with `labeler review` first, with the same task, input and teacher"
        )
    if not scored.gold:
        raise ConfigError(
            f"no labeled rows with a '{gold_field}' value: run `labeler run` first with the same "
            "task, input and teacher"
        )
    return scored


def _fit_calibrations(
    job: Job, task: Task, identity: Mapping[str, Any], calibrate: CalibrationOptions, scored: _Scored
) -> list[CalibrationScore]:
    """Fit and score each asked calibration method on the gold rows; contextual
    calibration first asks the teacher the content-free inputs (cached like any answer)."""
    content_free = None
    if "contextual" in calibrate.methods:
        content_free = asyncio.run(content_free_probs(job, task))
    index = {label: i for i, label in enumerate(task.labels)}
    return score_calibrations(
        calibrate,
        scored.probs,
        [index[g] for g in scored.gold],
        task.labels,
        content_free=content_free,
        template=task.identity,
        teacher=identity,
    )


def evaluate_cascade_job(
    job: Job,
    gold_field: str,
    gold_map: Mapping[str, str] | None = None,
    targets: tuple[float, ...] = (0.9, 0.95, 0.99),
) -> CascadeEval:
    """`labeler eval --cascade`: each stage and the cascade against the gold column, and
    the thresholds reaching each target (labeler/cascade_eval.py)."""
    task = job.load_task()
    setup = setup_for(job)
    if not isinstance(setup, Cascade):
        raise ConfigError("eval --cascade needs --cascade TEACHERS")
    spec = setup.spec
    if task.output_kind != "label" or task.label_space is None:
        raise ConfigError(f"eval needs a label task; {task.path} is '{task.output_kind}'")
    labels = task.labels

    def gold_of(row: Row) -> str | None:
        raw = row.data.get(gold_field)
        if raw is None or raw == "":
            return None
        return _gold_label(raw, labels, gold_map or {}, where(row), gold_field)

    identities = [t.identity for t in setup.make_teachers(job.teacher_for)]
    with Store(job.store_path()) as store:
        return evaluate_cascade(task, spec, identities, store, job.rows(task), gold_of, targets)


def score_calibrations(
    options: CalibrationOptions,
    probs: Sequence[Sequence[float]],
    gold: Sequence[int],
    labels: Sequence[str],
    *,
    content_free: Sequence[Sequence[float]] | None = None,
    template: str = "",
    teacher: Mapping[str, Any] | None = None,
) -> list[CalibrationScore]:
    """Each method fitted and scored on disjoint rows; the best one saved if asked.

    "Best" is the lowest held-out negative log-likelihood, a proper score: it rewards a
    right argmax and honest probabilities together, where ECE alone can be gamed by a
    flat distribution.
    """
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"--calibrate {unknown[0]}: expected one of {', '.join(METHODS)}")
    p = np.asarray(probs, dtype=float)
    g = np.asarray(gold, dtype=int)
    scheme = (
        f"fit on {options.fit_fraction:.0%}, scored on the rest"
        if options.fit_fraction is not None
        else f"{options.folds}-fold cross-validation"
    )
    scores: list[CalibrationScore] = []
    fitted: list[Calibration] = []
    for method in options.methods:

        def fitter(fp: np.ndarray, fg: np.ndarray, method: str = method) -> Calibration:
            return fit(method, fp, fg, labels, content_free=content_free, template=template, teacher=teacher)

        held_out, rows = cross_validated(
            fitter, p, g, folds=options.folds, fit_fraction=options.fit_fraction, seed=options.seed
        )
        whole = fitter(p, g)
        fitted.append(whole)
        scores.append(
            CalibrationScore(
                method,
                len(rows),
                scheme,
                distribution_scores(g[rows], p[rows]),
                distribution_scores(g[rows], held_out),
                whole.describe(),
            )
        )
    if options.save is not None:

        def held_out_nll(i: int) -> float:
            nll = scores[i].after["nll"]
            return float("inf") if nll is None else nll

        best = min(range(len(scores)), key=held_out_nll)
        chosen = fitted[best]
        details = {**chosen.details, "held_out": scores[best].to_dict()}
        replace(chosen, details=details).save(options.save)
    return scores


async def content_free_probs(job: Job, task: Task) -> list[tuple[float, ...]]:
    """The teacher's label distribution for content-free inputs, through the store.

    Every template field gets the same content-free value; values the template rejects
    (an empty required field) are skipped.
    """
    assert task.label_space is not None
    rows = [
        {"id": f"content-free-{i}", **{f: value for f in task.fields}} for i, value in enumerate(CONTENT_FREE)
    ]
    out: list[tuple[float, ...]] = []
    async with Labeler(
        task,
        job.make_teacher(),
        store=job.store_path(),
        concurrency=4,
        progress=False,
        retry=job.retry_policy(),
    ) as lb:
        async for rec in lb.label(rows):
            if rec.completion is not None:
                answer = read_answer(task, rec.completion)
                if answer.soft is not None:
                    out.append(answer.soft.probs)
    if not out:
        raise ConfigError(
            "contextual calibration: the teacher answered none of the "
            "content-free inputs (see the store's failures)"
        )
    return out


def write_plot(report: EvalReport, path: str | Path) -> Path:
    return report.save_plot(path)
