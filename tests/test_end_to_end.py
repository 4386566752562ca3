"""The whole path over real HTTP: template -> teacher -> store -> Hugging Face dataset."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from labeler import Job, run_job
from labeler.cli import main
from labeler.errors import ConfigError, TemplateError
from labeler.exports import ExportOptions
from labeler.testing import TeacherServer

from conftest import SAMPLES, chat_requests


def job(server: TeacherServer, tmp_path: Path, **kw: object) -> Job:
    base = dict(
        task="sentiment",
        input=SAMPLES / "reviews.jsonl",
        teacher="openai-compatible:teacher-test",
        base_url=server.url + "/v1",
        store=tmp_path / "store.sqlite",
        out=tmp_path / "out",
        progress=False,
    )
    base.update(kw)
    return Job(**base)  # type: ignore[arg-type]


def test_run_exports_a_dataset_that_loads(teacher_server: TeacherServer, tmp_path: Path) -> None:
    result = asyncio.run(run_job(job(teacher_server, tmp_path)))
    assert result.summary.labeled == 24 and result.summary.outcome == "ok"
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(ds) == 24
    assert ds.features["label"].names == ["negative", "positive"]
    row = ds[0]
    assert row["id"] == "r001" and row["text"].startswith("An absolute delight")
    assert row["input_label"] == "positive"  # the gold column never overwrites the answer
    assert row["messages"][0]["role"] == "system" and row["messages"][-1]["role"] == "assistant"
    assert row["teacher"] == "openai-compatible:teacher-test" and row["template"] == "sentiment@1"
    assert row["logprobs"] and row["logprobs"][0]["top_logprobs"]
    assert abs(sum(row["soft_label"]) - 1.0) < 1e-9
    card = (tmp_path / "out" / "README.md").read_text()
    assert "openai-compatible:teacher-test" in card and "sentiment@1" in card and "24" in card


def test_rerun_sends_no_requests(teacher_server: TeacherServer, tmp_path: Path) -> None:
    asyncio.run(run_job(job(teacher_server, tmp_path)))
    sent = chat_requests(teacher_server)
    again = asyncio.run(run_job(job(teacher_server, tmp_path)))
    assert sent == 24
    assert chat_requests(teacher_server) == sent
    assert again.summary.cached == 24 and again.summary.requests == 0


def test_changing_the_system_prompt_relabels(teacher_server: TeacherServer, tmp_path: Path) -> None:
    asyncio.run(run_job(job(teacher_server, tmp_path)))
    text = (Path(__file__).parent.parent / "prompts" / "sentiment.yaml").read_text()
    edited = tmp_path / "sentiment.yaml"
    edited.write_text(text.replace("for a training set", "for a student model"))
    again = asyncio.run(run_job(job(teacher_server, tmp_path, task=edited)))
    assert again.summary.labeled == 24 and chat_requests(teacher_server) == 48


def test_adding_a_row_sends_one_request(teacher_server: TeacherServer, tmp_path: Path) -> None:
    rows = (SAMPLES / "reviews.jsonl").read_text()
    data = tmp_path / "in.jsonl"
    data.write_text(rows)
    asyncio.run(run_job(job(teacher_server, tmp_path, input=data)))
    data.write_text(rows + json.dumps({"id": "new", "text": "Simply wonderful."}) + "\n")
    again = asyncio.run(run_job(job(teacher_server, tmp_path, input=data)))
    assert (again.summary.labeled, again.summary.cached) == (1, 24)
    assert chat_requests(teacher_server) == 25


def test_duplicate_rows_are_sent_once(teacher_server: TeacherServer, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": "same words"}) + "\n" for _ in range(5)))
    result = asyncio.run(run_job(job(teacher_server, tmp_path, input=data)))
    assert result.summary.rows == 5 and chat_requests(teacher_server) == 1


def test_bad_rows_are_rejected_and_the_run_goes_on(teacher_server: TeacherServer, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(
        b'{"text": "fine row"}\n'
        b'{"text": broken json\n'
        b'{"body": "no text field"}\n'
        b"\xff\xfe not utf-8\n"
        b'{"text": "another fine row"}\n'
    )
    result = asyncio.run(run_job(job(teacher_server, tmp_path, input=data)))
    s = result.summary
    assert (s.labeled, s.rejected) == (2, 3)
    assert result.rejects is not None
    rejects = [json.loads(x) for x in result.rejects.read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3, 4]
    assert all(r["source"].endswith("in.jsonl") for r in rejects)
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 2


@pytest.mark.parametrize("fmt,suffix", [("parquet", "parquet"), ("jsonl", "jsonl")])
def test_parquet_and_jsonl_exports(
    teacher_server: TeacherServer, tmp_path: Path, fmt: str, suffix: str
) -> None:
    asyncio.run(run_job(job(teacher_server, tmp_path, export=ExportOptions(format=fmt))))
    files = sorted((tmp_path / "out").glob(f"*.{suffix}"))
    assert [f.name for f in files] == [f"train.{suffix}"]
    ds = datasets.load_dataset(
        fmt if fmt == "parquet" else "json",
        data_files=str(files[0]),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    )
    assert len(ds) == 24


def test_free_text_task_keeps_token_logprobs(tmp_path: Path) -> None:
    from labeler.testing import ServerConfig

    with TeacherServer(ServerConfig()) as srv:  # free-text answers
        result = asyncio.run(
            run_job(job(srv, tmp_path, task="instruct", input=SAMPLES / "instructions.jsonl"))
        )
    assert result.summary.labeled == 8
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds[0]["response"] and len(ds[0]["logprobs"]) > 1
    assert len(ds[0]["logprobs"][0]["top_logprobs"]) == 5


def test_cli_run_then_export_without_requests(tmp_path: Path) -> None:
    from labeler.testing import ServerConfig

    with TeacherServer(ServerConfig(labels=["World", "Sports", "Business", "Sci/Tech"])) as srv:
        _run_then_export(srv, tmp_path)


def test_empty_export_still_loads(teacher_server: TeacherServer, tmp_path: Path) -> None:
    # The sentiment server answers no topic label: every row is dropped as invalid.
    result = asyncio.run(run_job(job(teacher_server, tmp_path, task="topic", input=SAMPLES / "news.csv")))
    assert result.export is not None and result.export.exported == 0
    assert result.export.filtered["invalid"] == 12
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 0


def _run_then_export(teacher_server: TeacherServer, tmp_path: Path) -> None:
    args = [
        "--teacher",
        "openai-compatible:teacher-test",
        "--base-url",
        teacher_server.url + "/v1",
        "--store",
        str(tmp_path / "s.sqlite"),
    ]
    runner = CliRunner()
    res = runner.invoke(
        main, ["run", "topic", str(SAMPLES / "news.csv"), *args, "--out", str(tmp_path / "a"), "--quiet"]
    )
    assert res.exit_code == 0, res.output
    sent = chat_requests(teacher_server)
    res = runner.invoke(
        main,
        [
            "export",
            "topic",
            str(SAMPLES / "news.csv"),
            *args,
            "--out",
            str(tmp_path / "b"),
            "--kind",
            "classification",
        ],
    )
    assert res.exit_code == 0, res.output
    assert chat_requests(teacher_server) == sent
    ds = datasets.load_from_disk(str(tmp_path / "b"))
    assert ds.features["label"].names == ["World", "Sports", "Business", "Sci/Tech"]
    assert len(ds) == 12 and set(ds.column_names) >= {"text", "label", "soft_label"}


def test_cli_help_lists_the_commands() -> None:
    res = CliRunner().invoke(main, ["--help"])
    for command in ("run", "export", "stats", "templates"):
        assert command in res.output


def test_missing_api_key_is_a_one_line_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(SAMPLES / "reviews.jsonl"),
            "--teacher",
            "openai:gpt-4o-mini",
            "--store",
            str(tmp_path / "s.sqlite"),
        ],
    )
    assert res.exit_code == 1
    assert "OPENAI_API_KEY" in res.output and len(res.output.strip().splitlines()) == 1


def test_unreachable_base_url_ends_the_run_with_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(SAMPLES / "reviews.jsonl"),
            "--teacher",
            "openai-compatible:m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--quiet",
            "--store",
            str(tmp_path / "s.sqlite"),
        ],
    )
    assert res.exit_code == 1
    assert "cannot reach the teacher at http://127.0.0.1:9/v1" in res.output


def test_unknown_template_field_names_template_field_and_row(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"review": "x"}) + "\n")
    # No row has the field: a template bug, told before anything is sent.
    with pytest.raises(TemplateError, match=r"sentiment\.yaml: field 'text': no input row has it"):
        asyncio.run(run_job(job(teacher_server, tmp_path, input=data)))
    # Among rows that have it, a row without it is a reject naming the template.
    data.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"review": "x"}) + "\n")
    result = asyncio.run(run_job(job(teacher_server, tmp_path, input=data)))
    assert result.summary.rejected == 1
    line = json.loads((tmp_path / "out.rejects.jsonl").read_text())
    assert "field 'text' that template" in line["reason"] and line["line"] == 2


def test_unreadable_input_is_a_one_line_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(tmp_path / "missing.jsonl"),
            "--teacher",
            "openai-compatible:m",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
    )
    assert res.exit_code == 1 and "missing.jsonl" in res.output


def test_answers_that_are_not_labels_are_counted_and_dropped(tmp_path: Path) -> None:
    from labeler.testing import Reply, ScriptedResponder, ServerConfig

    responder = ScriptedResponder(
        [("Simply", Reply("I cannot decide"))], default=lambda view: Reply("positive")
    )
    with TeacherServer(ServerConfig(responder=responder)) as srv:
        data = tmp_path / "in.jsonl"
        data.write_text(json.dumps({"text": "Simply fine"}) + "\n" + json.dumps({"text": "ok"}) + "\n")
        result = asyncio.run(run_job(job(srv, tmp_path, input=data)))
    assert result.export is not None
    assert result.export.exported == 1 and result.export.filtered.get("invalid") == 1


def test_eval_matches_hand_computation(tmp_path: Path) -> None:
    """Four rows with known answers: accuracy, invalid count and AUROC by hand."""
    from labeler.testing import Reply, ScriptedResponder, ServerConfig

    def reply(word: str, p: float) -> Reply:
        import math

        other = "negative" if word == "positive" else "positive"
        return Reply(word, tokens=[word], top_logprobs=[[(word, math.log(p)), (other, math.log(1 - p))]])

    responder = ScriptedResponder(
        [
            ("alpha", reply("positive", 0.9)),  # gold positive: right, confident
            ("beta", reply("negative", 0.8)),  # gold negative: right
            ("gamma", reply("positive", 0.6)),  # gold negative: wrong, unsure
            ("delta", reply("negative", 0.7)),
        ],  # gold negative: right
        default=lambda view: Reply("positive"),
    )
    data = tmp_path / "gold.jsonl"
    rows = [("alpha", "positive"), ("beta", "negative"), ("gamma", "negative"), ("delta", "negative")]
    data.write_text("".join(json.dumps({"text": t, "gold": g}) + "\n" for t, g in rows))
    with TeacherServer(ServerConfig(responder=responder)) as srv:
        args = [
            "sentiment",
            str(data),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            srv.url + "/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
        ]
        runner = CliRunner()
        assert runner.invoke(main, ["run", *args, "--quiet"]).exit_code == 0
        res = runner.invoke(
            main, ["eval", *args, "--gold", "gold", "--json", "--plot", str(tmp_path / "q.png")]
        )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.splitlines()[0])
    assert report["n"] == 4 and report["accuracy"] == pytest.approx(0.75, abs=1e-12)
    # max_prob of the correct rows: 0.9, 0.8, 0.7; of the wrong row 0.6 -> AUROC 1.0
    assert report["auroc"]["max_prob"] == pytest.approx(1.0, abs=1e-12)
    assert report["accuracy_at_coverage"]["max_prob"]["75%"] == pytest.approx(1.0)
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_stdin_input(teacher_server: TeacherServer, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            "-",
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            teacher_server.url + "/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
        input=(SAMPLES / "reviews.jsonl").read_text(),
    )
    assert res.exit_code == 0, res.output
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 24


def test_an_unreachable_teacher_is_a_teacher_error_not_a_config_error(tmp_path: Path) -> None:
    import labeler

    unreachable = Job(
        task="sentiment",
        input=SAMPLES / "reviews.jsonl",
        teacher="openai-compatible:m",
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        store=tmp_path / "s.sqlite",
        progress=False,
        retry_initial_wait=0.01,
    )
    with pytest.raises(labeler.TeacherError) as caught:
        asyncio.run(run_job(unreachable))
    assert isinstance(caught.value, labeler.TeacherUnreachable)
    assert not isinstance(caught.value, ConfigError)
    assert str(caught.value).startswith("cannot reach the teacher at http://127.0.0.1:9/v1")
    assert caught.value.reason == "unreachable"


def test_export_error_is_part_of_the_public_error_tree() -> None:
    import labeler
    from labeler.errors import ExportError

    assert labeler.ExportError is ExportError and issubclass(ExportError, labeler.LabelerError)
    assert "ExportError" in labeler.__all__ and "TeacherUnreachable" in labeler.__all__
