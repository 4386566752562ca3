"""One measured job per process: `python -m benchmarks.child label ...`.

Peak memory is a property of a whole process, so each memory figure comes from a fresh
interpreter that runs exactly one job the way the CLI does (`run_job`) and
prints one JSON line: its peak RSS (VmHWM), its RSS once everything is imported,
wall seconds and the run's summary. The parent reads that line; nothing else is shared.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    VmHWM is the high-water mark of this address space, which exec starts afresh;
    ``ru_maxrss`` is not: Linux carries it over from the parent at fork, so a child of a
    big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _job(args: argparse.Namespace, **extra: Any) -> Any:
    from benchmarks.workload import MODEL, PROVIDER, TASK
    from labeler.job import Job

    return Job(
        task=TASK,
        input=args.input,
        teacher=f"{PROVIDER}:{MODEL}",
        store=args.store,
        base_url=args.base_url,
        concurrency=args.concurrency,
        **extra,
    )


def label(args: argparse.Namespace) -> dict[str, Any]:
    """Label `--input` into `--store` through `run_job` (the CLI's path: row count for
    the progress total, streamed rows, cache lookups, live requests for the misses)."""
    from benchmarks.workload import make_teacher
    from labeler import aio
    from labeler.job import run_job

    imported = _rss_mb()
    job = _job(args, progress=None)
    teacher = make_teacher(args.transport, args.base_url)
    start = time.perf_counter()

    async def go() -> Any:
        try:
            return await run_job(job, teacher=teacher)
        finally:
            await teacher.aclose()  # a teacher passed in stays the caller's to close

    result = aio.run(go())
    seconds = time.perf_counter() - start
    summary = result.summary.to_dict()
    out = {
        "rss_mb": _rss_mb(),
        "imported_rss_mb": imported,
        "seconds": seconds,
        "cpu_s": time.process_time(),
        "rows": summary["rows"],
        "summary": summary,
    }
    if args.library_too:
        start = time.perf_counter()
        out["library_rows"] = aio.run(label_library(args))
        out["library_seconds"] = time.perf_counter() - start
    return out


async def label_library(args: argparse.Namespace) -> int:
    """The library path: `Labeler.label()` yielding every Record with its Completion."""
    from benchmarks.workload import TASK, make_teacher
    from labeler.engine import Labeler
    from labeler.inputs import read_rows
    from labeler.task import load_task

    task = load_task(TASK)
    teacher = make_teacher(args.transport, args.base_url)
    answered = 0
    async with Labeler(task, teacher, store=args.store, concurrency=args.concurrency, progress=False) as lb:
        async for rec in lb.label(read_rows(args.input, required_fields=task.fields)):
            answered += rec.completion is not None
    return answered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    parser.add_argument("command", choices=("label",))
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--transport", default="sdk")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--library-too",
        action="store_true",
        help="after run_job, label the input again through Labeler.label()",
    )
    args = parser.parse_args(argv)
    fn = {"label": label}[args.command]
    from labeler.gc_tuning import gc_tuned

    with gc_tuned():  # the collector as the CLI's process sets it
        result = fn(args)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
