"""Exports: the labeled input as a Hugging Face dataset any student trainer can load.

An export is a pure function of (input rows, task, teacher identity, store): each row is
rendered and keyed again and its answer read from the store. So an export never depends
on the order answers arrived in, a kill -9 mid-run changes nothing, and rows that left the
input leave the export.

Kinds (what the rows look like):
- ``records``: everything: input fields, rendered messages, response, label, soft label,
  confidence, teacher, per-token top-k logprobs.
- ``classification``: text, ``label`` (ClassLabel), ``soft_label`` (float vector in label
  order), ``outside_mass``, confidence columns.
- ``sft``: ``messages`` in the chat format TRL's SFTTrainer reads unchanged
  (completion-mode tasks give ``prompt``/``completion`` columns, TRL's other format).
- ``kd``: prompt, response and per-token ``top_logprobs`` for logit distillation.

A reasoning teacher's trace (``--reasoning``, labeler/reasoning.py) goes, by default, to
the `sft` assistant message's ``reasoning_content`` and a ``reasoning`` column of
`records` and `classification` (null where an answer has none); ``inline`` writes it
``<think>``-wrapped before the answer, ``drop`` leaves it out. Left unset it is carried
only when the store holds a trace at all, so a store without any exports exactly the
columns it always did, and one with traces has the same columns in every export.

Formats (how it is written): ``hf`` (``save_to_disk``, load with ``load_from_disk``),
``parquet`` and ``jsonl`` (one file per split). Written aside and swapped in with one
exchange (labeler/exports/folder_swap.py), only over a folder an export may replace
(labeler/exports/out_folder.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from labeler.answer import Answer, read_answers
from labeler.completion import Completion
from labeler.errors import ConfigError, LabelerError
from labeler.exports import features as hf
from labeler.exports import folder_swap, hf_folder, out_folder
from labeler.exports.card import dataset_card, public_identity
from labeler.exports.features import Features
from labeler.exports.hf_folder import SplitFile
from labeler.exports.kinds import export_kind
from labeler.exports.options import ExportOptions, ExportReport, teacher_tokenizer
from labeler.exports.rows import RowBuilder
from labeler.filters import Filter
from labeler.human import any_human_labels, human_labels
from labeler.inputs import Reject, Row
from labeler.label_prior import prior_warnings
from labeler.plan import REJECTED, Item, Planner, by_row
from labeler.reasoning import AUTO
from labeler.soft_labels import IGNORE_LABEL, Confidence, LabelNumbers
from labeler.store import Store
from labeler.task import Task
from labeler.verify import Checked, Verifier, VerifyStage


class _Lazy:
    """A module imported on first use.

    `datasets` (with pyarrow and pandas) adds about 110 MB of RSS and a second of start-up
    to every process that imports labeler, and only exports need it: labeling, `stats`
    and library users who never export no longer pay for it.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            import importlib

            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


if TYPE_CHECKING:
    import datasets
    import pyarrow as pa
else:
    datasets = _Lazy("datasets")
    pa = _Lazy("pyarrow")

CHUNK = 512
# a person's label passes every confidence filter
_HUMAN_CERTAINTY = Confidence(max_prob=1.0, margin=1.0, entropy=0.0)


def export_dataset(
    task: Task,
    teacher_identity: Mapping[str, Any],
    rows: Iterable[Row | Reject],
    store: Store,
    out: str | Path,
    options: ExportOptions | None = None,
    *,
    planner: Any = None,
    verifier: Verifier | None = None,
) -> ExportReport:
    """Write the export for these rows to `out`, atomically; returns what it contains.

    `planner` replaces the plain `Planner` where each row's answer is chosen among
    several teachers' (a cascade's `CascadePlanner`): its items' `provenance` becomes
    columns of `records` rows and the report's `stages`. `verifier` (closed here)
    replaces the one `options.verify` names: a job's, whose judge has the job's key."""
    return _export_dataset(task, teacher_identity, rows, store, out, options, planner, verifier)


