"""A reasoning teacher's thinking is stored with its answer and exported with its row.

The test server plays a reasoning model over real HTTP: OpenAI-compatible chat answers
with a per-row trace in `reasoning_content` (DeepSeek's API, llama.cpp) or `reasoning`
(vLLM), counted in `usage.completion_tokens_details.reasoning_tokens`; Anthropic answers
to a `thinking` request with a signed thinking block (and a redacted one). Both OpenAI
transports (the lean one and the SDK) and the Anthropic SDK are driven for real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from click.testing import CliRunner, Result

from labeler import Job, run_job
from labeler.cli import main
from labeler.errors import ConfigError
from labeler.exports import ExportOptions
from labeler.job import export_job
from labeler.plan import Planner
from labeler.pricing import Price, PriceTable
from labeler.store import Store
from labeler.testing import ServerConfig, TeacherServer
from labeler.testing.anthropic_wire import signature

from conftest import SAMPLES

ROWS = [json.loads(line) for line in (SAMPLES / "reviews.jsonl").read_text().splitlines()]
WORDS = re.compile(r"\w+")


def _tail(text: str) -> str:
    """The last words of a review, as the server's trace quotes them."""
    return " ".join(WORDS.findall(text)[-6:])


def _sent(srv: TeacherServer, path: str = "/v1/chat/completions") -> int:
    return sum(1 for r in srv.log if r.path == path)


def _job(srv: TeacherServer, tmp_path: Path, **kw: Any) -> Job:
    base = dict(
        task="sentiment",
        input=SAMPLES / "reviews.jsonl",
        teacher="openai-compatible:teacher-test",
        base_url=srv.url + "/v1",
        store=tmp_path / "s.sqlite",
        progress=False,
    )
    return Job(**{**base, **kw})  # type: ignore[arg-type]


def _export(job: Job, tmp_path: Path, name: str, **opts: Any) -> datasets.Dataset:
    out = tmp_path / name
    export_job(dataclasses.replace(job, out=out, export=ExportOptions(**opts)))
    return datasets.load_from_disk(str(out))


def _stored(job: Job) -> dict[str, Any]:
    """Each row's stored answer, by row id, found by the keys a plan gives."""
    task = job.load_task()
    with Store(job.store_path()) as store:
        planner = Planner(task, job.make_teacher().identity, store)
        return {i.row.id: i.completion for chunk in planner.plan_rows(job.rows(task)) for i in chunk}


# -- OpenAI-compatible servers -----------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
@pytest.mark.parametrize("transport", ["lean", "httpx"])
def test_each_rows_trace_is_stored_and_lands_in_its_own_sft_row(
    tmp_path: Path, field: str, transport: str
) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"], reasoning_field=field)) as srv:
        job = _job(srv, tmp_path, teacher_options={"transport": transport})
        first = asyncio.run(run_job(job))
        assert first.summary.labeled == len(ROWS)
        sent = _sent(srv)
        again = asyncio.run(run_job(job))
        assert again.summary.cached == len(ROWS) and _sent(srv) == sent  # rerun: 0 requests
    stored = _stored(job)
    sft = _export(job, tmp_path, "sft", kind="sft")
    assert len(sft) == len(ROWS)
    for row in sft:
        src = next(r for r in ROWS if r["id"] == row["id"])
        completion = stored[row["id"]]
        turn = row["completion"][0]
        # the row's own trace: it quotes this review and names this row's answer
        assert turn["reasoning_content"] == completion.reasoning
        assert _tail(src["text"]) in turn["reasoning_content"]
        assert f"the answer is {completion.text}." in turn["reasoning_content"]
        assert turn["content"] == completion.text  # the answer alone, trace apart
        assert 0 < completion.usage.reasoning_tokens < completion.usage.completion_tokens
    assert len({row["completion"][0]["reasoning_content"] for row in sft}) == len(ROWS)


def test_reasoning_tokens_are_priced_once_as_output(tmp_path: Path) -> None:
    prices = PriceTable({"teacher-test": Price(1.0, 10.0)})
    with TeacherServer(
        ServerConfig(labels=["negative", "positive"], reasoning_field="reasoning_content")
    ) as srv:
        result = asyncio.run(run_job(_job(srv, tmp_path, prices=prices, limit=4)))
    s = result.summary
    assert s.completion_tokens > 4 * 2  # the thinking is billed: more than the 1-2 label tokens
    assert s.cost_usd == pytest.approx((s.prompt_tokens * 1.0 + s.completion_tokens * 10.0) / 1e6)


