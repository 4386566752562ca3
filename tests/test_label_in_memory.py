"""labeler.label / alabel: data in memory, a datasets.Dataset back, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pytest

import labeler
from labeler import InputError, Job, run_job
from labeler.testing import TeacherServer

from conftest import SAMPLES, chat_requests


def reviews() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (SAMPLES / "reviews.jsonl").read_text().splitlines() if line]


def opts(server: TeacherServer, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    return {"base_url": server.url + "/v1", "store": tmp_path / "store.sqlite", **kw}


TEACHER = "openai-compatible:teacher-test"


def test_a_list_of_dicts_comes_back_as_a_dataset(teacher_server: TeacherServer, tmp_path: Path) -> None:
    ds = labeler.label(reviews(), "sentiment", TEACHER, **opts(teacher_server, tmp_path))
    assert isinstance(ds, datasets.Dataset) and len(ds) == 24
    assert ds[0]["id"] == "r001" and ds[0]["text"].startswith("An absolute delight")
    assert ds.features["label"].names == ["negative", "positive"]
    assert chat_requests(teacher_server) == 24


def test_same_cache_as_a_file_run(teacher_server: TeacherServer, tmp_path: Path) -> None:
    job = Job(
        task="sentiment",
        input=SAMPLES / "reviews.jsonl",
        teacher=TEACHER,
        progress=False,
        base_url=teacher_server.url + "/v1",
        store=tmp_path / "store.sqlite",
    )
    asyncio.run(run_job(job))
    sent = chat_requests(teacher_server)
    frame = pd.DataFrame(reviews())
    ds = labeler.label(frame, "sentiment", TEACHER, kind="classification", **opts(teacher_server, tmp_path))
    assert sent == 24 and chat_requests(teacher_server) == sent  # every answer came from the store
    assert len(ds) == 24 and ds.features["label"].names == ["negative", "positive"]
    assert all(abs(sum(s) - 1) < 1e-9 for s in ds["soft_label"])
    # one row more: one request more
    more = pd.concat([frame, pd.DataFrame([{"id": "r999", "text": "A quiet, lovely film."}])])
    again = labeler.label(more, "sentiment", TEACHER, **opts(teacher_server, tmp_path))
    assert len(again) == 25 and chat_requests(teacher_server) == sent + 1


def test_a_dataset_in_gives_the_chosen_kind_out(teacher_server: TeacherServer, tmp_path: Path) -> None:
    data = datasets.Dataset.from_list(reviews())
    ds = labeler.label(data, "sentiment", TEACHER, kind="sft", **opts(teacher_server, tmp_path))
    columns = set(ds.column_names)
    assert len(ds) == 24 and ({"messages"} <= columns or {"prompt", "completion"} <= columns), columns


def test_works_inside_a_running_event_loop(teacher_server: TeacherServer, tmp_path: Path) -> None:
    """As in a Jupyter cell: the sync call must not fail, and the awaitable twin works."""

    async def notebook_cell() -> tuple[datasets.Dataset, datasets.Dataset]:
        asyncio.get_running_loop()  # a loop is running, as in Jupyter
        synced = labeler.label(reviews()[:5], "sentiment", TEACHER, **opts(teacher_server, tmp_path))
        awaited = await labeler.alabel(reviews(), "sentiment", TEACHER, **opts(teacher_server, tmp_path))
        return synced, awaited

    synced, awaited = asyncio.run(notebook_cell())
    assert len(synced) == 5 and len(awaited) == 24
    assert chat_requests(teacher_server) == 24  # the second call sent only the 19 new rows


def test_bad_rows_are_named_and_the_rest_is_labeled(teacher_server: TeacherServer, tmp_path: Path) -> None:
    rows: list[Any] = reviews()[:3]
    rows.insert(1, "not a row")
    rows.append({"id": "x", "text": None})
    warnings: list[str] = []
    ds = labeler.label(
        rows,
        "sentiment",
        TEACHER,
        on_warning=warnings.append,
        rejects=tmp_path / "rejects.jsonl",
        **opts(teacher_server, tmp_path),
    )
    assert len(ds) == 3
    assert any(w.startswith("<list>:2: ") and "string" in w for w in warnings), warnings
    assert any(w.startswith("<list>:5: ") and "text" in w for w in warnings), warnings
    rejected = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [2, 5]


def test_a_dataset_dict_is_a_one_line_error(tmp_path: Path) -> None:
    split = datasets.DatasetDict({"train": datasets.Dataset.from_list(reviews())})
    with pytest.raises(InputError, match=r"<DatasetDict>.*data\['train'\]"):
        labeler.label(split, "sentiment", TEACHER, store=tmp_path / "s.sqlite")


def test_importing_labeler_loads_neither_torch_nor_datasets() -> None:
    """The student extra is optional and exports load `datasets` on first use only."""
    import subprocess
    import sys

    code = (
        "import sys, labeler; "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_validation_split_comes_back_as_a_dataset_dict(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    dd = labeler.label(
        reviews(),
        "sentiment",
        TEACHER,
        kind="classification",
        validation_size=0.25,
        **opts(teacher_server, tmp_path),
    )
    assert isinstance(dd, datasets.DatasetDict) and set(dd) == {"train", "validation"}
    assert len(dd["train"]) + len(dd["validation"]) == 24 and len(dd["validation"]) > 0