def _export_dataset(
    task: Task,
    teacher_identity: Mapping[str, Any],
    rows: Iterable[Row | Reject],
    store: Store,
    out: str | Path,
    options: ExportOptions | None,
    planner: Any,
    given: Verifier | None = None,
) -> ExportReport:
    opts = options or ExportOptions()
    kind = export_kind(opts)
    kind.check_needs(opts)
    kind.check_task(task)
    calibrate = _calibrator(task, teacher_identity, opts)
    if opts.reasoning == AUTO and store.has_reasoning() and kind.carries_reasoning:
        opts = dataclasses.replace(opts, reasoning="separate")
    out = Path(out)
    start = time.monotonic()
    report = ExportReport(str(out), opts.kind, opts.format)
    tmp, work = _staging(out, opts, store)
    verifier = given
    if verifier is None and opts.verify is not None:
        verifier = Verifier(
            opts.verify, task=task, timeout_s=opts.verify_timeout, judge_calibration=opts.judge_calibration
        )
    try:
        stage = VerifyStage(verifier, store, opts.keep) if verifier is not None else None
        planner = planner or Planner(task, teacher_identity, store, failures=False, single_answers=True)
        written = _Rows(
            task,
            teacher_identity,
            opts,
            report,
            work,
            store=store,
            provenance=planner.kind if kind.provenance else None,
            calibrate=calibrate,
            stage=stage,
        )
        for planned in planner.plan_rows(rows, CHUNK):
            written.add(planned)
        features = written.close()
        report.filtered = written.flt.report.removed()
        report.calibration = opts.calibration_note
        report.prior_warnings = written.prior_warnings()
        if stage is not None:
            report.verification = {"spec": opts.verify, "keep": str(opts.keep), **stage.rates.to_dict()}
        report.teachers = [u.to_dict() for u in planner.usage]
        _write_splits(tmp, written.writers, features, opts)
        if written.builder.saw_ids:
            report.teacher_tokenizer = teacher_tokenizer(teacher_identity)
        report.seconds = time.monotonic() - start
        (tmp / "README.md").write_text(dataset_card(task, teacher_identity, opts, report), "utf-8")
        (tmp / out_folder.META_FILE).write_bytes(
            orjson.dumps(_metadata(task, teacher_identity, opts, report), option=orjson.OPT_INDENT_2)
        )
        folder_swap.swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if verifier is not None:
            verifier.close()
    report.seconds = time.monotonic() - start
    if opts.push_to_hub:
        card = dataset_card(task, teacher_identity, opts, report, repo=opts.push_to_hub)
        push_export(out, opts.push_to_hub, fmt=opts.format, private=opts.private, card=card)
    return report


def _calibrator(task: Task, identity: Mapping[str, Any], opts: ExportOptions) -> Callable[..., Answer] | None:
    """What reads answers through `opts.calibration`, checked against this task and
    teacher; None without one."""
    if opts.calibration is None:
        return None
    # imported here: calibration brings numpy, which an export without one never needs
    from labeler.calibration import calibrate_answer

    if task.label_space is None:
        raise ConfigError(f"--calibration needs a label task; {task.path} is '{task.output_kind}'")
    opts.calibration.check(task.identity, identity, task.labels)
    return calibrate_answer


def _staging(out: Path, opts: ExportOptions, store: Store) -> tuple[Path, Path]:
    """The empty folders an export is written in (`tmp`, swapped in at the end) and
    stages its Arrow files in (`work`), after refusing an `out` it may not replace."""
    folder_swap.recover_interrupted(out)
    out_folder.check_out(
        out,
        kind=opts.kind,
        fmt=opts.format,
        force=opts.force,
        holds=[("the store", Path(store.path))],
        note=f"every answer is safe in the store {store.path}",
    )
    folder_swap.remove_dead_staging(out)
    tmp = folder_swap.staging(out, "tmp")
    work = folder_swap.staging(out, "work")  # arrow staging, outside tmp
    for d in (tmp, work):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    return tmp, work


