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
exchange (labeler/folder_swap.py), only over a folder an export may replace
(labeler/out_folder.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from labeler import folder_swap, hf_folder, out_folder
from labeler import hf_features as hf
from labeler.answer import Answer, read_answers
from labeler.card import dataset_card, public_identity
from labeler.completion import Completion, TokenLogprob
from labeler.errors import ConfigError, LabelerError
from labeler.filters import Filter, FilterSpec
from labeler.hf_features import Features
from labeler.hf_folder import SplitFile
from labeler.human import any_human_labels, human_labels
from labeler.inputs import Reject, Row
from labeler.plan import REJECTED, Item, Planner, by_row
from labeler.reasoning import AUTO, check_mode, inline
from labeler.request import Request
from labeler.store import Store
from labeler.targets import IGNORE_LABEL, Confidence, LabelNumbers, label_numbers
from labeler.task import Task
from labeler.verify import DEFAULT_TIMEOUT_S, Checked, Verifier, VerifyStage, parse_keep


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

    from labeler.calibration import Calibration
else:
    datasets = _Lazy("datasets")
    pa = _Lazy("pyarrow")

KINDS = ("records", "classification", "sft", "kd", "preference")
FORMATS = ("hf", "parquet", "jsonl")
SFT_SHAPES = ("prompt-completion", "messages")
KD_LAYOUTS = ("tokens", "ids")
CHUNK = 512


@dataclass
class ExportReport:
    """What went into an export: counts per split, per filter, per label."""

    path: str
    kind: str
    format: str
    rows_in: int = 0
    exported: int = 0
    missing: int = 0  # rows with no stored answer (failed or not labeled yet)
    rejected: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    # exported rows by where their soft label came from (logprobs, samples:N, verbalized…)
    soft_label_sources: dict[str, int] = field(default_factory=dict)
    human_labeled: int = 0  # rows whose label a person gave (labeler review)
    # a cascade ending in `human`: rows queued for a person that none has decided yet,
    # and how many of them were held out of the export
    awaiting_human: int = 0
    held_for_human: int = 0
    # a cascade: rows each stage labeled; an ensemble: rows each member answered
    stages: dict[str, int] = field(default_factory=dict)
    # a cascade's stages or an ensemble's members: rows answered, tokens, time, cost
    teachers: list[dict[str, Any]] = field(default_factory=list)
    # kd: the vocabulary the token ids index (None when the teacher sent no ids)
    teacher_tokenizer: str | None = None
    # --verify: pass rates over the rows with answers (labeler/verify/passk.py), and for
    # a preference export the rows left out for want of a verified or a failed answer
    verification: dict[str, Any] | None = None
    unpaired: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ExportOptions:
    kind: str = "records"
    format: str = "hf"
    filters: FilterSpec = field(default_factory=FilterSpec)
    validation_size: float = 0.0
    seed: int = 0
    split_field: str | None = None
    text_field: str | None = None
    push_to_hub: str | None = None
    private: bool = True
    human_labels: bool = True  # a label given on the review page wins over the teacher's
    # a cascade ending in `human`: export the rows still awaiting a person (with the last
    # teacher's label and `awaiting_human: true`) instead of holding them out
    include_awaiting_human: bool = False
    sft_shape: str = "prompt-completion"
    kd_layout: str = "tokens"  # "ids": also DistillKit's raw top-k columns
    card_license: str | None = None  # the card's `license` (a Hub licence id)
    card_endpoint: bool = False  # name the teacher's endpoint URL in the card
    calibration: Calibration | None = None  # read answers through it; the store is untouched
    # where a reasoning trace goes: separate | inline | drop; "auto": separate when the
    # store holds any trace, else nothing (the export resolves it)
    reasoning: str = AUTO
    # replace a previous export of another kind or format at `out` (labeler/out_folder.py)
    force: bool = False
    # --verify SPEC (labeler/verify/): every answer checked, verdicts stored; `records`
    # carry them, `sft` keeps the verified answers (`keep`: all, best or K per row) and
    # `preference` pairs a verified answer with a failed one of the same row
    verify: str | None = None
    keep: str | int = "all"
    verify_timeout: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"--kind '{self.kind}': expected one of {', '.join(KINDS)}")
        if self.kd_layout not in KD_LAYOUTS:
            raise ConfigError(f"--kd-layout '{self.kd_layout}': expected one of "
                              f"{', '.join(KD_LAYOUTS)}")
        if self.sft_shape not in SFT_SHAPES:
            raise ConfigError(f"--sft-shape '{self.sft_shape}': expected one of "
                              f"{', '.join(SFT_SHAPES)}")
        if self.format not in FORMATS:
            raise ConfigError(f"--format '{self.format}': expected one of {', '.join(FORMATS)}")
        if not 0.0 <= self.validation_size < 1.0:
            raise ConfigError("--validation-size must be in [0, 1)")
        check_mode(self.reasoning)
        parse_keep(self.keep)
        if self.verify is not None and self.kind in ("classification", "kd"):
            raise ConfigError(f"--verify goes with --kind records, sft or preference (a "
                              f"--kind {self.kind} row has no answer text to keep or drop)")
        if self.reasoning == "inline" and self.kind in _NO_ASSISTANT_MESSAGE:
            raise ConfigError(f"--reasoning inline puts the trace before the answer in an "
                              f"assistant message, which --kind {self.kind} rows do not have: "
                              "use --reasoning separate (a `reasoning` column) or drop")


