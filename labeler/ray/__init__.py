"""Label a Ray Data dataset: labeler's cache, claims, limits and soft labels as a Ray stage.

    import ray, labeler.ray
    ds = ray.data.read_parquet("s3://lake/reviews/")
    labeled = labeler.ray.label(ds, "sentiment", "openai:gpt-4o-mini",
                                store="/data/labels.sqlite", workers=4)
    labeled.write_parquet("s3://lake/reviews-labeled/")

`label` adds a lazy `map_batches` stage over a pool of actors (labeler/ray/stage.py),
spread over the cluster's nodes. Each actor runs the live labeler on an event loop of
its own against the fleet's one store, a store actor on the driver's node that owns the
SQLite file at `store` (labeler/ray/fleet_store.py): cached rows are not requested
again on any node, a key another actor holds anywhere is waited for rather than paid
twice (store claims), every answer is committed there before its batch is handed on,
and the whole fleet keeps one rate limit (labeler/ray/fleet.py). The rows that come out
carry the `records` export's columns (input fields, messages, response, label, soft
label, confidence, logprobs), read as the export reads them: through a calibration,
past the filters, a reviewer's decision winning over the teacher's label.

Needs ``pip install 'labeler-distill[ray]'``; nothing outside this package imports Ray.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import ray

from labeler.calibration import load_calibration
from labeler.errors import ConfigError
from labeler.exports.options import ExportOptions
from labeler.job import Job
from labeler.ray import fleet_store
from labeler.ray.fleet import RateKeeper
from labeler.ray.stage import CALLS, RECORDS, LabelStage
from labeler.task import Task
from labeler.verify import REGISTRY, Verifier
from labeler.verify.spec import split_steps

DEFAULT_WORKERS = 2
DEFAULT_BATCH = 256
# Labeling waits on the network: half a CPU per actor leaves room for the readers (a pool
# that takes every CPU starves the read tasks that feed it)
DEFAULT_CPUS = 0.5
# Job fields that mean nothing to a stage (its input is the dataset, its output the rows)
_NOT_STAGE = {
    "task",
    "input",
    "teacher",
    "out",
    "input_format",
    "delimiter",
    "input_split",
    "batch",
    "no_wait",
    "progress",
    "rejects",
    "limit",
}
# Shortcuts into `export` (ExportOptions): how the rows that come out are read
_READING = {"filters", "calibration"}
STAGE_OPTIONS = frozenset(f.name for f in dataclasses.fields(Job)) - _NOT_STAGE | _READING


def label(
    ds: ray.data.Dataset,
    task: str | Path | Task,
    teacher: str,
    *,
    workers: int = DEFAULT_WORKERS,
    batch_size: int = DEFAULT_BATCH,
    num_cpus: float = DEFAULT_CPUS,
    **options: Any,
) -> ray.data.Dataset:
    """`ds` with labeler's `records` columns, labeled lazily by `workers` actors.

    `task` is a shipped template name or a template path; `teacher` a
    ``provider:model`` spec. Options are `Job`'s fields: ``store`` (a path on the
    driver's machine: the store actor opens it on the driver's node and serves every
    node, so no node needs a path to it), ``base_url`` (comma-separated for an endpoint
    pool), ``api_key``, ``concurrency`` (per actor), ``rpm``/``tpm`` (for the whole
    fleet), ``id_field``, ``retry_failed``, ``max_attempts``, ``max_age_days``... How rows are
    read, as `labeler export` reads them: ``filters`` (a `FilterSpec`), ``calibration``
    (a saved calibration's path, or a `Calibration`), ``export`` (an `ExportOptions`
    for both, and ``human_labels=False`` to ignore review decisions). ``verify`` (with
    ``keep`` and ``verify_timeout``) checks every answer in the actors as the export
    does: the rows carry `verdicts`, `passed` and `pass_at_1`, the verdicts are stored
    (a rerun reads them); a ``judge:`` verifier goes with `labeler run --engine ray`.
    A row's `id` is its id field (or `id` column), else its cache key. Rows the teacher
    could not answer, and rows a filter drops, are left out, as in an export; a rerun
    sends only the unanswered. A labeler error in an actor (an unreachable teacher, a
    broken store) is raised as itself when the dataset runs.
    """
    job = stage_job(task, teacher, options)
    keeper = start_rate_keeper(job)
    store = start_fleet_store(job.store)
    out = ds.map_batches(
        LabelStage,
        fn_constructor_kwargs={"job": job, "keeper": keeper, "output": RECORDS, "store": store},
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=actor_pool(workers),
        num_cpus=num_cpus,
    )
    # An actor's labeler error (a teacher it cannot reach) reaches the caller as itself
    # (a ConfigError...), not as Ray Data's wrapper without it.
    out.context.raise_original_map_exception = True
    return out


def start_fleet_store(path: str | Path | None) -> Any:
    """The fleet's store actor for the job's store (labeler/ray/fleet_store.py); starts a
    local Ray runtime first where none is running, as Ray Data would."""
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    assert path is not None
    return fleet_store.start_fleet_store(str(path))


def actor_pool(workers: int) -> ray.data.ActorPoolStrategy:
    """`workers` actors, each labeling `CALLS` batches at once (labeler/ray/stage.py)."""
    return ray.data.ActorPoolStrategy(
        size=workers, max_concurrent_calls_per_actor=CALLS, enable_true_multi_threading=True
    )


def stage_job(task: str | Path | Task, teacher: str, options: dict[str, Any], **fields: Any) -> Job:
    """The `Job` every actor builds its labeler from: checked here, in the driver, so a bad
    option is one line before any actor starts."""
    if not isinstance(teacher, str):
        raise ConfigError(
            "labeler.ray.label: give the teacher as a 'provider:model' spec "
            "(each actor makes its own; a teacher object cannot travel)"
        )
    unknown = sorted(set(options) - STAGE_OPTIONS)
    if unknown:
        raise ConfigError(
            f"labeler.ray.label: unknown option {unknown[0]!r} (known: {', '.join(sorted(STAGE_OPTIONS))})"
        )
    if options.get("budget_usd") is not None:
        raise ConfigError(
            "--budget is not supported with the Ray engine yet (each actor would "
            "hold its own): label with one process, or without a budget"
        )
    if isinstance(task, Task):
        task = task.path
    options = dict(options)
    reading = {k: options.pop(k) for k in _READING if options.get(k) is not None}
    job = Job(task=task, input="<ray>", teacher=teacher, progress=False, **options, **fields)
    loaded = job.load_task()  # a bad template is told here, not once per actor
    if reading:
        job.export = _reading(job.export, reading)
    if job.export.calibration is not None:  # told here, in one line, not by every actor
        if loaded.label_space is None:
            raise ConfigError(f"calibration needs a label task; {loaded.path} is '{loaded.output_kind}'")
        job.export.calibration.check(loaded.identity, job.make_teacher().identity, loaded.labels)
    if job.export.verify is not None:
        _check_verify(job, loaded)
    # Actors may start in another folder: every path they open is absolute.
    job.store = str(job.store_path().resolve())
    if isinstance(job.task, str | Path) and Path(job.task).exists():
        job.task = str(Path(job.task).resolve())
    return job


def _check_verify(job: Job, task: Task) -> None:
    """`verify` as the actors will run it, told here in one line: a spec the template
    cannot serve, a Python checker that does not import; a judge is refused, since its
    pass labels every answer after the teacher's (`labeler run --engine ray` runs it in
    the driver)."""
    spec = job.export.verify
    assert spec is not None
    if any(kind == "judge" for kind, _ in split_steps(spec, REGISTRY)):
        raise ConfigError(
            f"labeler.ray.label: verify '{spec}' asks a judge, which labels every answer "
            "after the teacher's; use `labeler run --engine ray --verify judge:...`, "
            "which judges in the driver"
        )
    with Verifier(spec, task=task, timeout_s=job.export.verify_timeout) as verifier:
        verifier.start()


def _reading(export: ExportOptions, reading: dict[str, Any]) -> ExportOptions:
    """`export` with the `filters` and `calibration` shortcuts of `label` applied."""
    calibration = reading.get("calibration", export.calibration)
    if isinstance(calibration, str | Path):
        calibration = load_calibration(calibration)
    return dataclasses.replace(
        export, filters=reading.get("filters", export.filters), calibration=calibration
    )


def start_rate_keeper(job: Job) -> Any:
    """The job's `RateKeeper` actor (it lives as long as a handle to it does)."""
    keeper = ray.remote(RateKeeper).options(num_cpus=0, max_concurrency=10_000)
    return keeper.remote(job.rpm, job.tpm)


__all__ = ["label"]
