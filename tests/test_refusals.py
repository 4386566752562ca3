"""A teacher that refuses a parameter is learned once, not failed per row.

Each test runs `labeler run` (the CLI, in process) against the project's teacher server
answering as a teacher that refuses parameters in a real provider's words (OpenAI
reasoning models, a 403 deployment, Gemini's and Groq's OpenAI-compatible endpoints, and a
server that answers 200 without logprobs), over the lean transport and the OpenAI SDK,
and counts at the server what was sent and refused.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import datasets
import pytest
import yaml
from click.testing import CliRunner, Result

from labeler import Job, run_job
from labeler.cli import main
from labeler.refresh import refresh
from labeler.store import MIGRATIONS, SCHEMA_VERSION, Store
from labeler.testing import ServerConfig, TeacherServer

TRANSPORTS = ("lean", "httpx")
HANDFUL = 3  # refused requests a run may meet: one per refused parameter


def rows(path: Path, n: int = 20, start: int = 0) -> Path:
    words = ["wonderful", "dreadful", "charming", "boring", "superb"]
    path.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "text": f"Review {i}: a {words[i % len(words)]} film."}) + "\n"
            for i in range(start, start + n)
        )
    )
    return path


def run(
    server: TeacherServer, tmp_path: Path, data: Path, teacher: str, *extra: str, out: str = "out"
) -> Result:
    return CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(data),
            "--teacher",
            teacher,
            "--base-url",
            server.url + "/v1",
            "--store",
            str(tmp_path / "store.sqlite"),
            "--out",
            str(tmp_path / out),
            "--quiet",
            *extra,
        ],
    )


def sent(server: TeacherServer) -> list:
    return [r for r in server.log if r.path.endswith("/chat/completions")]


def refused(server: TeacherServer) -> int:
    return sum(1 for r in sent(server) if r.status in (400, 403))


def lines(result: Result, word: str) -> list[str]:
    return [line for line in result.output.splitlines() if word in line]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-refusals")
    if request.param == "lean":
        monkeypatch.delenv("LABELER_TRANSPORT", raising=False)
    else:
        monkeypatch.setenv("LABELER_TRANSPORT", request.param)
    return str(request.param)


def test_reasoning_model_is_learned_once_and_every_row_is_labeled(transport: str, tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"], refuses="openai-reasoning")) as srv:
        data = rows(tmp_path / "reviews.jsonl")
        first = run(srv, tmp_path, data, "openai:o4-mini")
        assert first.exit_code == 0, first.output
        # logprobs refused once; samples (n=5, at temperature 1, which it takes) from then on
        assert 1 <= refused(srv) <= HANDFUL, [r.status for r in sent(srv)]
        assert sum(1 for r in sent(srv) if r.status == 200) == 20
        said = lines(first, "refuses")
        assert len(lines(first, "refuses logprobs")) == 1 and len(said) == refused(srv)
        assert (
            "sampling 5 answers per row for soft labels: about 5x the output tokens; "
            "--samples 1 keeps hard labels only" in lines(first, "refuses logprobs")[0]
        )
        assert "openai:o4-mini" in said[0] and "unsupported" in said[0].lower()
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        assert len(ds) == 20 and set(ds["label"]) <= {0, 1}
        assert set(ds["soft_label_source"]) == {"samples:5"}
        ok = [r.body for r in sent(srv) if r.status == 200]
        assert all("logprobs" not in b and b["n"] == 5 and b["temperature"] == 1 for b in ok)

        before = len(sent(srv))
        again = run(srv, tmp_path, data, "openai:o4-mini")
        assert again.exit_code == 0 and len(sent(srv)) == before  # a rerun sends nothing
        assert not lines(again, "refuses")
        exported = CliRunner().invoke(
            main,
            [
                "export",
                "sentiment",
                str(data),
                "--teacher",
                "openai:o4-mini",
                "--base-url",
                srv.url + "/v1",
                "--store",
                str(tmp_path / "store.sqlite"),
                "--out",
                str(tmp_path / "cls"),
                "--kind",
                "classification",
            ],
        )
        assert exported.exit_code == 0 and len(sent(srv)) == before, exported.output
        assert len(datasets.load_from_disk(str(tmp_path / "cls"))) == 20

        more = run(srv, tmp_path, rows(tmp_path / "more.jsonl", start=20), "openai:o4-mini", out="out2")
        new = sent(srv)[before:]
        assert more.exit_code == 0 and len(new) == 20  # the next run starts right
        assert all(r.status == 200 for r in new) and not lines(more, "refuses")


@pytest.mark.parametrize("mode", ["openai-403", "gemini", "groq", "silent"])
def test_logprobs_refusal_shapes_are_each_learned_once(mode: str, transport: str, tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"], refuses=mode)) as srv:
        data = rows(tmp_path / "reviews.jsonl")
        first = run(srv, tmp_path, data, "openai-compatible:some-model")
        assert first.exit_code == 0, first.output
        # a 200 without logprobs is an answer: kept (under its own key), and the row sampled
        answered = 20 + (mode == "silent")
        assert refused(srv) <= 1 and sum(1 for r in sent(srv) if r.status == 200) == answered
        assert len(lines(first, "refuses logprobs")) == 1
        assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 20

        before = len(sent(srv))
        assert run(srv, tmp_path, data, "openai-compatible:some-model").exit_code == 0
        assert len(sent(srv)) == before
        run(
            srv, tmp_path, rows(tmp_path / "more.jsonl", start=20), "openai-compatible:some-model", out="out2"
        )
        assert all(r.status == 200 and "logprobs" not in r.body for r in sent(srv)[before:])


def test_max_tokens_is_sent_as_max_completion_tokens(transport: str, tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"], refuses="openai-reasoning")) as srv:
        result = run(srv, tmp_path, rows(tmp_path / "r.jsonl"), "openai-compatible:o4-mini")
        assert result.exit_code == 0, result.output
        # logprobs, then max_tokens (the samples' temperature of 1 is taken)
        assert refused(srv) == 2 and len(lines(result, "refuses max_tokens")) == 1
        ok = [r.body for r in sent(srv) if r.status == 200]
        assert len(ok) == 20 and all(b.get("max_completion_tokens") == 2 for b in ok)
        assert all("max_tokens" not in b for b in ok)


def test_refusals_are_remembered_until_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-refusals")
    with TeacherServer(ServerConfig(labels=["negative", "positive"], refuses="openai-reasoning")) as srv:
        data = rows(tmp_path / "r.jsonl", n=5)
        assert run(srv, tmp_path, data, "openai:o4-mini").exit_code == 0
        store = str(tmp_path / "store.sqlite")
        stats = CliRunner().invoke(main, ["stats", "--store", store, "--json"])
        assert {r["param"] for r in json.loads(stats.output)["refused_params"]} == {"logprobs"}
        gone = CliRunner().invoke(
            main, ["forget-refusals", "--store", store, "--teacher", "openai:o4-mini", "--json"]
        )
        assert gone.exit_code == 0 and gone.stderr == "", gone.output
        line = json.loads(gone.stdout)
        assert (line["store"], line["teacher"]) == (store, "openai:o4-mini")
        assert [r["param"] for r in line["forgotten"]] == ["logprobs"]
        again_gone = CliRunner().invoke(main, ["forget-refusals", "--store", store, "-q"])
        assert (again_gone.exit_code, again_gone.stdout, again_gone.stderr) == (0, "", "")
        plain = CliRunner().invoke(main, ["forget-refusals", "--store", store])
        assert plain.stdout == "" and f"forgot 0 refused parameter(s) in {store}" in plain.stderr
        before = len(sent(srv))
        again = run(srv, tmp_path, rows(tmp_path / "more.jsonl", n=5, start=5), "openai:o4-mini", out="out2")
        assert again.exit_code == 0 and len(lines(again, "refuses")) == 1
        assert sum(1 for r in sent(srv)[before:] if r.status == 400) == 1


def test_a_cron_refresh_starts_right(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"], refuses="openai-reasoning")) as srv:
        config = tmp_path / "refresh.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "task": "sentiment",
                    "input": "in.jsonl",
                    "teacher": "openai-compatible:o4-mini",
                    "base_url": srv.url + "/v1",
                    "store": "labels.sqlite",
                    "out": "datasets/r",
                    "id_field": "id",
                }
            )
        )
        rows(tmp_path / "in.jsonl", n=8)
        first = refresh(config)
        assert (first.outcome, first.exported) == ("ok", 8) and 1 <= refused(srv) <= HANDFUL
        before = len(sent(srv))
        rows(tmp_path / "in.jsonl", n=12)  # four new rows
        second = refresh(config)
        new = sent(srv)[before:]
        assert (second.outcome, second.exported) == ("ok", 12)
        assert len(new) == 4 and all(r.status == 200 for r in new)


def test_a_store_of_the_previous_release_opens_and_learns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    for migrate in MIGRATIONS[:4]:
        migrate(db)
    db.execute("INSERT INTO meta VALUES ('schema_version', '4')")
    db.close()
    with Store(path) as st:
        assert st.schema_version == SCHEMA_VERSION
        from labeler.teacher_params import Refusal, TeacherParams

        known = TeacherParams({"provider": "openai", "model": "o4-mini"})
        known.learn(Refusal("logprobs", 400, "Unsupported parameter"))
        known.save(st, [Refusal("logprobs", 400, "Unsupported parameter")])
        assert set(TeacherParams.load(st, known.identity).refused) == {"logprobs"}


def test_anthropic_with_thinking_on_is_sent_without_temperature(tmp_path: Path) -> None:
    """An API version that still takes sampling parameters sends the template's
    temperature 0, which a model with extended thinking refuses: learned once."""
    said: list[str] = []
    with TeacherServer(ServerConfig(labels=["negative", "positive"], refuses="anthropic-thinking")) as srv:
        job = Job(
            task="sentiment",
            input=rows(tmp_path / "r.jsonl", n=10),
            teacher="anthropic:claude-sonnet-4-5",
            base_url=srv.url,
            api_key="sk-ant-k",
            teacher_options={"api_version": "2023-06-01", "samples": 1},
            store=tmp_path / "s.sqlite",
            out=tmp_path / "out",
            progress=False,
        )
        result = asyncio.run(run_job(job, on_warning=said.append))
        asked = [r for r in srv.log if r.path == "/v1/messages"]
    assert result.summary.outcome == "ok" and result.summary.labeled == 10
    assert sum(1 for r in asked if r.status == 400) == 1
    assert sum(1 for r in asked if r.status == 200) == 10
    assert all("temperature" not in r.body for r in asked if r.status == 200)
    assert len([w for w in said if "refuses temperature" in w]) == 1


@pytest.mark.parametrize(
    ("status", "code", "param", "message", "expected"),
    [
        (
            400,
            "unsupported_parameter",
            "logprobs",
            "Unsupported parameter: 'logprobs' is not supported with this model.",
            "logprobs",
        ),
        (
            400,
            "unsupported_value",
            "temperature",
            "Unsupported value: 'temperature' does not "
            "support 0 with this model. Only the default (1) value is supported.",
            "temperature",
        ),
        (
            400,
            "unsupported_parameter",
            "max_tokens",
            "Unsupported parameter: 'max_tokens' is "
            "not supported with this model. Use 'max_completion_tokens' instead.",
            "max_tokens",
        ),
        (403, None, None, "You are not allowed to request logprobs from this model", "logprobs"),
        (400, 400, None, "Logprobs is not supported for this model.", "logprobs"),
        (400, None, None, "`logprobs` is not supported with this model", "logprobs"),
        (
            400,
            400,
            None,
            "Gaudi doesn't support logprobs. Please remove 'logprobs'/'top_logprobs' "
            "from your request to receive a response.",
            "logprobs",
        ),
        (
            400,
            "invalid_request_error",
            None,
            "`temperature` may only be set to 1 when thinking is enabled.",
            "temperature",
        ),
        # other 400s are not refusals of a parameter labeler can do without
        (
            400,
            "unsupported_value",
            "messages[0].role",
            "Unsupported value: 'messages[0].role' does not support 'developer' with this model.",
            None,
        ),
        (
            400,
            "context_length_exceeded",
            "messages",
            "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens.",
            None,
        ),
        (
            400,
            "integer_above_max_value",
            "top_logprobs",
            "Invalid 'top_logprobs': integer above "
            "maximum value. Expected a value <= 20, but got 25 instead.",
            None,
        ),
        (400, "unsupported_parameter", "n", "Unsupported parameter: 'n' is not supported.", None),
        (500, "unsupported_parameter", "logprobs", "Unsupported parameter: 'logprobs'", None),
    ],
)
def test_refusals_are_told_from_other_errors(
    status: int, code: object, param: object, message: str, expected: str | None
) -> None:
    from labeler.teachers.refusals import refused as recognise

    found = recognise(status, code, param, message)
    assert (found.param if found is not None else None) == expected
