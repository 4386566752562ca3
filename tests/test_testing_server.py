"""The local teacher server, driven over real HTTP by the real OpenAI and Anthropic SDKs.

Whatever labeler's teachers will meet in production (logprob shapes, cache usage,
provider error bodies and headers, dropped connections, limits) must first look right
to the SDKs themselves, so every check here goes through them, with raw httpx only
where an SDK hides the wire.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionTokenLogprob

from labeler.testing import (
    EchoResponder,
    LabelResponder,
    Reply,
    ScriptedResponder,
    ServerConfig,
    TeacherServer,
    count_tokens,
    tokenize,
)

T = TypeVar("T")
Serve = Callable[..., TeacherServer]

REVIEW = "The film was a delight from start to finish."
USER = [{"role": "user", "content": REVIEW}]
PROMPT = f"user: {REVIEW}"
LABELS = ["positive", "negative", "neutral"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[TeacherServer] = []

    def start(**fields: Any) -> TeacherServer:
        server = TeacherServer(ServerConfig(**fields)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def oai(srv: TeacherServer, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key="test", max_retries=0, **options)


def claude(srv: TeacherServer, **options: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=srv.url, api_key="test", max_retries=0, **options)


async def chat(srv: TeacherServer, content: str = REVIEW, **params: Any) -> ChatCompletion:
    async with oai(srv) as client:
        return await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": content}], **params
        )


async def message(srv: TeacherServer, content: str = REVIEW, **params: Any) -> anthropic.types.Message:
    params.setdefault("max_tokens", 16)
    async with claude(srv) as client:
        return await client.messages.create(
            model="claude-test", messages=[{"role": "user", "content": content}], **params
        )


# -- answers and logprobs ---------------------------------------------------------------


def test_chat_logprobs_parse_into_sdk_types(serve: Serve) -> None:
    srv = serve(labels=LABELS)
    resp = run(chat(srv, logprobs=True, top_logprobs=5, max_tokens=1, temperature=0))
    responder = LabelResponder(LABELS)

    assert isinstance(resp, ChatCompletion)
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.model == "gpt-test" and resp.system_fingerprint
    choice = resp.choices[0]
    assert choice.message.content == responder.label_for(PROMPT)
    assert choice.finish_reason == "stop"
    assert choice.logprobs is not None and choice.logprobs.content is not None
    first = choice.logprobs.content[0]
    assert isinstance(first, ChatCompletionTokenLogprob)
    assert first.bytes == list(first.token.encode())
    expected = responder.token_distribution(PROMPT)[:5]
    assert [t.token for t in first.top_logprobs] == [tok for tok, _ in expected]
    for alt, (_, p) in zip(first.top_logprobs, expected, strict=True):
        assert alt.logprob == pytest.approx(math.log(p), abs=1e-12)
        assert alt.bytes == list(alt.token.encode())
    assert first.logprob == first.top_logprobs[0].logprob
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == count_tokens(PROMPT)
    assert resp.usage.completion_tokens == 1
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 1
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 0


def test_scripted_logprobs_round_trip_exactly(serve: Serve) -> None:
    tops = [[("yes", -0.105360516), ("no", -2.302585093), (" yes", -4.1)], [(".", -0.01), ("!", -4.6)]]
    rules = [
        ("Is water wet?", Reply("yes.", top_logprobs=tops, tokens=["yes", "."])),
        ("Unlisted?", Reply("maybe", top_logprobs=[[("yes", -0.2), ("no", -2.5)]])),
    ]
    srv = serve(responder=ScriptedResponder(rules))

    resp = run(chat(srv, "Is water wet?", logprobs=True, top_logprobs=20))
    content = resp.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    assert resp.choices[0].message.content == "yes."
    assert [c.token for c in content] == ["yes", "."]
    for item, given in zip(content, tops, strict=True):
        assert item.logprob == pytest.approx(dict(given)[item.token], abs=1e-9)
        assert [(a.token, a.logprob) for a in item.top_logprobs] == given

    unlisted = run(chat(srv, "Unlisted?", logprobs=True, top_logprobs=2))
    item = unlisted.choices[0].logprobs.content[0]  # type: ignore[union-attr, index]
    assert item.token == "maybe" and item.logprob == pytest.approx(-3.5)

    other = run(chat(srv, "Tell me about rivers."))
    assert "rivers" in (other.choices[0].message.content or "")


def test_n_choices_greedy_agree_and_samples_repeat_across_runs(serve: Serve) -> None:
    srv = serve(labels=["alpha", "beta", "gamma"])
    greedy = run(chat(srv, n=4, temperature=0, max_tokens=1))
    assert len(greedy.choices) == 4 and [c.index for c in greedy.choices] == [0, 1, 2, 3]
    assert len({c.message.content for c in greedy.choices}) == 1

    srv.reset()  # every answer counts as a call, greedy ones included
    sampled = run(chat(srv, n=40, temperature=1.0, max_tokens=1))
    texts = [c.message.content or "" for c in sampled.choices]
    assert {t.strip() for t in texts} <= {"alpha", "beta", "gamma"}
    assert len({t.strip() for t in texts}) > 1
    srv.reset()
    again = run(chat(srv, n=40, temperature=1.0, max_tokens=1))
    assert [c.message.content for c in again.choices] == texts


def test_a_pinned_seed_repeats_its_samples(serve: Serve) -> None:
    srv = serve(labels=["alpha", "beta", "gamma"])
    first = run(chat(srv, n=6, temperature=1.0, seed=42, max_tokens=1))
    again = run(chat(srv, n=6, temperature=1.0, seed=42, max_tokens=1))
    other = run(chat(srv, n=6, temperature=1.0, seed=43, max_tokens=1))
    samples = [c.message.content for c in first.choices]
    assert [c.message.content for c in again.choices] == samples
    assert [c.message.content for c in other.choices] != samples


def test_max_tokens_and_stop_truncate_like_the_provider(serve: Serve) -> None:
    srv = serve(default_temperature=0.0)
    full = run(chat(srv))
    text = full.choices[0].message.content or ""
    assert full.choices[0].finish_reason == "stop" and text.count(".") >= 2
    assert full.usage is not None and full.usage.completion_tokens == len(tokenize(text))

    short = run(chat(srv, max_completion_tokens=3))
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content == "".join(tokenize(text)[:3])
    assert short.usage is not None and short.usage.completion_tokens == 3

    stopped = run(chat(srv, stop=["."]))
    assert stopped.choices[0].message.content == text[: text.index(".")]
    assert stopped.choices[0].finish_reason == "stop"


def test_legacy_completions_shape(serve: Serve) -> None:
    labels = ["positive", "negative"]
    srv = serve(labels=labels)
    prompt = "Review: loved every minute\nSentiment:"

    async def go() -> Any:
        async with oai(srv) as client:
            return await client.completions.create(
                model="m", prompt=prompt, logprobs=3, max_tokens=1, temperature=0
            )

    resp = run(go())
    responder = LabelResponder(labels)
    choice = resp.choices[0]
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-")
    assert choice.text == " " + responder.label_for(prompt)
    lp = choice.logprobs
    assert lp.tokens == [choice.text] and lp.text_offset == [len(prompt)]
    expected = dict(responder.token_distribution(prompt, "openai-completions")[:3])
    assert lp.top_logprobs[0] == pytest.approx({t: math.log(p) for t, p in expected.items()}, abs=1e-12)
    assert lp.token_logprobs[0] == lp.top_logprobs[0][choice.text]
    assert resp.usage.prompt_tokens == count_tokens(prompt)


def test_llama_server_completions_shape(serve: Serve) -> None:
    srv = serve(labels=["positive", "negative"], completions_shape="llama")
    body = {"model": "m", "prompt": "Sentiment of 'great!':", "logprobs": 2, "max_tokens": 1}
    data = httpx.post(srv.url + "/v1/completions", json=body).json()

    logprobs = data["choices"][0]["logprobs"]
    assert set(logprobs) == {"content"}
    item = logprobs["content"][0]
    assert set(item) == {"id", "token", "bytes", "logprob", "top_logprobs"}
    assert item["token"] == data["choices"][0]["text"]
    assert len(item["top_logprobs"]) == 2
    assert set(item["top_logprobs"][0]) == {"id", "token", "bytes", "logprob"}

    async def via_sdk() -> Any:
        async with oai(srv) as client:
            return await client.completions.create(**body)

    parsed = run(via_sdk())
    assert parsed.choices[0].logprobs.model_extra["content"][0]["token"] == item["token"]


def test_openai_automatic_prompt_cache(serve: Serve) -> None:
    srv = serve(context_tokens=100_000)
    long_doc = "lorem ipsum dolor " * 500
    first = run(chat(srv, long_doc + "Question one?"))
    second = run(chat(srv, long_doc + "Question two?"))
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]
    cached = second.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert cached >= 1024 and cached % 128 == 0 and cached <= second.usage.prompt_tokens  # type: ignore[union-attr]


def test_anthropic_message_and_prompt_cache_usage(serve: Serve) -> None:
    srv = serve(labels=LABELS, default_temperature=0.0)
    rules = "You are a careful sentiment rater. " * 30
    system = [{"type": "text", "text": rules, "cache_control": {"type": "ephemeral"}}]
    first = run(message(srv, REVIEW, system=system))
    second = run(message(srv, "Dull and far too long.", system=system))

    assert isinstance(first, anthropic.types.Message)
    assert first.type == "message" and first.role == "assistant" and first.id.startswith("msg_")
    assert first.content[0].type == "text"
    prompt = f"system: {rules}\nuser: {REVIEW}"
    assert first.content[0].text == LabelResponder(LABELS).label_for(prompt)
    assert first.stop_reason == "end_turn"
    prefix = count_tokens(f"system: {rules}")
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.input_tokens == count_tokens(f"user: {REVIEW}")
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0

    srv.config.responder = EchoResponder()
    capped = run(message(srv, max_tokens=2))
    assert capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 2


def test_batched_completions_and_token_counting(serve: Serve) -> None:
    srv = serve(default_temperature=0.0)
    prompts = ["Once upon a time", "The capital of France is"]

    async def go() -> tuple[Any, Any]:
        async with oai(srv) as o, claude(srv) as c:
            batch = await o.completions.create(model="m", prompt=prompts, n=2, max_tokens=8)
            counted = await c.messages.count_tokens(model="claude-test", messages=USER)
            return batch, counted

    batch, counted = run(go())
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert batch.choices[0].text == batch.choices[1].text != batch.choices[2].text
    assert batch.usage.prompt_tokens == sum(count_tokens(p) for p in prompts)
    assert batch.usage.completion_tokens == 32
    assert counted.input_tokens == count_tokens(PROMPT)


def test_a_failing_responder_is_a_500(serve: Serve) -> None:
    def broken(view: Any) -> Reply:
        raise RuntimeError("no answer for " + view.last_user)

    srv = serve(responder=broken)
    with pytest.raises(openai.InternalServerError) as err:
        run(chat(srv, "why?"))
    assert "RuntimeError: no answer for why?" in err.value.message
    assert srv.log[0].fault == "responder_error"


def test_async_context_manager() -> None:
    async def go() -> str | None:
        async with TeacherServer(ServerConfig(default_temperature=0.0)) as srv:
            resp = await chat(srv, "Hello there")
            return resp.choices[0].message.content

    assert "Hello there" in (run(go()) or "")


def test_anthropic_samples_follow_the_label_distribution(serve: Serve) -> None:
    # The anthropic SDK has no `temperature` argument: the default (1.0) samples.
    srv = serve(labels=["yes", "no"])

    async def sample(k: int) -> list[str]:
        async with claude(srv) as client:
            out = []
            for _ in range(k):
                msg = await client.messages.create(model="claude-test", max_tokens=1, messages=USER)
                out.append(msg.content[0].text.strip())  # type: ignore[union-attr]
            return out

    texts = run(sample(100))
    truth = LabelResponder(["yes", "no"]).label_distribution(PROMPT)
    assert abs(texts.count("yes") / 100 - truth["yes"]) < 0.15
    srv.reset()
    assert run(sample(10)) == texts[:10]


# -- faults -----------------------------------------------------------------------------


def test_server_errors_are_provider_shaped(serve: Serve) -> None:
    srv = serve(error_rate=1.0)
    with pytest.raises(openai.InternalServerError) as oa:
        run(chat(srv))
    assert oa.value.status_code == 500
    assert oa.value.body == {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert oa.value.request_id and oa.value.request_id.startswith("req_")

    with pytest.raises(anthropic.InternalServerError) as an:
        run(message(srv))
    assert an.value.body["type"] == "error"  # type: ignore[index]
    assert an.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert an.value.response.headers["request-id"].startswith("req_")

    srv.config.error_rate, srv.config.overloaded_rate = 0.0, 1.0
    with pytest.raises(anthropic.OverloadedError) as over:
        run(message(srv))
    assert over.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(openai.InternalServerError) as busy:
        run(chat(srv))
    assert busy.value.status_code == 503


def test_injected_429_carries_retry_after(serve: Serve) -> None:
    srv = serve(rate_limit_rate=1.0, retry_after_s=2.5)
    with pytest.raises(openai.RateLimitError) as oa:
        run(chat(srv))
    assert oa.value.code == "rate_limit_exceeded"
    assert oa.value.response.headers["retry-after"] == "3"
    assert oa.value.response.headers["retry-after-ms"] == "2500"
    with pytest.raises(anthropic.RateLimitError) as an:
        run(message(srv))
    assert an.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert an.value.response.headers["retry-after-ms"] == "2500"
    assert srv.stats()["by_status"] == {"429": 2}


def test_garbage_200_is_not_json(serve: Serve) -> None:
    srv = serve(garbage_rate=1.0)
    with pytest.raises(ValueError):
        run(chat(srv))
    with pytest.raises(ValueError):
        run(message(srv))
    srv.config.garbage_content_type = "text/html"

    async def raw_text() -> Any:
        async with oai(srv) as client:
            return await client.chat.completions.create(model="m", messages=USER)

    assert isinstance(run(raw_text()), str)
    assert srv.stats()["by_fault"] == {"garbage": 3}


def test_dropped_connection_raises_connection_error(serve: Serve) -> None:
    srv = serve(drop_rate=1.0)
    with pytest.raises(openai.APIConnectionError) as oa:
        run(chat(srv))
    assert not isinstance(oa.value, openai.APITimeoutError)
    with pytest.raises(anthropic.APIConnectionError):
        run(message(srv))
    assert [(r.status, r.fault) for r in srv.log] == [(None, "drop"), (None, "drop")]


def test_hang_outlasts_the_client_timeout(serve: Serve) -> None:
    srv = serve(hang_rate=1.0, hang_s=5.0)

    async def go() -> None:
        async with oai(srv, timeout=0.3) as client:
            await client.chat.completions.create(model="m", messages=USER)

    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        run(go())
    assert time.monotonic() - started < 2.0
    assert srv.log[0].fault == "hang"


def test_context_length_errors(serve: Serve) -> None:
    srv = serve(context_tokens=10)
    long_text = "word " * 20
    with pytest.raises(openai.BadRequestError) as oa:
        run(chat(srv, long_text))
    assert oa.value.code == "context_length_exceeded" and oa.value.param == "messages"
    assert "maximum context length is 10 tokens" in oa.value.message
    with pytest.raises(anthropic.BadRequestError) as an:
        run(message(srv, long_text))
    assert an.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert an.value.body["error"]["message"].startswith("prompt is too long: ")  # type: ignore[index]


def test_status_for_pins_final_errors(serve: Serve) -> None:
    srv = serve(status_for=[("bad-key", 401), ("no-model", 404), ("refused", 400)])
    with pytest.raises(openai.AuthenticationError):
        run(chat(srv, "bad-key here"))
    with pytest.raises(openai.NotFoundError) as nf:
        run(chat(srv, "no-model here"))
    assert nf.value.code == "model_not_found"
    with pytest.raises(anthropic.AuthenticationError) as auth:
        run(message(srv, "bad-key here"))
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        run(message(srv, "no-model here"))
    with pytest.raises(anthropic.BadRequestError):
        run(message(srv, "refused"))
    assert run(chat(srv, "fine")).choices[0].message.content


def test_fail_first_schedule_is_exact(serve: Serve) -> None:
    srv = serve(fail_first=2, fail_status=503)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            run(chat(srv, "first prompt"))
    assert run(chat(srv, "first prompt")).choices[0].message.content
    with pytest.raises(openai.InternalServerError):
        run(chat(srv, "second prompt"))
    assert [(r.attempt, r.status, r.fault) for r in srv.log] == [
        (0, 503, "fail_first"),
        (1, 503, "fail_first"),
        (2, 200, None),
        (0, 503, "fail_first"),
    ]
    srv.reset()
    assert len(srv.log) == 0 and srv.stats()["requests"] == 0
    with pytest.raises(openai.InternalServerError):
        run(chat(srv, "first prompt"))


def test_random_faults_reproduce_for_a_seed(serve: Serve) -> None:
    def statuses(srv: TeacherServer) -> list[int]:
        with httpx.Client(base_url=srv.url) as client:
            return [
                client.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]},
                ).status_code
                for i in range(30)
            ]

    srv = serve(error_rate=0.5, seed=7)
    first = statuses(srv)
    srv.reset()
    assert statuses(srv) == first
    assert set(first) == {200, 500}
    srv.config.seed = 8
    srv.reset()
    assert statuses(srv) != first


def test_content_filter(serve: Serve) -> None:
    srv = serve(content_filter_rate=1.0)
    resp = run(chat(srv, logprobs=True))
    assert resp.choices[0].finish_reason == "content_filter"
    assert resp.choices[0].message.content is None
    msg = run(message(srv))
    assert msg.stop_reason == "refusal" and msg.content == []


def test_latency_is_applied_and_logged(serve: Serve) -> None:
    srv = serve(latency_s=0.2)
    started = time.monotonic()
    run(chat(srv))
    assert time.monotonic() - started >= 0.2
    record = srv.log[0]
    assert record.latency is not None and record.latency >= 0.2
    assert record.body["messages"] == USER and record.prompt == PROMPT and record.status == 200


# -- limits and keys --------------------------------------------------------------------


def test_rpm_is_enforced_over_a_sliding_window(serve: Serve) -> None:
    srv = serve(rpm=5, rate_window_s=1.0)
    body = {"model": "m", "messages": USER, "max_tokens": 1}

    async def go() -> None:
        async with httpx.AsyncClient(base_url=srv.url) as client:
            remaining = []
            for _ in range(5):
                resp = await client.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200
                assert resp.headers["x-ratelimit-limit-requests"] == "5"
                remaining.append(resp.headers["x-ratelimit-remaining-requests"])
            assert remaining == ["4", "3", "2", "1", "0"]
            refused = await client.post("/v1/chat/completions", json=body)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            wait_ms = int(refused.headers["retry-after-ms"])
            assert 0 < wait_ms <= 1000 and refused.headers["retry-after"] == "1"
            async with oai(srv) as sdk:
                with pytest.raises(openai.RateLimitError):
                    await sdk.chat.completions.create(**body)
            await asyncio.sleep(wait_ms / 1000 + 0.05)
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200

    run(go())
    assert srv.stats()["by_status"] == {"200": 6, "429": 2}


def test_tpm_with_anthropic_headers(serve: Serve) -> None:
    srv = serve(tpm=100, rpm=50)

    async def go() -> tuple[Any, Any]:
        async with claude(srv) as client:
            ok = await client.messages.with_raw_response.create(model="c", max_tokens=60, messages=USER)
            with pytest.raises(anthropic.RateLimitError) as refused:
                await client.messages.create(model="c", max_tokens=60, messages=USER)
            return ok, refused.value

    ok, refused = run(go())
    cost = count_tokens(PROMPT) + 60
    assert ok.headers["anthropic-ratelimit-tokens-limit"] == "100"
    assert ok.headers["anthropic-ratelimit-tokens-remaining"] == str(100 - cost)
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "49"
    reset = datetime.fromisoformat(ok.headers["anthropic-ratelimit-requests-reset"])
    assert reset.tzinfo is not None
    assert float(refused.response.headers["retry-after"]) > 0


def test_api_key_is_checked_and_never_exposed(serve: Serve) -> None:
    key = "sk-teacher-secret-123"
    srv = serve(api_key=key)
    with pytest.raises(openai.AuthenticationError) as oa:
        run(chat(srv))
    assert oa.value.code == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError):
        run(message(srv))

    async def with_key() -> tuple[Any, Any]:
        async with openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0) as o:
            a = await o.chat.completions.create(model="m", messages=USER)
        async with anthropic.AsyncAnthropic(base_url=srv.url, api_key=key, max_retries=0) as c:
            b = await c.messages.create(model="c", max_tokens=5, messages=USER)
        return a, b

    a, b = run(with_key())
    assert a.choices[0].message.content and b.content
    exposed = repr(srv.config) + repr(list(srv.log)) + httpx.get(srv.url + "/_config").text
    assert key not in exposed


# -- endpoints and modes ----------------------------------------------------------------


def test_models_health_and_unknown_paths(serve: Serve) -> None:
    srv = serve(model="teacher-x")

    async def go() -> tuple[Any, Any]:
        async with oai(srv) as o, claude(srv) as c:
            return await o.models.list(), await c.models.list()

    openai_models, anthropic_models = run(go())
    assert [m.id for m in openai_models.data] == ["teacher-x"]
    assert [m.id for m in anthropic_models.data] == ["teacher-x"]
    assert httpx.get(srv.url + "/health").json() == {"status": "ok"}
    missing = httpx.post(srv.url + "/v1/nowhere", json={})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        ServerConfig(error_rate=0.7, drop_rate=0.5)
    with pytest.raises(ValueError):
        ServerConfig(completions_shape="vllm")


def test_subprocess_mode_prints_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "labeler.testing", "serve", "--port", "0", "--labels", "a,b", "--rpm", "100"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=15)
        url = line[0].strip()
        assert url.startswith("http://127.0.0.1:")
        body = {"model": "m", "messages": USER, "max_tokens": 1}
        with httpx.Client(base_url=url) as client:
            assert client.get("/_stats").json()["first_at"] is None
            before = time.time()
            resp = client.post("/v1/chat/completions", json=body)
            assert resp.json()["choices"][0]["message"]["content"].strip() in {"a", "b"}
            assert resp.headers["x-ratelimit-remaining-requests"] == "99"
            assert client.post("/_config", json={"error_rate": 1.0}).json()["error_rate"] == 1.0
            assert client.post("/v1/chat/completions", json=body).status_code == 500
            stats = client.get("/_stats").json()
        assert stats["by_status"] == {"200": 1, "500": 1}
        assert stats["by_path"] == {"/v1/chat/completions": 2}
        # Epoch times of the first and last answer: how a benchmark tells a client
        # process's start-up from its requests.
        assert before <= stats["first_at"] < stats["last_at"] <= time.time()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()
