"""Which HTTP transport should the SDK teachers use? Requests/s through each one.

    python benchmarks/transport.py                    # 64 in flight, 5 s per measurement
    python benchmarks/transport.py --inflight 64 --seconds 5 --rounds 3 --latency 0

Starts labeler's teacher server in its own process (so client and server do not share a
GIL), then, for each (SDK, transport) pair, drives the real teacher class
(`OpenAITeacher` / `AnthropicTeacher` with ``transport=...``) with N concurrent workers,
each sending a fresh short labeling request as soon as its previous one is answered, and
counts answers per second after a warm-up. Pairs are measured in interleaved rounds and
the median is printed, so a slow moment of the machine does not pick the winner. A
"no SDK" row (aiohttp posting the same JSON) shows what the SDKs themselves cost.

The default transport lives in labeler/teachers/transport.py (DEFAULT_TRANSPORT).

Measured on a 2-CPU machine shared with other jobs (so absolute numbers move between
runs; the ranking did not), server latency 0, 64 in flight, median of 3 x 5 s:

    client               req/s (quieter)   req/s (load ~5)
    openai/httpx                     252               111
    openai/aiohttp                   411               166
    anthropic/httpx                  346               144
    anthropic/aiohttp                578               315
    no-sdk/aiohttp                  1456               848
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from labeler.request import Request
from labeler.teachers.anthropic import AnthropicTeacher
from labeler.teachers.openai_sdk import OpenAITeacher

Sender = Callable[[int], Awaitable[Any]]


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labeler.testing",
            "serve",
            "--port",
            "0",
            "--labels",
            "negative,positive",
            "--latency",
            str(latency),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit("the teacher server did not start")
    return proc, url


def request(i: int) -> Request:
    return Request(
        messages=(
            {"role": "system", "content": "Answer with one word: positive or negative."},
            {"role": "user", "content": f"Review {i}: a fine film, I liked it a lot.\nSentiment:"},
        ),
        params={"temperature": 0.0, "max_tokens": 2},
    )


async def measure(send: Sender, inflight: int, seconds: float, warmup: float) -> float:
    counter = itertools.count()
    done = 0
    stop_at = time.perf_counter() + warmup + seconds
    t0 = time.perf_counter() + warmup

    async def worker() -> None:
        nonlocal done
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            await send(next(counter))
            if time.perf_counter() >= t0:
                done += 1

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return done / seconds


async def run_pair(name: str, url: str, args: argparse.Namespace) -> float:
    sdk, kind = name.split("/")
    if sdk == "openai":
        teacher: Any = OpenAITeacher(
            "teacher-test", provider="openai-compatible", base_url=url + "/v1", transport=kind
        )
    elif sdk == "anthropic":
        teacher = AnthropicTeacher("teacher-test", base_url=url, api_key="bench", transport=kind)
    else:  # the no-SDK ceiling: aiohttp posting the body the OpenAI SDK would send
        return await bare(url, args)
    try:
        return await measure(lambda i: teacher.complete(request(i)), args.inflight, args.seconds, args.warmup)
    finally:
        await teacher.aclose()


async def bare(url: str, args: argparse.Namespace) -> float:
    conn = aiohttp.TCPConnector(limit=1000)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def send(i: int) -> Any:
            r = request(i)
            body = {"model": "teacher-test", "messages": list(r.messages or ()), **r.params}
            async with session.post(
                url + "/v1/chat/completions",
                data=orjson.dumps(body),
                headers={"content-type": "application/json"},
            ) as resp:
                return orjson.loads(await resp.read())

        return await measure(send, args.inflight, args.seconds, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="server seconds per answer")
    args = parser.parse_args()
    pairs = ["openai/httpx", "openai/aiohttp", "anthropic/httpx", "anthropic/aiohttp", "no-sdk/aiohttp"]
    proc, url = start_server(args.latency)
    results: dict[str, list[float]] = {p: [] for p in pairs}
    try:
        for _ in range(args.rounds):
            for pair in pairs:
                results[pair].append(asyncio.run(run_pair(pair, url, args)))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(
        f"# {args.inflight} in flight, {args.seconds:g} s x {args.rounds} rounds, "
        f"server latency {args.latency:g} s, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}"
    )
    print(f"{'client':<20}{'req/s (median)':>16}{'min':>10}{'max':>10}")
    for pair in pairs:
        rs = results[pair]
        print(f"{pair:<20}{statistics.median(rs):>16.0f}{min(rs):>10.0f}{max(rs):>10.0f}")


if __name__ == "__main__":
    main()
