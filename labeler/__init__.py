"""labeler: a teacher LLM labels raw inputs into datasets for distilling a student model.

import asyncio, labeler

async def main():
    task = labeler.load_task("sentiment")
    teacher = labeler.make_teacher("openai:gpt-4o-mini")
    async with labeler.Labeler(task, teacher, store="labels.sqlite") as lb:
        async for rec in lb.label(labeler.read_rows("reviews.jsonl", id_column="id")):
            print(rec.row.id, rec.status, rec.completion and rec.completion.text)

asyncio.run(main())
"""

from labeler.answer import Answer, read_answer
from labeler.completion import Completion, TokenLogprob, Usage
from labeler.engine import Labeler
from labeler.errors import (
    ConfigError,
    ExportError,
    FinalError,
    InputError,
    LabelerError,
    RetryableError,
    StoreError,
    TeacherError,
    TeacherUnreachable,
    TemplateError,
)
from labeler.exports import ExportOptions, ExportReport, export_dataset
from labeler.filters import FilterSpec
from labeler.in_memory import alabel, label
from labeler.inputs import Reject, Row, read_rows
from labeler.job import Job, JobResult, run_job
from labeler.request import Request
from labeler.settings import LabelSettings
from labeler.setups import Cascade, Ensemble, Single
from labeler.store import Store
from labeler.summary import Record, RunSummary
from labeler.task import Task, load_task
from labeler.teachers import Teacher, make_teacher
from labeler.version import VERSION as __version__

__all__ = [
    "Answer",
    "Cascade",
    "Completion",
    "ConfigError",
    "Ensemble",
    "ExportError",
    "ExportOptions",
    "ExportReport",
    "FilterSpec",
    "FinalError",
    "InputError",
    "Job",
    "JobResult",
    "LabelSettings",
    "Labeler",
    "LabelerError",
    "Record",
    "Reject",
    "Request",
    "RetryableError",
    "Row",
    "RunSummary",
    "Single",
    "Store",
    "StoreError",
    "Task",
    "Teacher",
    "TeacherError",
    "TeacherUnreachable",
    "TemplateError",
    "TokenLogprob",
    "Usage",
    "__version__",
    "alabel",
    "export_dataset",
    "label",
    "load_task",
    "make_teacher",
    "read_answer",
    "read_rows",
    "run_job",
]
