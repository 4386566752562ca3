"""Label a Ray Data dataset: labeler's cache, claims, limits and soft labels as a Ray stage.

    import ray, labeler.ray
    ds = ray.data.read_parquet("s3://lake/reviews/")
    labeled = labeler.ray.label(ds, "sentiment", "openai:gpt-4o-mini",
                                store="/data/labels.sqlite", workers=4)
    labeled.write_parquet("s3://lake/reviews-labeled/")

`label` adds a lazy `map_batches` stage over a pool of actors (labeler/ray/stage.py). Each
actor runs the live labeler on an event loop of its own against the one store: cached
rows are not requested again, a key another actor holds is waited for rather than paid
twice (store claims), every answer is committed before its batch is handed on, and the
whole fleet keeps one rate limit (labeler/ray/fleet.py). The rows that come out carry
the `records` export's columns: input fields, messages, response, label, soft label,
confidence, logprobs.

Needs ``pip install 'labeler-distill[ray]'``; nothing outside this package imports Ray.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ray

from labeler.errors import ConfigError
from labeler.job import Job
from labeler.ray.fleet import RateKeeper
from labeler.ray.stage import CALLS, RECORDS, LabelStage
from labeler.task import Task

DEFAULT_WORKERS = 2
DEFAULT_BATCH = 256
# Labeling waits on the network: half a CPU per actor leaves room for the readers (a pool
# that takes every CPU starves the read tasks that feed it)
DEFAULT_CPUS = 0.5
# Job fields that mean nothing to a stage (its input is the dataset, its output the rows)
_NOT_STAGE = {"task", "input", "teacher", "out", "export", "input_format", "delimiter",
              "input_split", "batch", "no_wait", "progress", "rejects", "limit"}
STAGE_OPTIONS = frozenset(f.name for f in dataclasses.fields(Job)) - _NOT_STAGE


def label(ds: ray.data.Dataset, task: str | Path | Task, teacher: str, *,
          workers: int = DEFAULT_WORKERS, batch_size: int = DEFAULT_BATCH,
          num_cpus: float = DEFAULT_CPUS,
          **options: Any) -> ray.data.Dataset:
    """`ds` with labeler's `records` columns, labeled lazily by `workers` actors.

    `task` is a shipped template name or a template path; `teacher` a
    ``provider:model`` spec. Options are `Job`'s fields: ``store`` (a path every actor
    opens: on one machine, one SQLite file they share), ``base_url`` (comma-separated
    for an endpoint pool), ``api_key``, ``concurrency`` (per actor), ``rpm``/``tpm`` (for
    the whole fleet), ``id_field``, ``retry_failed``, ``max_attempts``,
    ``max_age_days``... A row's `id` is its id field (or `id` column), else its cache
    key. Rows the teacher could not answer are left out, as in an export; a rerun sends
    only them. A labeler error in an actor (an unreachable teacher, a broken store) is
    raised as itself when the dataset runs.
    """
    job = stage_job(task, teacher, options)
    keeper = start_rate_keeper(job)
    out = ds.map_batches(
        LabelStage, fn_constructor_kwargs={"job": job, "keeper": keeper, "output": RECORDS},
        batch_format="pyarrow", batch_size=batch_size, compute=actor_pool(workers),
        num_cpus=num_cpus)
    # An actor's labeler error (a teacher it cannot reach) reaches the caller as itself
    # (a ConfigError...), not as Ray Data's wrapper without it.
    out.context.raise_original_map_exception = True
    return out


def actor_pool(workers: int) -> ray.data.ActorPoolStrategy:
    """`workers` actors, each labeling `CALLS` batches at once (labeler/ray/stage.py)."""
    return ray.data.ActorPoolStrategy(size=workers, max_concurrent_calls_per_actor=CALLS,
                                      enable_true_multi_threading=True)


def stage_job(task: str | Path | Task, teacher: str, options: dict[str, Any],
              **fields: Any) -> Job:
    """The `Job` every actor builds its labeler from: checked here, in the driver, so a bad
    option is one line before any actor starts."""
    if not isinstance(teacher, str):
        raise ConfigError("labeler.ray.label: give the teacher as a 'provider:model' spec "
                          "(each actor makes its own; a teacher object cannot travel)")
    unknown = sorted(set(options) - STAGE_OPTIONS)
    if unknown:
        raise ConfigError(f"labeler.ray.label: unknown option {unknown[0]!r} (known: "
                          f"{', '.join(sorted(STAGE_OPTIONS))})")
    if options.get("budget_usd") is not None:
        raise ConfigError("--budget is not supported with the Ray engine yet (each actor would "
                          "hold its own): label with one process, or without a budget")
    if isinstance(task, Task):
        task = task.path
    job = Job(task=task, input="<ray>", teacher=teacher, progress=False, **options, **fields)
    job.load_task()  # a bad template is told here, not once per actor
    # Actors may start in another folder: every path they open is absolute.
    job.store = str(job.store_path().resolve())
    if isinstance(job.task, str | Path) and Path(job.task).exists():
        job.task = str(Path(job.task).resolve())
    return job


def start_rate_keeper(job: Job) -> Any:
    """The job's `RateKeeper` actor (it lives as long as a handle to it does)."""
    keeper = ray.remote(RateKeeper).options(num_cpus=0, max_concurrency=10_000)
    return keeper.remote(job.rpm, job.tpm)


__all__ = ["label"]
