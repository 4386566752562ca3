"""The plan stage names a row in a render error only when rendering fails, and the error
it keeps is the one rendering under the row's name raises: same message, same field, same
cause. A few-shot example that fails keeps its own name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labeler.errors import TemplateError
from labeler.inputs import Row
from labeler.plan import REJECTED, SEND, Planner, where
from labeler.task import task_from_dict

IDENTITY = {"provider": "openai-compatible", "model": "m", "base_url": "http://h/v1"}


def task(user: str, **extra: Any) -> Any:
    return task_from_dict({"name": "t", "version": "1", "user": user, "output": {"kind": "text"}, **extra})


def rendering_error(t: Any, row: Row) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        t.render_all(row.data, row_id=where(row))
    return caught.value


@pytest.mark.parametrize(
    ("user", "fields", "data"),
    [
        ("A {{ text }}", ["text"], {"other": 1}),  # a declared field missing
        ("A {{ text }}", ["text"], {"text": None}),  # a declared field null
        ("A {{ text }} {{ extra }}", ["text"], {"text": "x"}),  # an undeclared one missing
        ("A {{ text | round }}", ["text"], {"text": "x"}),  # a filter that fails
        ("{{ text }}", ["text"], {"text": "   "}),  # nothing but whitespace
    ],
)
@pytest.mark.parametrize("rid", ["7", "row-a"])
def test_a_row_that_cannot_render_is_named_as_rendering_names_it(
    user: str, fields: list[str], data: dict[str, Any], rid: str
) -> None:
    t = task(user, fields=fields)
    good = Row("in.jsonl", 6, "6", {"text": 1.5, "extra": "e"})
    bad = Row("in.jsonl", 7, rid, data)
    items = Planner(t, IDENTITY).plan([good, bad])
    assert [i.status for i in items] == [SEND, REJECTED]
    got, want = items[1].error, rendering_error(t, bad)
    assert got is not None
    assert str(got) == str(want) and got.row == where(bad) == want.row
    assert (got.template, got.field, got.reason) == (want.template, want.field, want.reason)
    assert type(got.__cause__) is type(want.__cause__)
    assert items[1].reject is not None and items[1].reject.message().startswith("in.jsonl:7: ")


def test_a_failing_few_shot_example_keeps_its_own_name(tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"text": "good one", "label": "positive"}\n{"text": "bad one", "label": "negative"}\n')
    t = task_from_dict(
        {
            "name": "t",
            "version": "1",
            "user": "A {{ text }} {{ note }}",
            "output": {"kind": "label", "labels": ["positive", "negative"]},
            "few_shot_pool": {"file": str(pool), "k": 1},
            "fields": ["text"],
        },
        str(tmp_path / "t.yaml"),
    )
    row = Row("in.jsonl", 3, "3", {"text": "good", "note": "n"})
    item = Planner(t, IDENTITY).plan([row])[0]
    assert item.status == REJECTED and item.error is not None
    want = rendering_error(t, row)
    assert want.row == "few_shot_pool" and str(item.error) == str(want)
