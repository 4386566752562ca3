"""`labeler run --engine ray`: label through a Ray cluster, export as one process does.

The input is read with Ray Data's readers and labeled into the store by the actor pool
of labeler/ray/stage.py, spread over the cluster's nodes, each batch handing back only
its counts; the answers go to the one store the fleet shares, a store actor on this
(the driver's) node that owns the store file (labeler/ray/fleet_store.py). What follows
the labeling then runs in this process exactly as after a single-process run, from the
store, reading the input in order (`finish_labeled` in labeler/job.py): a `--verify
judge:` pass with the job's limits, then the export, which checks every answer and
applies `--keep`, or without `--out` the verdicts the summary reports. The two engines
write the same dataset by construction, and a job can move between them at any point
without relabeling anything.
"""

from __future__ import annotations

import csv
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import ray

from labeler import aio
from labeler.errors import ConfigError, InputError, LabelerError
from labeler.hub_input import is_hub
from labeler.inputs import RejectsWriter, detect_format
from labeler.job import Job, JobResult, finish_labeled, open_job
from labeler.plan import REJECTED, Planner
from labeler.ray import (
    DEFAULT_BATCH,
    DEFAULT_CPUS,
    DEFAULT_WORKERS,
    actor_pool,
    stage_job,
    start_fleet_store,
    start_rate_keeper,
)
from labeler.ray.stage import COUNTS, RAW_JSONL, SUMMARY, LabelStage
from labeler.setups import Single, setup_for
from labeler.summary import RunSummary

PROBE_TIMEOUT_S = 10.0  # a cluster's head answers a connection at once; a wrong address never
# Job fields a Ray job hands to the stage (the rest are the driver's: input, export...)
_STAGE_FIELDS = (
    "store",
    "base_url",
    "api_key",
    "teacher_options",
    "concurrency",
    "rpm",
    "tpm",
    "max_attempts",
    "retry_initial_wait",
    "retry_failed",
    "prices",
    "max_age_days",
    "id_field",
    "stop_grace_s",
    "request_timeout",
    "samples",
    "soft_labels",
)


def run_ray_job(
    job: Job,
    *,
    address: str | None = None,
    workers: int = DEFAULT_WORKERS,
    batch_size: int = DEFAULT_BATCH,
    num_cpus: float = DEFAULT_CPUS,
    on_warning: Callable[[str], None] | None = None,
    handle_signals: bool = False,
) -> JobResult:
    """Label `job`'s input on Ray (connecting to `address`, or starting a local Ray), then
    judge (a `--verify judge:` pass) and export or verify from the store as `run_job`
    does. `handle_signals`: SIGINT/SIGTERM stop the judge pass gracefully, as a
    single-process run's. Safe to rerun at any time."""
    _refuse_unsupported(job)
    task, warnings = open_job(job, on_warning)
    stage = stage_job(job.task, job.teacher, {f: getattr(job, f) for f in _STAGE_FIELDS})
    if not ray.is_initialized():
        connect(address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = job.progress is not False
    ctx.print_on_execution_start = False
    if job.progress is False:  # --quiet: Ray Data's own progress lines too
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    ds = read_input(job)
    keeper = start_rate_keeper(stage)
    # One store for the fleet, on this node: the export below reads the file it owns.
    store = start_fleet_store(stage.store)
    # Batch-sized blocks: a file read as one block would go to one actor whole (blocks
    # smaller than a batch are bundled by map_batches itself).
    counts = ds.repartition(target_num_rows_per_block=batch_size).map_batches(
        LabelStage,
        fn_constructor_kwargs={"job": stage, "keeper": keeper, "output": SUMMARY, "store": store},
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=actor_pool(workers),
        num_cpus=num_cpus,
    )
    counts.context.raise_original_map_exception = True  # an actor's labeler error as itself
    summary = RunSummary()
    start = time.monotonic()
    try:
        for batch in counts.iter_batches(batch_format="pyarrow", batch_size=None):
            _add(summary, batch)
    except Exception as exc:
        found = _labeler_error(exc)
        if found is None:
            raise
        raise found from None
    summary.elapsed_s = time.monotonic() - start
    _write_rejects(job, task, job.rejects_path())
    # The judge pass (in this process, with the job's limits), then the export or the
    # verdicts, as after a single-process run.
    return aio.run(
        finish_labeled(job, task, summary, warnings, on_warning=on_warning, handle_signals=handle_signals)
    )


def connect(address: str | None) -> None:
    """Join the cluster at `address` (or start a local runtime): one line where none
    answers there, before anything is read or sent.

    Ray itself keeps retrying an address that does not answer for minutes, logging as it
    goes; a host:port is first tried once here, with a short timeout."""
    if address is not None:
        _probe(address)
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, TimeoutError, ValueError) as exc:
        if address is None:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"--ray-address {address}: no Ray cluster answers there ({first})") from None


