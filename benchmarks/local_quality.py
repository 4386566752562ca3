"""How well, and how fast, the local teachers label public data, through labeler's real path.

    python benchmarks/local_quality.py                      # SST-2 + AG News, both models, n=200
    python benchmarks/local_quality.py --datasets sst2 --models smollm2-135m --n 400
    python benchmarks/local_quality.py --template sst2=prompts/my-sentiment.yaml
    python benchmarks/local_quality.py --sweep 1x2,2x2,4x2,8x2,4x1 --datasets sst2

Each row of the table is: sub-sample the gold set with a fixed seed, label it with
``load_task`` + `LocalTeacher` + `Labeler` into a fresh store (so nothing is cached), read
each answer with ``read_answer`` and score it against gold: accuracy (an invalid answer is
wrong), AUROC of the max label probability (does confidence know when it is wrong?),
accuracy of the most confident half, and items/s.

The throughput check sends the same kind of prompts to the same llama-server twice, bare
(plain httpx, the same number in flight) and through labeler, on disjoint rows so that
llama-server's prompt cache cannot favour the second pass, and prints labeler's share of
the bare rate: what the orchestrator costs on top of the model.

Data comes from ``../shared/data`` beside the repository (or $LABELER_DATA); it is read
in place, never copied into the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from labeler.answer import read_answer
from labeler.engine import Labeler
from labeler.store import Store
from labeler.task import Task, load_task
from labeler.teachers.local import DEFAULT_PARALLEL, LocalTeacher, default_threads

REPO = Path(__file__).resolve().parent.parent
csv.field_size_limit(1 << 24)


def data_dir() -> Path:
    return Path(os.environ.get("LABELER_DATA") or REPO.parent / "shared" / "data")


# -- gold sets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Gold:
    """A labelled dataset: rows in the template's field names, and the gold label of each."""

    name: str
    template: str
    rows: list[dict[str, Any]]
    gold: list[str]


