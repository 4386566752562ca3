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
import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from labeler import aio
from labeler.errors import ConfigError, InputError
from labeler.exports.options import ExportOptions
from labeler.hub_input import is_hub
from labeler.inputs import Reject, Row, read_records
from labeler.job import Job, JobResult, run_job
from labeler.option_fields import declared
from labeler.progress import interactive
from labeler.task import Task
from labeler.teachers.base import Teacher

if TYPE_CHECKING:
    import datasets

    from labeler.run import RunSummary

    # label()'s result: the export read back into memory.
    Exported: TypeAlias = "datasets.Dataset | datasets.DatasetDict"

# label()'s options that shape the export, by field name: those the export options declare
# (labeler/option_fields.py) but the format and --force, which the read-back into memory
# fixes, and the library's own forms of two flags; every other option is a `Job` field.
EXPORT_OPTIONS = frozenset(o.name for o in declared(ExportOptions)) - {"format", "force"} | {
    "filters",
    "calibration",
}
_JOB_FIELDS = frozenset(f.name for f in dataclasses.fields(Job)) - {
    "task",
    "input",
    "teacher",
    "out",
    "export",
    "input_format",
    "delimiter",
    "input_split",
    "batch",
    "no_wait",
}
_BATCH = 2048
_OWN_OPTIONS = frozenset({"on_warning", "return_summary"})


def label(
    data: Any,
    task: str | Path | Task,
    teacher: str | Teacher,
    *,
    return_summary: bool = False,
    **options: Any,
) -> Exported | tuple[Exported, RunSummary]:
    """Label `data` (a `datasets.Dataset`, a pandas DataFrame, a list of dicts, or a Hub
    dataset as ``"hf://datasets/NAME[:CONFIG][:SPLIT]"``, streamed) with `teacher` and
    return the export as an in-memory `datasets.Dataset`.

    `task` is a shipped template name, a template path or a loaded `Task`; `teacher` a
    ``provider:model`` spec (with ``base_url=``, ``api_key=`` options as on the CLI) or a
    `Teacher`, which is closed when the call ends. Options are `Job`'s fields (``store``,
    ``concurrency``, ``rpm``, ``id_field``, ``limit``, ``retry_failed``, ``rejects``,
    ``budget_usd``, ``input_map`` such as ``{"text": "sentence"}``…) and the export's
    (``kind``: ``records`` by default, or
    ``classification``, ``sft``, ``kd``; ``filters``, ``validation_size``, ``seed``,
    ``split_field``, ``text_field``, and every other field `ExportOptions` declares, such as
    ``push_to_hub`` or ``gold_field``). Without ``store`` the user's default store is used,
    as by ``labeler run``. With a validation split (or ``split_field``) the result is a
    `datasets.DatasetDict`.

    Rows the teacher could not answer are left out of the result, as in an export, and
    named in the warnings (``on_warning=``, default stderr); a rerun sends only them.
    Works with or without a running event loop (see the module docstring); in async code
    prefer ``await alabel(...)``. With ``return_summary=True`` the result is a pair
    ``(dataset, RunSummary)``: a notebook reads cost, failed and filtered rows from it
    instead of from stderr.
    """
    coro = alabel(data, task, teacher, return_summary=return_summary, **options)
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
    return_summary: bool = False,
    **options: Any,
) -> Exported | tuple[Exported, RunSummary]:
    """`label`, awaitable: for code (and notebooks) that already run an event loop."""
    import datasets

    on_warning: Callable[[str], None] | None = options.pop("on_warning", None)
    job_options = {k: v for k, v in options.items() if k not in EXPORT_OPTIONS}
    unknown = sorted(set(job_options) - _JOB_FIELDS)
    if unknown:
        raise ConfigError(
            f"label(): unknown option {unknown[0]!r} (known: "
            f"{', '.join(sorted(_JOB_FIELDS | EXPORT_OPTIONS | _OWN_OPTIONS))})"
        )
    export = ExportOptions(format="hf", **{k: v for k, v in options.items() if k in EXPORT_OPTIONS})
    own_teacher = teacher if isinstance(teacher, Teacher) else None
    spec = teacher if isinstance(teacher, str) else _spec(teacher)
    # A bar where a person watches (a terminal, a notebook), none in scripts and CI.
    job_options.setdefault("progress", interactive())
    with tempfile.TemporaryDirectory(prefix="labeler-label-") as tmp:
        out = Path(tmp) / "export"
        source = data if is_hub(data) else InMemoryRows(data)
        job = Job(task=task, input=source, teacher=spec, out=out, export=export, **job_options)
        result: JobResult = await run_job(job, teacher=own_teacher, on_warning=on_warning)
        if result.export is None:  # interrupted before the export: nothing to return
            raise ConfigError(
                "label(): the run was stopped before it finished; call again to "
                "resume (answers so far are in the store)"
            )
        loaded = await asyncio.to_thread(datasets.load_from_disk, str(out), keep_in_memory=True)
        return (loaded, result.summary) if return_summary else loaded


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