def export_dataset(
    task: Task,
    teacher_identity: Mapping[str, Any],
    rows: Iterable[Row | Reject],
    store: Store,
    out: str | Path,
    options: ExportOptions | None = None,
    *,
    planner: Any = None,
) -> ExportReport:
    """Write the export for these rows to `out`, atomically; returns what it contains.

    `planner` replaces the plain `Planner` where each row's answer is chosen among
    several teachers' (a cascade's `CascadePlanner`): its items' `provenance` becomes
    columns of `records` rows and the report's `stages`."""
    return _export_dataset(task, teacher_identity, rows, store, out, options, planner)


def _export_dataset(task: Task, teacher_identity: Mapping[str, Any],
                    rows: Iterable[Row | Reject], store: Store, out: str | Path,
                    options: ExportOptions | None, planner: Any) -> ExportReport:
    opts = options or ExportOptions()
    check_preference(opts)
    if opts.kind == "classification" and task.output_kind != "label":
        raise ConfigError(f"--kind classification needs a label task; {task.path} is "
                          f"'{task.output_kind}'")
    calibrate: Callable[..., Answer] | None = None
    if opts.calibration is not None:
        # imported here: calibration brings numpy, which an export without one never needs
        from labeler.calibration import calibrate_answer as calibrate

        if task.label_space is None:
            raise ConfigError(f"--calibration needs a label task; {task.path} is "
                              f"'{task.output_kind}'")
        opts.calibration.check(task.identity, teacher_identity, task.labels)
    if opts.reasoning == AUTO and store.has_reasoning() and opts.kind != "preference":
        opts = dataclasses.replace(opts, reasoning="separate")
    out = Path(out)
    start = time.monotonic()
    report = ExportReport(str(out), opts.kind, opts.format)
    folder_swap.recover_interrupted(out)
    out_folder.check_out(out, kind=opts.kind, fmt=opts.format, force=opts.force,
                         holds=[("the store", Path(store.path))],
                         note=f"every answer is safe in the store {store.path}")
    folder_swap.remove_dead_staging(out)
    tmp = folder_swap.staging(out, "tmp")
    work = folder_swap.staging(out, "work")  # arrow staging, outside tmp
    for d in (tmp, work):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    verifier = (Verifier(opts.verify, schema=task.schema, timeout_s=opts.verify_timeout)
                if opts.verify is not None else None)
    try:
        stage = VerifyStage(verifier, store, opts.keep) if verifier is not None else None
        builder = _Builder(task, teacher_identity, opts, report)
        flt = Filter(opts.filters)
        writers: dict[str, SplitFile] = {}
        planner = planner or Planner(task, teacher_identity, store, failures=False,
                                     single_answers=True)
        builder.provenance = planner.kind if opts.kind == "records" else None
        features: Features | None = None
        fast = (_FastClassification(task, builder)
                if opts.kind == "classification" and calibrate is None and stage is None
                else None)
        with_humans = (opts.human_labels and task.output_kind == "label"
                       and any_human_labels(store))
        for planned in planner.plan_rows(rows, CHUNK):
            humans = (human_labels(store, [i.key for i in planned if i.completion is not None])
                      if with_humans else {})
            checks = _checked(stage, planned) if stage is not None else {}
            for forms in by_row(planned):
                item = forms[0]
                if item.reason != "input":
                    report.rows_in += 1
                if item.status == REJECTED:
                    report.rejected += 1
                    continue
                completion = item.completion
                if completion is None or any(f.completion is None for f in forms):
                    report.missing += 1
                    continue
                row = item.row
                numbers = (fast.numbers(completion) if fast is not None and len(forms) == 1
                           and item.answer is None and item.provenance is None
                           and item.key not in humans else None)
                if numbers is not None:  # the common answer, read straight to its columns
                    label = fast.label(numbers)
                    if not flt.keep(label, fast.confidence(numbers)):
                        continue
                    if features is None:
                        features = builder.features(None)
                    values = fast.values(row, numbers, completion)
                    source = "logprobs" if label is not None else None
                else:
                    read = _general_row(task, builder, report, forms, humans, flt, calibrate)
                    if read is None:
                        continue
                    record, label = read
                    records = ([record] if stage is None else
                               builder.verified(record, item, checks[id(item)], report))
                    if not records:
                        continue
                    if features is None:
                        features = builder.features(records[0])
                    *more, last = [builder.coerce(r, features) for r in records]
                    for values in more:  # a verified row's other kept answers, in order
                        _add(writers, work, features, _split_of(row, opts), values, report)
                    values = last
                    source = record.get("soft_label_source")
                split = _split_of(row, opts)
                if split not in writers:
                    writers[split] = SplitFile(work / f"{split}.arrow", features)
                writers[split].add(values)
                report.splits[split] = report.splits.get(split, 0) + 1
                report.exported += 1
                if label is not None:
                    report.label_counts[label] = report.label_counts.get(label, 0) + 1
                if source is not None:
                    sources = report.soft_label_sources
                    sources[source] = sources.get(source, 0) + 1
        for w in writers.values():
            w.close()
        report.filtered = flt.report.removed()
        if stage is not None:
            report.verification = {"spec": opts.verify, "keep": str(opts.keep),
                                   **stage.rates.to_dict()}
        report.teachers = [u.to_dict() for u in planner.usage]
        if features is None:
            features = builder.features(None)
        _write_splits(tmp, writers, features, opts)
        if builder.saw_ids:
            report.teacher_tokenizer = teacher_tokenizer(teacher_identity)
        report.seconds = time.monotonic() - start
        (tmp / "README.md").write_text(dataset_card(task, teacher_identity, opts, report), "utf-8")
        (tmp / out_folder.META_FILE).write_bytes(orjson.dumps(
            _metadata(task, teacher_identity, opts, report), option=orjson.OPT_INDENT_2))
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


