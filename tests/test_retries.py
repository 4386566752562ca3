"""Every failure class through the whole path: real SDKs, real HTTP, counted at the server.

The server's log is the witness: how many requests each prompt took, and when each
arrived, so "retried", "not retried", "retried after retry-after" and "the SDK did not
retry on its own" are all checked where they happen, not inferred from the client.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from labeler.engine import Labeler, Record
from labeler.errors import RetryableError
from labeler.request import Request
from labeler.retry import RetryPolicy
from labeler.task import load_task
from labeler.teachers import make_teacher
from labeler.testing import ServerConfig, TeacherServer

FAST = RetryPolicy(max_attempts=8, initial_wait=0.01, max_wait=0.05)
LABELS = ["negative", "positive"]


def rows(n: int, word: str = "review") -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "text": f"{word} number {i}"} for i in range(n)]


def label(
    server: TeacherServer,
    data: Sequence[dict[str, Any]],
    *,
    provider: str = "openai",
    retry: RetryPolicy = FAST,
    **teacher_opts: Any,
) -> tuple[list[Record], Labeler]:
    """Label `data` with the sentiment template into a fresh store; records and labeler."""
    if provider == "anthropic":
        teacher = make_teacher(
            "anthropic:claude-haiku-4-5", base_url=server.url, api_key="k", samples=1, **teacher_opts
        )
    else:
        teacher = make_teacher("openai-compatible:teacher-test", base_url=server.url + "/v1", **teacher_opts)

    async def go() -> tuple[list[Record], Labeler]:
        with tempfile.TemporaryDirectory() as tmp:
            async with Labeler(
                load_task("sentiment"),
                teacher,
                store=Path(tmp) / "s.sqlite",
                concurrency=8,
                retry=retry,
                progress=False,
            ) as lb:
                return [r async for r in lb.label(data)], lb

    return asyncio.run(go())


def per_prompt(server: TeacherServer) -> Counter[str]:
    return Counter(r.prompt for r in server.log if r.path in ("/v1/chat/completions", "/v1/messages"))


def generation_log(server: TeacherServer) -> list[Any]:
    return [r for r in server.log if r.path in ("/v1/chat/completions", "/v1/messages")]


# -- retried ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider,wait", [("openai", 1.0), ("anthropic", 0.5)])
def test_429_waits_for_retry_after(provider: str, wait: float) -> None:
    config = ServerConfig(labels=LABELS, fail_first=1, fail_status=429, retry_after_s=wait)
    with TeacherServer(config) as srv:
        recs, lb = label(srv, rows(3), provider=provider)
        log = generation_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 3
    assert lb.summary.rate_limited == 3 and lb.summary.retries == 3
    for prompt in {r.prompt for r in log}:
        first, second = sorted((r for r in log if r.prompt == prompt), key=lambda r: r.received)
        assert first.status == 429 and second.status == 200
        assert second.received - first.responded >= wait  # the server's retry-after, honoured


def test_retry_after_ms_is_preferred_to_whole_seconds() -> None:
    # retry-after says "1" (rounded up), retry-after-ms says 250: the ms value is the truth.
    config = ServerConfig(labels=LABELS, fail_first=1, fail_status=429, retry_after_s=0.25)
    with TeacherServer(config) as srv:
        recs, _ = label(srv, rows(1))
        first, second = generation_log(srv)
    assert recs[0].status == "labeled"
    gap = second.received - first.responded
    assert 0.25 <= gap < 0.9


@pytest.mark.parametrize("status", [500, 502, 503, 529])
def test_server_errors_are_retried(status: int) -> None:
    config = ServerConfig(labels=LABELS, fail_first=1, fail_status=status)
    with TeacherServer(config) as srv:
        recs, lb = label(srv, rows(4))
        counts = per_prompt(srv)
    assert [r.status for r in recs] == ["labeled"] * 4
    assert sorted(counts.values()) == [2, 2, 2, 2]  # exactly: the SDK retried nothing itself
    assert lb.summary.requests == 8 and lb.summary.retries == 4


def test_anthropic_overloaded_is_retried_and_slows_everyone() -> None:
    config = ServerConfig(labels=LABELS, fail_first=1, fail_status=529)
    with TeacherServer(config) as srv:
        recs, lb = label(srv, rows(2), provider="anthropic")
        counts = per_prompt(srv)
    assert [r.status for r in recs] == ["labeled"] * 2
    assert sorted(counts.values()) == [2, 2]
    # 529 slows requests down like a 429, but it is counted as what the server said it was.
    assert lb.summary.overloaded == 2 and lb.summary.rate_limited == 0


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_garbage_200_is_retried(transport: str) -> None:
    config = ServerConfig(labels=LABELS, garbage_rate=0.5, seed=3)
    with TeacherServer(config) as srv:
        recs, _ = label(srv, rows(12), transport=transport)
        log = generation_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 12
    garbage = sum(1 for r in log if r.fault == "garbage")
    assert garbage > 0 and len(log) == 12 + garbage


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_dropped_connections_are_retried(transport: str) -> None:
    config = ServerConfig(labels=LABELS, drop_rate=0.4, seed=5)
    with TeacherServer(config) as srv:
        recs, _ = label(srv, rows(12), transport=transport)
        log = generation_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 12
    dropped = sum(1 for r in log if r.fault == "drop")
    assert dropped > 0 and len(log) == 12 + dropped


def test_timeouts_are_retried() -> None:
    config = ServerConfig(labels=LABELS, hang_rate=0.4, hang_s=5.0, seed=2)
    with TeacherServer(config) as srv:
        recs, _ = label(srv, rows(8), timeout=0.3)
        log = generation_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 8
    hung = sum(1 for r in log if r.fault == "hang")
    assert hung > 0 and len(log) == 8 + hung


# -- not retried -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_final_errors_fail_at_once(status: int, provider: str) -> None:
    config = ServerConfig(labels=LABELS, status_for=[("POISON", status)])
    data = [*rows(3), {"id": "bad", "text": "POISON row"}]
    with TeacherServer(config) as srv:
        recs, lb = label(srv, data, provider=provider)
        counts = per_prompt(srv)
    by_id = {r.row.id: r for r in recs}
    assert by_id["bad"].status == "failed" and by_id["bad"].reason == f"http_{status}"
    assert [by_id[f"r{i}"].status for i in range(3)] == ["labeled"] * 3
    assert sum(n for p, n in counts.items() if "POISON" in p) == 1
    assert lb.summary.failures_by_reason == {f"http_{status}": 1}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_context_length_fails_at_once(provider: str) -> None:
    config = ServerConfig(labels=LABELS, context_tokens=150)
    data = [*rows(2), {"id": "long", "text": "word " * 300}]
    with TeacherServer(config) as srv:
        recs, _ = label(srv, data, provider=provider)
        counts = per_prompt(srv)
    by_id = {r.row.id: r for r in recs}
    assert by_id["long"].status == "failed" and by_id["long"].reason == "context_length"
    assert sum(n for p, n in counts.items() if "word word" in p) == 1


def test_failures_are_stored_and_not_sent_again(tmp_path: Path) -> None:
    config = ServerConfig(labels=LABELS, status_for=[("POISON", 400)])
    data = [{"id": "bad", "text": "POISON row"}]
    with TeacherServer(config) as srv:
        teacher = make_teacher("openai-compatible:teacher-test", base_url=srv.url + "/v1")
        path = tmp_path / "s.sqlite"

        async def go() -> list[Record]:
            async with Labeler(
                load_task("sentiment"), teacher, store=path, retry=FAST, progress=False, close_teacher=False
            ) as lb:
                return [r async for r in lb.label(data)]

        asyncio.run(go())
        again = asyncio.run(go())
        asyncio.run(teacher.aclose())
        assert len(generation_log(srv)) == 1
    assert again[0].status == "failed" and "final failure stored" in again[0].message


def test_retry_cap_is_honoured() -> None:
    config = ServerConfig(labels=LABELS, fail_first=10, fail_status=500)
    policy = RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02)
    with TeacherServer(config) as srv:
        recs, lb = label(srv, rows(2), retry=policy)
        counts = per_prompt(srv)
    assert [(r.status, r.reason) for r in recs] == [("failed", "http_500")] * 2
    assert sorted(counts.values()) == [3, 3]
    assert lb.summary.requests == 6


@pytest.mark.parametrize("spec", ["openai-compatible:teacher-test", "anthropic:claude-haiku-4-5"])
def test_the_sdks_do_not_retry_on_their_own(spec: str) -> None:
    """One teacher call, one HTTP request, whatever the failure."""
    request = Request(messages=({"role": "user", "content": "hi"},), params={"max_tokens": 2})
    for config in (
        ServerConfig(fail_first=5, fail_status=500),
        ServerConfig(fail_first=5, fail_status=429, retry_after_s=0.01),
        ServerConfig(drop_rate=1.0),
    ):
        with TeacherServer(config) as srv:
            base = srv.url + "/v1" if spec.startswith("openai") else srv.url
            teacher = make_teacher(spec, base_url=base, api_key="k")

            async def once(t: Any = teacher) -> None:
                try:
                    await t.complete(request)
                finally:
                    await t.aclose()

            with pytest.raises(RetryableError):
                asyncio.run(once())
            assert len(generation_log(srv)) == 1


def test_retry_after_header_forms() -> None:
    from email.utils import formatdate

    from labeler.teachers.base import parse_retry_after

    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "150", "retry-after": "1"}) == 0.15
    in_3s = parse_retry_after({"retry-after": formatdate(__import__("time").time() + 3, usegmt=True)})
    assert in_3s is not None and 1.5 < in_3s <= 3.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
