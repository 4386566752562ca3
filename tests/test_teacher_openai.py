"""OpenAI and OpenAI-compatible teachers, one endpoint or several, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from labeler.cli import main
from labeler.completion import Completion
from labeler.engine import Labeler, Record
from labeler.errors import ConfigError, FinalError, RetryableError
from labeler.limits import Limiter
from labeler.request import Request
from labeler.retry import RetryPolicy
from labeler.task import load_task
from labeler.teachers import base_urls, make_teacher
from labeler.teachers import transport as http
from labeler.teachers.openai_sdk import OpenAITeacher
from labeler.teachers.pool import EndpointPool
from labeler.testing import ServerConfig, TeacherServer

from conftest import SAMPLES

LABELS = ["negative", "positive"]
SENTIMENT = load_task("sentiment")
FAST = RetryPolicy(initial_wait=0.01, max_wait=0.05)


def chat(server: TeacherServer) -> int:
    return sum(1 for r in server.log if r.path == "/v1/chat/completions")


def dead_url() -> str:
    """A local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def ask(teacher: Any, request: Request) -> Completion:
    try:
        return await teacher.complete(request)
    finally:
        await teacher.aclose()


def label(teacher: Any, data: list[dict[str, Any]], tmp: Path, **kw: Any) -> tuple[list[Record], Labeler]:
    async def go() -> tuple[list[Record], Labeler]:
        async with Labeler(
            SENTIMENT, teacher, store=tmp / "s.sqlite", retry=FAST, progress=False, **kw
        ) as lb:
            return [r async for r in lb.label(data)], lb

    return asyncio.run(go())


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "text": f"review number {i}"} for i in range(start, start + n)]


# -- one endpoint ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", http.TRANSPORTS)
def test_chat_with_logprobs_over_each_transport(teacher_server: TeacherServer, transport: str) -> None:
    t = OpenAITeacher(
        "teacher-test", provider="openai-compatible", base_url=teacher_server.url + "/v1", transport=transport
    )
    c = asyncio.run(ask(t, SENTIMENT.render({"text": "Lovely."})))
    assert c.text in LABELS and c.tokens and len(c.tokens[0].top) > 2
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens >= 1
    assert c.finish_reason == "stop"


def test_completion_mode_uses_the_completions_endpoint(teacher_server: TeacherServer) -> None:
    t = make_teacher("openai-compatible:teacher-test", base_url=teacher_server.url + "/v1")
    task = load_task("sentiment-completion")
    c = asyncio.run(ask(t, task.render({"text": "a joy"})))
    assert [r.path for r in teacher_server.log] == ["/v1/completions"]
    assert c.tokens and c.tokens[0].top
    assert teacher_server.log[0].body["logprobs"] == 20


def test_openai_maps_max_tokens_and_reports_cached_tokens() -> None:
    config = ServerConfig(labels=LABELS, openai_cache_min_tokens=64)
    with TeacherServer(config) as srv:
        t = make_teacher("openai:gpt-4o-mini", base_url=srv.url + "/v1", api_key="k")

        async def twice() -> Completion:
            await t.complete(SENTIMENT.render({"text": "one " * 40}))
            return await ask(t, SENTIMENT.render({"text": "one " * 40 + "two"}))

        c = asyncio.run(twice())
        body = srv.log[0].body
    assert "max_completion_tokens" in body and "max_tokens" not in body
    assert c.usage.cached_tokens >= 64


def test_missing_key_and_missing_base_url_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        make_teacher("openai:gpt-4o-mini")
    with pytest.raises(ConfigError, match="--base-url"):
        make_teacher("openai-compatible:m")


def test_rate_limit_headers_reach_the_limiter() -> None:
    with TeacherServer(ServerConfig(labels=LABELS, rpm=900, tpm=120_000)) as srv:
        limiter = Limiter(4)
        t = make_teacher("openai-compatible:teacher-test", base_url=srv.url + "/v1")
        t.observe_headers(limiter.observe_headers)
        asyncio.run(ask(t, SENTIMENT.render({"text": "x"})))
    assert (limiter.rpm, limiter.tpm) == (900, 120_000)