def _general_row(task: Task, builder: _Builder, report: ExportReport, forms: list[Item],
                 humans: Mapping[str, Any], flt: Filter, calibrate: Callable[..., Answer] | None
                 ) -> tuple[dict[str, Any], str | None] | None:
    """One row's export record and label, read through the answer objects (any kind,
    calibration, a person's label, a cascade's or an ensemble's answer); None when a
    filter drops it."""
    item = forms[0]
    row, request, completion = item.row, item.request, item.completion
    assert request is not None and completion is not None
    answer = item.answer or read_answers(task, [f.completion for f in forms if f.completion])
    opts = builder.opts
    if calibrate is not None and task.label_space is not None:
        answer = calibrate(answer, opts.calibration, task.label_space)
    human = humans.get(item.key)
    trace = completion.reasoning
    if human is not None:  # a person's decision: kept whatever the teacher's doubt
        if human.label != answer.label:
            trace = None  # the teacher's thinking argued for the label the person overruled
        answer = dataclasses.replace(answer, label=human.label, valid=True)
    waiting = (human is None and item.provenance is not None
               and bool(item.provenance.get("awaiting_human")))
    if waiting:
        report.awaiting_human += 1
        if opts.human_labels and not opts.include_awaiting_human:
            report.held_for_human += 1
            return None  # held out: the cascade left this row to a person
    if not flt.keep(answer.label if task.output_kind == "label" else
                    ("ok" if answer.valid else None),
                    _HUMAN_CERTAINTY if human else answer.confidence):
        return None
    record = builder.row(row, request, completion, answer, trace)
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


def _add(writers: dict[str, SplitFile], work: Path, features: Features, split: str,
         values: list[Any], report: ExportReport) -> None:
    if split not in writers:
        writers[split] = SplitFile(work / f"{split}.arrow", features)
    writers[split].add(values)
    report.splits[split] = report.splits.get(split, 0) + 1
    report.exported += 1


def check_preference(opts: ExportOptions) -> None:
    """A preference pair is a verified answer and a failed one: without a verifier there
    are neither."""
    if opts.kind == "preference" and opts.verify is None:
        raise ConfigError("--kind preference needs --verify SPEC (a pair is a verified "
                          "answer and a failed one of the same row)")


def _checked(stage: VerifyStage, planned: list[Item]) -> dict[int, Checked]:
    """The verdicts of a chunk's answered rows (one store read, one write), by item."""
    heads = [forms[0] for forms in by_row(planned)
             if forms[0].status != REJECTED and forms[0].completion is not None
             and forms[0].key is not None]
    found = stage.check([(i.row.data, i.key, i.completion) for i in heads])  # type: ignore[misc]
    return {id(i): c for i, c in zip(heads, found, strict=True)}


def _answered_by(provenance: Mapping[str, Any]) -> list[str]:
    """Who answered a row, for the report: its cascade stage, or each ensemble member."""
    if "cascade_stage" in provenance:
        return [f"cascade stage {provenance['cascade_stage']}: {provenance['teacher']}"]
    return [f"ensemble member {m['member']}: {m['teacher']}"
            for m in provenance.get("ensemble", ())]


def teacher_tokenizer(identity: Mapping[str, Any]) -> str:
    """Names the vocabulary a teacher's token ids index: its model, and for a local GGUF
    the weights file's fingerprint (the tokenizer ships inside it; load it with
    transformers' `AutoTokenizer.from_pretrained(repo, gguf_file=...)`)."""
    name = f"{identity.get('provider')}:{identity.get('model')}"
    gguf = identity.get("gguf")
    return f"{name} (GGUF {gguf})" if gguf else name