class _Rows:
    """The rows of one export on their way to its split files: each planned row read
    (straight from its answer's numbers where the kind has a fast way, else through its
    answer), filtered, appended to its split's file and counted in the report."""

    def __init__(
        self,
        task: Task,
        identity: Mapping[str, Any],
        opts: ExportOptions,
        report: ExportReport,
        work: Path,
        *,
        store: Store,
        provenance: str | None,
        calibrate: Callable[..., Answer] | None,
        stage: VerifyStage | None,
    ) -> None:
        self.task, self.opts, self.report, self.work = task, opts, report, work
        self.store, self.calibrate, self.stage = store, calibrate, stage
        self.builder = RowBuilder(task, identity, opts, report)
        self.flt = Filter(opts.filters)
        self.writers: dict[str, SplitFile] = {}
        self.builder.provenance = provenance
        self.features: Features | None = None
        self.fast = (
            export_kind(opts).fast_rows(task, self.builder) if calibrate is None and stage is None else None
        )
        self.with_humans = opts.human_labels and task.output_kind == "label" and any_human_labels(store)
        # a person's pick among a verified row's answers (the review page) wins over its verdicts
        self.with_picks = opts.human_labels and stage is not None and any_human_labels(store)
        # the calibrated labels' expected shares, one reference of the label-prior check
        self.expected = _ExpectedShares(len(task.labels)) if task.label_space is not None else None

    def add(self, planned: list[Item]) -> None:
        """One chunk of planned rows (a person's labels and the verdicts read at once)."""
        humans = (
            human_labels(
                self.store, [i.key for i in planned if i.completion is not None and i.key is not None]
            )
            if self.with_humans
            else {}
        )
        checks = _checked(self.stage, planned, self.with_picks) if self.stage is not None else {}
        for forms in by_row(planned):
            self._add_row(forms, humans, checks)

    def _add_row(self, forms: list[Item], humans: Mapping[str, Any], checks: Mapping[int, Checked]) -> None:
        item, report = forms[0], self.report
        if item.reason != "input":
            report.rows_in += 1
        if item.status == REJECTED:
            report.rejected += 1
            return
        completion = item.completion
        if completion is None or any(f.completion is None for f in forms):
            report.missing += 1
            return
        fast = self.fast
        numbers = (
            fast.numbers(completion)
            if fast is not None
            and len(forms) == 1
            and item.answer is None
            and item.provenance is None
            and item.key not in humans
            else None
        )
        read = (
            self._read_fast(item.row, numbers, completion)
            if numbers is not None
            else self._read_general(forms, humans, checks)
        )
        if read is None:
            return
        values, label, source = read
        self._write(item.row, values)
        if label is not None:
            report.label_counts[label] = report.label_counts.get(label, 0) + 1
        if source is not None:
            sources = report.soft_label_sources
            sources[source] = sources.get(source, 0) + 1

    def _read_fast(
        self, row: Row, numbers: LabelNumbers, completion: Completion
    ) -> tuple[list[Any], str | None, str | None] | None:
        """The common answer, read straight to its columns; None when a filter drops it."""
        fast = self.fast
        assert fast is not None
        label = fast.label(numbers)
        if not self.flt.keep(label, fast.confidence(numbers)):
            return None
        if self.features is None:
            self.features = self.builder.features(None)
        return (fast.values(row, numbers, completion), label, "logprobs" if label is not None else None)

    def _read_general(
        self, forms: list[Item], humans: Mapping[str, Any], checks: Mapping[int, Checked]
    ) -> tuple[list[Any], str | None, str | None] | None:
        """A row through its answer; a verified row's other kept answers are written here,
        in order, and its last returned. None when a filter drops it or no row is left."""
        item = forms[0]
        read = _general_row(self.task, self.builder, self.report, forms, humans, self.flt, self.calibrate)
        if read is None:
            return None
        record, label = read
        if self.expected is not None and self.calibrate is not None:
            self.expected.add(record.get("soft_label"))
        records = (
            [record]
            if self.stage is None
            else self.builder.verified(record, item, checks[id(item)], self.report)
        )
        if not records:
            return None
        if self.features is None:
            self.features = self.builder.features(records[0])
        *more, last = [self.builder.coerce(r, self.features) for r in records]
        for values in more:
            self._write(item.row, values)
        return last, label, record.get("soft_label_source")

    def _write(self, row: Row, values: list[Any]) -> None:
        split = _split_of(row, self.opts)
        if split not in self.writers:
            assert self.features is not None
            self.writers[split] = SplitFile(self.work / f"{split}.arrow", self.features)
        self.writers[split].add(values)
        self.report.splits[split] = self.report.splits.get(split, 0) + 1
        self.report.exported += 1

    def prior_warnings(self) -> list[str]:
        """Where the exported labels' shares depart from the gold rows' or the calibrated
        distribution's (labeler/label_prior.py); none for a task without labels."""
        if self.expected is None:
            return []
        return prior_warnings(self.task.labels, self.report.label_counts, self.expected.references(self.opts))

    def close(self) -> Features:
        """Closes the split files; the features they were written with."""
        for w in self.writers.values():
            w.close()
        if self.features is None:
            self.features = self.builder.features(None)
        return self.features


