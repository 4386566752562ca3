"""`labeler eval --verify judge:J --judge-gold SPEC`: a judge measured and calibrated
against a deterministic verifier.

A judge's soft label is a label like any other, and as overconfident or as timid as any
other teacher's; so it is calibrated the same way. The truth is what a deterministic
verifier (``numeric:answer``, ``exact:gold``, ``regex:...,exact:gold``, a Python checker)
says of each stored answer; the judge's raw soft label of the same answer is read from the
store, where the judge pass put it. Nothing is sent: an answer the judge has not labeled
yet is counted as unjudged and left out, as is one the truth's checker could not decide
(an error or a timeout is no evidence either way).

The report gives the judge's agreement with the truth (its verdict at score >= 0.5),
the AUROC of its score at telling passing answers from failing ones, its ECE and NLL,
raw and after a temperature fitted on the answers (labeler.calibration.fit_temperature),
the latter scored by k-fold cross-validation so that no answer is scored by a fit that
saw it (AUROC aside: a temperature keeps the scores' order, so it is read off the fit on
every answer). The temperature fitted on every answer can be saved and given to run, export or
refresh as ``--judge-calibration FILE`` (labeler/verify/judge.py applies it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labeler.answer import read_answer
from labeler.calibration import Calibration, cross_validated, fit
from labeler.errors import ConfigError
from labeler.evaluate import auroc, distribution_scores
from labeler.job import Job
from labeler.plan import CACHED, Planner
from labeler.store import Store
from labeler.task import Task
from labeler.verify import Verifier, answers_of
from labeler.verify.judge import Judge, expected_score

FOLDS = 5
MIN_JUDGED = 10  # fewer answers give a temperature that is mostly noise


@dataclass
class JudgeEval:
    """What `labeler eval --judge-gold` found: counts, the raw and calibrated scores."""

    judge: str
    template: str
    truth: str
    answers: int = 0  # stored answers of the answering teacher read
    judged: int = 0  # those with the judge's soft label and the truth's verdict
    unjudged: int = 0  # no judge answer stored (yet), or the judge failed or named no label
    undecided: int = 0  # the truth's checker erred or timed out
    passing: int = 0  # judged answers the truth passes
    raw: dict[str, float | None] = field(default_factory=dict)
    calibrated: dict[str, float | None] = field(default_factory=dict)
    scheme: str = ""
    calibration: str = ""
    saved: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_table(self) -> str:
        """The report as the CLI prints it: counts, then raw vs calibrated per measure."""
        lines = [
            f"judge {self.judge} ({self.template}) against {self.truth}",
            f"  answers {self.answers}, judged {self.judged} ({self.passing} passing the truth), "
            f"unjudged {self.unjudged}, undecided by the truth {self.undecided}",
            f"  {'measure':<11}{'raw':>9}{'calibrated':>12}   ({self.scheme})",
        ]
        for name in ("agreement", "auroc", "ece", "nll"):
            lines.append(f"  {name:<11}{_num(self.raw.get(name)):>9}{_num(self.calibrated.get(name)):>12}")
        lines.append(f"  calibration: {self.calibration}")
        return "\n".join(lines)


def evaluate_judge_job(job: Job, truth_spec: str, *, save: str | Path | None = None) -> JudgeEval:
    """Read every stored answer of the job's teacher, its truth and its judge's raw soft
    label; score the judge and fit its temperature (saved to `save` if given)."""
    task = job.load_task()
    judge = _the_judge(job, task)
    truth = Verifier(truth_spec, task=task, timeout_s=job.export.verify_timeout)
    if truth.judges:
        truth.close()
        raise ConfigError(
            f"--judge-gold {truth_spec}: the truth must be a deterministic check "
            "(numeric:FIELD, exact:FIELD, regex:...,exact:FIELD, python:...), not a judge"
        )
    space = judge.task.label_space
    assert space is not None
    report = JudgeEval(judge.spec.teacher, judge.task.identity, truth_spec)
    probs: list[tuple[float, ...]] = []
    gold: list[int] = []
    with truth, Store(job.store_path()) as store:
        truth.check_input(job.rows(task))
        truth.start()
        judge.bind(store)
        for row, answer in _stored_answers(job, task, store):
            report.answers += 1
            said = truth.check(row, answer)
            if said.status not in ("pass", "fail"):
                report.undecided += 1
                continue
            item = judge.item(row, answer)
            soft = None
            if item.status == CACHED and item.completion is not None:
                soft = read_answer(judge.task, item.completion).soft
            if soft is None or not soft.valid:
                report.unjudged += 1
                continue
            probs.append(soft.probs)
            gold.append(len(space.labels) - 1 if said.passed else 0)  # best label or worst
    _score(report, judge, probs, gold, save)
    return report


def _the_judge(job: Job, task: Task) -> Judge:
    """The one judge the job's `--verify` names (its raw soft label is what is fitted)."""
    if job.export.verify is None:
        raise ConfigError(
            "--judge-gold needs --verify judge:PROVIDER:MODEL[:TEMPLATE] (the judge it measures)"
        )
    if job.cascade is not None or job.ensemble is not None:
        raise ConfigError(
            "--judge-gold reads one teacher's answers: give --teacher, not --cascade or --ensemble"
        )
    judges = job.verifier(task).judges
    if len(judges) != 1:
        raise ConfigError(
            f"--judge-gold: --verify {job.export.verify} names {len(judges)} judges; "
            "it measures one (give --verify judge:PROVIDER:MODEL[:TEMPLATE])"
        )
    return judges[0]


