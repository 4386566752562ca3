"""The distillation round trip: teacher labels → student trained on them → scored on gold.

    python -m benchmarks.student --datasets sst2,agnews,emotion --train 400

For each dataset, from one seeded shuffle of ../shared/data (disjoint slices):

* ``test``  (rows 0..299, the rows benchmarks/calibration.py scores): gold for scoring the
  teacher and every student;
* ``calib`` (the next 100): a little gold the calibration is fitted on;
* ``train`` (the next --train): labeled by the teacher only; students never see its gold.

The teacher labels calib, train and test through labeler's real path into a persistent
store (reruns send nothing). The calibration is the method with the best 5-fold held-out
likelihood on ``calib`` (labeler.eval_job.score_calibrations). Each student is then trained
with the same seed and schedule on three targets: the teacher's hard labels, its raw soft
labels, and its calibrated soft labels, and scored on ``test``. One table per dataset:
teacher accuracy, each student's accuracy, and the share of the teacher's accuracy kept.

Students are entries of `STUDENTS`: a name and ``fit_and_score(train_texts, targets,
test_texts, test_gold, seed) -> accuracy``. Adding one is adding an entry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.calibration import fmt3, label_probs
from benchmarks.local_quality import DATASETS, data_dir, load_gold
from labeler.calibration import METHODS, load_calibration
from labeler.eval_job import CONTENT_FREE, CalibrationOptions, score_calibrations
from labeler.job import default_home
from labeler.task import load_task
from labeler.teachers.local import DEFAULT_PARALLEL, LocalTeacher, default_threads

TEST_ROWS = 300
CALIB_ROWS = 100

FitAndScore = Callable[[Sequence[str], np.ndarray, Sequence[str], np.ndarray, int], float]


@dataclass(frozen=True)
class Student:
    name: str
    fit_and_score: FitAndScore


def bag_of_words(
    train_texts: Sequence[str],
    targets: np.ndarray,
    test_texts: Sequence[str],
    test_gold: np.ndarray,
    seed: int,
) -> float:
    """examples/train_student.py: TF-IDF unigrams+bigrams, softmax regression in NumPy."""
    from examples.train_student import Vocab, train

    vocab = Vocab(train_texts)
    w = train(vocab.encode(train_texts), targets, epochs=300, lr=2.0, l2=1e-4, seed=seed)
    return float(((vocab.encode(test_texts) @ w).argmax(axis=1) == test_gold).mean())


def distilled_bow(
    train_texts: Sequence[str],
    targets: np.ndarray,
    test_texts: Sequence[str],
    test_gold: np.ndarray,
    seed: int,
) -> float:
    """examples/distill_student.py: mean-of-word-embeddings model trained by
    `labeler.student.DistillationTrainer` (KL to the targets at T=1, so one-hot targets
    are plain cross-entropy), one torch thread."""
    import datasets
    import torch

    from examples.distill_student import train_and_score

    torch.set_num_threads(1)
    k = targets.shape[1]
    names = [str(i) for i in range(k)]
    train = datasets.Dataset.from_dict(
        {
            "text": list(train_texts),
            "label": [int(i) for i in targets.argmax(axis=1)],
            "soft_label": [[float(p) for p in row] for row in targets],
        },
        features=datasets.Features(
            {
                "text": datasets.Value("string"),
                "label": datasets.ClassLabel(names=names),
                "soft_label": datasets.Sequence(datasets.Value("float64")),
            }
        ),
    )
    test = [{"text": t, "label": int(g)} for t, g in zip(test_texts, test_gold, strict=True)]
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints its run summary
        return train_and_score(train, test, soft=True, temperature=1.0, seed=seed, student="bow")


def _torch_missing() -> str | None:
    """Why the torch student cannot run here, or None when it can."""
    import importlib.util

    missing = [m for m in ("torch", "transformers", "datasets") if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed (pip install 'labeler-distill[student]')" if missing else None


STUDENTS: list[Student] = [Student("bag-of-words", bag_of_words)]
if (_why := _torch_missing()) is None:
    STUDENTS.append(Student("labeler.student bow", distilled_bow))
else:
    print(f"benchmarks.student: skipping the labeler.student student: {_why}", file=sys.stderr)


async def run(args: argparse.Namespace) -> None:
    store = Path(args.store)
    store.parent.mkdir(parents=True, exist_ok=True)
    teacher = LocalTeacher(args.model, threads=args.threads, parallel=args.parallel)
    await teacher.start()
    try:
        for ds in args.datasets:
            await one_dataset(args, ds, teacher, store)
    finally:
        await teacher.aclose()


async def one_dataset(args: argparse.Namespace, ds: str, teacher: LocalTeacher, store: Path) -> None:
    test = load_gold(ds, TEST_ROWS, args.seed)
    calib = load_gold(ds, CALIB_ROWS, args.seed, skip=TEST_ROWS)
    train = load_gold(ds, args.train, args.seed, skip=TEST_ROWS + CALIB_ROWS)
    task = load_task(test.template)
    labels = task.labels
    index = {label: i for i, label in enumerate(labels)}

    async def probs(gold_rows: list[dict]) -> np.ndarray:
        got = await label_probs(task, teacher, gold_rows, store, args.concurrency)
        return np.array([got[r["id"]] for r in gold_rows], dtype=float)

    p_test, p_calib, p_train = await probs(test.rows), await probs(calib.rows), await probs(train.rows)
    cf_rows = [{"id": f"content-free-{i}", **{f: v for f in task.fields}} for i, v in enumerate(CONTENT_FREE)]
    cf = list((await label_probs(task, teacher, cf_rows, store, args.concurrency)).values())

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cal.json"
        scores = score_calibrations(
            CalibrationOptions(METHODS, save=path, seed=args.seed),
            p_calib,
            [index[g] for g in calib.gold],
            labels,
            content_free=cf,
            template=task.identity,
            teacher=teacher.identity,
        )
        cal = load_calibration(path)
    chosen = next(s for s in scores if s.method == cal.method)

    test_gold = np.array([index[g] for g in test.gold])
    valid_test = p_test.any(axis=1)
    teacher_acc = float(((p_test.argmax(axis=1) == test_gold) & valid_test).mean())
    keep = p_train.any(axis=1)  # rows whose answer named a label
    texts = [r["text"] for r, k in zip(train.rows, keep, strict=True) if k]
    raw = p_train[keep]
    calibrated = np.array([cal.apply_probs(p) for p in raw])
    targets = {
        "hard": np.eye(len(labels))[raw.argmax(axis=1)],
        "raw soft": raw,
        "calibrated soft": calibrated,
    }
    test_texts = [r["text"] for r in test.rows]
    train_acc = float(
        (
            raw.argmax(axis=1) == np.array([index[g] for g, k in zip(train.gold, keep, strict=True) if k])
        ).mean()
    )
    print(
        f"\n### {ds}: teacher local:{args.model} ({test.template}), {len(texts)} teacher-labeled "
        f"train rows (teacher {train_acc:.1%} right on them), {len(test_texts)} gold test rows"
    )
    print(
        f"calibration ({CALIB_ROWS} gold rows): {cal.describe()}; held out on them: ECE "
        f"{fmt3(chosen.before['ece'])} → {fmt3(chosen.after['ece'])}, accuracy "
        f"{chosen.before['accuracy']:.1%} → {chosen.after['accuracy']:.1%}"
    )
    print(
        "mean max probability of the train targets: raw "
        f"{raw.max(axis=1).mean():.3f}, calibrated {calibrated.max(axis=1).mean():.3f}"
    )
    print()
    print("| student | targets | accuracy on gold | student keeps |")
    print("|---|---|---|---|")
    print(f"| (teacher) | - | {teacher_acc:.1%} | - |")
    for student in STUDENTS:
        for name, y in targets.items():
            acc = student.fit_and_score(texts, y, test_texts, test_gold, args.seed)
            print(f"| {student.name} | {name} | {acc:.1%} | {acc / teacher_acc:.0%} |", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="sst2,agnews,emotion")
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--train", type=int, default=400, help="teacher-labeled training rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--parallel", type=int, default=None)
    p.add_argument("--store", default=str(default_home() / "bench" / "quality.sqlite"))
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    args.threads = args.threads or default_threads()
    args.parallel = args.parallel or DEFAULT_PARALLEL
    if not data_dir().is_dir():
        print(f"no data at {data_dir()} (set LABELER_DATA)", file=sys.stderr)
        return 2
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