@pytest.mark.parametrize("transport", ["lean", "httpx"])
def test_reasoning_effort_is_sent_and_is_part_of_the_key(tmp_path: Path, transport: str) -> None:
    opts = {"teacher_options": {"transport": transport}, "limit": 3}
    with TeacherServer(ServerConfig(labels=["negative", "positive"], reasoning_field="reasoning")) as srv:
        asyncio.run(run_job(_job(srv, tmp_path, reasoning_effort="low", **opts)))
        bodies = [r.body for r in srv.log if r.path == "/v1/chat/completions"]
        assert len(bodies) == 3 and all(b["reasoning_effort"] == "low" for b in bodies)
        asyncio.run(run_job(_job(srv, tmp_path, reasoning_effort="low", **opts)))
        assert _sent(srv) == 3  # the same effort: answered from the store
        asyncio.run(run_job(_job(srv, tmp_path, reasoning_effort="high", **opts)))
        assert _sent(srv) == 6  # thinking harder is another answer, never a stale one
        assert srv.log[-1].body["reasoning_effort"] == "high"


def _mixed_store(tmp_path: Path) -> Job:
    """A store where the first 10 rows were answered without a trace, the rest with one."""
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        job = _job(srv, tmp_path, limit=10)
        asyncio.run(run_job(job))
        srv.config.reasoning_field = "reasoning_content"
        job = dataclasses.replace(job, limit=None)
        asyncio.run(run_job(job))
        assert _sent(srv) == len(ROWS)
    return job


def test_records_and_classification_get_a_reasoning_column_null_where_none(tmp_path: Path) -> None:
    job = _mixed_store(tmp_path)
    stored = _stored(job)
    for kind in ("records", "classification"):
        ds = _export(job, tmp_path, kind, kind=kind)
        assert ds.features["reasoning"] == datasets.Value("string")
        got = dict(zip(ds["id"], ds["reasoning"], strict=True))
        assert got == {rid: c.reasoning for rid, c in stored.items()}
        assert sum(v is None for v in got.values()) == 10
    card = (tmp_path / "classification" / "README.md").read_text()
    assert "| reasoning traces | `separate`" in card and "- `reasoning`:" in card


def test_sft_inline_puts_the_trace_before_the_answer_and_drop_leaves_it_out(tmp_path: Path) -> None:
    job = _mixed_store(tmp_path)
    stored = _stored(job)
    inline = _export(job, tmp_path, "inline", kind="sft", reasoning="inline")
    assert "reasoning_content" not in inline.features["completion"].feature
    for row in inline:
        c = stored[row["id"]]
        content = row["completion"][0]["content"]
        if c.reasoning is None:
            assert content == c.text
        else:
            assert content == f"<think>\n{c.reasoning}\n</think>\n\n{c.text}"
    dropped = _export(job, tmp_path, "drop", kind="sft", reasoning="drop")
    assert all(
        row["completion"] == [{"role": "assistant", "content": stored[row["id"]].text}] for row in dropped
    )
    assert "`inline`" in (tmp_path / "inline" / "README.md").read_text()
    assert "`drop`" in (tmp_path / "drop" / "README.md").read_text()
    meta = json.loads((tmp_path / "drop" / "labeler_export.json").read_text())
    assert meta["reasoning"] == "drop"


def test_sft_messages_shape_carries_the_trace_on_the_last_turn_only(tmp_path: Path) -> None:
    job = _mixed_store(tmp_path)
    stored = _stored(job)
    ds = _export(job, tmp_path, "msgs", kind="sft", sft_shape="messages")
    for row in ds:
        *lead, last = row["messages"]
        assert all(m["reasoning_content"] is None for m in lead)
        assert last["reasoning_content"] == stored[row["id"]].reasoning


