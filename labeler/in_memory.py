"""Label data held in memory and get a `datasets.Dataset` back: the notebook path.

    ds = labeler.label(df, "sentiment", "openai:gpt-4o-mini", store="labels.sqlite",
                       kind="classification")

A dataset in, a dataset out. There is no second orchestrator here: the rows are read
from the in-memory object the way `read_rows` reads a file (same checks, same rejects,
``<DataFrame>:3: ...`` instead of ``file:3: ...``), a `Job` labels them with the one live
strategy into the store (same cache keys, so a rerun, a CLI run or a refresh over the same
rows sends nothing again), and the one export writes the chosen kind, which is read back
into memory. Jupyter already runs an event loop, where `asyncio.run` refuses to start:
`alabel` is the awaitable form, and `label` runs on a worker thread with its own loop when
it finds one running, so the same call works in a script and in a notebook cell.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from labeler import aio
from labeler.errors import ConfigError, InputError
from labeler.exports.options import ExportKindName, ExportOptions, calibration_fields
from labeler.exports.out_folder import META_FILE
from labeler.filters import FilterSpec
from labeler.hub_input import is_hub
from labeler.input_map import parse_input_map
from labeler.inputs import Reject, Row, read_records
from labeler.job import Job, JobResult, run_job
from labeler.options import (
    EnsembleCombine,
    EscalateOn,
    KeepAnswers,
    ReasoningEffort,
    SoftLabelSource,
    default,
)
from labeler.pricing import PriceTable
from labeler.progress import interactive
from labeler.setups import Setup
from labeler.summary import RunSummary
from labeler.task import Task
from labeler.teachers.base import Teacher

if TYPE_CHECKING:
    import datasets

# label()'s result: the export read back into memory.
Exported: TypeAlias = "datasets.Dataset | datasets.DatasetDict"
# The export's fixed sets of values, as types (tests/test_label_parameters.py keeps them
# equal to what labeler/exports/options.py and labeler/reasoning.py accept).
SftShape = Literal["prompt-completion", "messages"]
KdLayout = Literal["tokens", "ids"]
ReasoningMode = Literal["auto", "separate", "inline", "drop"]
_BATCH = 2048


def label(
    data: Any,
    task: str | Path | Task,
    teacher: str | Teacher,
    *,
    store: str | Path | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    teacher_options: Mapping[str, Any] | None = None,
    setup: Setup | None = None,
    cascade: str | Sequence[str] | None = default("cascade"),
    escalate_below: str | float | Sequence[float] | None = default("escalate_below"),
    escalate_on: EscalateOn = default("escalate_on"),
    ensemble: str | Sequence[str] | None = default("ensemble"),
    ensemble_combine: EnsembleCombine = default("ensemble_combine"),
    concurrency: int = default("concurrency"),
    rpm: float | None = default("rpm"),
    tpm: float | None = default("tpm"),
    max_attempts: int = default("max_attempts"),
    retry_initial_wait: float | None = default("retry_initial_wait"),
    retry_failed: bool = default("retry_failed"),
    request_timeout: float = default("request_timeout"),
    stop_grace_s: float = default("stop_grace_s"),
    budget_usd: float | None = default("budget_usd"),
    prices: PriceTable | None = None,
    max_age_days: float | None = default("max_age_days"),
    reasoning_effort: ReasoningEffort | None = default("reasoning_effort"),
    thinking_budget: int | None = default("thinking_budget"),
    local_context: int | None = default("local_context"),
    samples: int | None = default("samples"),
    soft_labels: SoftLabelSource = default("soft_labels"),
    verify: str | None = default("verify"),
    keep: KeepAnswers = default("keep"),
    verify_timeout: float = default("verify_timeout"),
    judge_calibration: str | None = default("judge_calibration"),
    id_field: str | None = None,
    input_map: Mapping[str, str] | Sequence[str] | None = None,
    limit: int | None = None,
    rejects: str | Path | None = None,
    kind: ExportKindName = "records",
    filters: FilterSpec | None = None,
    validation_size: float = 0.0,
    seed: int = 0,
    split_field: str | None = None,
    text_field: str | None = None,
    sft_shape: SftShape = "prompt-completion",
    kd_layout: KdLayout = "tokens",
    reasoning: ReasoningMode = "auto",
    push_to_hub: str | None = None,
    public: bool = False,
    card_license: str | None = None,
    card_endpoint: bool = False,
    gold: str | None = None,
    gold_map: Mapping[str, str] | None = None,
    calibration: str | Path | None = None,
    progress: bool | None = None,
    on_warning: Callable[[str], None] | None = None,
    return_summary: bool = False,
) -> Exported | tuple[Exported, RunSummary]:
    """Label `data` with `teacher` and return the export as an in-memory `datasets.Dataset`.

    Rows already answered in the store cost nothing: a rerun, a CLI run or a refresh over
    the same rows sends no request again. Each option is the CLI flag of the same name
    (``labeler run --help``), with the same default and the same one-line error for a bad
    value.

    Args:
        data: a `datasets.Dataset`, a pandas DataFrame, a list of dicts, or a Hub dataset
            as ``"hf://datasets/NAME[:CONFIG][:SPLIT]"`` (streamed).
        task: a shipped template name, a template path or a loaded `Task`.
        teacher: ``PROVIDER:MODEL``, or a `Teacher`, which stays the caller's (not closed).
        store: the SQLite store, cache and journal; default the user's, as ``labeler run``'s.
        base_url, api_key: the teacher's endpoint and key (default: the provider's and its
            environment variable).
        teacher_options: further options of the teacher's provider.
        setup: who answers, built in Python (`Cascade`, `Ensemble`, `Single`); replaces
            `teacher`, `cascade` and `ensemble`.
        cascade, escalate_below, escalate_on: teachers asked in turn, cheapest first
            (``["a:m1", "b:m2"]``), a row going on while its confidence (`escalate_on`)
            is below `escalate_below`.
        ensemble, ensemble_combine: teachers that all answer every row; the soft label
            mixes theirs (``mean``) or multiplies them (``product``).
        concurrency: the ceiling of requests in flight (below it the number adapts).
        rpm, tpm: request and token rate caps per minute (default: learned from headers).
        max_attempts, retry_initial_wait, retry_failed: tries per row, the first backoff
            step, and whether rows whose failure is stored are sent again.
        request_timeout: seconds one attempt may take, connect to last byte.
        stop_grace_s: after a stop, seconds the requests in flight get to land.
        budget_usd, prices: no new request past this spend, priced by this table.
        max_age_days: relabel answers older than this.
        reasoning_effort, thinking_budget: a reasoning teacher's effort, Anthropic's
            thinking tokens (both part of the cache key).
        local_context: ``local:`` teachers: tokens each request may use (prompt and
            answer); raise it for long prompts the local server finds too long.
        samples, soft_labels: answers per row where the soft label comes from samples, and
            where soft labels come from.
        verify, keep, verify_timeout: check every answer (``exact:FIELD``…) and which
            verified answers an ``sft`` or ``preference`` export keeps.
        judge_calibration: a ``judge:`` step's saved calibration (``labeler eval
            --save-judge-calibration``), applied to its soft label before it scores.
        id_field: the input field naming each row (default: an ``id`` column, else the
            row's position).
        input_map: template field to input column, ``{"text": "sentence"}``.
        limit: label only the first N rows.
        rejects: a JSONL file for the rows that cannot be labeled as they are.
        kind: the export: ``records``, ``classification``, ``sft``, ``kd`` or ``preference``.
        filters: thresholds a kept row meets (`FilterSpec`).
        validation_size, seed, split_field: a validation split (stable per row id), or
            the input field naming each row's split; then the result is a `DatasetDict`.
        text_field: the input field a ``classification`` export's `text` is read from.
        sft_shape, kd_layout, reasoning: the ``sft`` rows' shape, the ``kd`` columns'
            layout, and where a reasoning trace goes.
        push_to_hub: also upload the export to this Hugging Face dataset repo (token:
            ``HF_TOKEN`` or the Hub login), with its dataset card. Private unless `public`.
        card_license: the data's licence in the card (a Hub id: ``mit``, ``cc-by-4.0``…).
        card_endpoint: name the teacher's endpoint URL in the card (off: it may be private).
        gold: the field of `data` holding gold labels on some rows, which the soft labels
            are calibrated on (at least 20 rows); by default the one field whose values are
            all label names, if there is one (``--gold``).
        gold_map: gold values in other words than the labels (``{"0": "negative"}``).
        calibration: ``"auto"`` (None: from the gold rows, raw without), ``"none"`` (the
            raw teacher), ``"batch"`` (gold-free) or a file of ``labeler eval
            --save-calibration`` (``--calibration``).
        progress: a progress bar; default where someone watches (a terminal, a notebook).
        on_warning: called with each warning (rows left out, template notes); default stderr.
        return_summary: return ``(dataset, RunSummary)``, so cost, failed and filtered rows
            are read without looking at stderr.

    Rows the teacher could not answer are left out of the result, as in an export, and
    named in the warnings; a rerun sends only them. Works with or without a running event
    loop (see the module docstring); in async code prefer ``await alabel(...)``.
    """
    options = {name: value for name, value in locals().items() if name not in ("data", "task", "teacher")}
    coro = alabel(data, task, teacher, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return aio.run(coro)
    # A loop is running in this thread (Jupyter): it cannot be re-entered, so the job
    # runs to completion on a thread of its own with a loop of its own.
    with ThreadPoolExecutor(1, thread_name_prefix="labeler-label") as pool:
        return pool.submit(aio.run, coro).result()


async def alabel(
    data: Any,
    task: str | Path | Task,
    teacher: str | Teacher,
    *,
    store: str | Path | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    teacher_options: Mapping[str, Any] | None = None,
    setup: Setup | None = None,
    cascade: str | Sequence[str] | None = default("cascade"),
    escalate_below: str | float | Sequence[float] | None = default("escalate_below"),
    escalate_on: EscalateOn = default("escalate_on"),
    ensemble: str | Sequence[str] | None = default("ensemble"),
    ensemble_combine: EnsembleCombine = default("ensemble_combine"),
    concurrency: int = default("concurrency"),
    rpm: float | None = default("rpm"),
    tpm: float | None = default("tpm"),
    max_attempts: int = default("max_attempts"),
    retry_initial_wait: float | None = default("retry_initial_wait"),
    retry_failed: bool = default("retry_failed"),
    request_timeout: float = default("request_timeout"),
    stop_grace_s: float = default("stop_grace_s"),
    budget_usd: float | None = default("budget_usd"),
    prices: PriceTable | None = None,
    max_age_days: float | None = default("max_age_days"),
    reasoning_effort: ReasoningEffort | None = default("reasoning_effort"),
    thinking_budget: int | None = default("thinking_budget"),
    local_context: int | None = default("local_context"),
    samples: int | None = default("samples"),
    soft_labels: SoftLabelSource = default("soft_labels"),
    verify: str | None = default("verify"),
    keep: KeepAnswers = default("keep"),
    verify_timeout: float = default("verify_timeout"),
    judge_calibration: str | None = default("judge_calibration"),
    id_field: str | None = None,
    input_map: Mapping[str, str] | Sequence[str] | None = None,
    limit: int | None = None,
    rejects: str | Path | None = None,
    kind: ExportKindName = "records",
    filters: FilterSpec | None = None,
    validation_size: float = 0.0,
    seed: int = 0,
    split_field: str | None = None,
    text_field: str | None = None,
    sft_shape: SftShape = "prompt-completion",
    kd_layout: KdLayout = "tokens",
    reasoning: ReasoningMode = "auto",
    push_to_hub: str | None = None,
    public: bool = False,
    card_license: str | None = None,
    card_endpoint: bool = False,
    gold: str | None = None,
    gold_map: Mapping[str, str] | None = None,
    calibration: str | Path | None = None,
    progress: bool | None = None,
    on_warning: Callable[[str], None] | None = None,
    return_summary: bool = False,
) -> Exported | tuple[Exported, RunSummary]:
    """`label`, awaitable: for code (and notebooks) that already run an event loop. The
    options are `label`'s."""
    return await _label(dict(locals()))


async def _label(given: dict[str, Any]) -> Exported | tuple[Exported, RunSummary]:
    """`alabel`'s work: run the job into a temporary folder and read the export back."""
    import datasets

    teacher = given["teacher"]
    own_teacher = teacher if isinstance(teacher, Teacher) else None
    out = Path(tempfile.mkdtemp(prefix="labeler-label-")) / "export"
    keep_out = False
    try:
        job = _job(given, out)
        try:
            result: JobResult = await run_job(job, teacher=own_teacher, on_warning=given["on_warning"])
        except BaseException:
            # a written export whose push failed stays (the error says where); else half-made
            keep_out = given["push_to_hub"] is not None and (out / META_FILE).is_file()
            raise
        if result.export is None:  # interrupted before the export: nothing to return
            raise ConfigError(
                "label(): the run was stopped before it finished; call again to "
                "resume (answers so far are in the store)"
            )
        loaded = await asyncio.to_thread(datasets.load_from_disk, str(out), keep_in_memory=True)
        return (loaded, result.summary) if given["return_summary"] else loaded
    finally:
        if not keep_out:
            shutil.rmtree(out.parent, ignore_errors=True)


# label()'s parameters that are `Job` / `ExportOptions` fields of the same name and
# meaning, handed over as given (tests/test_label_parameters.py checks the names).
_JOB_AS_GIVEN = (
    "store", "base_url", "api_key", "setup", "escalate_on", "ensemble_combine", "concurrency",
    "rpm", "tpm", "max_attempts", "retry_initial_wait", "retry_failed", "request_timeout",
    "stop_grace_s", "budget_usd", "prices", "max_age_days", "reasoning_effort",
    "thinking_budget", "local_context", "samples", "soft_labels", "verify", "keep",
    "verify_timeout", "judge_calibration", "id_field", "limit", "rejects",
)  # fmt: skip
_EXPORT_AS_GIVEN = (
    "kind", "validation_size", "seed", "split_field", "text_field", "sft_shape", "kd_layout",
    "reasoning", "push_to_hub", "card_license", "card_endpoint",
)  # fmt: skip


def _job(given: dict[str, Any], out: Path) -> Job:
    """The `Job` a call of `label` describes, exporting into `out` (read back, then removed)."""
    data, teacher = given["data"], given["teacher"]
    filters = given["filters"]
    export = ExportOptions(
        format="hf",
        filters=filters if filters is not None else FilterSpec(),
        private=not given["public"],
        gold_field=given["gold"],
        gold_map=dict(given["gold_map"]) if given["gold_map"] is not None else None,
        **calibration_fields(str(given["calibration"] or "auto")),
        **{name: given[name] for name in _EXPORT_AS_GIVEN},
    )
    progress = given["progress"]
    return Job(
        task=given["task"],
        input=data if is_hub(data) else InMemoryRows(data),
        teacher=teacher if isinstance(teacher, str) else _spec(teacher),
        out=out,
        export=export,
        teacher_options=dict(given["teacher_options"] or {}),
        cascade=_joined(given["cascade"]),
        escalate_below=_joined(given["escalate_below"]),
        ensemble=_joined(given["ensemble"]),
        input_map=parse_input_map(given["input_map"]),
        # A bar where a person watches (a terminal, a notebook), none in scripts and CI.
        progress=interactive() if progress is None else progress,
        **{name: given[name] for name in _JOB_AS_GIVEN},
    )


def _joined(value: str | float | Sequence[Any] | None) -> str | None:
    """A list option (teachers, thresholds) as the one comma-joined text a `Job` reads."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return ",".join(str(v) for v in value)


class InMemoryRows:
    """Rows held in memory, readable any number of times (labeling, then the export).

    Yields `Row`s and `Reject`s exactly as `read_rows` does for a file, with a source
    name such as ``<DataFrame>`` and the row's position (from 1) as its line.
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        self.source, self._batches = _batches_of(data)

    def rows(
        self,
        *,
        id_field: str | None = None,
        id_column: str | None = None,
        required_fields: Sequence[str] = (),
    ) -> Iterator[Row | Reject]:
        records = (record for batch in self._batches() for record in batch)
        return read_records(
            records, self.source, id_field=id_field, id_column=id_column, required_fields=required_fields
        )

    def __len__(self) -> int:
        return len(self.data)

    def __str__(self) -> str:
        return self.source


def _batches_of(data: Any) -> tuple[str, Callable[[], Iterator[list[Any]]]]:
    """(source name, a function returning fresh batches of row dicts) for `data`."""
    type_name = type(data).__name__
    module = type(data).__module__
    if module.startswith("datasets"):
        if type_name == "Dataset":
            return "<Dataset>", lambda: _dataset_batches(data)
        if type_name in ("DatasetDict", "IterableDatasetDict"):
            raise InputError(
                "<DatasetDict>",
                None,
                f"pick a split, e.g. data['{next(iter(data))}'] (splits: {', '.join(data)})",
            )
    if module.startswith("pandas") and type_name == "DataFrame":
        return "<DataFrame>", lambda: _frame_batches(data)
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return "<list>", lambda: _list_batches(data)
    raise InputError(
        f"<{type_name}>", None, "expected a datasets.Dataset, a pandas DataFrame or a list of dicts"
    )


def _dataset_batches(dataset: Any) -> Iterator[list[Any]]:
    for table in dataset.with_format("arrow").iter(batch_size=_BATCH):
        yield table.to_pylist()


def _frame_batches(frame: Any) -> Iterator[list[Any]]:
    """Through Arrow, as a Parquet file would be read: NaN/None become None and numpy
    scalars Python ones, so a DataFrame row renders and hashes like the same row in a file."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    for batch in table.to_batches(max_chunksize=_BATCH):
        yield batch.to_pylist()


def _list_batches(items: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), _BATCH):
        yield list(items[start : start + _BATCH])


def _spec(teacher: Teacher) -> str:
    identity = teacher.identity
    return f"{identity.get('provider')}:{identity.get('model')}"


__all__ = ["InMemoryRows", "alabel", "label"]
