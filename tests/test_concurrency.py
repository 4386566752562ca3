"""In flight follows Little's law under a known limit, grows while latency holds without
one, shrinks on 429s, and never passes `-c`. Over real HTTP against the teacher server,
whose 60 s windows make its x-ratelimit-* headers mean what OpenAI's mean."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from labeler.cli import main
from labeler.concurrency import HEADROOM, MIN_ROUND, START, InFlightTarget
from labeler.engine import Labeler, Record
from labeler.retry import RetryPolicy
from labeler.task import load_task
from labeler.teachers import make_teacher
from labeler.testing import ServerConfig, TeacherServer
from labeler.testing.config import patched

LABELS = ["negative", "positive"]
REPO = Path(__file__).resolve().parent.parent


def rows(n: int, salt: str = "") -> list[dict[str, Any]]:
    return [{"id": f"{salt}{i}", "text": f"{salt}review number {i} was fine"} for i in range(n)]


def chat_log(server: TeacherServer) -> list[Any]:
    return [r for r in server.log if r.path == "/v1/chat/completions"]


def peak_in_flight(log: Sequence[Any]) -> int:
    """Most requests the server held at once."""
    events = sorted(
        [(r.received, 1) for r in log] + [(r.responded, -1) for r in log], key=lambda e: (e[0], e[1])
    )
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def label(server: TeacherServer, data: Sequence[dict[str, Any]], **kw: Any) -> tuple[list[Record], Labeler]:
    teacher = make_teacher("openai-compatible:teacher-test", base_url=server.url + "/v1")

    async def go() -> tuple[list[Record], Labeler]:
        with tempfile.TemporaryDirectory() as tmp:
            async with Labeler(
                load_task("sentiment"),
                teacher,
                store=Path(tmp) / "s.sqlite",
                retry=RetryPolicy(initial_wait=0.05, max_wait=0.5),
                progress=False,
                **kw,
            ) as lb:
                return [r async for r in lb.label(data)], lb

    return asyncio.run(go())


# -- over HTTP -------------------------------------------------------------------------


def test_in_flight_rises_to_meet_a_high_announced_limit() -> None:
    """12,000 RPM at 250 ms needs 200/s × 0.25 s = 50 in flight: far above the opening
    16, and what a fixed 16 would have kept it to (64/s, a third of the limit)."""
    config = ServerConfig(labels=LABELS, rpm=12_000, latency_s=0.25)
    with TeacherServer(config) as srv:
        recs, lb = label(srv, rows(400))
        log = chat_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 400
    used = lb.summary.concurrency
    print(used, "server peak", peak_in_flight(log))
    assert used["bound"] == "limit" and used["max"] >= 50
    assert peak_in_flight(log) >= 40
    assert all(r.status == 200 for r in log)


def test_in_flight_stays_under_a_low_announced_limit() -> None:
    """600 RPM at 200 ms: 10/s × 0.2 s = 2 in flight, 4 with head-room. Only the opening
    requests, sent before the first answer told the limit, go more at once."""
    config = ServerConfig(labels=LABELS, rpm=600, latency_s=0.2)
    with TeacherServer(config) as srv:
        recs, lb = label(srv, rows(40))
        log = chat_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 40
    used = lb.summary.concurrency
    assert used["bound"] == "limit" and used["median"] <= 2 * 10 * 0.2 * HEADROOM
    assert peak_in_flight(log[START:]) <= 2 * 10 * 0.2 * HEADROOM
    assert all(r.status == 200 for r in log)


def test_a_burst_of_429s_shrinks_in_flight() -> None:
    """No known limit: in flight grows while latency holds; a burst of 429s (half the
    requests, for 60 of them) cuts it by more than half, once per retry-after, not per
    429 (sixty cuts would leave 1)."""
    config = ServerConfig(labels=LABELS, latency_s=0.05, retry_after_s=0.1)
    marks: dict[str, int] = {}
    with TeacherServer(config) as srv:
        teacher = make_teacher("openai-compatible:teacher-test", base_url=srv.url + "/v1")

        async def burst(lb: Labeler) -> None:
            target = lb.limiter.inflight
            while target.limit < 64:
                await asyncio.sleep(0.01)
            marks["before"] = target.limit
            srv.config = patched(srv.config, {"rate_limit_rate": 0.5})
            while lb.limiter.rate_limited < 60:
                await asyncio.sleep(0.01)
            srv.config = patched(srv.config, {"rate_limit_rate": 0.0})
            marks["after"] = target.limit

        async def go() -> Labeler:
            with tempfile.TemporaryDirectory() as tmp:
                async with Labeler(
                    load_task("sentiment"),
                    teacher,
                    store=Path(tmp) / "s.sqlite",
                    progress=False,
                    retry=RetryPolicy(initial_wait=0.05, max_wait=0.5),
                ) as lb:
                    watcher = asyncio.create_task(burst(lb))
                    recs = [r async for r in lb.label(rows(1000))]
                    await asyncio.wait_for(watcher, 5)
                    assert [r.status for r in recs] == ["labeled"] * 1000
                    return lb

        lb = asyncio.run(go())
    print(marks, lb.summary.concurrency, lb.summary.rate_limited)
    assert lb.summary.rate_limited > 0
    assert 2 <= marks["after"] <= marks["before"] / 2
    assert lb.summary.concurrency["min"] <= marks["after"]


@pytest.mark.slow
def test_without_a_limit_in_flight_grows_until_the_server_queues() -> None:
    """A self-hosted server generating 16 answers at once in 0.3 s announces nothing:
    labeler grows from 16 while latency holds and stops once the queue shows (at 32,
    answers take 0.6 s), far below the 512 ceiling."""
    config = ServerConfig(labels=LABELS, latency_s=0.3, capacity=16)
    with TeacherServer(config) as srv:
        recs, lb = label(srv, rows(150))
        log = chat_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 150
    used = lb.summary.concurrency
    print(used, "server peak", peak_in_flight(log))
    assert used["max"] > START and used["bound"] == "latency"
    assert used["max"] <= 64 and peak_in_flight(log) <= 64


def test_concurrency_flag_is_a_hard_ceiling() -> None:
    """A limit that would want 300 in flight (1,000/s × 0.2 s × head-room) gets 8 with -c 8."""
    config = ServerConfig(labels=LABELS, rpm=60_000, latency_s=0.2)
    with TeacherServer(config) as srv:
        recs, lb = label(srv, rows(80), concurrency=8)
        log = chat_log(srv)
    assert [r.status for r in recs] == ["labeled"] * 80
    assert peak_in_flight(log) <= 8
    assert lb.summary.concurrency == {**lb.summary.concurrency, "max": 8, "ceiling": 8, "bound": "ceiling"}


def test_cli_reports_the_concurrency_used(teacher_server: TeacherServer, tmp_path: Path) -> None:
    args = [
        "run",
        "sentiment",
        str(REPO / "samples" / "reviews.jsonl"),
        "--teacher",
        "openai-compatible:teacher-test",
        "--base-url",
        teacher_server.url + "/v1",
        "--store",
        str(tmp_path / "s.sqlite"),
        "-q",
        "-c",
        "4",
    ]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    used = json.loads(res.output.strip().splitlines()[-1])["concurrency"]
    assert set(used) == {"min", "median", "max", "ceiling", "bound"} and used["ceiling"] == 4
    res = CliRunner().invoke(main, [*args, "--retry-failed", "--store", str(tmp_path / "other.sqlite")])
    assert res.exit_code == 0 and "in flight " in res.output and "ceiling 4" in res.output


# -- the controller alone ----------------------------------------------------------------


def test_little_s_law_sizes_the_target() -> None:
    target = InFlightTarget(512)
    assert target.limit == START
    target.on_answer(0.5, 500.0)  # 500/s at 0.5 s: 250 on the wire, plus head-room
    assert target.limit == int(500 * 0.5 * HEADROOM + 1) and target.reason == "limit"
    target.on_answer(0.5, 2000.0)
    assert target.limit == 512 and target.reason == "ceiling"


def test_without_a_limit_it_grows_while_latency_holds_and_stops_when_it_rises() -> None:
    """A server answering in 1 s, as a busy self-hosted one does."""
    target = InFlightTarget(512)
    answers = 0
    while target.limit < 128:  # a new round starts as the target changes
        target.on_answer(1.0, None)
        answers += 1
    assert answers < 16 + 32 + 64 + 8  # slow start: doubling each round trip
    held = target.limit
    for _ in range(4 * held):
        target.on_answer(1.75, None)  # 1.75 × the fastest: growth stops, nothing is cut
    assert target.limit == held and target.reason == "latency"
    for _ in range(4 * held):
        target.on_answer(5.0, None)  # 5 ×: cut back
    assert target.limit < held


def test_slow_start_doubles_once_per_round_trip() -> None:
    """After a doubling, half the new window was sent at once and met the whole new queue:
    its answers judge the round, so the limit doubles after one round trip's answers
    (a whole window's took two, and 2 s to reach 512 at 200 ms)."""
    target = InFlightTarget(4096)
    for limit in (16, 32, 64, 128, 256):
        assert target.limit == limit
        epoch = target.epoch
        for _ in range(max(MIN_ROUND, limit // 2)):
            target.on_answer(0.2, None, epoch)
        assert target.limit == 2 * limit, f"still {target.limit} after {limit // 2} answers"
    # A round 3 × slower ends slow start (held); from then on a round is a whole window.
    for _ in range(256):
        target.on_answer(0.6, None, target.epoch)
    held, epoch = target.limit, target.epoch
    assert held == 512 and target.reason == "latency"
    for _ in range(held - 1):
        target.on_answer(0.2, None, epoch)
    assert target.limit == held
    target.on_answer(0.2, None, epoch)
    assert target.limit == int(held * 1.1)


def test_a_fast_server_queueing_tens_of_milliseconds_is_flat() -> None:
    """5 ms answers becoming 100 ms ones: the client's own queue, not the server's."""
    target = InFlightTarget(256)
    for latency in [0.005] * 16 + [0.1] * 2000:
        target.on_answer(latency, None)
    assert target.limit == 256 and target.report()["bound"] == "ceiling"


def test_the_ceiling_is_lowered_to_what_file_descriptors_allow() -> None:
    """A process allowed 200 descriptors cannot hold 512 connections."""
    code = "from labeler.concurrency import fd_ceiling; print(fd_ceiling(512))"
    out = subprocess.run(
        ["bash", "-c", f"ulimit -n 200 && {sys.executable} -c '{code}'"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert int(out.stdout) == 200 - 64


@pytest.mark.slow
def test_a_pool_grows_each_server_while_its_own_latency_holds() -> None:
    """Two self-hosted servers, 0.5 s per answer: one generates 4 at once, the other 64.
    Each endpoint's share follows its own latency, so the small one is not sent half of
    everything in flight to queue (least-in-flight spreading alone would)."""
    small = ServerConfig(labels=LABELS, latency_s=0.5, capacity=4)
    big = ServerConfig(labels=LABELS, latency_s=0.5, capacity=64)
    with TeacherServer(small) as a, TeacherServer(big) as b:
        teacher = make_teacher("openai-compatible:teacher-test", base_url=[a.url + "/v1", b.url + "/v1"])

        async def go() -> tuple[list[Record], Labeler]:
            with tempfile.TemporaryDirectory() as tmp:
                async with Labeler(
                    load_task("sentiment"), teacher, store=Path(tmp) / "s.sqlite", progress=False
                ) as lb:
                    return [r async for r in lb.label(rows(500))], lb

        recs, lb = asyncio.run(go())
        log_a, log_b = chat_log(a), chat_log(b)
    assert [r.status for r in recs] == ["labeled"] * 500
    print(
        lb.summary.concurrency,
        "small",
        len(log_a),
        peak_in_flight(log_a),
        "big",
        len(log_b),
        peak_in_flight(log_b),
    )
    assert peak_in_flight(log_a) <= 12 < 24 <= peak_in_flight(log_b)
    assert len(log_a) * 3 < len(log_b)