def _stored_answers(job: Job, task: Task, store: Store) -> Iterator[tuple[Mapping[str, Any], str]]:
    """(row data, answer) for every stored answer (each sample) of the job's teacher."""
    planner = Planner(task, job.make_teacher().identity, store, failures=False)
    for planned in planner.plan_rows(job.rows(task), 512):
        for item in planned:
            if item.variant == 0 and item.completion is not None:
                for answer in answers_of(item.completion):
                    yield item.row.data, answer


def _score(
    report: JudgeEval, judge: Judge, probs: list[tuple[float, ...]], gold: list[int], save: str | Path | None
) -> None:
    """Raw and held-out calibrated scores of the judged answers; the temperature fitted on
    all of them described, and saved where asked."""
    n = report.judged = len(gold)
    if n < MIN_JUDGED:
        raise ConfigError(
            f"--judge-gold {report.truth}: {n} of {report.answers} stored answers are judged and "
            f"decided by the truth ({report.unjudged} unjudged); a calibration needs at least "
            f"{MIN_JUDGED} (run with --verify judge:... first)"
        )
    labels = judge.task.labels
    p = np.asarray(probs, dtype=float)
    g = np.asarray(gold, dtype=int)

    def fitter(fp: np.ndarray, fg: np.ndarray) -> Calibration:
        return fit(
            "temperature", fp, fg, labels, template=judge.task.identity, teacher=judge.teacher.identity
        )

    folds = min(FOLDS, n)
    held, rows = cross_validated(fitter, p, g, folds=folds)
    report.passing = int((g == len(labels) - 1).sum())
    report.raw = _measures(g, p)
    report.calibrated = _measures(g[rows], held)
    report.scheme = f"calibrated: {folds}-fold cross-validation"
    whole = fitter(p, g)
    # AUROC reads only the order of the scores, which a temperature keeps: read it off the
    # fit on every answer (the folds' scores pooled, each through its own temperature,
    # would reorder answers the judge scored alike, and move AUROC by that noise alone)
    fitted = np.asarray([whole.apply_probs(row) for row in p])
    report.calibrated["auroc"] = _measures(g, fitted)["auroc"]
    report.calibration = f"temperature, T={whole.temperature:.3f}, fitted on {n} judged answers"
    if save is not None:
        details = {"truth": report.truth, "held_out": {"raw": report.raw, "calibrated": report.calibrated}}
        dataclasses.replace(whole, details=details).save(save)
        report.saved = str(save)


def _measures(gold: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    """Agreement (the verdict at score >= 0.5 equals the truth), AUROC of the score at
    ranking passing answers above failing ones, ECE and NLL of the distribution."""
    top = len(probs[0]) - 1
    scores = [expected_score(row) for row in probs.tolist()]
    truth = (gold == top).tolist()
    base = distribution_scores(gold, probs)
    agreement = float(np.mean([(s >= 0.5) == t for s, t in zip(scores, truth, strict=True)]))
    return {
        "agreement": agreement,
        "auroc": auroc(scores, truth),
        "ece": base["ece"],
        "nll": base["nll"],
    }


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


__all__ = ["JudgeEval", "evaluate_judge_job"]
