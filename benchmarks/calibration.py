"""Calibration of the local teachers on public gold sets, fitted and scored on disjoint rows.

    python -m benchmarks.calibration --datasets sst2,agnews,emotion --n 300

Labels a fixed-seed sub-sample of each dataset (the same rows as benchmarks/local_quality.py
for the same --n and --seed) through labeler's real path into a persistent store, plus the
content-free inputs contextual calibration needs, then fits every calibration method with
5-fold cross-validation (or --fit-fraction) and prints accuracy, AUROC of max_prob and ECE
before and after, each on rows the fit did not see. Reruns read the store: no request sent.

``--pool N --k K`` also measures few-shot examples chosen per row: the next N rows of the
same seeded shuffle (disjoint from the scored rows) become a labeled pool, and the shipped
template gets ``few_shot_pool`` with K examples per row after its fixed prefix.

Gold-free rows (what an export can apply with no gold): contextual (T = 1), batch (the
teacher's mean over the scored rows divided out, `--calibration batch`) and batch behind a
guard that applies it only where it moves the label shares by the label-prior check's
threshold. ``--skew LABEL=FRACTION`` keeps every row of gold LABEL and that share of the
others (seeded): a set whose labels are not evenly spread, from the same stored answers.

``--example-orders N`` also measures a prompt ensemble: the shipped template asked in N
orders of its few-shot examples (``example_orders: N``), the soft label their mean. Its
first form is the template as shipped, so only the N - 1 other orders are sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.local_quality import DATASETS, Gold, data_dir, load_gold
from labeler.answer import read_answers
from labeler.calibration import METHODS, Calibration, batch_calibration, contextual_bias
from labeler.completion import Completion
from labeler.engine import Labeler
from labeler.eval_job import CONTENT_FREE, CalibrationOptions, score_calibrations
from labeler.evaluate import distribution_scores
from labeler.job import default_home
from labeler.label_prior import THRESHOLD, total_variation
from labeler.task import Task, load_task, resolve_template_path, task_from_dict
from labeler.teachers.local import DEFAULT_PARALLEL, LocalTeacher, default_threads


async def label_probs(
    task: Task, teacher: LocalTeacher, rows: list[dict], store: Path, concurrency: int
) -> dict[str, tuple[float, ...]]:
    """Soft label of each row id, labeled through the store (cached across runs). A
    prompt ensemble's row is answered once per prompt form; its soft label is their mean."""
    assert task.label_space is not None
    zero = (0.0,) * len(task.label_space)
    forms: dict[str, list[Completion | None]] = {r["id"]: [None] * len(task.members) for r in rows}
    lb = Labeler(task, teacher, store=store, concurrency=concurrency, progress=False, close_teacher=False)
    try:
        async for rec in lb.label(rows):
            if rec.completion is not None and rec.request is not None:
                form = task.render_all(rec.row.data).index(rec.request) if task.others else 0
                forms[rec.row.id][form] = rec.completion
    finally:
        await lb.aclose()
    out: dict[str, tuple[float, ...]] = {}
    for rid, got in forms.items():
        done = [c for c in got if c is not None]
        soft = read_answers(task, done).soft if len(done) == len(got) else None
        out[rid] = soft.probs if soft else zero
    return out


async def measure(args: argparse.Namespace, templates: dict[str, str]) -> None:
    store = Path(args.store)
    store.parent.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        teacher = LocalTeacher(model, threads=args.threads, parallel=args.parallel)
        await teacher.start()
        try:
            for ds in args.datasets:
                gold = load_gold(ds, args.n, args.seed, template=templates.get(ds))
                if args.skew:
                    gold = skewed(gold, args.skew, args.seed)
                task = load_task(gold.template)
                if not args.pool_only:
                    await score(args, task, teacher, gold, store, f"local:{model}")
                if args.example_orders > 1:
                    import yaml

                    path = resolve_template_path(gold.template)
                    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
                    raw["example_orders"] = args.example_orders
                    await score(
                        args,
                        task_from_dict(raw, str(path)),
                        teacher,
                        gold,
                        store,
                        f"local:{model}",
                        f"{args.example_orders} example orders",
                    )
                if args.pool:
                    with tempfile.TemporaryDirectory(prefix="labeler-pool-") as tmp:
                        pooled = pool_template(gold.template, ds, args, Path(tmp))
                        await score(
                            args,
                            load_task(pooled),
                            teacher,
                            gold,
                            store,
                            f"local:{model}",
                            f"+{args.k} similar of {args.pool}",
                        )
        finally:
            await teacher.aclose()


def skewed(gold: Gold, spec: str, seed: int) -> Gold:
    """Every row of one gold label and a seeded share of the others."""
    import random

    label, _, fraction = spec.partition("=")
    rng = random.Random(seed)
    keep = [i for i, g in enumerate(gold.gold) if g == label or rng.random() < float(fraction)]
    share = sum(gold.gold[i] == label for i in keep) / len(keep)
    return Gold(
        f"{gold.name} ({share:.0%} {label})",
        gold.template,
        [gold.rows[i] for i in keep],
        [gold.gold[i] for i in keep],
    )


def pool_template(template: str, ds: str, args: argparse.Namespace, tmp: Path) -> Path:
    """The template plus ``few_shot_pool``: rows after the scored ones, same seeded shuffle."""
    import yaml

    pool = load_gold(ds, args.pool, args.seed, skip=args.n)
    (tmp / "pool.jsonl").write_text(
        "".join(
            json.dumps({**row, "label": label}) + "\n"
            for row, label in zip(pool.rows, pool.gold, strict=True)
        )
    )
    raw = yaml.safe_load(resolve_template_path(template).read_text(encoding="utf-8"))
    raw["few_shot_pool"] = {"file": "pool.jsonl", "k": args.k}
    path = tmp / f"{Path(template).stem}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


