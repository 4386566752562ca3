"""The calibration an export applies by default, chosen by what the input offers.

A student trained on a small teacher's raw distribution inherits its tilt (a teacher that
says "Business" to 55% of a balanced set) and its wrong sharpness; fitted on a little gold,
a calibration undoes most of both. So an export of a label task is calibrated when gold is
given (``--gold FIELD``) or found in the input, and raw otherwise, unless the user says otherwise
(``calibration_mode``):

* a calibration file: applied as given;
* ``auto`` with a gold field (``--gold FIELD``): fitted on the rows that have a gold value
  (at least `MIN_GOLD_ROWS`), the method (per-label bias + temperature, or temperature
  alone) chosen by held-out likelihood over 5 folds of those rows, and applied to every
  row. It is applied only if, held out, it neither lowers accuracy nor worsens the
  likelihood; else the export stays raw and the card says why;
* ``auto`` without ``--gold``: the input's one field of label names, if it has one
  (`labeler.gold.find_gold_field`: every non-empty value a label name, not read by the
  prompt; a dataset's ``label`` column, a hand-filled ``gold``), is read as the gold field
  above, and the note names it. Two such fields are a guess not taken (the note asks for
  ``--gold``), and too few gold rows leave the export raw, where an explicit ``--gold``
  is refused;
* ``auto`` with no gold at all: raw. No gold-free calibration measured so far keeps accuracy and
  ECE on every set (docs/benchmarks.md, "Calibration"): contextual calibration (the
  content-free inputs' distribution divided out) raised ECE on SST-2 and AG News and
  lowered accuracy on a sample of reviews 82% negative; batch calibration doubled AG
  News's ECE and cost 7-13 points on samples of reviews 82% of one label;
* ``batch``: the teacher's mean distribution over the exported rows divided out
  (`labeler.calibration.batch_calibration`): no gold, no request, for rows whose labels
  are about evenly spread;
* ``none``: raw.

Whatever is chosen is said in one line (`ExportOptions.calibration_note`) that the card,
``labeler_export.json`` and the CLI summary carry; the gold rows' label distribution is
kept for the label-prior check (labeler/label_prior.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labeler.answer import read_answers
from labeler.calibration import Calibration, batch_calibration, cross_validated, fit
from labeler.errors import ConfigError
from labeler.evaluate import distribution_scores
from labeler.exports.options import ExportOptions
from labeler.gold import find_gold_field, gold_label
from labeler.inputs import Reject, Row
from labeler.plan import REJECTED, Planner, by_row, where
from labeler.store import Store
from labeler.task import Task

__all__ = [
    "MIN_GOLD_ROWS",
    "GoldRows",
    "choose_batch",
    "choose_calibration",
    "min_gold_rows",
    "read_gold_rows",
    "read_teacher_probs",
    "resolve",
]

# Fewer gold rows than this (and than PER_LABEL per label of the task) give a bias per
# label that is mostly noise: 5 folds of 4 rows, a label seen a handful of times.
MIN_GOLD_ROWS = 20
PER_LABEL = 5
CANDIDATES: tuple[str, ...] = ("bias", "temperature")
GOLD_FREE_NOTE = (
    "none: no gold rows given or found (--gold FIELD fits a calibration on them); "
    "gold-free calibration is not applied unasked: on measured sets it raised ECE "
    "or lowered accuracy (--calibration batch applies one, for rows whose labels "
    "are about evenly spread)"
)


@dataclass
class GoldRows:
    """The labeled rows that have a gold value: the teacher's distribution and the gold index."""

    labels: tuple[str, ...]
    probs: list[tuple[float, ...]] = field(default_factory=list)
    gold: list[int] = field(default_factory=list)
    unlabeled: int = 0  # rows with gold whose answer is not in the store (yet)

    def prior(self) -> tuple[float, ...]:
        """The gold labels' share of each label, in label order."""
        counts = np.bincount(np.asarray(self.gold, dtype=int), minlength=len(self.labels))
        return tuple(float(x) for x in counts / max(1, counts.sum()))


def read_gold_rows(
    task: Task,
    identity: Mapping[str, Any],
    rows: Iterable[Row | Reject],
    store: Store,
    gold_field: str,
    gold_map: Mapping[str, str] | None = None,
) -> GoldRows:
    """The rows with a gold value and a stored answer; no request is sent."""
    assert task.label_space is not None
    labels = task.labels
    index = {label: i for i, label in enumerate(labels)}
    out = GoldRows(labels)
    zero = (0.0,) * len(labels)
    planner = Planner(task, identity, store, failures=False)
    for planned in planner.plan_rows(rows, 512):
        for forms in by_row(planned):
            item = forms[0]
            if item.status == REJECTED:
                continue
            raw = item.row.data.get(gold_field)
            if raw is None or raw == "":
                continue
            g = gold_label(raw, labels, gold_map or {}, where(item.row), gold_field)
            completions = [f.completion for f in forms if f.completion is not None]
            if len(completions) < len(forms):
                out.unlabeled += 1
                continue
            soft = read_answers(task, completions).soft
            out.probs.append(soft.probs if soft is not None and soft.valid else zero)
            out.gold.append(index[g])
    return out