def _general_row(
    task: Task,
    builder: RowBuilder,
    report: ExportReport,
    forms: list[Item],
    humans: Mapping[str, Any],
    flt: Filter,
    calibrate: Callable[..., Answer] | None,
) -> tuple[dict[str, Any], str | None] | None:
    """One row's export record and label, read through the answer objects (any kind,
    calibration, a person's label, a cascade's or an ensemble's answer); None when a
    filter drops it."""
    item = forms[0]
    row, request, completion = item.row, item.request, item.completion
    assert request is not None and completion is not None
    answer = item.answer or read_answers(task, [f.completion for f in forms if f.completion])
    opts = builder.opts
    raw = answer
    if calibrate is not None and task.label_space is not None:
        answer = calibrate(answer, opts.calibration, task.label_space)
    human = humans.get(item.key) if item.key is not None else None
    trace = completion.reasoning
    if human is not None:  # a person's decision: kept whatever the teacher's doubt
        if human.label != answer.label:
            trace = None  # the teacher's thinking argued for the label the person overruled
        answer = dataclasses.replace(answer, label=human.label, valid=True)
    waiting = human is None and item.provenance is not None and bool(item.provenance.get("awaiting_human"))
    if waiting:
        report.awaiting_human += 1
        if opts.human_labels and not opts.include_awaiting_human:
            report.held_for_human += 1
            return None  # held out: the cascade left this row to a person
    if not flt.keep(
        answer.label if task.output_kind == "label" else ("ok" if answer.valid else None),
        _HUMAN_CERTAINTY if human else answer.confidence,
    ):
        return None
    record = builder.row(row, request, completion, answer, trace)
    builder.calibration_cols(record, raw)
    if item.provenance is not None:
        for stage in _answered_by(item.provenance):
            report.stages[stage] = report.stages.get(stage, 0) + 1
        if builder.provenance:
            record.update(item.provenance)
            if "awaiting_human" in record:
                record["awaiting_human"] = waiting
    if "label_source" in builder.label_columns:
        record["label_source"] = "human" if human else "teacher"
        report.human_labeled += human is not None
    return record, answer.label


class _ExpectedShares:
    """The mean calibrated distribution of the exported rows: the label shares the
    calibrated soft labels expect, one reference of the label-prior check."""

    def __init__(self, k: int) -> None:
        self.sums = [0.0] * k
        self.rows = 0

    def add(self, probs: list[float] | None) -> None:
        if probs:
            self.sums = [a + b for a, b in zip(self.sums, probs, strict=True)]
            self.rows += 1

    def references(self, opts: ExportOptions) -> dict[str, list[float] | tuple[float, ...]]:
        refs: dict[str, list[float] | tuple[float, ...]] = {}
        if opts.gold_prior is not None:
            refs["the gold rows' labels"] = opts.gold_prior
        if self.rows:
            refs["the calibrated distribution"] = self.sums
        return refs


def _checked(stage: VerifyStage, planned: list[Item], with_picks: bool = False) -> dict[int, Checked]:
    """The verdicts of a chunk's answered rows (one store read, one write), by item; a
    row a person picked an answer of keeps that answer (`Checked.pick`)."""
    heads = [
        forms[0]
        for forms in by_row(planned)
        if forms[0].status != REJECTED and forms[0].completion is not None and forms[0].key is not None
    ]
    found = stage.check([(i.row.data, i.key, i.completion) for i in heads])  # type: ignore[misc]
    picks = human_labels(stage.store, [str(i.key) for i in heads]) if with_picks else {}
    return {
        id(i): c.pick(picks[str(i.key)].label) if str(i.key) in picks else c
        for i, c in zip(heads, found, strict=True)
    }


