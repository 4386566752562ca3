"""`--target-accuracy`'s promise, checked on real teacher answers over random splits.

    python -m benchmarks.threshold_promise --datasets sst2,agnews --n 1300 --gold-rows 100 --splits 300

A threshold chosen on gold rows promises that the rows it keeps reach the target accuracy
with 95% confidence. This labels a fixed-seed sample of each public set through labeler's
real path (the persistent bench store: the rows benchmarks/round_trip.py labels for the same
size and seed, so a rerun sends nothing), then, ``--splits`` times, shuffles the rows, gives
the first ``--gold-rows`` to `labeler.evaluate.threshold_for_accuracy` (what
``--target-accuracy`` calls) and checks the kept rows among the rest against the target.
The promise holds in a split where no threshold is found (none was made) or where the kept
held-out rows reach the target; it must hold in at least 95% of splits. Beside it, the same
search judged by point estimates (``confidence=None``): what choosing the loosest threshold
that looks good on the gold rows, with no bound, would promise.

``--save-scores FILE`` writes each row's max probability and whether the teacher was right
(JSON), the form tests/test_threshold_promise.py checks the promise on without a model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.calibration import label_probs
from benchmarks.local_quality import DATASETS, data_dir, load_gold
from labeler.evaluate import BOUND_CONFIDENCE, threshold_for_accuracy
from labeler.job import default_home
from labeler.task import load_task
from labeler.teachers.local import DEFAULT_PARALLEL, LocalTeacher, default_threads


def promise(
    scores: np.ndarray,
    right: np.ndarray,
    *,
    gold_rows: int,
    target: float,
    splits: int,
    confidence: float | None = BOUND_CONFIDENCE,
    seed: int = 1000,
) -> dict[str, float]:
    """Over `splits` random gold/held-out splits: the share where the promise held, the
    share where a threshold was found, and, where found, the mean share of held-out rows
    kept and their mean accuracy. tests/test_threshold_promise.py checks through this."""
    held = found = 0
    kept_share: list[float] = []
    kept_acc: list[float] = []
    for split in range(splits):
        order = np.random.default_rng(seed + split).permutation(len(scores))
        gold, rest = order[:gold_rows], order[gold_rows:]
        t = threshold_for_accuracy(scores[gold].tolist(), right[gold].tolist(), target, confidence=confidence)
        if t is None:
            held += 1  # no promise made, none broken
            continue
        found += 1
        kept = scores[rest] >= t.threshold
        kept_share.append(float(kept.mean()))
        if kept.any():  # a threshold that keeps no held-out row is counted as broken
            acc = float(right[rest][kept].mean())
            held += acc >= target
            kept_acc.append(acc)
    return {
        "held": held / splits,
        "found": found / splits,
        "kept": float(np.mean(kept_share)) if kept_share else 0.0,
        "kept_accuracy": float(np.mean(kept_acc)) if kept_acc else float("nan"),
    }


async def teacher_scores(args: argparse.Namespace, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Each sampled row's max probability and whether its argmax is the gold label."""
    gold = load_gold(name, args.n, args.seed)
    task = load_task(gold.template)
    teacher = LocalTeacher(args.model, threads=default_threads(), parallel=DEFAULT_PARALLEL)
    await teacher.start()
    try:
        probs = await label_probs(task, teacher, gold.rows, Path(args.store), args.concurrency)
    finally:
        await teacher.aclose()
    labels = task.labels
    p = np.asarray([probs[r["id"]] for r in gold.rows], dtype=float)
    # a row with no probability on any label (an invalid answer) is wrong, not labels[0]
    right = np.asarray(
        [row.max() > 0 and labels[int(np.argmax(row))] == g for row, g in zip(p, gold.gold, strict=True)]
    )
    return p.max(axis=1), right


def _pct(x: float) -> str:
    return "—" if x != x else f"{x:.1%}"  # NaN: no split found a threshold


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="sst2,agnews")
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--n", type=int, default=1300, help="rows labeled per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gold-rows", type=int, default=100)
    p.add_argument("--splits", type=int, default=300)
    p.add_argument("--targets", default="0.8,0.85,0.9,0.95")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--store", default=str(default_home() / "bench" / "quality.sqlite"))
    p.add_argument("--save-scores", metavar="FILE", help="write each set's scores and rightness (JSON)")
    args = p.parse_args(argv)
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in names if d not in DATASETS]
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    if not data_dir().is_dir():
        print(f"no data at {data_dir()} (set LABELER_DATA)", file=sys.stderr)
        return 2
    targets = [float(t) for t in args.targets.split(",")]
    saved: dict[str, dict[str, object]] = {}
    print(
        f"local:{args.model}, {args.n} rows per set (seed {args.seed}), {args.gold_rows} gold rows "
        f"per split, {args.splits} random splits; max probability, raw"
    )
    print(
        "| set | teacher accuracy | target | search | threshold found | promise held | "
        "held-out rows kept | their accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        scores, right = asyncio.run(teacher_scores(args, name))
        saved[name] = {
            "teacher": f"local:{args.model}",
            "seed": args.seed,
            "max_prob": [round(float(s), 6) for s in scores],
            "right": [bool(r) for r in right],
        }
        for target in targets:
            for search, confidence in (
                ("fixed sequence, 95% bound", BOUND_CONFIDENCE),
                ("point estimate", None),
            ):
                r = promise(
                    scores,
                    right,
                    gold_rows=args.gold_rows,
                    target=target,
                    splits=args.splits,
                    confidence=confidence,
                )
                print(
                    f"| {name} | {right.mean():.1%} | {target:.2f} | {search} | {r['found']:.0%} | "
                    f"**{r['held']:.1%}** | {r['kept']:.0%} | {_pct(r['kept_accuracy'])} |"
                )
    if args.save_scores:
        Path(args.save_scores).write_text(json.dumps(saved) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