async def score(
    args: argparse.Namespace,
    task: Task,
    teacher: LocalTeacher,
    gold: Gold,
    store: Path,
    name: str,
    lever: str = "fixed examples",
) -> None:
    labels = task.labels
    probs = await label_probs(task, teacher, gold.rows, store, args.concurrency)
    cf_rows = [{"id": f"content-free-{i}", **{f: v for f in task.fields}} for i, v in enumerate(CONTENT_FREE)]
    cf = list((await label_probs(task, teacher, cf_rows, store, args.concurrency)).values())
    index = {label: i for i, label in enumerate(labels)}
    p = [probs[r["id"]] for r in gold.rows]
    g = [index[x] for x in gold.gold]
    opts = CalibrationOptions(args.methods, args.fit_fraction, seed=args.seed)
    scores = score_calibrations(
        opts, p, g, labels, content_free=cf, template=task.identity, teacher=teacher.identity
    )
    # Gold-free calibrations: no gold is fitted, so every row is scored. What an export
    # can apply with no gold at all.
    contextual = Calibration(
        tuple(labels), 1.0, tuple(float(x) for x in contextual_bias(cf)), method="contextual, gold-free"
    )
    batch = batch_calibration(p, labels)
    b = distribution_scores(g, p)
    shares = label_shares(p, len(labels))
    moved = total_variation(shares, label_shares([batch.apply_probs(row) for row in p], len(labels)))
    guarded = batch if moved >= THRESHOLD else None
    for method, cal, note in (
        ("contextual, gold-free (T=1)", contextual, contextual.describe()),
        ("batch, gold-free (T=1)", batch, batch.describe()),
        (
            f"batch if label shares move ≥ {THRESHOLD}",
            guarded,
            f"moved {moved:.2f}: " + ("applied" if guarded else "raw kept"),
        ),
    ):
        a = b if cal is None else distribution_scores(g, [cal.apply_probs(row) for row in p])
        print(
            f"| {gold.name} | {len(gold.rows)} | {name} | {Path(gold.template).stem} "
            f"| {lever} | {method} "
            f"| {b['accuracy']:.1%} → {a['accuracy']:.1%} | {fmt3(b['auroc'])} → {fmt3(a['auroc'])} "
            f"| {fmt3(b['ece'])} → {fmt3(a['ece'])} | {note} |",
            flush=True,
        )
    for s in scores:
        b, a = s.before, s.after
        print(
            f"| {gold.name} | {len(gold.rows)} | {name} | {Path(gold.template).stem} "
            f"| {lever} | {s.method} "
            f"| {b['accuracy']:.1%} → {a['accuracy']:.1%} | {fmt3(b['auroc'])} → {fmt3(a['auroc'])} "
            f"| {fmt3(b['ece'])} → {fmt3(a['ece'])} | {s.fitted} |",
            flush=True,
        )


def label_shares(probs: Sequence[Sequence[float]], k: int) -> list[float]:
    """Each label's share of the argmax labels (rows with no mass on a label left out)."""
    counts = [0] * k
    for row in probs:
        if any(x > 0 for x in row):
            counts[max(range(k), key=lambda i: row[i])] += 1
    total = max(1, sum(counts))
    return [c / total for c in counts]


def fmt3(x: float | None) -> str:
    """A score to three decimals, "-" when there is none (the benchmarks' tables)."""
    return "-" if x is None else f"{x:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="sst2,agnews,emotion")
    p.add_argument("--models", default="gemma3-270m")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument(
        "--fit-fraction",
        type=float,
        default=None,
        help="fit on this share, score on the rest (default: 5-fold cross-validation)",
    )
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--parallel", type=int, default=None)
    p.add_argument(
        "--store",
        default=str(default_home() / "bench" / "quality.sqlite"),
        help="persistent store: reruns send no request",
    )
    p.add_argument("--template", action="append", default=[], metavar="DATASET=TEMPLATE")
    p.add_argument(
        "--pool",
        type=int,
        default=0,
        help="also measure K examples per row chosen from a pool of this many rows",
    )
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--pool-only", action="store_true", help="skip the fixed-examples run")
    p.add_argument(
        "--skew",
        metavar="LABEL=FRACTION",
        help="keep every row of gold LABEL and this share of the others",
    )
    p.add_argument(
        "--example-orders",
        type=int,
        default=1,
        help="also measure a prompt ensemble of this many few-shot example orders",
    )
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    args.threads = args.threads or default_threads()
    args.parallel = args.parallel or DEFAULT_PARALLEL
    if not data_dir().is_dir():
        print(f"no data at {data_dir()} (set LABELER_DATA)", file=sys.stderr)
        return 2
    scheme = (
        f"fit on {args.fit_fraction:.0%}, scored on the rest"
        if args.fit_fraction
        else "5-fold cross-validation"
    )
    print(f"seed {args.seed}; every after-figure on rows its fit did not see ({scheme})")
    print(
        "| dataset | n | teacher | template | examples | calibration | accuracy | "
        "AUROC (max prob) | ECE | fitted on all rows |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    asyncio.run(measure(args, dict(t.split("=", 1) for t in args.template)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
