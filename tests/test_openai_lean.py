"""The lean transport is indistinguishable from the SDK teacher, except in speed.

Both teachers talk to the same local server; for every kind of answer (labels with
logprobs, legacy completions, each HTTP error, a broken body, a dropped or refused
connection, a hang) they must produce the same Completion or raise the same error class
with the same reason, status and retry-after, and send the same request body, so the
orchestrator, the store and the cache key cannot tell which one ran.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from labeler.completion import Completion
from labeler.errors import TeacherError
from labeler.request import Request
from labeler.task import load_task
from labeler.teachers.openai_lean import FastOpenAITeacher, openai_teacher
from labeler.teachers.openai_sdk import OpenAITeacher
from labeler.testing import ServerConfig, TeacherServer

Teacher = FastOpenAITeacher | OpenAITeacher


@pytest.fixture
def server() -> Iterator[TeacherServer]:
    cfg = ServerConfig(
        labels=["negative", "positive"],
        context_tokens=200,
        retry_after_s=1.5,
        status_for=[
            ("s400", 400),
            ("s401", 401),
            ("s404", 404),
            ("s408", 408),
            ("s429", 429),
            ("s500", 500),
            ("s503", 503),
        ],
    )
    with TeacherServer(cfg) as srv:
        yield srv


def both(base_url: str, **options: Any) -> tuple[OpenAITeacher, FastOpenAITeacher]:
    sdk = openai_teacher(
        "teacher-test", provider="openai-compatible", base_url=base_url, transport="aiohttp", **options
    )
    lean = openai_teacher(
        "teacher-test", provider="openai-compatible", base_url=base_url, transport="lean", **options
    )
    assert isinstance(sdk, OpenAITeacher) and isinstance(lean, FastOpenAITeacher)
    return sdk, lean


def outcome(teacher: Teacher, request: Request) -> Completion | TeacherError:
    async def go() -> Completion | TeacherError:
        try:
            return await teacher.complete(request)
        except TeacherError as exc:
            return exc
        finally:
            await teacher.aclose()

    return asyncio.run(go())


def comparable(result: Completion | TeacherError) -> tuple[Any, ...]:
    if isinstance(result, Completion):
        return (
            "ok",
            result.text,
            result.tokens,
            result.usage,
            result.finish_reason,
            result.model,
            result.samples,
        )
    return (type(result).__name__, result.reason, result.status, result.retry_after)


def chat(text: str, **params: Any) -> Request:
    return Request(messages=({"role": "user", "content": text},), params=params, template="t@1")


def test_answers_with_logprobs_are_identical(server: TeacherServer) -> None:
    task = load_task("sentiment")
    for text in ("a fine film", "a dull film", "the ending dragged"):
        request = task.render({"text": text})
        sdk, lean = both(server.url + "/v1")
        assert comparable(outcome(lean, request)) == comparable(outcome(sdk, request))


def test_legacy_completions_are_identical(server: TeacherServer) -> None:
    task = load_task("sentiment-completion")
    request = task.render({"text": "an honest, warm little film"})
    assert request.prompt is not None
    sdk, lean = both(server.url + "/v1")
    lean_out, sdk_out = outcome(lean, request), outcome(sdk, request)
    assert isinstance(lean_out, Completion) and lean_out.tokens
    assert comparable(lean_out) == comparable(sdk_out)


@pytest.mark.parametrize("needle", ["s400", "s401", "s404", "s408", "s429", "s500", "s503"])
def test_http_errors_are_classified_alike(server: TeacherServer, needle: str) -> None:
    request = chat(f"please answer {needle}", max_tokens=2)
    sdk, lean = both(server.url + "/v1")
    lean_err, sdk_err = outcome(lean, request), outcome(sdk, request)
    assert isinstance(lean_err, TeacherError)
    assert comparable(lean_err) == comparable(sdk_err)
    assert lean_err.message == sdk_err.message  # type: ignore[union-attr]


def test_context_too_long_is_final_with_its_reason(server: TeacherServer) -> None:
    request = chat("word " * 400, max_tokens=2)
    sdk, lean = both(server.url + "/v1")
    lean_err = outcome(lean, request)
    assert comparable(lean_err) == comparable(outcome(sdk, request))
    assert isinstance(lean_err, TeacherError) and lean_err.reason == "context_length"


@pytest.mark.parametrize("fault", ["garbage_rate", "content_filter_rate", "drop_rate"])
def test_broken_answers_are_classified_alike(server: TeacherServer, fault: str) -> None:
    setattr(server.config, fault, 1.0)
    request = chat("any text at all", max_tokens=2, logprobs=True, top_logprobs=5)
    sdk, lean = both(server.url + "/v1")
    lean_err = outcome(lean, request)
    assert isinstance(lean_err, TeacherError)
    assert comparable(lean_err) == comparable(outcome(sdk, request))


def test_a_hang_past_the_timeout_is_a_timeout(server: TeacherServer) -> None:
    server.config.hang_rate = 1.0
    server.config.hang_s = 3.0
    request = chat("slow", max_tokens=2)
    sdk, lean = both(server.url + "/v1", timeout=0.5)
    lean_err = outcome(lean, request)
    assert isinstance(lean_err, TeacherError) and lean_err.reason == "timeout"
    assert comparable(lean_err) == comparable(outcome(sdk, request))


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket is closed
    sdk, lean = both(f"http://127.0.0.1:{port}/v1")
    request = chat("hello", max_tokens=2)
    lean_err = outcome(lean, request)
    assert isinstance(lean_err, TeacherError) and lean_err.reason == "connection"
    assert comparable(lean_err) == comparable(outcome(sdk, request))


@pytest.mark.parametrize("provider", ["openai", "openai-compatible"])
@pytest.mark.parametrize("template", ["sentiment", "sentiment-completion", "extract"])
def test_request_bodies_and_identity_match_the_sdk_teacher(
    provider: str, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    task = load_task(template)
    row = {name: "some text" for name in task.fields}
    request = task.render(row)
    kw: dict[str, Any] = {"base_url": "http://127.0.0.1:9/v1"}
    sdk = OpenAITeacher("m", provider=provider, **kw)
    lean = FastOpenAITeacher("m", provider=provider, **kw)
    assert lean.request_body(request) == sdk.request_body(request)
    assert lean.identity == sdk.identity
    asyncio.run(sdk.aclose())


def test_headers_reach_the_observer_on_success(server: TeacherServer) -> None:
    server.config.rpm = 1000
    seen: list[str | None] = []
    _, lean = both(server.url + "/v1")
    lean.observe_headers(lambda h: seen.append(h.get("x-ratelimit-limit-requests")))
    assert isinstance(outcome(lean, chat("hi", max_tokens=2)), Completion)
    assert seen == ["1000"]


def test_one_session_serves_many_requests_and_survives_a_new_loop(server: TeacherServer) -> None:
    _, lean = both(server.url + "/v1")
    request = chat("again", max_tokens=2)

    async def many(n: int) -> list[Completion]:
        return list(await asyncio.gather(*(lean.complete(request) for _ in range(n))))

    assert len(asyncio.run(many(20))) == 20
    assert len(asyncio.run(many(5))) == 5  # a second event loop gets a session of its own
    asyncio.run(lean.aclose())


def test_the_lean_teacher_is_the_default_and_the_sdk_one_flag_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from labeler.errors import ConfigError
    from labeler.teachers import make_teacher

    monkeypatch.delenv("LABELER_TRANSPORT", raising=False)
    url = "http://127.0.0.1:9/v1"
    assert isinstance(make_teacher("openai-compatible:m", base_url=url), FastOpenAITeacher)
    sdk = make_teacher("openai-compatible:m", base_url=url, transport="httpx")
    assert isinstance(sdk, OpenAITeacher)
    asyncio.run(sdk.aclose())
    monkeypatch.setenv("LABELER_TRANSPORT", "aiohttp")
    sdk = make_teacher("openai-compatible:m", base_url=url)
    assert isinstance(sdk, OpenAITeacher)
    asyncio.run(sdk.aclose())
    monkeypatch.setenv("LABELER_TRANSPORT", "carrier-pigeon")
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        make_teacher("openai-compatible:m", base_url=url)


def test_openai_organization_and_project_headers_are_sent_as_the_sdk_sends_them(
    server: TeacherServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """To OpenAI itself (provider ``openai``) only: a self-hosted server never sees them."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-123")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_456")
    request = load_task("sentiment").render({"text": "fine"})
    seen = []
    for provider, transport in [("openai", "aiohttp"), ("openai", "lean"), ("openai-compatible", "lean")]:
        teacher = openai_teacher(
            "teacher-test", provider=provider, base_url=server.url + "/v1", transport=transport
        )
        outcome(teacher, request)
        headers = server.log[-1].headers or {}
        seen.append((headers.get("openai-organization"), headers.get("openai-project")))
        assert headers.get("authorization") == "[redacted]"  # sent, and never logged
    assert seen == [("org-123", "proj_456"), ("org-123", "proj_456"), (None, None)]