def _metadata(task: Task, identity: Mapping[str, Any], opts: ExportOptions,
              report: ExportReport) -> dict[str, Any]:
    """labeler_export.json: what a program needs to read the export back, label names in
    index order included (a jsonl file has no ClassLabel to carry them)."""
    counts = {k: v for k, v in report.to_dict().items() if k != "path"}  # no local path
    if report.verification is None:  # only a verified export says what verification found
        del counts["verification"], counts["unpaired"]
    meta = {"report": counts, "task": task.identity, "kind": opts.kind,
            "labels": list(task.labels), "ignore_label": IGNORE_LABEL if task.labels else None,
            "teacher": public_identity(identity, endpoint=opts.card_endpoint),
            "teacher_tokenizer": report.teacher_tokenizer,
            "calibration": opts.calibration.to_dict() if opts.calibration else None}
    if opts.reasoning != AUTO:  # traces were carried (or dropped) on purpose
        meta["reasoning"] = opts.reasoning
    return meta


def push_export(out: Path, repo: str, *, fmt: str = "hf", private: bool = True,
                card: str | None = None) -> None:
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
        generated = Path(hf_hub_download(repo, "README.md", repo_type="dataset")).read_text(
            "utf-8")
        HfApi().upload_file(path_or_fileobj=merge_card(generated, ours).encode(),
                            path_in_repo="README.md", repo_id=repo, repo_type="dataset")
    except Exception as exc:  # network, auth, hub errors: the local export is intact
        text = " ".join(str(exc).split())[:300]
        raise LabelerError(f"push to the Hub repo '{repo}' failed (the export in {out} is "
                           f"intact): {type(exc).__name__}: {text}") from exc


# -- rows -----------------------------------------------------------------------------------