def _answered_by(provenance: Mapping[str, Any]) -> list[str]:
    """Who answered a row, for the report: its cascade stage, or each ensemble member."""
    if "cascade_stage" in provenance:
        return [f"cascade stage {provenance['cascade_stage']}: {provenance['teacher']}"]
    return [f"ensemble member {m['member']}: {m['teacher']}" for m in provenance.get("ensemble", ())]


def _metadata(
    task: Task, identity: Mapping[str, Any], opts: ExportOptions, report: ExportReport
) -> dict[str, Any]:
    """labeler_export.json: what a program needs to read the export back, label names in
    index order included (a jsonl file has no ClassLabel to carry them)."""
    counts = {k: v for k, v in report.to_dict().items() if k != "path"}  # no local path
    if report.verification is None:  # only a verified export says what verification found
        del counts["verification"], counts["unpaired"]
    meta = {
        "report": counts,
        "task": task.identity,
        "kind": opts.kind,
        "labels": list(task.labels),
        "ignore_label": IGNORE_LABEL if task.labels else None,
        "teacher": public_identity(identity, endpoint=opts.card_endpoint),
        "teacher_tokenizer": report.teacher_tokenizer,
        "calibration": _public_calibration(opts),
    }
    if opts.calibration_note:
        meta["calibration_note"] = opts.calibration_note
    if opts.reasoning != AUTO:  # traces were carried (or dropped) on purpose
        meta["reasoning"] = opts.reasoning
    return meta


def _public_calibration(opts: ExportOptions) -> dict[str, Any] | None:
    """The calibration as saved, with its teacher named as the card names it: a
    calibration keys itself to the teacher's identity, endpoint URL included, which may
    be private (`card_endpoint`)."""
    if opts.calibration is None:
        return None
    out = opts.calibration.to_dict()
    out["teacher"] = public_identity(out["teacher"], endpoint=opts.card_endpoint)
    return out


def push_export(
    out: Path, repo: str, *, fmt: str = "hf", private: bool = True, card: str | None = None
) -> None:
    """Upload a finished export and its card to the Hub (token: HF_TOKEN or the HF login).

    `push_to_hub` writes a card whose YAML holds the metadata the Hub's viewer and
    `load_dataset` read (`dataset_info` with the ClassLabel names, `configs`); labeler's
    card is merged into it, never over it.
    """
    try:
        if fmt == "hf":
            ds: Any = datasets.load_from_disk(str(out))
        else:
            files = {p.stem: str(p) for p in sorted(out.glob(f"*.{fmt}"))}
            ds = datasets.load_dataset("parquet" if fmt == "parquet" else "json", data_files=files)
        ds.push_to_hub(repo, private=private)
        from huggingface_hub import HfApi, hf_hub_download

        ours = card if card is not None else (out / "README.md").read_text("utf-8")
        generated = Path(hf_hub_download(repo, "README.md", repo_type="dataset")).read_text("utf-8")
        HfApi().upload_file(
            path_or_fileobj=merge_card(generated, ours).encode(),
            path_in_repo="README.md",
            repo_id=repo,
            repo_type="dataset",
        )
    except Exception as exc:  # network, auth, hub errors: the local export is intact
        text = " ".join(str(exc).split())[:300]
        raise LabelerError(
            f"push to the Hub repo '{repo}' failed (the export in {out} is "
            f"intact): {type(exc).__name__}: {text}"
        ) from exc


def _split_of(row: Row, opts: ExportOptions) -> str:
    if opts.split_field:
        value = row.data.get(opts.split_field)
        return str(value) if value not in (None, "") else "train"
    if opts.validation_size <= 0:
        return "train"
    # Deterministic per row id: a row keeps its split across reruns and refreshes.
    h = hashlib.blake2b(f"{opts.seed}:{row.id}".encode(), digest_size=8).digest()
    return "validation" if int.from_bytes(h, "big") / 2**64 < opts.validation_size else "train"


# -- writing --------------------------------------------------------------------------------