def _sst2(base: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows, gold = [], []
    with (base / "sst2_validation" / "sst2_validation.tsv").open(encoding="utf-8") as f:
        for rec in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            rows.append({"text": rec["sentence"].strip()})
            gold.append("positive" if rec["label"].strip() == "1" else "negative")
    return rows, gold


def _ag_news(base: Path) -> tuple[list[dict[str, Any]], list[str]]:
    # Classes are stored by name (World, Sports, Business, Sci/Tech); the text field is
    # title + description, as in the Hugging Face ag_news dataset.
    rows, gold = [], []
    with (base / "ag_news_test" / "ag_news_test.csv").open(encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            text = f"{rec['title'].strip()} {rec['description'].strip()}"
            rows.append({"text": text})
            gold.append(rec["class"].strip())
    return rows, gold


def _emotion(base: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows, gold = [], []
    with (base / "emotion_test" / "emotion_test.txt").open(encoding="utf-8") as f:
        for rec in csv.DictReader(f, delimiter=";"):
            rows.append({"text": rec["text"].strip()})
            gold.append(rec["label_name"].strip())
    return rows, gold


DATASETS: dict[str, tuple[str, Callable[[Path], tuple[list[dict[str, Any]], list[str]]]]] = {
    "sst2": ("sentiment-completion", _sst2),
    "agnews": ("topic-completion", _ag_news),
    "emotion": ("emotion-completion", _emotion),
}


def load_gold(name: str, n: int, seed: int, *, skip: int = 0, template: str | None = None) -> Gold:
    """n rows sampled with a fixed seed; ``skip`` moves past rows an earlier sample used."""
    default_template, reader = DATASETS[name]
    rows, gold = reader(data_dir())
    if skip + n > len(rows):
        raise SystemExit(
            f"{name}: {skip + n} rows asked for, the set holds {len(rows)} (ask for fewer train or test rows)"
        )
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    pick = order[skip : skip + n]
    return Gold(
        name,
        template or default_template,
        [{"id": f"{name}-{i}", **rows[i]} for i in pick],
        [gold[i] for i in pick],
    )


# -- metrics (labeler.evaluate when present) ----------------------------------------------


def _metrics(
    gold: Sequence[str], pred: Sequence[str | None], scores: Sequence[float | None]
) -> tuple[float, float | None, float]:
    correct = [p is not None and p == g for g, p in zip(gold, pred, strict=True)]
    try:
        from labeler.evaluate import accuracy, accuracy_at_coverage, auroc

        return accuracy(gold, pred), auroc(scores, correct), accuracy_at_coverage(scores, correct, 0.5)
    except ImportError:
        return _accuracy(correct), _auroc(scores, correct), _acc_at(scores, correct, 0.5)


def _accuracy(correct: Sequence[bool]) -> float:
    return sum(correct) / len(correct)


def _auroc(scores: Sequence[float | None], correct: Sequence[bool]) -> float | None:
    s = [-math.inf if x is None else x for x in scores]
    pos = [x for x, c in zip(s, correct, strict=True) if c]
    neg = [x for x, c in zip(s, correct, strict=True) if not c]
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def _acc_at(scores: Sequence[float | None], correct: Sequence[bool], coverage: float) -> float:
    s = [-math.inf if x is None else x for x in scores]
    order = sorted(range(len(s)), key=lambda i: -s[i])
    k = max(1, math.ceil(coverage * len(s)))
    return sum(correct[i] for i in order[:k]) / k


# -- runs ---------------------------------------------------------------------------------


@dataclass
class Result:
    dataset: str
    n: int
    teacher: str
    template: str
    accuracy: float
    auroc: float | None
    acc_at_50: float
    soft_accuracy: float
    items_per_s: float
    invalid: int


async def label_with_labeler(
    task: Task, teacher: LocalTeacher, gold: Gold, concurrency: int, store_dir: Path
) -> tuple[list[str | None], list[float | None], float, list[str | None]]:
    """The real path: Labeler over a fresh store; answers read back with read_answer.

    Returns the labels labeler exports (the generated token when it names a label), their
    max-prob confidence, the seconds taken, and the argmax of each soft label, which sums
    every verbalizer of a label and can differ from the generated token.
    """
    store = Store(store_dir / f"{gold.name}-{teacher.model}-{time.monotonic_ns()}.sqlite")
    lb = Labeler(task, teacher, store=store, concurrency=concurrency, progress=False, close_teacher=False)
    pred: dict[str, str | None] = {}
    score: dict[str, float | None] = {}
    soft: dict[str, str | None] = {}
    start = time.perf_counter()
    try:
        async for rec in lb.label(gold.rows):
            if rec.completion is None:
                pred[rec.row.id], score[rec.row.id], soft[rec.row.id] = None, None, None
                continue
            answer = read_answer(task, rec.completion)
            pred[rec.row.id] = answer.label
            score[rec.row.id] = answer.confidence.max_prob if answer.confidence else None
            space = task.label_space
            soft[rec.row.id] = answer.soft.label(space) if answer.soft and space else None
    finally:
        elapsed = time.perf_counter() - start
        await lb.aclose()
        store.close()
    ids = [r["id"] for r in gold.rows]
    return ([pred.get(i) for i in ids], [score.get(i) for i in ids], elapsed, [soft.get(i) for i in ids])


async def label_bare(task: Task, base_url: str, rows: list[dict[str, Any]], concurrency: int) -> float:
    """Same prompts and parameters straight to /v1/completions; returns requests/s."""
    prompts = [task.render(r).prompt for r in rows]
    params = task.params
    body = {
        "temperature": params.get("temperature", 0.0),
        "max_tokens": params.get("max_tokens", 1),
        "logprobs": int(params.get("top_logprobs") or 1),
    }
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p or "")

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            prompt = queue.get_nowait()
            resp = await client.post(f"{base_url}/completions", json={"prompt": prompt, **body})
            resp.raise_for_status()
            orjson.loads(resp.content)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return len(prompts) / (time.perf_counter() - start)


async def quality(args: argparse.Namespace, templates: dict[str, str]) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="labeler-bench-") as tmp:
        for model in args.models:
            teacher = LocalTeacher(model, threads=args.threads, parallel=args.parallel)
            await teacher.start()
            try:
                for ds in args.datasets:
                    gold = load_gold(ds, args.n, args.seed, template=templates.get(ds))
                    task = load_task(gold.template)
                    await _warm(task, teacher, gold)
                    pred, scores, elapsed, soft = await label_with_labeler(
                        task, teacher, gold, args.concurrency, Path(tmp)
                    )
                    acc, roc, at50 = _metrics(gold.gold, pred, scores)
                    soft_acc, _, _ = _metrics(gold.gold, soft, scores)
                    results.append(
                        Result(
                            ds,
                            len(gold.rows),
                            f"local:{model}",
                            Path(gold.template).stem,
                            acc,
                            roc,
                            at50,
                            soft_acc,
                            len(gold.rows) / elapsed,
                            sum(p is None for p in pred),
                        )
                    )
                    _print_row(results[-1])
            finally:
                await teacher.aclose()
    return results


async def _warm(task: Task, teacher: LocalTeacher, gold: Gold) -> None:
    """One request per slot so every measured request finds the few-shot prefix cached."""
    rows = [{**gold.rows[0], "id": f"warm-{i}"} for i in range(teacher.parallel)]
    await asyncio.gather(*(teacher.complete(task.render(r)) for r in rows))


async def overhead(args: argparse.Namespace, templates: dict[str, str]) -> list[tuple[str, float, float]]:
    """Bare vs labeler requests/s on the same server, alternating on disjoint row blocks."""
    out = []
    ds = args.datasets[0]
    model = args.models[0]
    with tempfile.TemporaryDirectory(prefix="labeler-bench-") as tmp:
        teacher = LocalTeacher(model, threads=args.threads, parallel=args.parallel)
        await teacher.start()
        try:
            assert teacher.base_url is not None
            # Rows the quality run did not use (skip), four blocks: bare, labeler, bare, labeler.
            block = args.n_overhead
            golds = [
                load_gold(ds, block, args.seed, skip=args.n + i * block, template=templates.get(ds))
                for i in range(4)
            ]
            task = load_task(golds[0].template)
            await _warm(task, teacher, golds[0])
            bare, lab = [], []
            for i, gold in enumerate(golds):
                if i % 2 == 0:
                    bare.append(await label_bare(task, teacher.base_url, gold.rows, args.concurrency))
                else:
                    _, _, elapsed, _ = await label_with_labeler(
                        task, teacher, gold, args.concurrency, Path(tmp)
                    )
                    lab.append(len(gold.rows) / elapsed)
            out.append((f"{ds} local:{model}", sum(bare) / len(bare), sum(lab) / len(lab)))
        finally:
            await teacher.aclose()
    return out


async def sweep(args: argparse.Namespace, templates: dict[str, str]) -> list[tuple[int, int, float]]:
    """Bare requests/s for each -np x -t setting: which server shape suits this machine."""
    ds, model = args.datasets[0], args.models[0]
    gold = load_gold(ds, args.n, args.seed, template=templates.get(ds))
    task = load_task(gold.template)
    out = []
    for spec in args.sweep.split(","):
        np_, _, t = spec.partition("x")
        teacher = LocalTeacher(model, parallel=int(np_), threads=int(t or args.threads))
        await teacher.start()
        try:
            assert teacher.base_url is not None
            await _warm(task, teacher, gold)
            conc = max(args.concurrency, 2 * int(np_))
            rate = await label_bare(task, teacher.base_url, gold.rows, conc)
        finally:
            await teacher.aclose()
        out.append((int(np_), teacher.threads, rate))
        print(
            f"  -np {np_:>2} -t {teacher.threads}: {rate:6.2f} requests/s ({conc} in flight, {ds}, {model})",
            flush=True,
        )
    return out


# -- output -------------------------------------------------------------------------------

HEADER = (
    f"{'dataset':<8} {'n':>4}  {'teacher':<20} {'template':<22} {'accuracy':>8} "
    f"{'AUROC':>6} {'acc@50%':>7} {'soft acc':>8} {'items/s':>7} {'invalid':>7}"
)


def _print_row(r: Result) -> None:
    roc = "-" if r.auroc is None else f"{r.auroc:.3f}"
    print(
        f"{r.dataset:<8} {r.n:>4}  {r.teacher:<20} {r.template:<22} {r.accuracy:>8.1%} "
        f"{roc:>6} {r.acc_at_50:>7.1%} {r.soft_accuracy:>8.1%} {r.items_per_s:>7.2f} {r.invalid:>7}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="sst2,agnews", help="comma list: sst2, agnews, emotion")
    p.add_argument("--models", default="smollm2-135m,gemma3-270m", help="comma list of local models")
    p.add_argument("--n", type=int, default=200, help="rows per dataset (fixed-seed sub-sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--threads", type=int, default=None, help="llama-server -t (default: cores - 1)")
    p.add_argument("--parallel", type=int, default=None, help="llama-server -np (default: labeler's)")
    p.add_argument(
        "--template",
        action="append",
        default=[],
        metavar="DATASET=TEMPLATE",
        help="use another template for a dataset (repeatable)",
    )
    p.add_argument(
        "--n-overhead",
        type=int,
        default=64,
        help="rows per block in the bare-vs-labeler check (4 blocks); 0 skips it",
    )
    p.add_argument("--sweep", help="comma list of NPxT server shapes to time bare, e.g. 1x2,4x2")
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    templates = dict(t.split("=", 1) for t in args.template)
    args.threads = args.threads or default_threads()
    args.parallel = args.parallel or DEFAULT_PARALLEL
    if not data_dir().is_dir():
        print(f"no data at {data_dir()} (set LABELER_DATA)", file=sys.stderr)
        return 2

    if args.sweep:
        print(f"server shapes (-np x -t), bare requests/s on {args.n} rows:")
        asyncio.run(sweep(args, templates))
        return 0
    print(
        f"llama-server -np {args.parallel} -t {args.threads}, {args.concurrency} in flight, seed {args.seed}"
    )
    print(HEADER)
    asyncio.run(quality(args, templates))
    if args.n_overhead > 0:
        print()
        print(
            f"{'throughput (same server, disjoint rows)':<40} {'bare req/s':>10} {'labeler':>8} {'ratio':>6}"
        )
        for name, bare, lab in asyncio.run(overhead(args, templates)):
            print(f"{name:<40} {bare:>10.2f} {lab:>8.2f} {lab / bare:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