class _Builder:
    """Turns (row, request, completion, answer) into one export row of the chosen kind."""

    def __init__(self, task: Task, identity: Mapping[str, Any], opts: ExportOptions,
                 report: ExportReport) -> None:
        self.task = task
        self.identity = identity
        self.opts = opts
        self.input_fields: list[str] | None = None
        self.text_field = opts.text_field or (task.fields[0] if task.fields else None)
        self.saw_ids = False  # whether any kd token came with a vocabulary id
        self.provenance: str | None = None  # "cascade" | "ensemble": records rows say who answered
        self._plan: list[tuple[str, dict[str, int] | None, list[str] | None, str | None,
                               type | None]] = []
        self._plan_for: Features | None = None
        self.label_columns = (("label_source",) if task.output_kind == "label" and
                              opts.kind in ("records", "classification") else ())
        # how a reasoning trace is carried: "separate" (a field or column of its own),
        # "inline" (before the answer) or not at all ("drop", and "auto" left unresolved:
        # no trace in the store)
        self.reasoning = opts.reasoning
        self.reasoning_column = (opts.kind in ("records", "classification")
                                 and self.reasoning in ("separate", "inline"))
        self.output_columns = (_OUTPUT_COLUMNS | {"reasoning"} if self.reasoning_column
                               else _OUTPUT_COLUMNS)
        if opts.verify is not None:
            self.output_columns = self.output_columns | _VERIFY_COLUMNS

    def row(self, row: Row, request: Request, completion: Completion, answer: Answer,
            trace: str | None) -> dict[str, Any]:
        """One export row; `trace` is the reasoning it carries (the answer's, or None)."""
        kind = self.opts.kind
        if self.input_fields is None:
            self.input_fields = [k for k in row.data if k not in _RESERVED]
        if kind == "classification":
            rec = {"id": row.id, "text": self._text(row), **self._label_cols(answer)}
            if self.reasoning_column:
                rec["reasoning"] = trace
            return rec
        if kind == "sft":
            return self._sft_row(row, request, answer, trace)
        if kind == "kd":
            return {"id": row.id, "prompt": request.prompt,
                    "messages": None if request.messages is None else list(request.messages),
                    "response": completion.text, **self._kd_cols(completion)}
        rec: dict[str, Any] = {"id": row.id}
        for k in self.input_fields:
            rec[self._input_column(k)] = row.data.get(k)
        rec["messages"] = self._messages(request, completion.text) if request.messages else None
        rec["prompt"] = request.prompt
        rec["response"] = completion.text
        if self.task.output_kind == "label":
            rec.update(self._label_cols(answer))
        elif self.task.output_kind == "json":
            rec["parsed"] = orjson.dumps(answer.parsed).decode() if answer.valid else None
        rec["teacher"] = f"{self.identity.get('provider')}:{self.identity.get('model')}"
        rec["teacher_model"] = completion.model
        rec["template"] = self.task.identity
        rec["finish_reason"] = completion.finish_reason
        rec["logprobs"] = [
            {"token": t.token, "logprob": t.logprob,
             "top_logprobs": [{"token": a, "logprob": lp} for a, lp in t.top]}
            for t in completion.tokens or []
        ]
        if self.reasoning == "inline" and rec["messages"]:
            rec["messages"][-1]["content"] = inline(trace, completion.text)
        if self.reasoning_column:
            rec["reasoning"] = trace
        return rec

    def _sft_row(self, row: Row, request: Request, answer: Answer, trace: str | None
                 ) -> dict[str, Any]:
        """An `sft` row, its trace carried as the reasoning mode says: the assistant
        message's `reasoning_content` (Qwen3's and DeepSeek's chat templates render it
        inside <think>), inline before the answer, or not at all."""
        return self._sft_reply(row, request, self._answer_text(answer), trace)

    def _sft_reply(self, row: Row, request: Request, reply: str, trace: str | None
                   ) -> dict[str, Any]:
        mode = self.reasoning
        if mode == "inline":
            reply = inline(trace, reply)
        if request.prompt is not None:
            rec = {"id": row.id, "prompt": request.prompt,
                   "completion": self.task.answer_prefix + reply}
            if mode == "separate":
                rec["reasoning_content"] = trace
            return rec
        turn: dict[str, Any] = {"role": "assistant", "content": reply}
        if mode == "separate":
            turn["reasoning_content"] = trace
        if self.opts.sft_shape == "messages":
            lead = [dict(m) for m in request.messages or ()]
            if mode == "separate":  # one struct type for every message of the list
                lead = [{**m, "reasoning_content": None} for m in lead]
            return {"id": row.id, "messages": [*lead, turn]}
        # TRL's conversational prompt-completion: the loss covers the completion only,
        # never the template's few-shot answers that sit in the prompt.
        return {"id": row.id, "prompt": [dict(m) for m in request.messages or ()],
                "completion": [turn]}

    def verified(self, record: dict[str, Any], item: Item, checked: Checked,
                 report: ExportReport) -> list[dict[str, Any]]:
        """The export rows of one verified row: `records` gets every answer with its
        verdict; `sft` one row per kept answer; `preference` one pair per kept answer,
        each with a failed answer of the row (in turn), none when either side is missing.
        A reasoning trace goes only with the answer it led to: a sampled completion's
        samples have none of their own."""
        kind = self.opts.kind
        answers, verdicts, kept = checked.answers, checked.verdicts, checked.kept
        if kind == "records":
            record["verdicts"] = [
                {"sample": i, "text": a, "status": v.status, "score": v.score,
                 "detail": v.detail, "kept": i in kept}
                for i, (a, v) in enumerate(zip(answers, verdicts, strict=True))]
            passed = sum(v.passed for v in verdicts)
            record["passed"] = passed
            record["pass_at_1"] = passed / len(answers) if answers else None
            return [record]
        assert item.request is not None and item.completion is not None
        trace = None if item.completion.sampled else item.completion.reasoning
        if kind == "sft":
            return [{**self._sft_reply(item.row, item.request, answers[i], trace), "sample": i}
                    for i in kept]
        failed = checked.failed
        if not kept or not failed:
            report.unpaired += 1
            return []
        pairs = []
        for n, i in enumerate(kept):
            j = failed[n % len(failed)]
            pairs.append(self._pair(item.row, item.request, answers[i], answers[j], i, j))
        return pairs

    def _pair(self, row: Row, request: Request, chosen: str, rejected: str, i: int, j: int
              ) -> dict[str, Any]:
        """A row of TRL's preference format: conversational (message lists) for a chat
        template, standard (strings) for a completion-mode one."""
        if request.prompt is not None:
            prefix = self.task.answer_prefix
            return {"id": row.id, "prompt": request.prompt, "chosen": prefix + chosen,
                    "rejected": prefix + rejected, "chosen_sample": i, "rejected_sample": j}
        return {"id": row.id, "prompt": [dict(m) for m in request.messages or ()],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "chosen_sample": i, "rejected_sample": j}

    def _input_column(self, name: str) -> str:
        """Input fields keep their names unless an output column has it (gold `label` ->
        `input_label`), so a gold column never overwrites the teacher's answer."""
        return f"input_{name}" if name in self.output_columns else name

    def _kd_cols(self, completion: Completion) -> dict[str, Any]:
        """Per answer token: text, exact bytes, vocabulary id (when the server sent one),
        logprob; and the top-k alternatives the same way. With `kd_layout="ids"` also the
        columns of DistillKit's raw top-k format (`token_ids`, `top_values`: per position
        the k ids and logprobs), for a student that shares the teacher's tokenizer."""
        toks = completion.tokens or []
        ids = [t.id for t in toks]
        if any(i is not None for i in ids):
            self.saw_ids = True
        cols: dict[str, Any] = {
            "tokens": [t.token for t in toks],
            "token_bytes": [self._bytes(t.token_bytes) for t in toks],
            "response_ids": ids,
            "token_logprobs": [t.logprob for t in toks],
            "top_logprobs": [_alternatives(t, self._bytes) for t in toks],
        }
        if self.opts.kd_layout == "ids":
            if any(i is None for i in ids) or any(
                    len(t.top_ids) != len(t.top) or None in t.top_ids for t in toks):
                raise ConfigError("--kd-layout ids needs token ids, which this teacher's server "
                                  "did not send (llama.cpp's server sends them; API teachers "
                                  "do not): export --kind kd without it")
            cols["token_ids"] = [list(t.top_ids) for t in toks]
            cols["top_values"] = [[lp for _, lp in t.top] for t in toks]
        return cols

    def _bytes(self, data: bytes) -> bytes | list[int]:
        """Token bytes as Arrow binary, or for JSON lines as a list of byte values (as the
        providers send them): JSON has no bytes, and a cut character is not text."""
        return list(data) if self.opts.format == "jsonl" else data

    def _answer_text(self, answer: Answer) -> str:
        if (self.task.output_kind == "label" and answer.label is not None
                and self.task.label_space and not self.task.verbalized):
            return self.task.label_space.verbalizers[answer.label][0]
        return answer.text

    def _messages(self, request: Request, reply: str) -> list[dict[str, str]]:
        return [dict(m) for m in request.messages or ()] + [
            {"role": "assistant", "content": reply}
        ]

    def _text(self, row: Row) -> str:
        if self.text_field is None:
            return ""
        value = row.data.get(self.text_field)
        return "" if value is None else str(value)

    def _label_cols(self, answer: Answer) -> dict[str, Any]:
        """Label columns; a row whose answer named no label (kept with --keep-invalid) gets
        `valid` False, the ignored label and no soft label: its renormalised distribution
        is over the little mass that did land on labels and would look confident."""
        soft = answer.soft if answer.label is not None else None
        conf = answer.confidence
        return {
            "label": answer.label,
            "valid": answer.label is not None,
            "soft_label": list(soft.probs) if soft else None,
            "outside_mass": answer.soft.outside if answer.soft else None,
            "soft_label_source": soft.source if soft else None,
            "max_prob": conf.max_prob if conf and soft else None,
            "margin": conf.margin if conf and soft else None,
            "entropy": conf.entropy if conf and soft else None,
            "mean_logprob": conf.mean_logprob if conf else None,
            "agreement": conf.agreement if conf else None,
        }

    def features(self, sample: dict[str, Any] | None) -> Features:
        f: Features = {"id": hf.value("string")}
        kind = self.opts.kind
        msg = hf.list_of({"role": hf.value("string"), "content": hf.value("string")})
        # an assistant turn that carries its trace apart (the field chat templates read)
        traced = (hf.list_of({"role": hf.value("string"), "content": hf.value("string"),
                              "reasoning_content": hf.value("string")})
                  if self.reasoning == "separate" else msg)
        top = hf.list_of({"token": hf.value("string"), "logprob": hf.value("float64")})
        label_f = {
            "label": hf.class_label(list(self.task.labels)),
            "valid": hf.value("bool"),
            "soft_label": hf.list_of(hf.value("float64")),
            "outside_mass": hf.value("float64"),
            "soft_label_source": hf.value("string"),
            "max_prob": hf.value("float64"),
            "margin": hf.value("float64"),
            "entropy": hf.value("float64"),
            "mean_logprob": hf.value("float64"),
            "agreement": hf.value("float64"),
            "label_source": hf.value("string"),  # teacher | human
        }
        if kind == "classification":
            f["text"] = hf.value("string")
            f.update(label_f)
            if self.reasoning_column:
                f["reasoning"] = hf.value("string")
        elif kind == "sft":
            if self.task.mode == "completion":
                f["prompt"] = hf.value("string")
                f["completion"] = hf.value("string")
                if self.reasoning == "separate":
                    f["reasoning_content"] = hf.value("string")
            elif self.opts.sft_shape == "messages":
                f["messages"] = traced
            else:
                f["prompt"] = msg
                f["completion"] = traced
            if self.opts.verify is not None:
                f["sample"] = hf.value("int64")  # which of the row's answers it is
        elif kind == "preference":
            side = hf.value("string") if self.task.mode == "completion" else msg
            f.update({"prompt": side, "chosen": side, "rejected": side,
                      "chosen_sample": hf.value("int64"),
                      "rejected_sample": hf.value("int64")})
        elif kind == "kd":
            raw = (hf.list_of(hf.value("uint8")) if self.opts.format == "jsonl"
                   else hf.value("binary"))
            f.update({
                "prompt": hf.value("string"), "messages": msg,
                "response": hf.value("string"),
                "tokens": hf.list_of(hf.value("string")),
                "token_bytes": hf.list_of(raw),
                "response_ids": hf.list_of(hf.value("int64")),
                "token_logprobs": hf.list_of(hf.value("float64")),
                "top_logprobs": hf.list_of(hf.list_of({
                    "token": hf.value("string"), "bytes": raw,
                    "id": hf.value("int64"), "logprob": hf.value("float64")})),
            })
            if self.opts.kd_layout == "ids":
                f["token_ids"] = hf.list_of(hf.list_of(hf.value("int64")))
                f["top_values"] = hf.list_of(hf.list_of(hf.value("float32")))
        else:
            for k in self.input_fields or []:
                col = self._input_column(k)
                f[col] = _value_feature(sample.get(col) if sample else None)
            f["messages"] = msg
            f["prompt"] = hf.value("string")
            f["response"] = hf.value("string")
            if self.task.output_kind == "label":
                f.update(label_f)
            elif self.task.output_kind == "json":
                f["parsed"] = hf.value("string")
            for k in ("teacher", "teacher_model", "template", "finish_reason"):
                f[k] = hf.value("string")
            f["logprobs"] = hf.list_of({
                "token": hf.value("string"), "logprob": hf.value("float64"),
                "top_logprobs": top,
            })
            if self.reasoning_column:
                f["reasoning"] = hf.value("string")
            if self.opts.verify is not None:
                f["verdicts"] = hf.list_of({
                    "sample": hf.value("int64"), "text": hf.value("string"),
                    "status": hf.value("string"), "score": hf.value("float64"),
                    "detail": hf.value("string"), "kept": hf.value("bool")})
                f["passed"] = hf.value("int64")
                f["pass_at_1"] = hf.value("float64")
            if self.provenance == "ensemble":
                f["ensemble"] = hf.list_of({
                    "member": hf.value("int64"), "teacher": hf.value("string"),
                    "weight": hf.value("float64"), "label": hf.value("string"),
                    "valid": hf.value("bool"),
                    "soft_label": hf.list_of(hf.value("float64"))})
            elif self.provenance == "cascade":
                f["cascade_stage"] = hf.value("int64")
                f["cascade"] = hf.list_of({
                    "stage": hf.value("int64"), "teacher": hf.value("string"),
                    "label": hf.value("string"), "valid": hf.value("bool"),
                    "soft_label": hf.list_of(hf.value("float64")),
                    "confidence": hf.value("float64")})
                if sample is not None and "awaiting_human" in sample:
                    f["awaiting_human"] = hf.value("bool")
        return f

    def coerce(self, rec: dict[str, Any], features: Features) -> list[Any]:
        """A row's values in the order of the declared features, made to fit them (input
        columns are typed by the first row)."""
        if self._plan_for is not features:  # what each column needs, decided once, not per row
            self._plan = []
            for name, feat in features.items():
                t = hf.kind(feat)
                names = feat["names"] if t == "ClassLabel" else None
                dtype = feat["dtype"] if t == "Value" else None
                self._plan.append((name, _label_index(names) if names is not None else None,
                                   names, dtype, _EXACT.get(dtype) if dtype else None))
            self._plan_for = features
        out = []
        for name, index, names, dtype, exact in self._plan:
            value = rec.get(name)
            if index is not None:
                if value is None:
                    value = IGNORE_LABEL
                else:  # a label name; anything else as ClassLabel reads it (or its error)
                    found = index.get(value) if type(value) is str else None
                    value = found if found is not None else _class_label(names).str2int(value)
            elif dtype is not None and value is not None and type(value) is not exact:
                value = _coerce_value(value, dtype)
            out.append(value)
        return out


