"""examples/train_student.py runs on a classification export and scores both students.

The export here is written with `datasets` in the shape `labeler export --kind
classification` gives (ClassLabel `label`, float `soft_label` in label order); the words
decide the class, so both students must learn it, and the gold file uses label names.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import datasets

REPO = Path(__file__).resolve().parent.parent
GOOD = ["great", "lovely", "superb", "fine", "wonderful"]
BAD = ["awful", "dull", "boring", "poor", "terrible"]


def sentence(rng: random.Random, positive: bool) -> str:
    words = rng.sample(GOOD if positive else BAD, 2) + rng.sample(["film", "plot", "cast", "story"], 2)
    rng.shuffle(words)
    return " ".join(words)


def test_the_student_example_trains_on_soft_and_hard_labels(tmp_path: Path) -> None:
    rng = random.Random(0)
    rows = [(sentence(rng, i % 2 == 0), i % 2 == 0) for i in range(200)]
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
            "soft_label": datasets.Sequence(datasets.Value("float64")),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "text": [t for t, _ in rows],
            "label": [int(p) for _, p in rows],
            "soft_label": [[0.2, 0.8] if p else [0.7, 0.3] for _, p in rows],
        },
        features=features,
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "export"))
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "".join(
            json.dumps({"text": sentence(rng, p), "label": "positive" if p else "negative"}) + "\n"
            for p in [True, False] * 30
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "examples/train_student.py",
            str(tmp_path / "export"),
            str(gold),
            "--temperature",
            "0.5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores = {}
    for line in proc.stdout.splitlines():
        name, _, value = line.rpartition(" ")
        if name.strip() in ("hard", "soft", "soft T=0.5"):
            scores[name.strip()] = float(value)
    assert set(scores) == {"hard", "soft", "soft T=0.5"}, proc.stdout
    assert min(scores.values()) >= 0.9, proc.stdout
    assert "mean max probability 0.750" in proc.stdout
