"""`--map FIELD=COLUMN` / `input_map=`: a template field fed from a column of another name."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import yaml
from click.testing import CliRunner, Result

import labeler
from labeler.cli import main
from labeler.errors import ConfigError
from labeler.refresh import RefreshConfig, refresh
from labeler.testing import TeacherServer

from conftest import SAMPLES, chat_requests

TEACHER = "openai-compatible:teacher-test"


def reviews() -> list[dict]:
    return [json.loads(line) for line in (SAMPLES / "reviews.jsonl").read_text().splitlines() if line]


def as_sentences(tmp_path: Path, rows: list[dict] | None = None) -> Path:
    """The sample reviews with `text` renamed `sentence`, as SST-2 names it."""
    path = tmp_path / "sst2.jsonl"
    rows = rows if rows is not None else [{"id": r["id"], "sentence": r["text"]} for r in reviews()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(server: TeacherServer, tmp_path: Path, data: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(data),
            "--teacher",
            TEACHER,
            "--base-url",
            server.url + "/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--quiet",
            *extra,
        ],
    )


def one_error_line(res: Result) -> str:
    assert res.exit_code == 1, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("labeler: error: "), res.stderr
    return lines[0]


def test_a_mapped_column_renders_and_keys_as_the_field_would(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    first = run(teacher_server, tmp_path, SAMPLES / "reviews.jsonl")
    assert first.exit_code == 0, first.output
    sent = chat_requests(teacher_server)
    assert sent == 24
    res = run(
        teacher_server,
        tmp_path,
        as_sentences(tmp_path),
        "--map",
        "text=sentence",
        "--out",
        str(tmp_path / "out"),
        "--json",
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["cached"] == 24 and summary["labeled"] == 0
    assert chat_requests(teacher_server) == sent  # the same requests, the same keys
    out = datasets.load_from_disk(str(tmp_path / "out"))
    assert out["text"] == [r["text"] for r in reviews()]


def test_a_mapped_column_no_row_has_is_one_line_naming_it_and_nothing_is_sent(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    data = as_sentences(tmp_path)
    line = one_error_line(run(teacher_server, tmp_path, data, "--map", "text=sentense"))
    assert "--map text=sentense" in line and "'sentense'" in line
    assert f"{data}:1" in line and "sentence" in line  # the first row, and what rows have
    assert chat_requests(teacher_server) == 0


@pytest.mark.parametrize(
    ("spec", "told"),
    [
        ("text", "--map 'text': expected FIELD=COLUMN"),
        ("=sentence", "expected FIELD=COLUMN"),
        ("review=sentence", "has no field 'review' (its fields: text)"),
    ],
)
def test_a_bad_map_is_one_line(teacher_server: TeacherServer, tmp_path: Path, spec: str, told: str) -> None:
    line = one_error_line(run(teacher_server, tmp_path, as_sentences(tmp_path), "--map", spec))
    assert told in line
    assert chat_requests(teacher_server) == 0


def test_a_row_without_the_column_among_rows_with_it_is_a_reject_naming_the_map(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    data = as_sentences(tmp_path, [{"sentence": "Lovely."}, {"text": "Awful."}, {"sentence": "Fine."}])
    res = run(teacher_server, tmp_path, data, "--map", "text=sentence", "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    reject = json.loads((tmp_path / "o.rejects.jsonl").read_text())
    assert reject["line"] == 2 and "--map text=sentence" in reject["reason"]


def test_label_and_a_refresh_config_take_input_map(teacher_server: TeacherServer, tmp_path: Path) -> None:
    rows = [{"id": r["id"], "sentence": r["text"]} for r in reviews()[:3]]
    ds = labeler.label(
        rows,
        "sentiment",
        TEACHER,
        base_url=teacher_server.url + "/v1",
        store=tmp_path / "s.sqlite",
        input_map={"text": "sentence"},
    )
    assert ds["text"] == [r["sentence"] for r in rows]
    config = tmp_path / "refresh.yaml"
    as_sentences(tmp_path, rows)
    config.write_text(
        yaml.safe_dump(
            {
                "task": "sentiment",
                "input": "sst2.jsonl",
                "teacher": TEACHER,
                "store": "s.sqlite",
                "base_url": teacher_server.url + "/v1",
                "out": "pub",
                "input_map": {"text": "sentence"},
            }
        )
    )
    sent = chat_requests(teacher_server)
    result = refresh(config)
    assert result.outcome == "ok", result.error
    assert chat_requests(teacher_server) == sent  # label() stored them
    config.write_text(
        yaml.safe_dump(
            {
                "task": "sentiment",
                "input": "sst2.jsonl",
                "teacher": TEACHER,
                "out": "pub",
                "input_map": {"text": ""},
            }
        )
    )
    with pytest.raises(ConfigError, match=r"refresh\.yaml: input_map: --map text=: expected FIELD=COLUMN"):
        RefreshConfig.load(config)