class _FastClassification:
    """A classification row straight from its answer's numbers (`label_numbers`): no
    `Answer`, `SoftLabel` or `Confidence`, no record dict, no per-column coercion. The
    values are those `_Builder.row` and `coerce` give (tests/test_export_golden.py holds
    the files to that); any answer `label_numbers` does not read goes the general way."""

    COLUMNS = ("id", "text", "label", "valid", "soft_label", "outside_mass",
               "soft_label_source", "max_prob", "margin", "entropy", "mean_logprob",
               "agreement", "label_source")

    def __init__(self, task: Task, builder: _Builder) -> None:
        assert task.label_space is not None  # a classification export is of a label task
        self.space = task.label_space
        self.labels = task.labels
        self.completion_mode = task.mode == "completion"
        self.text = builder._text
        spec = builder.opts.filters
        self.thresholds = (spec.min_confidence is not None or spec.min_margin is not None
                           or spec.max_entropy is not None)
        self.traced = builder.reasoning_column  # a `reasoning` column after the others
        columns = (*self.COLUMNS, "reasoning") if self.traced else self.COLUMNS
        # a verbalized answer's numbers are in its text, not its tokens: the general way
        self.active = tuple(builder.features(None)) == columns and not task.verbalized

    def numbers(self, completion: Completion) -> LabelNumbers | None:
        if not self.active:
            return None
        return label_numbers(completion, self.space, self.completion_mode)

    def label(self, numbers: LabelNumbers) -> str | None:
        index = numbers[0]
        return None if index is None else self.labels[index]

    def confidence(self, numbers: LabelNumbers) -> Confidence | None:
        """What a filter reads; built only when a threshold will read it."""
        if not self.thresholds:
            return None
        return Confidence(numbers[3], numbers[4], numbers[5], numbers[6])

    def values(self, row: Row, numbers: LabelNumbers, completion: Completion) -> list[Any]:
        index, probs, outside, max_prob, margin, entropy, mean_logprob = numbers
        rid = row.id if type(row.id) is str else _coerce_value(row.id, "string")
        if index is None:  # named no label (kept with --keep-invalid): see `_label_cols`
            out = [rid, self.text(row), IGNORE_LABEL, False, None, outside, None, None,
                   None, None, mean_logprob, None, "teacher"]
        else:
            out = [rid, self.text(row), index, True, list(probs), outside, "logprobs",
                   max_prob, margin, entropy, mean_logprob, None, "teacher"]
        if self.traced:
            out.append(completion.reasoning)
        return out


