"""The Ray stage against one process: throughput, Ray's start-up cost, a fleet rate limit.

    python benchmarks/ray_stage.py                  # 3,000 rows, 50 ms latency, 2 actors
    python benchmarks/ray_stage.py --rows 1000 --rate-rows 600

Everything runs on this machine: the teacher server in its own process (over real HTTP),
a local Ray runtime (`ray.init(num_cpus=2)`), and the same rows labeled into a fresh store
each time by

1. one process (`run_job`, the live strategy) at `--concurrency`;
2. `labeler.ray.label` with `--workers` actors, each at `--concurrency`;

then the same two against a server that allows `--rate-limit` requests per
`--rate-window` seconds (given as --rpm, the fleet's one limit), measuring the share of
the limit reached and the 429s. Start-up is `ray.init` plus the first one-row batch
(actor start included). Needs ``pip install 'labeler-distill[ray]'``.

    python benchmarks/ray_stage.py --fleet --fleet-rows 600   # the fleet's store path

measures the store path alone: `--fleet-rows` rows against a server that answers at once
(answers per second from the first answer to the last, so Ray's start-up is left out),
by one process and by 1, 2 and 4 actors, each twice side by side: through the fleet's
store actor (labeler/ray/fleet_store.py: one store for every node) and with every actor
opening the SQLite file itself (the one-machine path it replaced, kept in the stage for
this comparison), each run into a fresh store. It then measures the fleet under an
announced limit: a server that answers in `--limited-latency` (200 ms) and announces
`--limited-rpm` in `x-ratelimit-*` headers over a 60 s window, as OpenAI does, with no
limit given to labeler, so every actor learns it from the headers and the fleet must keep
to it as one. `--limited-rows` rows (more than a minute's worth, so that overshooting the
limit would meet 429s) through one process and through 1, 2 and 4 actors, each count
twice side by side as above (each actor opening the file, then the store actor): the
share of the limit reached (answers per second from the first answer to the last), the
after/before ratio, the requests and 429s the server saw, and the pauses between
requests. `--limited-rows 0` skips it, `--fleet-rows 0` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from labeler import Job, run_job

TEACHER = "openai-compatible:teacher-test"


class Server:
    """The teacher server in its own process (it must not share the client's GIL)."""

    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labeler.testing",
                "serve",
                "--port",
                "0",
                "--log-requests",
                "--labels",
                "negative,positive",
                "--latency",
                str(latency),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError(f"the teacher server did not start: {self.url!r}")
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def configure(self, **fields: Any) -> None:
        self.http.post("/_config", json=fields).raise_for_status()

    def reset(self) -> None:
        self.http.post("/_reset").raise_for_status()

    def log(self) -> list[dict[str, Any]]:
        return [r for r in self.http.get("/_log").json() if r["path"].endswith("/completions")]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def write_rows(path: Path, n: int, tag: str) -> None:
    with open(path, "wb") as f:
        for i in range(n):
            f.write(
                orjson.dumps(
                    {"id": f"{tag}{i:06d}", "text": f"review {tag} #{i}: {'great' if i % 3 else 'awful'}"}
                )
                + b"\n"
            )


def single_process(
    server: Server, rows: Path, store: Path, concurrency: int, rpm: float | None = None
) -> float:
    job = Job(
        task="sentiment",
        input=rows,
        teacher=TEACHER,
        base_url=server.url + "/v1",
        api_key="k",
        store=store,
        concurrency=concurrency,
        rpm=rpm,
        progress=False,
    )
    start = time.perf_counter()
    summary = asyncio.run(run_job(job)).summary
    assert summary.labeled > 0, summary
    return time.perf_counter() - start


def via_ray(
    server: Server, rows: Path, store: Path, concurrency: int, workers: int, rpm: float | None = None
) -> float:
    import ray

    import labeler.ray

    records = [orjson.loads(line) for line in rows.read_bytes().splitlines()]
    start = time.perf_counter()
    ds = labeler.ray.label(
        ray.data.from_items(records),
        "sentiment",
        TEACHER,
        base_url=server.url + "/v1",
        api_key="k",
        store=store,
        concurrency=concurrency,
        rpm=rpm,
        workers=workers,
    )
    n = ds.materialize().count()
    assert n == len(records), n
    return time.perf_counter() - start


def fleet_stage(
    server: Server, rows: Path, store: Path, concurrency: int, workers: int, shared: bool
) -> tuple[float, dict[str, int]]:
    """The stage `labeler.ray.label` builds, with the fleet's store actor (`shared`) or
    with each actor opening the file: (seconds, the store actor's calls by kind)."""
    import ray

    import labeler.ray as lr
    from labeler.ray.stage import SUMMARY, LabelStage

    records = [orjson.loads(line) for line in rows.read_bytes().splitlines()]
    start = time.perf_counter()
    job = lr.stage_job(
        "sentiment",
        TEACHER,
        {"base_url": server.url + "/v1", "api_key": "k", "store": store, "concurrency": concurrency},
    )
    actor = lr.start_fleet_store(job.store) if shared else None
    ds = ray.data.from_items(records).map_batches(
        LabelStage,
        fn_constructor_kwargs={
            "job": job,
            "keeper": lr.start_rate_keeper(job),
            "output": SUMMARY,
            "store": actor,
        },
        batch_format="pyarrow",
        batch_size=lr.DEFAULT_BATCH,
        compute=lr.actor_pool(workers),
        num_cpus=0.25,
    )
    labeled = sum(ds.to_pandas()["labeled"])
    assert labeled == len(records), labeled
    seconds = time.perf_counter() - start
    calls = ray.get(actor.report.remote())["calls"] if actor is not None else {}
    return seconds, calls


def fleet_table(server: Server, work: Path, n: int, concurrency: int) -> None:
    """One process, then 1, 2 and 4 actors through the store actor and through the file."""
    runs: list[tuple[str, float, float, dict[str, int]]] = []
    rows = work / "f-one.jsonl"
    write_rows(rows, n, "f1")
    seconds = single_process(server, rows, work / "f-one.sqlite", concurrency)
    runs.append(("one process", seconds, measured(server, seconds)["rate"], {}))
    server.reset()
    for workers in (1, 2, 4):
        for shared in (False, True):
            tag = f"f{workers}{'s' if shared else 'f'}"
            rows = work / f"{tag}.jsonl"
            write_rows(rows, n, tag)
            seconds, calls = fleet_stage(server, rows, work / f"{tag}.sqlite", concurrency, workers, shared)
            m = measured(server, seconds)
            assert m["answers"] == n, m
            server.reset()
            name = (
                f"{workers} actor{'s' if workers > 1 else ''}, "
                f"{'fleet store actor' if shared else 'each opens the file'}"
            )
            runs.append((name, seconds, m["rate"], calls))
    print(
        f"\nThe store path: {n} rows, a server that answers at once, concurrency "
        f"{concurrency} per process/actor, batches of 256\n"
    )
    print("| run | wall s | answers/s | vs the file, same actors | store actor calls |")
    print("|---|---:|---:|---:|---|")
    before: dict[int, float] = {}
    for name, seconds, rate, calls in runs:
        workers = int(name.split()[0]) if name[0].isdigit() else 0
        ratio = "—"
        if "file" in name:
            before[workers] = rate
        elif workers:
            ratio = f"{rate / before[workers]:.2f}x"
        served = ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) or "—"
        print(f"| {name} | {seconds:.1f} | {rate:.0f} | {ratio} | {served} |")
    print(
        "\nanswers/s: from the first answer to the last at the server (actor start-up "
        "excluded); wall s: the whole stage, actors' start included"
    )


