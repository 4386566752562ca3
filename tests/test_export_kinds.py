"""Export kinds are a registry: a new kind is one class, and every reader of kinds sees it.

The toy kind below lives in this test only; registering it is all it takes for the options
check, the builder, the writer and the card to export with it, as `records` or `sft` do.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest

from labeler import Job, run_job
from labeler.answer import Answer
from labeler.completion import Completion
from labeler.errors import ConfigError
from labeler.exports import KINDS, ExportKind, ExportOptions, register
from labeler.exports import features as hf
from labeler.exports.features import Features
from labeler.exports.rows import RowBuilder
from labeler.inputs import Row
from labeler.request import Request
from labeler.task import Task
from labeler.testing import Reply, ScriptedResponder, ServerConfig, TeacherServer


class TextLabel(ExportKind):
    """The input text and the teacher's label name, nothing else."""

    name = "text-label"
    verify = "refuses"
    assistant_turn = False
    classifies = True

    def features(self, b: RowBuilder, sample: dict[str, Any] | None) -> Features:
        return {"text": hf.value("string"), "label": hf.value("string")}

    def row(
        self,
        b: RowBuilder,
        row: Row,
        request: Request,
        completion: Completion,
        answer: Answer,
        trace: str | None,
    ) -> dict[str, Any]:
        return {"id": row.id, "text": b.text(row), "label": answer.label}

    def columns(self, task: Task, opts: ExportOptions) -> list[str]:
        return ["- `text`: the input text; `label`: the teacher's label, by name."]


@pytest.fixture
def text_label() -> Iterator[None]:
    register(TextLabel)
    try:
        yield
    finally:
        del KINDS[TextLabel.name]


def test_a_registered_kind_exports_as_the_shipped_ones_do(text_label: None, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(["great film", "dull film"])
        )
    )
    replies = ScriptedResponder(
        [("great", Reply("positive")), ("dull", Reply("negative"))], default=lambda view: Reply("positive")
    )
    with TeacherServer(ServerConfig(responder=replies)) as srv:
        result = asyncio.run(
            run_job(
                Job(
                    task="sentiment",
                    input=data,
                    teacher="openai-compatible:teacher-test",
                    base_url=srv.url + "/v1",
                    store=tmp_path / "s.sqlite",
                    out=tmp_path / "out",
                    progress=False,
                    export=ExportOptions(kind="text-label"),
                )
            )
        )
    assert result.export is not None and result.export.kind == "text-label"
    rows = datasets.load_from_disk(str(tmp_path / "out"))
    assert rows.column_names == ["id", "text", "label"]
    assert sorted((r["id"], r["text"], r["label"]) for r in rows) == [
        ("r0", "great film", "positive"),
        ("r1", "dull film", "negative"),
    ]
    card = (tmp_path / "out" / "README.md").read_text("utf-8")
    assert "- `text`: the input text; `label`: the teacher's label, by name." in card
    assert "text-classification" in card
    assert "| export kind / format | text-label / hf |" in card


def test_the_options_check_reads_a_registered_kind_rules(text_label: None) -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape("--verify goes with --kind records, sft or preference (a --kind text-label row"),
    ):
        ExportOptions(kind="text-label", verify="exact:text")
    with pytest.raises(ConfigError, match="which --kind text-label rows do not have"):
        ExportOptions(kind="text-label", reasoning="inline")


def test_an_unregistered_kind_is_refused_naming_the_registered_ones() -> None:
    with pytest.raises(
        ConfigError,
        match=r"--kind 'text-label': expected one of records, "
        r"classification, sft, kd, preference$",
    ):
        ExportOptions(kind="text-label")


def test_the_cli_offers_the_registered_kinds() -> None:
    from labeler.cli import main

    for command in ("run", "export"):
        kind = next(p for p in main.commands[command].params if p.name == "kind")
        assert list(kind.type.choices) == list(KINDS)  # type: ignore[attr-defined]