@pytest.mark.parametrize(
    "config,reason,kind",
    [
        (dict(status_for=[("Review", 429)], retry_after_s=2), "http_429", RetryableError),
        (dict(status_for=[("Review", 500)]), "http_500", RetryableError),
        (dict(status_for=[("Review", 502)]), "http_502", RetryableError),
        (dict(status_for=[("Review", 503)]), "http_503", RetryableError),
        (dict(status_for=[("Review", 408)]), "http_408", RetryableError),
        (dict(status_for=[("Review", 409)]), "http_409", RetryableError),
        (dict(status_for=[("Review", 400)]), "http_400", FinalError),
        (dict(status_for=[("Review", 403)]), "http_403", FinalError),
        (dict(status_for=[("Review", 404)]), "http_404", FinalError),
        (dict(context_tokens=20), "context_length", FinalError),
        # llama.cpp's server: a 400 of type exceed_context_size_error, its own wording
        (dict(context_tokens=20, context_error_shape="llama"), "context_length", FinalError),
        (dict(api_key="other"), "http_401", FinalError),
        (dict(garbage_rate=1.0), "invalid_json", RetryableError),
        (dict(garbage_rate=1.0, garbage_content_type="text/html"), "invalid_json", RetryableError),
        (dict(content_filter_rate=1.0), "content_filter", FinalError),
        (dict(drop_rate=1.0), "disconnected", RetryableError),
    ],
)
def test_errors_are_classified_once(config: dict[str, Any], reason: str, kind: type) -> None:
    with TeacherServer(ServerConfig(labels=LABELS, **config)) as srv:
        t = make_teacher("openai-compatible:teacher-test", base_url=srv.url + "/v1", api_key="mine")
        with pytest.raises(kind) as err:
            asyncio.run(ask(t, SENTIMENT.render({"text": "fine"})))
        assert chat(srv) == 1
    assert err.value.reason == reason
    if reason == "http_429":
        assert err.value.retry_after == pytest.approx(2.0)
    if reason == "context_length":
        assert err.value.message.startswith("prompt too long for the server's context: ")


@pytest.mark.parametrize("transport", http.TRANSPORTS)
def test_refused_connection_and_timeout_are_told_apart(transport: str) -> None:
    t = OpenAITeacher("m", provider="openai-compatible", base_url=dead_url(), transport=transport)
    with pytest.raises(RetryableError) as err:
        asyncio.run(ask(t, SENTIMENT.render({"text": "x"})))
    assert err.value.reason == "connection"
    with TeacherServer(ServerConfig(labels=LABELS, hang_rate=1.0, hang_s=3)) as srv:
        t = OpenAITeacher(
            "m", provider="openai-compatible", base_url=srv.url + "/v1", transport=transport, timeout=0.2
        )
        with pytest.raises(RetryableError) as err:
            asyncio.run(ask(t, SENTIMENT.render({"text": "x"})))
    assert err.value.reason == "timeout"


def test_transport_is_chosen_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    assert http.pick() == http.DEFAULT_TRANSPORT == "aiohttp"
    monkeypatch.setenv("LABELER_TRANSPORT", "httpx")
    assert http.pick() == "httpx"
    assert http.pick("aiohttp") == "aiohttp"
    with pytest.raises(ConfigError, match="transport"):
        http.pick("carrier-pigeon")


# -- several endpoints -------------------------------------------------------------------


def test_base_url_lists() -> None:
    assert base_urls(None) == []
    assert base_urls("http://a/v1") == ["http://a/v1"]
    assert base_urls("http://a/v1, http://b/v1") == ["http://a/v1", "http://b/v1"]
    assert base_urls(["http://a/v1,http://b/v1", "http://c/v1", "http://a/v1"]) == [
        "http://a/v1",
        "http://b/v1",
        "http://c/v1",
    ]


def test_pool_identity_does_not_depend_on_the_endpoints() -> None:
    one = make_teacher("openai-compatible:m", base_url="http://a/v1")
    pool = make_teacher("openai-compatible:m", base_url=["http://a/v1", "http://b/v1"])
    other = make_teacher("openai-compatible:m", base_url="http://c/v1,http://b/v1,http://d/v1")
    named = make_teacher("openai-compatible:m", base_url="http://a/v1", cache_identity="q4")
    assert isinstance(pool, EndpointPool) and isinstance(named, EndpointPool)
    assert one.identity["base_url"] == "http://a/v1"
    assert (
        pool.identity == other.identity == {"provider": "openai-compatible", "model": "m", "endpoint": "pool"}
    )
    assert named.identity["endpoint"] == "q4"
    with pytest.raises(ConfigError):
        make_teacher("local:smollm2-135m", base_url="http://a/v1,http://b/v1")


def test_requests_are_spread_over_endpoints(tmp_path: Path) -> None:
    config = ServerConfig(labels=LABELS, latency_s=0.02)
    with TeacherServer(config) as a, TeacherServer(config) as b, TeacherServer(config) as c:
        pool = make_teacher("openai-compatible:teacher-test", base_url=[s.url + "/v1" for s in (a, b, c)])
        recs, _ = label(pool, rows(30), tmp_path, concurrency=6)
        counts = [chat(s) for s in (a, b, c)]
    assert [r.status for r in recs] == ["labeled"] * 30
    assert sum(counts) == 30 and min(counts) >= 6, counts