def read_teacher_probs(
    task: Task, identity: Mapping[str, Any], rows: Iterable[Row | Reject], store: Store
) -> list[tuple[float, ...]]:
    """Every answered row's label distribution, gold or not; no request is sent."""
    out: list[tuple[float, ...]] = []
    planner = Planner(task, identity, store, failures=False)
    for planned in planner.plan_rows(rows, 512):
        for forms in by_row(planned):
            if forms[0].status == REJECTED:
                continue
            completions = [f.completion for f in forms if f.completion is not None]
            if completions and len(completions) == len(forms):
                soft = read_answers(task, completions).soft
                if soft is not None and soft.valid:
                    out.append(soft.probs)
    return out


def choose_batch(
    probs: list[tuple[float, ...]], labels: tuple[str, ...], *, template: str, teacher: Mapping[str, Any]
) -> tuple[Calibration, str]:
    """Batch calibration of these rows and the sentence that says what it moved."""
    least = min_gold_rows(len(labels))
    if len(probs) < least:
        raise ConfigError(
            f"--calibration batch: {len(probs)} answered rows, the teacher's mean needs at "
            f"least {least} (label more rows, or export with --calibration none)"
        )
    chosen = batch_calibration(probs, labels, template=template, teacher=teacher)
    before = _shares([int(np.argmax(p)) for p in probs], len(labels))
    after = _shares([int(np.argmax(chosen.apply_probs(p))) for p in probs], len(labels))
    top = int(np.argmax(before))
    note = (
        f"{chosen.describe()}; '{labels[top]}' {before[top]:.0%} of labels raw -> "
        f"{after[top]:.0%} calibrated (it assumes the rows' labels are about evenly spread)"
    )
    return chosen, note


def _shares(indices: list[int], k: int) -> list[float]:
    counts = np.bincount(np.asarray(indices, dtype=int), minlength=k)
    return [float(x) for x in counts / max(1, counts.sum())]


def choose_calibration(
    gold: GoldRows, *, template: str, teacher: Mapping[str, Any], gold_field: str, folds: int = 5
) -> tuple[Calibration | None, str]:
    """The calibration to apply and the sentence that says what was done and why.

    Each candidate is scored on rows its fit did not see; the best held-out likelihood
    that keeps accuracy and likelihood at least as good as raw is refitted on all gold rows.
    """
    n = len(gold.gold)
    least = min_gold_rows(len(gold.labels))
    if n < least:
        raise ConfigError(
            f"--gold {gold_field}: {n} labeled rows have a gold value, calibration needs at "
            f"least {least} (add gold, or export with --calibration none)"
        )
    p = np.asarray(gold.probs, dtype=float)
    g = np.asarray(gold.gold, dtype=int)
    if not (p > 0).any(axis=1).any():
        return None, (
            f"none: the teacher put no probability on any label for the {n} gold "
            "rows, so there is nothing to calibrate"
        )
    raw = distribution_scores(g, p)
    best: tuple[float, str, dict[str, float | None]] | None = None
    for method in CANDIDATES:

        def fitter(fp: np.ndarray, fg: np.ndarray, method: str = method) -> Calibration:
            return fit(method, fp, fg, gold.labels, template=template, teacher=teacher)

        held, rows = cross_validated(fitter, p, g, folds=folds)
        after = distribution_scores(g[rows], held)
        if not _no_worse(raw, after):
            continue
        nll = after["nll"] if after["nll"] is not None else float("inf")
        if best is None or nll < best[0]:
            best = (nll, method, after)
    if best is None:
        return None, (
            f"none: no calibration fitted on the {n} gold rows of '{gold_field}' "
            f"kept accuracy ({_pct(raw['accuracy'])}) and likelihood (NLL "
            f"{_num(raw['nll'])}) at least as good held out, so the raw "
            "distribution is exported"
        )
    _, method, after = best
    chosen = fit(method, p, g, gold.labels, template=template, teacher=teacher)
    scores = {"raw": raw, "calibrated": after, "scheme": f"{folds}-fold cross-validation"}
    chosen = dataclasses.replace(
        chosen, details={**chosen.details, "gold_field": gold_field, "held_out": scores}
    )
    note = (
        f"{chosen.describe()} of '{gold_field}'; held out ({folds}-fold): accuracy "
        f"{_pct(raw['accuracy'])} -> {_pct(after['accuracy'])}, NLL "
        f"{_num(raw['nll'])} -> {_num(after['nll'])}, ECE "
        f"{_num(raw['ece'])} -> {_num(after['ece'])}"
    )
    return chosen, note


def min_gold_rows(labels: int) -> int:
    """The fewest gold rows a calibration is fitted on for a task of this many labels."""
    return max(MIN_GOLD_ROWS, PER_LABEL * labels)


