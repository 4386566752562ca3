"""label() can hand back the run's summary (cost, failed, filtered) with the dataset, so a
notebook reads it without parsing stderr; by default it still returns just the dataset."""

from __future__ import annotations

from pathlib import Path

import datasets

import labeler
from labeler.engine import RunSummary
from labeler.testing import TeacherServer

TEACHER = "openai-compatible:teacher-test"


def test_label_returns_the_summary_when_asked(teacher_server: TeacherServer, tmp_path: Path) -> None:
    rows = [{"id": str(i), "text": f"review {i}"} for i in range(4)]
    ds, summary = labeler.label(
        rows,
        "sentiment",
        TEACHER,
        base_url=teacher_server.url + "/v1",
        store=tmp_path / "s.sqlite",
        return_summary=True,
    )
    assert isinstance(ds, datasets.Dataset) and len(ds) == 4
    assert isinstance(summary, RunSummary)
    assert (summary.rows, summary.labeled, summary.failed) == (4, 4, 0)
    again = labeler.label(
        rows, "sentiment", TEACHER, base_url=teacher_server.url + "/v1", store=tmp_path / "s.sqlite"
    )
    assert isinstance(again, datasets.Dataset) and len(again) == 4