def test_a_dead_endpoint_is_routed_around_and_probed_back(tmp_path: Path) -> None:
    config = ServerConfig(labels=LABELS, latency_s=0.01)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go(live: TeacherServer) -> None:
        endpoints = [
            OpenAITeacher("teacher-test", provider="openai-compatible", base_url=u)
            for u in (live.url + "/v1", f"http://127.0.0.1:{port}/v1")
        ]
        pool = EndpointPool(endpoints, cooldown_s=0.3, fail_after=2)
        async with Labeler(
            SENTIMENT, pool, store=tmp_path / "s.sqlite", retry=FAST, progress=False, concurrency=4
        ) as lb:
            recs = [r async for r in lb.label(rows(20))]
            assert [r.status for r in recs] == ["labeled"] * 20
            assert lb.summary.retries == 0  # refused connections were failed over at once
            down = pool.health()[1]
            assert down["out"] and down["streak"] >= 2
            async with TeacherServer(config, port=port) as back:
                await asyncio.sleep(0.35)  # past the cooldown: the next request probes it
                recs = [r async for r in lb.label(rows(20, start=100))]
                assert [r.status for r in recs] == ["labeled"] * 20
                assert chat(back) >= 2  # back in rotation, not just probed once
            assert not pool.health()[1]["out"] and pool.health()[1]["streak"] == 0

    with TeacherServer(config) as live:
        asyncio.run(go(live))


def test_failing_endpoint_is_taken_out(tmp_path: Path) -> None:
    with (
        TeacherServer(ServerConfig(labels=LABELS)) as good,
        TeacherServer(ServerConfig(labels=LABELS, error_rate=1.0)) as bad,
    ):
        endpoints = [
            OpenAITeacher("teacher-test", provider="openai-compatible", base_url=u)
            for u in (good.url + "/v1", bad.url + "/v1")
        ]
        pool = EndpointPool(endpoints, cooldown_s=30, fail_after=3)
        recs, _ = label(pool, rows(30), tmp_path, concurrency=4)
        assert [r.status for r in recs] == ["labeled"] * 30
        assert chat(bad) <= 3 + 4  # the streak, plus what was in flight when it ended


def test_all_endpoints_down_ends_the_run_naming_them(tmp_path: Path) -> None:
    urls = [dead_url(), dead_url()]
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(SAMPLES / "reviews.jsonl"),
            "--teacher",
            "openai-compatible:m",
            "--quiet",
            "--base-url",
            urls[0],
            "--base-url",
            urls[1],
            "--store",
            str(tmp_path / "s.sqlite"),
        ],
    )
    assert res.exit_code == 1
    assert "cannot reach the teacher" in res.output
    assert urls[0] in res.output and urls[1] in res.output


@pytest.mark.parametrize("style", ["repeated", "commas"])
def test_cli_several_base_urls(tmp_path: Path, style: str) -> None:
    with TeacherServer(ServerConfig(labels=LABELS)) as a, TeacherServer(ServerConfig(labels=LABELS)) as b:
        urls = [a.url + "/v1", b.url + "/v1"]
        flags = (
            ["--base-url", urls[0], "--base-url", urls[1]]
            if style == "repeated"
            else ["--base-url", ",".join(urls)]
        )
        args = [
            "sentiment",
            str(SAMPLES / "reviews.jsonl"),
            "--teacher",
            "openai-compatible:teacher-test",
            *flags,
            "--store",
            str(tmp_path / "s.sqlite"),
        ]
        runner = CliRunner()
        res = runner.invoke(main, ["run", *args, "--quiet", "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output.splitlines()[-1])["labeled"] == 24
        assert chat(a) > 0 and chat(b) > 0 and chat(a) + chat(b) == 24
        # Another set of endpoints serving the same model: everything is already stored.
        with TeacherServer(ServerConfig(labels=LABELS)) as c:
            other = [
                "sentiment",
                str(SAMPLES / "reviews.jsonl"),
                "--teacher",
                "openai-compatible:teacher-test",
                "--base-url",
                urls[1],
                "--base-url",
                c.url + "/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
            ]
            res = runner.invoke(main, ["run", *other, "--quiet", "--json"])
            assert res.exit_code == 0, res.output
            assert json.loads(res.output.splitlines()[-1])["cached"] == 24
            assert chat(c) == 0


@pytest.mark.parametrize("transport", ["lean", "httpx"])
def test_a_completion_template_on_a_chat_only_server_says_to_use_a_chat_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    monkeypatch.setenv("LABELER_TRANSPORT", transport)
    with TeacherServer(ServerConfig(labels=LABELS, chat_only=True)) as srv:
        res = CliRunner().invoke(
            main,
            [
                "run",
                "sentiment-completion",
                str(SAMPLES / "reviews.jsonl"),
                "--quiet",
                "--teacher",
                "openai-compatible:teacher-test",
                "--base-url",
                srv.url + "/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
                "-c",
                "1",
            ],
        )
        sent = sum(1 for r in srv.log if r.path == "/v1/completions")
    assert res.exit_code == 1, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("labeler: error: ") and "/v1/completions" in lines[0]
    assert "chat template" in lines[0] and "404" in lines[0]
    assert sent <= 2  # it stops at the first answer, not after every row