def resolve(
    task: Task,
    identity: Mapping[str, Any],
    rows: Callable[[], Iterable[Row | Reject]],
    store: Store,
    opts: ExportOptions,
    *,
    single_teacher: bool = True,
) -> ExportOptions:
    """The export options with the calibration to apply and its note filled in."""
    if task.output_kind != "label" or task.label_space is None:
        if opts.gold_field:
            raise ConfigError(f"--gold needs a label task; {task.path} is '{task.output_kind}'")
        return opts
    if opts.calibration is not None:
        return dataclasses.replace(opts, calibration_note=opts.calibration.describe())
    if opts.calibration_mode == "none":
        note = "none: raw teacher probabilities (--calibration none)"
        if opts.gold_field:
            gold = read_gold_rows(task, identity, rows(), store, opts.gold_field, opts.gold_map)
            return dataclasses.replace(
                opts, calibration_note=note, gold_prior=gold.prior() if gold.gold else None
            )
        return dataclasses.replace(opts, calibration_note=note)
    if not single_teacher and (opts.gold_field or opts.calibration_mode == "batch"):
        raise ConfigError(
            f"{'--calibration batch' if opts.calibration_mode == 'batch' else '--gold'} "
            "calibration fits one teacher's distribution; a cascade or "
            "an ensemble mixes several: export with --calibration none or FILE"
        )
    if opts.calibration_mode == "batch":
        probs = read_teacher_probs(task, identity, rows(), store)
        batch, note = choose_batch(probs, task.labels, template=task.identity, teacher=identity)
        prior = None
        if opts.gold_field:
            gold = read_gold_rows(task, identity, rows(), store, opts.gold_field, opts.gold_map)
            prior = gold.prior() if gold.gold else None
        return dataclasses.replace(opts, calibration=batch, calibration_note=note, gold_prior=prior)
    if not opts.gold_field:
        if not single_teacher:
            return dataclasses.replace(opts, calibration_note=GOLD_FREE_NOTE)
        return _from_found_field(task, identity, rows, store, opts)
    gold = read_gold_rows(task, identity, rows(), store, opts.gold_field, opts.gold_map)
    calibration, note = choose_calibration(
        gold, template=task.identity, teacher=identity, gold_field=opts.gold_field
    )
    return dataclasses.replace(opts, calibration=calibration, calibration_note=note, gold_prior=gold.prior())


def _from_found_field(
    task: Task,
    identity: Mapping[str, Any],
    rows: Callable[[], Iterable[Row | Reject]],
    store: Store,
    opts: ExportOptions,
) -> ExportOptions:
    """``auto`` without ``--gold``: calibrated on the input's field of label names if it
    has exactly one (`labeler.gold.find_gold_field`), else raw; either way the note says
    which field was read and how to name another or turn it off."""
    prompt_fields = {name for member in task.members for name in member.fields}
    found = find_gold_field((row.data for row in rows() if isinstance(row, Row)), task.labels, prompt_fields)
    if found.field is None:
        if found.ambiguous:
            note = (
                f"none: fields {', '.join(repr(f) for f in found.ambiguous)} all hold label "
                "names; name the gold one with --gold FIELD to calibrate on it"
            )
            return dataclasses.replace(opts, calibration_note=note)
        return dataclasses.replace(opts, calibration_note=GOLD_FREE_NOTE)
    name = found.field
    how = (
        f"(gold read from the input's field '{name}', found holding label names; "
        "--gold FIELD names another, --calibration none exports raw)"
    )
    try:
        gold = read_gold_rows(task, identity, rows(), store, name)
    except ConfigError as exc:
        return dataclasses.replace(
            opts, calibration_note=f"none: field '{name}' looked like gold in the first rows, but {exc}"
        )
    prior = gold.prior() if gold.gold else None
    least = min_gold_rows(len(task.labels))
    if len(gold.gold) < least:
        note = (
            f"none: {len(gold.gold)} labeled rows have a gold value in '{name}', a "
            f"calibration needs at least {least} {how}"
        )
        return dataclasses.replace(opts, calibration_note=note, gold_prior=prior)
    calibration, note = choose_calibration(gold, template=task.identity, teacher=identity, gold_field=name)
    return dataclasses.replace(
        opts, calibration=calibration, calibration_note=f"{note} {how}", gold_prior=prior
    )


def _no_worse(raw: Mapping[str, float | None], after: Mapping[str, float | None]) -> bool:
    """Held out, accuracy not lower and likelihood not worse (a hair of float noise
    allowed). The likelihood rather than ECE: it is a proper score, and ECE binned over a
    hundred rows is noise enough to veto a bias that lifted AG News from 60% to 79%
    (docs/benchmarks.md); the card prints both."""
    acc_ok = (after["accuracy"] or 0.0) >= (raw["accuracy"] or 0.0) - 1e-9
    nll_raw, nll_after = raw["nll"], after["nll"]
    nll_ok = nll_raw is None or nll_after is None or nll_after <= nll_raw + 1e-9
    return acc_ok and nll_ok


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
