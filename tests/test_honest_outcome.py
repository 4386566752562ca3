"""A run that produced nothing never looks like a success.

Every row failed, or the export holds no row: the summary says so in one line naming the
main failure in the server's own words, `--json` says the same, the exit code is 7, and a
refresh leaves the published dataset as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner, Result

from labeler.cli import main
from labeler.refresh import refresh
from labeler.testing import ServerConfig, TeacherServer

from conftest import SAMPLES


def rows(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": f"Review {i}: fine."}) + "\n" for i in range(n))
    )
    return path


def run(server: TeacherServer, tmp_path: Path, task: str, data: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            "run",
            task,
            str(data),
            "--teacher",
            "openai-compatible:m",
            "--base-url",
            server.url + "/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            *extra,
        ],
    )


def said(result: Result, words: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if words in line]


def test_a_run_where_every_row_failed_says_why_and_exits_7(tmp_path: Path) -> None:
    config = ServerConfig(labels=["negative", "positive"], status_for=[("Review", 400)])
    with TeacherServer(config) as srv:
        data = rows(tmp_path / "r.jsonl", 6)
        result = run(srv, tmp_path, "sentiment", data)
        assert result.exit_code == 7, result.output
        line = said(result, "nothing labeled")
        assert len(line) == 1, result.stderr
        assert "6 of 6 rows failed" in line[0] and "http_400 (6 rows): Invalid request." in line[0]

        as_json = run(srv, tmp_path, "sentiment", data, "--json", "--retry-failed")
        summary = json.loads(as_json.stdout)
        assert as_json.exit_code == 7 and summary["outcome"] == "empty"
        assert summary["main_failure"] == {"reason": "http_400", "rows": 6, "message": "Invalid request."}


def test_an_export_of_zero_rows_exits_7(teacher_server: TeacherServer, tmp_path: Path) -> None:
    # The sentiment server answers no topic label: every row is dropped as invalid.
    result = run(teacher_server, tmp_path, "topic", SAMPLES / "news.csv")
    assert result.exit_code == 7, result.output
    line = said(result, "the export holds 0 rows")
    assert len(line) == 1 and "0 rows of 12: 12 removed by invalid" in line[0], result.stderr


def test_a_refresh_that_labels_nothing_leaves_current_untouched(tmp_path: Path) -> None:
    rows(tmp_path / "in.jsonl", 4)
    config = {
        "task": "sentiment",
        "input": "in.jsonl",
        "teacher": "openai-compatible:m",
        "store": "labels.sqlite",
        "out": "datasets/reviews",
        "id_field": "id",
    }
    path = tmp_path / "refresh.yaml"
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        path.write_text(yaml.safe_dump({**config, "base_url": srv.url + "/v1"}))
        first = refresh(path)
        assert (first.outcome, first.exit_code, first.exported) == ("ok", 0, 4)
        srv.config.status_for = [("Review", 400)]
        # The input now holds two new rows, and the teacher refuses both.
        (tmp_path / "in.jsonl").write_text(
            "".join(json.dumps({"id": f"n{i}", "text": f"Review {i}: new."}) + "\n" for i in range(2))
        )
        second = refresh(path)
    assert (second.outcome, second.exit_code) == ("empty", 7)
    assert second.error is not None and "Invalid request." in second.error
    assert second.to_dict()["current"] == first.current
    assert (tmp_path / "datasets/reviews/current").resolve() == Path(first.current or "")