def _write_splits(
    tmp: Path, writers: Mapping[str, SplitFile], features: Features, opts: ExportOptions
) -> None:
    ordered = {k: writers[k] for k in hf_folder.order(list(writers))}
    as_dict = not (list(ordered) in ([], ["train"]) and not opts.split_field and opts.validation_size <= 0)
    if opts.format == "hf" and hf_folder.save(tmp, ordered, features, as_dict=as_dict):
        return
    datasets.disable_progress_bars()
    parts = {k: datasets.Dataset.from_file(str(w.path)) for k, w in ordered.items()}
    if not parts:
        parts["train"] = datasets.Dataset.from_dict(
            {k: [] for k in features}, features=hf.to_datasets(features)
        )
    if opts.format == "hf":
        if not as_dict:
            only = parts["train"]
            only.save_to_disk(str(tmp), num_shards=1 if len(only) == 0 else None)
        else:
            datasets.DatasetDict(parts).save_to_disk(
                str(tmp), num_shards={k: 1 for k, v in parts.items() if len(v) == 0} or None
            )
    elif opts.format == "parquet":
        for split, ds in parts.items():
            ds.to_parquet(str(tmp / f"{split}.parquet"))
    else:
        for split, ds in parts.items():
            ds.to_json(str(tmp / f"{split}.jsonl"), lines=True, force_ascii=False)


def merge_card(generated: str, ours: str) -> str:
    """Labeler's card with the YAML metadata `push_to_hub` generated merged in.

    The generated keys (`dataset_info`, `configs`) describe the files actually pushed and
    win; labeler adds its own (licence, tags, size, task) and its body.
    """
    import yaml

    def split(text: str) -> tuple[dict[str, Any], str]:
        if text.startswith("---\n"):
            head, sep, body = text[4:].partition("\n---")
            if sep:
                data = yaml.safe_load(head) or {}
                return (data if isinstance(data, dict) else {}), body.lstrip("\n")
        return {}, text

    gen_meta, _ = split(generated)
    our_meta, body = split(ours)
    merged = {**our_meta, **gen_meta}
    head = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n{body}"


def records_table(
    task: Task,
    identity: Mapping[str, Any],
    items: Iterable[Any],
    options: ExportOptions | None = None,
    humans: Mapping[str, Any] | None = None,
    stage: VerifyStage | None = None,
) -> pa.Table:
    """The `records` rows of planned items that have an answer, as one Arrow table.

    For stages that hand rows on instead of writing a dataset (labeler.ray): the same
    columns the export writes (input fields, messages, response, label, soft label,
    confidence, logprobs), from the same reading of each answer as the export's
    (`options`' calibration and filters, a person's decision from `humans` winning over
    the teacher's label), with `label` as its name (an Arrow table has no ClassLabel to
    carry the names). Items without an answer, and rows a filter drops, are left out, as
    in an export. `stage` (the verifier of `options.verify`): every answer checked as the
    export checks it, its verdicts stored, and the `verdicts`, `passed` and `pass_at_1`
    columns with `--keep`'s choice, a person's pick winning, as a verified export's.
    """
    opts = dataclasses.replace(options or ExportOptions(), kind="records", format="hf")
    items = list(items)
    checks = (
        _checked(stage, items, opts.human_labels and any_human_labels(stage.store))
        if stage is not None
        else {}
    )
    calibrate: Callable[..., Answer] | None = None
    if opts.calibration is not None and task.label_space is not None:
        from labeler.calibration import calibrate_answer as calibrate
    report = ExportReport("", "records", "hf")
    builder = RowBuilder(task, identity, opts, report)
    flt = Filter(opts.filters)
    rows: list[dict[str, Any]] = []
    features: Features | None = None
    for forms in by_row(items):
        item = forms[0]
        if item.status == REJECTED or any(f.completion is None for f in forms):
            continue
        read = _general_row(task, builder, report, forms, humans or {}, flt, calibrate)
        if read is None:
            continue
        records = [read[0]] if stage is None else builder.verified(read[0], item, checks[id(item)], report)
        for record in records:
            if features is None:
                features = builder.features(record)
            rows.append(dict(zip(features, builder.coerce(record, features), strict=True)))
    if features is None:
        features = builder.features(None)
    schema = hf.arrow_schema(features)
    if "label" in features and hf.kind(features["label"]) == "ClassLabel":
        names = features["label"]["names"]
        for row in rows:
            row["label"] = None if row["label"] == IGNORE_LABEL else names[row["label"]]
        schema = schema.set(schema.get_field_index("label"), pa.field("label", pa.string()))
    return pa.Table.from_pylist(rows, schema=schema)