def _probe(address: str) -> None:
    """Refuse a `host:port` (or `ray://host:port`) address that accepts no connection."""
    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # "auto", "local" and the like are Ray's to resolve
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {PROBE_TIMEOUT_S:g} s"
        raise ConfigError(f"--ray-address {address}: no Ray cluster answers there ({reason})") from None


def _refuse_unsupported(job: Job) -> None:
    if job.budget_usd is not None:  # each actor would hold its own; none would hold the job's
        raise ConfigError(
            "--budget is not supported with --engine ray yet (each actor would hold its own); "
            "label with the default engine, or without --budget"
        )
    if job.batch:
        raise ConfigError("--engine ray labels live; --batch goes with the default engine")
    if not isinstance(setup_for(job), Single):
        raise ConfigError(
            "--engine ray labels with one teacher; --cascade and --ensemble go with the default engine"
        )
    if not isinstance(job.input, str | os.PathLike) or str(job.input) == "-":
        raise ConfigError(
            "--engine ray reads a file or folder (JSONL, CSV, Parquet, a saved HF dataset), not stdin"
        )
    if job.input_map:
        raise ConfigError(
            "--engine ray does not take --map yet; rename the columns, or label with the default engine"
        )
    if is_hub(job.input):
        raise ConfigError(
            "--engine ray reads a file or folder, not a Hub dataset yet: save it "
            "first (datasets.load_dataset(...).save_to_disk(FOLDER))"
        )


def read_input(job: Job) -> ray.data.Dataset:
    """The input as a Ray Dataset, read so that each row is the row labeler's own reader
    makes of it (same values, same types), hence the same request and cache key."""
    path = str(job.input)
    fmt = (job.input_format or ("csv" if job.delimiter else None) or detect_format(path)).lower()
    if fmt == "jsonl":
        # Parsed in the stage as labeler parses JSONL: Arrow's JSON reader would infer
        # types (timestamps, structs) that render differently.
        ds = ray.data.read_text(path).rename_columns({"text": RAW_JSONL})
        if job.limit is not None:  # --limit counts rows (and bad lines), as labeler reads
            ds = ds.filter(lambda line: bool(line[RAW_JSONL].strip()))
    elif fmt in ("csv", "tsv"):
        ds = _read_delimited(path, job.delimiter or ("\t" if fmt == "tsv" else ","))
    elif fmt == "parquet":
        ds = ray.data.read_parquet(path)
    elif fmt == "hf":
        import datasets

        folder, split = path, job.input_split
        head, _, tail = path.rpartition(":")
        if not os.path.exists(path) and head and os.path.isdir(head):  # folder:split
            folder, split = head, split or tail
        loaded: Any = datasets.load_from_disk(folder)
        if isinstance(loaded, datasets.DatasetDict):
            if split is None:
                raise InputError(path, None, f"pick a split with --split (splits: {', '.join(loaded)})")
            loaded = loaded[split]
        ds = ray.data.from_huggingface(loaded)
    else:
        raise ConfigError(f"--engine ray cannot read input format {fmt!r}")
    limited: ray.data.Dataset = ds.limit(job.limit) if job.limit is not None else ds
    return limited


def _read_delimited(path: str, delimiter: str) -> ray.data.Dataset:
    """Every column as text, as labeler's CSV reader gives it (empty stays empty)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with open(path, encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f, delimiter=delimiter), [])

    return ray.data.read_csv(
        path,
        parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
        ),
    )


def _add(summary: RunSummary, batch: Any) -> None:
    for row in batch.to_pylist():
        for key in COUNTS:
            setattr(summary, key, getattr(summary, key) + row[key])
        for reason, n in orjson.loads(row["failures_by_reason"]).items():
            summary.failures_by_reason[reason] = summary.failures_by_reason.get(reason, 0) + n


def _write_rejects(job: Job, task: Any, path: Path | None) -> None:
    """The rejects file, as a single-process run writes it (file:line of the input): the
    actors only see batches, so the driver finds the bad rows (no request is sent)."""
    if path is None:
        return
    path.unlink(missing_ok=True)
    writer = RejectsWriter(path)
    try:
        planner = Planner(task, job.make_teacher().identity)
        for chunk in planner.plan_rows(job.rows(task)):
            for item in chunk:
                if item.status == REJECTED and item.reject is not None:
                    writer.write(item.reject)
    finally:
        writer.close()


def _labeler_error(exc: BaseException) -> LabelerError | None:
    """The labeler error an actor raised, found in the chain Ray wraps it in (a task
    error, Ray Data's user-code error), so that it is told as itself in one line."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ray.exceptions.RayTaskError):
            todo.append(e.cause)  # the original; the error itself is a traceback's text
        elif isinstance(e, LabelerError):
            return e
        todo.extend((e.__cause__, e.__context__))
    return None


__all__ = ["read_input", "run_ray_job"]
