"""The Anthropic teacher through the real `anthropic` SDK over HTTP to the local server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from labeler import Job, run_job
from labeler.cli import main
from labeler.completion import Completion
from labeler.errors import ConfigError, FinalError, RetryableError
from labeler.exports.options import ExportOptions
from labeler.limits import Limiter
from labeler.task import load_task
from labeler.teachers import make_teacher
from labeler.teachers.anthropic import AnthropicTeacher
from labeler.testing import ServerConfig, TeacherServer

from conftest import SAMPLES

SENTIMENT = load_task("sentiment")


def messages(server: TeacherServer) -> list:
    return [r for r in server.log if r.path == "/v1/messages"]


def teacher(server: TeacherServer, **kw: object) -> AnthropicTeacher:
    return AnthropicTeacher("claude-haiku-4-5", base_url=server.url, api_key="test-key", **kw)


async def ask(t: AnthropicTeacher, request: object) -> Completion:
    try:
        return await t.complete(request)  # type: ignore[arg-type]
    finally:
        await t.aclose()


def greedy(text: str, **params: object):  # a text request: no soft targets, one call
    task = load_task("instruct")
    req = task.render({"instruction": text})
    req.params.update(params)
    return req


def test_missing_key_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        make_teacher("anthropic:claude-haiku-4-5")
    assert "ANTHROPIC_API_KEY" in str(err.value) and "\n" not in str(err.value)


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    with TeacherServer(ServerConfig(labels=["negative", "positive"], api_key="from-env")) as srv:
        t = make_teacher("anthropic:claude-haiku-4-5", base_url=srv.url, samples=1)
        c = asyncio.run(ask(t, SENTIMENT.render({"text": "fine"})))  # type: ignore[arg-type]
    assert c.text in ("negative", "positive")


def test_request_translation_and_prompt_cache(teacher_server: TeacherServer) -> None:
    """System as blocks, one breakpoint on the last few-shot turn; cache read on row 2."""

    async def go() -> tuple[Completion, Completion]:
        t = teacher(teacher_server)
        try:
            first = await t.complete(greedy("Say hello."))
            second = await t.complete(greedy("Say goodbye."))
            return first, second
        finally:
            await t.aclose()

    task = load_task("instruct")
    first, second = asyncio.run(go())
    body = messages(teacher_server)[0].body
    assert body["model"] == "claude-haiku-4-5"
    assert "temperature" not in body  # the SDK's API version takes no sampling parameters
    marks = [
        blk
        for m in body["messages"]
        if isinstance(m["content"], list)
        for blk in m["content"]
        if blk.get("cache_control")
    ]
    if task.few_shot:
        last_shot = body["messages"][-2]
        assert last_shot["content"][0]["cache_control"] == {"type": "ephemeral"}
        assert len(marks) == 1
    else:
        assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["role"] == "user"
    assert isinstance(body["messages"][-1]["content"], str)
    assert first.usage.cache_write_tokens > 0 and first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == first.usage.cache_write_tokens
    assert second.usage.cache_write_tokens == 0
    # prompt tokens count as OpenAI's do: cache reads inside, cache writes apart
    assert second.usage.prompt_tokens > second.usage.cached_tokens > 0
    assert first.tokens is None and first.samples is None and first.finish_reason == "stop"


def test_sampled_soft_targets() -> None:
    """Soft targets wanted -> `samples` concurrent requests, majority text, summed usage."""
    request = SENTIMENT.render({"text": "Loved every minute."})
    assert request.soft_targets
    with TeacherServer(ServerConfig(labels=["negative", "positive"], latency_s=0.05)) as srv:
        c = asyncio.run(ask(teacher(srv, samples=7), request))
        sent = messages(srv)
    assert len(sent) == 7
    assert c.samples is not None and len(c.samples) == 7 and c.tokens is None
    top = max(set(c.samples), key=c.samples.count)
    assert c.text == top and c.samples.count(c.text) > len(c.samples) / 2 - 1
    assert c.usage.completion_tokens == sum(1 for _ in c.samples)  # one token per answer
    # The first sample warmed the cache alone; the other six read it.
    assert c.usage.cache_write_tokens > 0
    assert c.usage.cached_tokens == 6 * c.usage.cache_write_tokens
    # The samples were sent together (not one after another).
    starts = sorted(r.received for r in sent[1:])
    ends = sorted(r.responded for r in sent[1:] if r.responded)
    assert starts[-1] < ends[0]


def test_sampled_answers_make_an_empirical_soft_label(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        job = Job(
            task="sentiment",
            input=SAMPLES / "reviews.jsonl",
            teacher="anthropic:claude-haiku-4-5",
            base_url=srv.url,
            api_key="k",
            teacher_options={"samples": 4},
            store=tmp_path / "s.sqlite",
            out=tmp_path / "out",
            progress=False,
            # the sample's `label` field would calibrate the shares; this reads them raw
            export=ExportOptions(calibration_mode="none"),
        )
        result = asyncio.run(run_job(job))
        assert len(messages(srv)) == 24 * 4
    assert result.summary.labeled == 24
    assert result.summary.requests == 24  # one labeler request per row, fanned out 4 ways
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    for row in ds:
        assert abs(sum(row["soft_label"]) - 1.0) < 1e-9
        assert all(p * 4 == round(p * 4) for p in row["soft_label"])  # k/4 shares


def test_older_api_version_sends_a_sampling_temperature(teacher_server: TeacherServer) -> None:
    request = SENTIMENT.render({"text": "Meh."})  # template temperature 0, soft targets
    asyncio.run(ask(teacher(teacher_server, samples=2, api_version="2023-06-01"), request))
    bodies = [r.body for r in messages(teacher_server)]
    assert [b["temperature"] for b in bodies] == [1.0, 1.0]  # 0 cannot sample: 1.0 instead


def test_completion_mode_is_one_user_message(teacher_server: TeacherServer) -> None:
    task = load_task("sentiment-completion")
    request = task.render({"text": "great fun"})
    asyncio.run(ask(teacher(teacher_server, samples=1), request))
    body = messages(teacher_server)[0].body
    assert body["messages"] == [{"role": "user", "content": request.prompt}]
    assert "system" not in body


def test_stop_strings_and_max_tokens(teacher_server: TeacherServer) -> None:
    asyncio.run(ask(teacher(teacher_server), greedy("Hi", stop=["\n", "END"], max_tokens=7)))
    body = messages(teacher_server)[0].body
    assert body["stop_sequences"] == ["END"] and body["max_tokens"] == 7


def test_rate_limit_headers_reach_the_limiter() -> None:
    with TeacherServer(ServerConfig(labels=["a", "b"], rpm=500, tpm=90000)) as srv:
        limiter = Limiter(4)
        t = teacher(srv)
        t.observe_headers(limiter.observe_headers)
        asyncio.run(ask(t, greedy("x")))
    assert (limiter.rpm, limiter.tpm) == (500, 90000)


@pytest.mark.parametrize(
    "config,reason,kind",
    [
        (dict(status_for=[("Say", 529)]), "overloaded", RetryableError),
        (dict(status_for=[("Say", 500)]), "http_500", RetryableError),
        (dict(status_for=[("Say", 503)]), "http_503", RetryableError),
        (dict(status_for=[("Say", 429)], retry_after_s=3), "http_429", RetryableError),
        (dict(status_for=[("Say", 400)]), "http_400", FinalError),
        (dict(status_for=[("Say", 403)]), "http_403", FinalError),
        (dict(status_for=[("Say", 404)]), "http_404", FinalError),
        (dict(context_tokens=5), "context_length", FinalError),
        (dict(api_key="another-key"), "http_401", FinalError),
        (dict(garbage_rate=1.0), "invalid_json", RetryableError),
        (dict(content_filter_rate=1.0), "refusal", FinalError),
    ],
)
def test_errors_are_classified_once(config: dict, reason: str, kind: type) -> None:
    with TeacherServer(ServerConfig(**config)) as srv:
        with pytest.raises(kind) as err:
            asyncio.run(ask(teacher(srv), greedy("Say something.")))
        assert len(messages(srv)) == 1  # the SDK's own retries are off
    assert err.value.reason == reason
    if reason == "overloaded":
        assert err.value.status == 529  # so the orchestrator slows everyone down
    if reason == "http_429":
        assert err.value.retry_after == pytest.approx(3.0)


def test_a_failed_sample_is_the_only_one_asked_again() -> None:
    """fail_first=1: the first attempt of the prompt fails, the other samples answer.
    The retry asks for one more sample, not five."""
    with TeacherServer(ServerConfig(labels=["negative", "positive"], fail_first=1)) as srv:
        request = SENTIMENT.render({"text": "Quite good."})

        async def go() -> Completion:
            t = teacher(srv, samples=5)
            try:
                with pytest.raises(RetryableError):
                    await t.complete(request)
                return await t.complete(request)
            finally:
                await t.aclose()

        c = asyncio.run(go())
        assert len(messages(srv)) == 6
    assert c.samples is not None and len(c.samples) == 5


def test_cli_run_with_anthropic_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": f"review {i}"}) + "\n" for i in range(3)))
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        args = [
            "sentiment",
            str(data),
            "--teacher",
            "anthropic:claude-haiku-4-5",
            "--base-url",
            srv.url,
            "--store",
            str(tmp_path / "s.sqlite"),
        ]
        res = CliRunner().invoke(main, ["run", *args, "--quiet", "--json"])
        assert res.exit_code == 0, res.output
        summary = json.loads(res.output.strip().splitlines()[-1])
        assert summary["labeled"] == 3 and len(messages(srv)) == 15
        # --samples is part of the key: 3 samples is a different answer, asked again
        res = CliRunner().invoke(main, ["run", *args, "--samples", "3", "--quiet", "--json"])
        assert json.loads(res.output.strip().splitlines()[-1])["labeled"] == 3
        assert len(messages(srv)) == 15 + 9
    assert summary["cached_tokens"] > 0