def limited_table(server: Server, work: Path, n: int, rpm: int, latency: float, concurrency: int) -> None:
    """One process, then 1, 2 and 4 actors each twice side by side, with each actor opening
    the store file (before the store actor) and through the fleet's store actor (after),
    against a server that answers in `latency` and announces `rpm` (60 s window); default
    flags, no --rpm, so every run learns the limit from the headers."""
    server.configure(latency_s=latency, rpm=rpm, rate_window_s=60.0)
    server.reset()
    runs: list[tuple[str, int, bool, dict[str, Any]]] = []
    for workers, shared in ((0, False), (1, False), (1, True), (2, False), (2, True), (4, False), (4, True)):
        tag = f"l{workers}{'s' if shared else 'f'}"
        rows = work / f"{tag}.jsonl"
        write_rows(rows, n, tag)
        if workers:
            seconds, _ = fleet_stage(server, rows, work / f"{tag}.sqlite", concurrency, workers, shared)
            name = (
                f"{workers} actor{'s' if workers > 1 else ''}, "
                f"{'fleet store actor' if shared else 'each opens the file'}"
            )
        else:
            seconds = single_process(server, rows, work / f"{tag}.sqlite", concurrency)
            name = "one process"
        m = measured(server, seconds)
        assert m["answers"] == n, m
        runs.append((name, workers, shared, m))
        print(f"  {name}: {m}", file=sys.stderr, flush=True)
        server.reset()
    server.configure(latency_s=0.0, rpm=None)
    limit_per_s = rpm / 60.0
    print(
        f"\nAn announced limit: {n} rows, a server that answers in {latency * 1000:g} ms and "
        f"announces {rpm:,} requests a minute ({limit_per_s:g}/s) in x-ratelimit-* headers; "
        f"default flags, concurrency ceiling {concurrency} per process/actor, batches of 256\n"
    )
    print(
        "| run | answers | wall s | answers/s | of the limit | after/before, same actors "
        "| requests | 429s | longest pause s | pauses ≥ 1 s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    before: dict[int, float] = {}
    for name, workers, shared, m in runs:
        ratio = "—"
        if workers and not shared:
            before[workers] = m["rate"]
        elif workers:
            ratio = f"{m['rate'] / before[workers]:.2f}x"
        print(
            f"| {name} | {m['answers']} | {m['seconds']:.1f} | {m['rate']:.1f} | "
            f"{m['rate'] / limit_per_s:.1%} | {ratio} | {m['requests']} | "
            f"{m['429']} ({m['429'] / max(m['requests'], 1):.1%}) | {m['longest_pause']:.1f} | "
            f"{m['pauses']} ({m['paused']:.1f} s) |"
        )
    print(
        "\nanswers/s: from the first answer to the last at the server; wall s: the whole "
        "run (for Ray, the actors' start included); pauses: gaps of 1 s or more between one "
        "answered request's arrival at the server and the next (count, total seconds)"
    )


def measured(server: Server, seconds: float) -> dict[str, Any]:
    log = server.log()
    ok = sorted(r["received"] for r in log if r["status"] == 200)
    limited = sum(1 for r in log if r["status"] == 429)
    rate = (len(ok) - 1) / (ok[-1] - ok[0]) if len(ok) > 1 else 0.0
    gaps = [b - a for a, b in itertools.pairwise(ok)]
    long_gaps = [g for g in gaps if g >= 1.0]
    return {
        "answers": len(ok),
        "seconds": seconds,
        "rate": rate,
        "429": limited,
        "requests": len(log),
        "longest_pause": max(gaps, default=0.0),
        "pauses": len(long_gaps),
        "paused": sum(long_gaps),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--latency", type=float, default=0.05, help="teacher seconds per answer")
    ap.add_argument("--concurrency", type=int, default=32, help="per process / per actor")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate-rows", type=int, default=2000)
    ap.add_argument("--rate-limit", type=int, default=100, help="requests per window")
    ap.add_argument("--rate-window", type=float, default=2.0, help="seconds")
    ap.add_argument(
        "--fleet", action="store_true", help="only the store path: 1, 2 and 4 actors, store actor vs the file"
    )
    ap.add_argument("--fleet-rows", type=int, default=600, help="--fleet: rows per run, 0 skips")
    ap.add_argument(
        "--limited-rows", type=int, default=4000, help="--fleet: rows under an announced limit, 0 skips"
    )
    ap.add_argument("--limited-rpm", type=int, default=3000, help="--fleet: the limit the server announces")
    ap.add_argument("--limited-latency", type=float, default=0.2, help="--fleet: teacher seconds per answer")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="labeler-ray-bench-"))
    os.environ.setdefault("LABELER_HOME", str(work / "home"))
    server = Server(0.0 if args.fleet else args.latency)
    table: list[tuple[str, dict[str, Any]]] = []
    try:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        init_s = time.perf_counter() - start
        if args.fleet:
            if args.fleet_rows:
                fleet_table(server, work, args.fleet_rows, args.concurrency)
            if args.limited_rows:
                limited_table(
                    server, work, args.limited_rows, args.limited_rpm, args.limited_latency, args.concurrency
                )
            return 0
        warm = work / "warm.jsonl"
        write_rows(warm, 1, "w")
        first_s = via_ray(server, warm, work / "warm.sqlite", 1, args.workers)
        server.reset()

        for name, tag in (("one process", "a"), (f"Ray, {args.workers} actors", "b")):
            rows = work / f"{tag}.jsonl"
            write_rows(rows, args.rows, tag)
            if tag == "a":
                t = single_process(server, rows, work / "a.sqlite", args.concurrency)
            else:
                t = via_ray(server, rows, work / "b.sqlite", args.concurrency, args.workers)
            table.append((name, measured(server, t)))
            server.reset()

        rpm = args.rate_limit * 60 / args.rate_window
        server.configure(rpm=args.rate_limit, rate_window_s=args.rate_window)
        for name, tag in (("one process, --rpm", "c"), (f"Ray, {args.workers} actors, --rpm", "d")):
            rows = work / f"{tag}.jsonl"
            write_rows(rows, args.rate_rows, tag)
            if tag == "c":
                t = single_process(server, rows, work / "c.sqlite", args.concurrency, rpm)
            else:
                t = via_ray(server, rows, work / "d.sqlite", args.concurrency, args.workers, rpm)
            table.append((name, measured(server, t)))
            server.reset()
    finally:
        server.close()

    limit_per_s = args.rate_limit / args.rate_window
    print(f"\nRay start-up: ray.init {init_s:.1f} s; first batch (actors start) {first_s:.1f} s")
    print(
        f"{args.rows} rows at {args.latency * 1000:.0f} ms latency, concurrency "
        f"{args.concurrency} per process/actor; rate limit {args.rate_limit} per "
        f"{args.rate_window:g} s ({limit_per_s:.0f}/s) over {args.rate_rows} rows\n"
    )
    print("| run | answers | wall s | answers/s | of the limit | 429s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in table:
        share = f"{m['rate'] / limit_per_s:.1%}" if "rpm" in name else "—"
        errors = f"{m['429']} ({m['429'] / max(m['requests'], 1):.1%})"
        print(f"| {name} | {m['answers']} | {m['seconds']:.1f} | {m['rate']:.0f} | {share} | {errors} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
