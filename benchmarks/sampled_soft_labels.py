"""Logprob soft labels against sampled ones, on the same model: the table to choose N by.

    python -m benchmarks.sampled_soft_labels                     # SST-2, 300 rows, local Gemma
    python -m benchmarks.sampled_soft_labels --n 150 --samples 3,5,10
    python -m benchmarks.sampled_soft_labels --teacher openai:gpt-4o-mini --samples 5

One teacher labels the same gold rows once with the soft labels its logprobs give, and
again with ``soft_labels="samples"`` at each N (N answers per row, the soft label their
shares), each into a fresh store through `run_job`. Each line is then scored by `labeler
eval`'s own code (`evaluate_job`): accuracy, AUROC and ECE of the max probability, and the
ECE after a temperature calibration fitted on a held-out share of the gold rows
(``--fit-fraction``) and scored on the rest. Requests and tokens are the run summary's:
what each line paid.

Rows and gold come from `benchmarks.local_quality` (``../shared/data`` or $LABELER_DATA).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.local_quality import DATASETS, data_dir, load_gold
from labeler import Job, run_job
from labeler.eval_job import CalibrationOptions, evaluate_job


@dataclass
class Line:
    soft_labels: str
    n: int
    accuracy: float
    auroc: float | None
    ece: float | None
    ece_calibrated: float | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def _fmt(x: float | None, pattern: str = "{:.3f}") -> str:
    return "—" if x is None else pattern.format(x)


def measure(args: argparse.Namespace, work: Path) -> list[Line]:
    gold = load_gold(args.dataset, args.n, args.seed)
    rows = work / "rows.jsonl"
    with rows.open("w", encoding="utf-8") as f:
        for row, label in zip(gold.rows, gold.gold, strict=True):
            f.write(json.dumps({**row, "gold": label}) + "\n")
    teacher, _, url = args.teacher.partition("@")
    variants = [("logprobs", None)] + [("samples", n) for n in args.samples]
    lines = []
    for mode, samples in variants:
        name = "logprobs" if samples is None else f"samples-{samples}"
        job = Job(
            task=args.template or gold.template,
            input=rows,
            teacher=teacher,
            base_url=url or None,
            store=work / f"{name}.sqlite",
            soft_labels=mode,
            samples=samples,
            concurrency=args.concurrency,
            progress=False,
        )
        result = asyncio.run(run_job(job))
        s = result.summary
        report = evaluate_job(
            job,
            "gold",
            calibrate=CalibrationOptions(
                methods=("temperature",), fit_fraction=args.fit_fraction, seed=args.seed
            ),
        )
        after = report.calibration[0].after
        lines.append(
            Line(
                mode,
                samples or 1,
                report.accuracy,
                report.auroc.get("max_prob"),
                report.ece,
                after["ece"],
                s.http_requests,
                s.prompt_tokens,
                s.completion_tokens,
                s.elapsed_s,
            )
        )
        print(f"  {name}: done in {s.elapsed_s:.0f} s", file=sys.stderr, flush=True)
    return lines


def table(lines: Sequence[Line]) -> str:
    out = [
        "| soft labels from | accuracy | AUROC | ECE raw | ECE calibrated | requests "
        "| prompt tokens | completion tokens | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ln in lines:
        name = "logprobs" if ln.soft_labels == "logprobs" else f"{ln.n} samples"
        out.append(
            f"| {name} | {ln.accuracy:.1%} | {_fmt(ln.auroc)} | {_fmt(ln.ece)} "
            f"| {_fmt(ln.ece_calibrated)} | {ln.requests} | {ln.prompt_tokens} "
            f"| {ln.completion_tokens} | {ln.seconds:.0f} s |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    p.add_argument("--n", type=int, default=300, help="gold rows (fixed-seed sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", default="local:gemma3-270m", help="PROVIDER:MODEL[@BASE_URL]")
    p.add_argument("--template", help="default: the dataset's template in local_quality")
    p.add_argument("--samples", default="3,5,10", help="comma list of N to sample")
    p.add_argument(
        "--fit-fraction",
        type=float,
        default=1 / 3,
        help="share of the gold rows the calibration is fitted on",
    )
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--work", help="folder for the stores (default: a new temp folder)")
    args = p.parse_args(argv)
    args.samples = [int(x) for x in args.samples.split(",") if x.strip()]
    if not data_dir().is_dir():
        print(f"no data at {data_dir()} (set LABELER_DATA)", file=sys.stderr)
        return 2
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        lines = measure(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="sampled-soft-") as tmp:
            lines = measure(args, Path(tmp))
    cal = round(args.fit_fraction * args.n)
    print(
        f"{args.dataset}: {args.n} rows (seed {args.seed}), teacher {args.teacher}; "
        f"ECE calibrated: temperature fitted on {cal} rows, scored on the other "
        f"{args.n - cal}"
    )
    print()
    print(table(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
