"""What rejection sampling buys: N answers per problem, checked, against one answer.

    python -m benchmarks.rejection_sampling                      # 200 problems, N = 1, 4, 8
    python -m benchmarks.rejection_sampling --n 60 --samples 1,4 --max-tokens 64
    python -m benchmarks.rejection_sampling --teacher openai:gpt-4o-mini --n 200

The benchmark writes arithmetic word problems with their answers (a fixed seed: the same
problems every run), and a free-text chat template whose examples show a one-line working
ending in "Answer: N". The default teacher is the local instruct model (SmolLM2); Gemma 3
270M is a base model and does not answer through a chat template.
For each N, the teacher answers every problem N times into a fresh store through
`run_job` with ``samples=N`` and ``verify="numeric:answer"``, exporting the verified
answers as ``sft``; the line gives the run's own pass rates (pass@1, pass@N: of
a row's n answers of which c pass, the unbiased estimator), the problems with at least
one verified answer, the verified answers kept, and what the run paid: requests, tokens
and seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labeler import Job, run_job
from labeler.exports import ExportOptions

TEMPLATE = """\
name: arithmetic-word-problem
version: "1"
mode: chat
system: "Solve each problem. Give the working in one line, then the answer."
user: "{{{{ question }}}}"
fields: [question]
few_shot:
  - input: {{question: "Mia has 3 bags with 4 apples in each bag. How many apples does Mia have?"}}
    output: "3 * 4 = 12. Answer: 12"
  - input: {{question: "Leo had 25 coins and spent 7. How many coins are left?"}}
    output: "25 - 7 = 18. Answer: 18"
  - input: {{question: "Sam buys 2 packs of 6 cards and then loses 3 of them. How many cards does Sam have?"}}
    output: "2 * 6 = 12, 12 - 3 = 9. Answer: 9"
output:
  kind: text
params:
  temperature: 1.0
  max_tokens: {max_tokens}
  stop: ["\\n"]
# free text answered several times per row: each answer is kept and checked
soft_targets: true
"""

NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jo")
THINGS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "cards", "shells")


def _add(r: random.Random, who: str, what: str) -> tuple[str, int]:
    a, b = r.randint(2, 60), r.randint(2, 60)
    return f"{who} has {a} {what} and gets {b} more. How many {what} does {who} have now?", a + b


def _subtract(r: random.Random, who: str, what: str) -> tuple[str, int]:
    a = r.randint(20, 90)
    b = r.randint(1, a - 1)
    return f"{who} had {a} {what} and gave away {b}. How many {what} are left?", a - b


def _multiply(r: random.Random, who: str, what: str) -> tuple[str, int]:
    a, b = r.randint(2, 12), r.randint(2, 12)
    return (
        f"{who} has {a} boxes with {b} {what} in each box. How many {what} does {who} have in all?",
        a * b,
    )


def _two_steps(r: random.Random, who: str, what: str) -> tuple[str, int]:
    a, b = r.randint(2, 9), r.randint(2, 9)
    c = r.randint(1, a * b - 1)
    return (
        f"{who} buys {a} packs of {b} {what} and then loses {c} of them. How many {what} does {who} have?",
        a * b - c,
    )


KINDS: tuple[Callable[[random.Random, str, str], tuple[str, int]], ...] = (
    _add,
    _subtract,
    _multiply,
    _two_steps,
)


def problems(n: int, seed: int) -> list[dict[str, object]]:
    """n word problems with their answers, the same for the same seed."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        question, answer = KINDS[i % len(KINDS)](r, r.choice(NAMES), r.choice(THINGS))
        out.append({"id": f"p{i}", "question": question, "answer": answer})
    return out


@dataclass
class Line:
    samples: int
    pass_at_1: float | None
    pass_at_n: float | None
    rows_with_a_pass: int
    kept: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def measure(args: argparse.Namespace, work: Path) -> list[Line]:
    rows = work / "problems.jsonl"
    with rows.open("w", encoding="utf-8") as f:
        for p in problems(args.n, args.seed):
            f.write(json.dumps(p) + "\n")
    template = work / "arithmetic.yaml"
    template.write_text(TEMPLATE.format(max_tokens=args.max_tokens), encoding="utf-8")
    teacher, _, url = args.teacher.partition("@")
    lines = []
    for n in args.samples:
        job = Job(
            task=template,
            input=rows,
            teacher=teacher,
            base_url=url or None,
            store=work / f"samples-{n}.sqlite",
            out=work / f"sft-{n}",
            samples=n,
            soft_labels="samples",
            verify="numeric:answer",
            concurrency=args.concurrency,
            progress=False,
            export=ExportOptions(kind="sft", verify="numeric:answer"),
        )
        s = asyncio.run(run_job(job)).summary
        v = s.verification or {}
        lines.append(
            Line(
                n,
                v.get("pass@1"),
                v.get("pass@N"),
                v.get("rows_with_a_pass", 0),
                s.exported,
                s.http_requests,
                s.prompt_tokens,
                s.completion_tokens,
                s.elapsed_s,
            )
        )
        print(f"  {n} samples: done in {s.elapsed_s:.0f} s", file=sys.stderr, flush=True)
    return lines


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def table(lines: Sequence[Line], problems_n: int) -> str:
    out = [
        "| samples N | pass@1 | pass@N | problems with a verified answer | kept answers "
        "| requests | prompt tokens | completion tokens | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ln in lines:
        out.append(
            f"| {ln.samples} | {_pct(ln.pass_at_1)} | {_pct(ln.pass_at_n)} "
            f"| {ln.rows_with_a_pass} ({ln.rows_with_a_pass / problems_n:.0%}) "
            f"| {ln.kept} | {ln.requests} | {ln.prompt_tokens} | {ln.completion_tokens} "
            f"| {ln.seconds:.0f} s |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="problems written (fixed seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--teacher",
        default="local:smollm2-135m",
        help="PROVIDER:MODEL[@BASE_URL] (default: the local instruct model)",
    )
    p.add_argument("--samples", default="1,4,8", help="comma list of N answers per problem")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--work", help="folder for stores and exports (default: a new temp folder)")
    args = p.parse_args(argv)
    args.samples = [int(x) for x in args.samples.split(",") if x.strip()]
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        lines = measure(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="rejection-") as tmp:
            lines = measure(args, Path(tmp))
    print(
        f"{args.n} arithmetic word problems (seed {args.seed}), teacher {args.teacher}, "
        f"max_tokens {args.max_tokens}, verify numeric:answer"
    )
    print()
    print(table(lines, args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