def test_a_store_without_traces_exports_the_columns_it_always_did(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        job = _job(srv, tmp_path, limit=4)
        asyncio.run(run_job(job))
    assert "reasoning" not in _export(job, tmp_path, "c", kind="classification").features
    sft = _export(job, tmp_path, "s", kind="sft")
    assert set(sft.features["completion"].feature) == {"role", "content"}
    assert "reasoning traces" not in (tmp_path / "s" / "README.md").read_text()
    # asked for: the same columns a store with traces gives, nulls in them
    kept = _export(job, tmp_path, "k", kind="classification", reasoning="separate")
    assert kept["reasoning"] == [None] * 4


# -- Anthropic extended thinking ----------------------------------------------------------


def _anthropic_job(srv: TeacherServer, tmp_path: Path, **kw: Any) -> Job:
    return _job(
        srv,
        tmp_path,
        teacher="anthropic:claude-sonnet-4-5",
        base_url=srv.url,
        api_key="test-key",
        teacher_options={"samples": 1},
        thinking_budget=2048,
        **kw,
    )


def test_anthropic_thinking_is_asked_as_the_api_requires_and_its_blocks_kept(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"], redacted_thinking=True)) as srv:
        job = _anthropic_job(srv, tmp_path)
        assert asyncio.run(run_job(job)).summary.labeled == len(ROWS)
        bodies = [r.body for r in srv.log if r.path == "/v1/messages"]
        asyncio.run(run_job(job))
        assert _sent(srv, "/v1/messages") == len(ROWS)  # rerun: 0 requests
    for body in bodies:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert body["max_tokens"] > 2048  # the budget plus the template's 2 answer tokens
        assert body["max_tokens"] == 2050
        assert "temperature" not in body  # this API version takes none: unset is allowed
    stored = _stored(job)
    sft = _export(job, tmp_path, "sft", kind="sft")
    for row in sft:
        c = stored[row["id"]]
        thinking, redacted = c.reasoning_blocks
        assert thinking["type"] == "thinking" and thinking["thinking"] == c.reasoning
        assert thinking["signature"] == signature(c.reasoning)  # kept exactly as it came
        assert redacted["type"] == "redacted_thinking" and redacted["data"]
        src = next(r for r in ROWS if r["id"] == row["id"])
        assert _tail(src["text"]) in row["completion"][0]["reasoning_content"]
        assert row["completion"][0]["reasoning_content"] == c.reasoning


def test_anthropic_thinking_on_an_older_api_version_is_sent_at_temperature_1(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        job = _anthropic_job(srv, tmp_path, limit=3)
        job.teacher_options = {"samples": 1, "api_version": "2023-06-01"}
        result = asyncio.run(run_job(job))
        bodies = [r.body for r in srv.log if r.path == "/v1/messages"]
    assert result.summary.labeled == 3 and result.summary.failed == 0
    assert all(
        b["temperature"] == 1 and b["max_tokens"] > b["thinking"]["budget_tokens"] for b in bodies
    )  # the template says temperature 0: thinking refuses that


# -- bad input: one line, exit 1, nothing sent --------------------------------------------


def _cli(srv: TeacherServer, tmp_path: Path, *args: str, task: str = "sentiment") -> Result:
    return CliRunner().invoke(
        main,
        [
            "run",
            task,
            str(SAMPLES / "reviews.jsonl"),
            "--base-url",
            srv.url + "/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--quiet",
            *args,
        ],
    )


def _one_line(res: Result) -> str:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("labeler: error: "), res.stderr
    return lines[0]


def _template(tmp_path: Path, **params: Any) -> Path:
    raw = yaml.safe_load((Path(__file__).parent.parent / "prompts" / "sentiment.yaml").read_text())
    raw["params"] = params
    path = tmp_path / "thinking.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("template_params", "flags", "named"),
    [
        ({"thinking_budget": 2048, "max_tokens": 1024}, (), "thinking_budget 2048 must be below"),
        ({"thinking_budget": 2048, "max_tokens": 2048}, (), "thinking_budget 2048 must be below"),
        (
            {"thinking_budget": 2048, "max_tokens": 4096},
            ("--thinking-budget", "8192"),
            "thinking_budget 8192 must be below max_tokens (4096)",
        ),
        ({"thinking_budget": 512, "max_tokens": 4096}, (), "at least 1024"),
        ({}, ("--thinking-budget", "100"), "--thinking-budget"),
        ({}, ("--reasoning-effort", "extreme"), "reasoning_effort must be one of"),
        ({}, ("--reasoning", "inline", "--kind", "classification"), "--kind classification"),
        ({}, ("--reasoning", "inline", "--kind", "kd"), "--kind kd"),
    ],
)
def test_bad_reasoning_settings_are_one_line_and_send_nothing(
    tmp_path: Path,
    template_params: dict[str, Any],
    flags: tuple[str, ...],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")  # only the reasoning setting is wrong
    task = str(_template(tmp_path, **template_params)) if template_params else "sentiment"
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        res = _cli(
            srv,
            tmp_path,
            "--teacher",
            "anthropic:claude-sonnet-4-5",
            "--out",
            str(tmp_path / "out"),
            *flags,
            task=task,
        )
        line = _one_line(res)
        assert len(srv.log) == 0
    assert named in line


def test_a_budget_over_the_templates_total_is_refused_by_a_job_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be below max_tokens"):
        Job(
            task=_template(tmp_path, thinking_budget=2048, max_tokens=3000),
            input=SAMPLES / "reviews.jsonl",
            teacher="anthropic:x",
            thinking_budget=4096,
        ).load_task()


# -- where a trace must not follow its answer ----------------------------------------------


def test_a_label_a_person_overruled_loses_the_teachers_trace(tmp_path: Path) -> None:
    from labeler.human import record_label

    with TeacherServer(
        ServerConfig(labels=["negative", "positive"], reasoning_field="reasoning_content")
    ) as srv:
        job = _job(srv, tmp_path, limit=4)
        asyncio.run(run_job(job))
    task = job.load_task()
    with Store(job.store_path()) as store:
        items = [
            i
            for chunk in Planner(task, job.make_teacher().identity, store).plan_rows(job.rows(task))
            for i in chunk
        ]
        overruled, agreed = items[0], items[1]
        flip = {"positive": "negative", "negative": "positive"}
        record_label(store, overruled.key, flip[overruled.completion.text], reviewer="ana")
        record_label(store, agreed.key, agreed.completion.text, reviewer="ana")
    for kind in ("sft", "classification"):
        ds = _export(job, tmp_path, kind, kind=kind)
        traces = {
            row["id"]: (row["completion"][0]["reasoning_content"] if kind == "sft" else row["reasoning"])
            for row in ds
        }
        assert traces[overruled.row.id] is None  # it argued for the label that was overruled
        assert traces[agreed.row.id] == agreed.completion.reasoning


def test_a_sampling_anthropic_teacher_keeps_the_trace_of_the_answer_it_kept(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        job = _anthropic_job(srv, tmp_path, limit=6)
        job.teacher_options = {"samples": 5}
        asyncio.run(run_job(job))
        assert _sent(srv, "/v1/messages") == 30
    for completion in _stored(job).values():
        assert len(completion.samples) == 5
        assert completion.reasoning.endswith(f"the answer is {completion.text}.")


def test_an_estimate_counts_the_thinking_budget_as_output(tmp_path: Path) -> None:
    from labeler.estimate import estimate
    from labeler.task import load_task

    plain = estimate(
        load_task("sentiment"), [{"text": r["text"]} for r in ROWS], "anthropic:claude-sonnet-4-5", samples=1
    )
    thinking = estimate(
        load_task("sentiment").with_reasoning(None, 2048),
        [{"text": r["text"]} for r in ROWS],
        "anthropic:claude-sonnet-4-5",
        samples=1,
    )
    assert thinking.output_tokens == len(ROWS) * 2050 > plain.output_tokens
    assert thinking.output_is_upper_bound
    assert thinking.cost_usd is not None and plain.cost_usd is not None
    assert thinking.cost_usd > plain.cost_usd


def test_the_test_server_refuses_what_thinking_forbids_as_the_api_does() -> None:
    import anthropic

    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="k", max_retries=0)
        ask = dict(
            model="claude-sonnet-4-5",
            messages=[{"role": "user", "content": "hi"}],
            thinking={"type": "enabled", "budget_tokens": 2048},
        )
        # sampling parameters go in extra_body, as the teacher sends them to older versions
        for extra, says in (
            ({"max_tokens": 2048}, "greater than `thinking.budget_tokens`"),
            ({"max_tokens": 4096, "extra_body": {"temperature": 0.0}}, "only be set to 1"),
            ({"max_tokens": 4096, "extra_body": {"top_p": 0.5}}, "top_p"),
        ):
            with pytest.raises(anthropic.BadRequestError, match=re.escape(says)):
                client.messages.create(**ask, **extra)  # type: ignore[call-overload]
        ok = client.messages.create(
            **ask,
            max_tokens=4096,  # type: ignore[call-overload]
            extra_body={"temperature": 1.0},
        )
        assert [b.type for b in ok.content] == ["thinking", "text"]
        assert ok.content[0].signature == signature(ok.content[0].thinking)