def _label_index(names: list[str]) -> dict[str, int]:
    """Label name -> ClassLabel index, for the names as they are (`str2int` also accepts
    padded names and digits, and is asked for those)."""
    return {name: i for i, name in enumerate(names)}


def _class_label(names: list[str]) -> datasets.ClassLabel:
    """datasets' own ClassLabel, for a label value that is not one of the names as they are
    (a padded name, a digit): it reads those, or raises its error, as any loader would."""
    return datasets.ClassLabel(names=names)


_RESERVED = {"id"}
_NO_ASSISTANT_MESSAGE = ("classification", "kd")  # kinds --reasoning inline cannot apply to
_HUMAN_CERTAINTY = Confidence(max_prob=1.0, margin=1.0, entropy=0.0)
_OUTPUT_COLUMNS = {
    "messages", "prompt", "response", "label", "valid", "soft_label", "outside_mass",
    "soft_label_source", "max_prob", "margin", "entropy", "mean_logprob", "agreement",
    "label_source",
    "parsed", "teacher", "teacher_model", "template", "finish_reason", "logprobs",
}
_VERIFY_COLUMNS = {"verdicts", "passed", "pass_at_1"}


def _alternatives(tok: TokenLogprob, as_bytes: Callable[[bytes], Any]) -> list[dict[str, Any]]:
    ids = tok.top_ids or (None,) * len(tok.top)
    raws = tok.top_raw or (None,) * len(tok.top)
    return [{"token": a, "bytes": as_bytes(raw if raw is not None else a.encode("utf-8")),
             "id": i, "logprob": lp}
            for (a, lp), i, raw in zip(tok.top, ids, raws, strict=False)]


