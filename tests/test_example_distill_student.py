"""examples/distill_student.py: a small student trained through labeler.student on a
`classification` export, with soft and with hard labels, scored against gold."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest

NEEDS = "labeler.student needs torch and transformers: pip install 'labeler-distill[student]'"
torch = pytest.importorskip("torch", reason=NEEDS)
pytest.importorskip("transformers", reason=NEEDS)

REPO = Path(__file__).resolve().parent.parent
GOOD = ["great", "lovely", "superb", "fine", "wonderful"]
BAD = ["awful", "dull", "boring", "poor", "terrible"]


def example() -> Any:
    spec = importlib.util.spec_from_file_location("distill_student", REPO / "examples" / "distill_student.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sentence(rng: random.Random, positive: bool) -> str:
    words = rng.sample(GOOD if positive else BAD, 2) + rng.sample(["film", "plot", "cast", "story"], 2)
    rng.shuffle(words)
    return " ".join(words)


def export(flip_soft: bool = False) -> datasets.DatasetDict:
    """The shape `labeler ... --kind classification` writes, invalid rows included."""
    rng = random.Random(0)
    rows = [(sentence(rng, i % 2 == 0), i % 2 == 0) for i in range(160)]
    soft = [[0.2, 0.8] if p else [0.7, 0.3] for _, p in rows]
    if flip_soft:
        soft = [s[::-1] for s in soft]
    labels: list[int] = [int(p) for _, p in rows]
    labels[0], soft[0] = -1, None  # type: ignore[call-overload]  # an answer that was no label
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
            "soft_label": datasets.Sequence(datasets.Value("float64")),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "id": [f"r{i}" for i in range(len(rows))],
            "text": [t for t, _ in rows],
            "label": labels,
            "soft_label": soft,
        },
        features=features,
    )
    return datasets.DatasetDict({"train": ds})


def gold() -> list[dict[str, str]]:
    rng = random.Random(1)
    return [{"text": sentence(rng, p), "label": "positive" if p else "negative"} for p in [True, False] * 20]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_train_and_score_learns_from_soft_and_from_hard_labels() -> None:
    ex = example()
    hard = ex.train_and_score(export(), gold(), soft=False, seed=0, epochs=15)
    soft = ex.train_and_score(export(), gold(), soft=True, temperature=2.0, seed=0, epochs=15)
    assert hard >= 0.9 and soft >= 0.9, (hard, soft)


@pytest.mark.slow
def test_soft_means_the_soft_labels_are_the_targets() -> None:
    """Soft labels that contradict the hard ones: only the soft student learns them."""
    ex = example()
    flipped = export(flip_soft=True)
    assert ex.train_and_score(flipped, gold(), soft=False, seed=0, epochs=15) >= 0.9
    assert ex.train_and_score(flipped, gold(), soft=True, seed=0, epochs=15) <= 0.1


@pytest.mark.slow
def test_the_script_prints_both_accuracies(tmp_path: Path) -> None:
    export().save_to_disk(str(tmp_path / "export"))
    gold_file = tmp_path / "gold.jsonl"
    gold_file.write_text("".join(json.dumps(r) + "\n" for r in gold()))
    proc = subprocess.run(
        [
            sys.executable,
            "examples/distill_student.py",
            str(tmp_path / "export"),
            str(gold_file),
            "--epochs",
            "15",
            "--threads",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores = {}
    for line in proc.stdout.splitlines():
        name, _, value = line.rpartition(" ")
        if name.strip() in ("hard", "soft T=1"):
            scores[name.strip()] = float(value)
    assert set(scores) == {"hard", "soft T=1"}, proc.stdout
    assert min(scores.values()) >= 0.9, proc.stdout
