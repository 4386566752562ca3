"""A 20,000-item job in batch mode against the local teacher server, checked against live.

    python benchmarks/batch_demo.py                 # 20,000 rows, a batch takes 3 s
    python benchmarks/batch_demo.py --rows 5000 --batch-speed 1 --max-requests 2000

What it shows, through labeler's real path (`run_job`, the official OpenAI SDK, real HTTP
to `python -m labeler.testing serve` in its own process):

1. batch mode submits every request exactly once (the server's own counts), stores every
   answer, and prices it at the batch rate (the shipped price table: gpt-4o-mini);
2. a rerun submits nothing;
3. a live run of the same rows into a fresh store exports the very same dataset;
4. the cost of the same tokens, live and batch.

The teacher server answers as "gpt-4o-mini" (any model name is served) so that the cost
column uses real prices; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import httpx
import orjson

from labeler import Job, run_job
from labeler.batch import make_client
from labeler.engine import RunSummary

MODEL = "gpt-4o-mini"
_OPENERS = [
    "An absolute delight",
    "A tedious mess",
    "Sturdy and quiet",
    "It arrived broken",
    "A clever script",
    "Two hours I will never get back",
    "Comfortable from day one",
    "The app crashes constantly",
    "Gorgeous photography",
    "Overpriced and loud",
]
_MIDDLES = [
    "with a cast that loved every minute",
    "and support never answered",
    "exactly what our kitchen needed",
    "and the replacement was broken too",
    "and sharp direction",
    "with wooden dialogue throughout",
    "after a year of use",
    "whenever I try to save",
    "carrying a simple story",
    "like my old vacuum",
]


def write_rows(path: Path, n: int, seed: int = 7) -> None:
    """`n` distinct short reviews (distinct, so each is one request)."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for i in range(n):
            text = f"{rng.choice(_OPENERS)} {rng.choice(_MIDDLES)} (order #{i:06d})."
            f.write(orjson.dumps({"id": f"r{i:06d}", "text": text}) + b"\n")


class Server:
    """The teacher server in its own process, so it does not share the client's GIL."""

    def __init__(self, batch_speed: float) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labeler.testing",
                "serve",
                "--port",
                "0",
                "--labels",
                "negative,positive",
                "--batch-speed",
                str(batch_speed),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError(f"the teacher server did not start: {self.url!r}")

    def batches(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_batches", timeout=30).json()

    def live_requests(self) -> int:
        return int(
            httpx.get(self.url + "/_stats", timeout=30).json()["by_path"].get("/v1/chat/completions", 0)
        )

    def reset(self) -> None:
        httpx.post(self.url + "/_reset", timeout=30)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def job(server: Server, rows: Path, work: Path, name: str, **kw: Any) -> Job:
    return Job(
        task="sentiment",
        input=rows,
        teacher=f"openai-compatible:{MODEL}",
        base_url=server.url + "/v1",
        store=work / f"{name}.sqlite",
        out=work / f"{name}-out",
        progress=False,
        **kw,
    )


def timed(j: Job, max_requests: int | None = None) -> tuple[RunSummary, float]:
    """Run a job; `max_requests` caps the requests per batch below the provider's limit."""

    def warn(message: str) -> None:
        print(f"  warning: {message}", file=sys.stderr)

    async def go() -> RunSummary:
        if not (j.batch and max_requests):
            return (await run_job(j, on_warning=warn)).summary
        teacher = j.make_teacher()
        client = make_client(teacher)
        client.max_requests = max_requests  # type: ignore[misc]
        try:
            return (await run_job(j, teacher=teacher, client=client, on_warning=warn)).summary
        finally:
            await client.aclose()
            await teacher.aclose()

    start = time.perf_counter()
    summary = asyncio.run(go())
    return summary, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--batch-speed", type=float, default=3.0, help="seconds a batch takes")
    ap.add_argument("--concurrency", type=int, default=64, help="of the live comparison run")
    ap.add_argument(
        "--max-requests",
        type=int,
        default=None,
        help="split into batches of at most this many requests (default: the provider's 50,000)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="labeler-batch-demo-"))
    os.environ.setdefault("LABELER_HOME", str(work / "home"))
    rows = work / "rows.jsonl"
    write_rows(rows, args.rows)
    server = Server(args.batch_speed)
    try:
        batch, t_batch = timed(job(server, rows, work, "batch", batch=True), args.max_requests)
        seen = server.batches()["openai"]
        rerun, t_rerun = timed(job(server, rows, work, "batch", batch=True), args.max_requests)
        seen_after = server.batches()["openai"]
        server.reset()  # the live run starts from a fresh server, as the batch run did
        live, t_live = timed(job(server, rows, work, "live", concurrency=args.concurrency))
        live_sent = server.live_requests()
    finally:
        server.close()

    same = (
        datasets.load_from_disk(str(work / "batch-out")).to_list()
        == datasets.load_from_disk(str(work / "live-out")).to_list()
    )
    table = [
        (
            "run",
            "outcome",
            "labeled",
            "cached",
            "sent",
            "batches",
            "wall s",
            "prompt tok",
            "output tok",
            "cost USD",
        ),
        (
            "batch",
            batch.outcome,
            batch.labeled,
            batch.cached,
            seen["requests"],
            seen["batches"],
            f"{t_batch:.1f}",
            batch.prompt_tokens,
            batch.completion_tokens,
            f"{batch.cost_usd:.4f}",
        ),
        (
            "batch rerun",
            rerun.outcome,
            rerun.labeled,
            rerun.cached,
            seen_after["requests"] - seen["requests"],
            seen_after["batches"] - seen["batches"],
            f"{t_rerun:.1f}",
            rerun.prompt_tokens,
            rerun.completion_tokens,
            f"{rerun.cost_usd:.4f}",
        ),
        (
            "live",
            live.outcome,
            live.labeled,
            live.cached,
            live_sent,
            "-",
            f"{t_live:.1f}",
            live.prompt_tokens,
            live.completion_tokens,
            f"{live.cost_usd:.4f}",
        ),
    ]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    print(
        f"{args.rows} rows, teacher openai-compatible:{MODEL} (local server; prices from "
        "labeler/data/prices.json, batch at half)"
    )
    for r in table:
        print(
            "  ".join(
                str(v).rjust(w) if i else str(v).ljust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    ratio = batch.cost_usd / live.cost_usd if live.cost_usd else float("nan")
    print(f"batch/live cost for the same tokens: {ratio:.2f}")
    print(f"export identical to the live run: {'yes' if same else 'NO'}")
    ok = (
        same
        and batch.labeled == args.rows
        and seen["requests"] == args.rows
        and seen_after == seen
        and rerun.cached == args.rows
    )
    print(f"all requests submitted once, all results stored, rerun sent nothing: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