def _value_feature(value: Any) -> hf.Feature:
    if isinstance(value, bool):
        return hf.value("bool")
    if isinstance(value, int):
        return hf.value("int64")
    if isinstance(value, float):
        return hf.value("float64")
    return hf.value("string")


# A value already of exactly this Python type passes `_coerce_value` unchanged: skip the call.
_EXACT: dict[str, type] = {"string": str, "int64": int, "float64": float, "bool": bool}


def _coerce_value(value: Any, dtype: str) -> Any:
    try:
        if dtype == "string":
            return value if isinstance(value, str) else orjson.dumps(value).decode()
        if dtype == "int64":
            return int(value)
        if dtype == "float64":
            return float(value)
        if dtype == "bool":
            return bool(value)
    except (TypeError, ValueError, orjson.JSONEncodeError):
        return None
    return value


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


def _write_splits(tmp: Path, writers: Mapping[str, SplitFile], features: Features,
                  opts: ExportOptions) -> None:
    ordered = {k: writers[k] for k in hf_folder.order(list(writers))}
    as_dict = not (list(ordered) in ([], ["train"]) and not opts.split_field
                   and opts.validation_size <= 0)
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


def records_table(task: Task, identity: Mapping[str, Any], items: Iterable[Any]) -> pa.Table:
    """The `records` rows of planned items that have an answer, as one Arrow table.

    For stages that hand rows on instead of writing a dataset (labeler.ray): the same
    columns the export writes (input fields, messages, response, label, soft label,
    confidence, logprobs), from the same builder, with `label` as its name (an Arrow
    table has no ClassLabel to carry the names). Items without an answer are left out,
    as in an export.
    """
    builder = _Builder(task, identity, ExportOptions(), ExportReport("", "records", "hf"))
    rows: list[dict[str, Any]] = []
    features: Features | None = None
    for forms in by_row(list(items)):
        item = forms[0]
        if item.status == REJECTED or any(f.completion is None for f in forms):
            continue
        answer = item.answer or read_answers(task, [f.completion for f in forms])
        record = builder.row(item.row, item.request, item.completion, answer,
                             item.completion.reasoning)
        if "label_source" in builder.label_columns:
            record["label_source"] = "teacher"
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
