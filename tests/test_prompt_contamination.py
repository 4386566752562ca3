"""Few-shot examples must not come from the gold sets the prompts are measured on.

`benchmarks/local_quality.py` scores the shipped completion prompts on SST-2, AG News
and Emotion from ../shared/data; an example copied from one of those sets would be
graded on its own answer. Texts are compared after folding case and punctuation (SST-2
is lower-cased and tokenised), whole and, for longer texts, as a substring either way.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from conftest import SHARED_DATA

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
csv.field_size_limit(1 << 24)


def fold(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def gold_texts() -> list[str]:
    out: list[str] = []
    sst2 = SHARED_DATA / "sst2_validation" / "sst2_validation.tsv"
    if sst2.exists():
        with sst2.open(newline="") as f:
            out += [fold(r["sentence"]) for r in csv.DictReader(f, delimiter="\t")]
    ag = SHARED_DATA / "ag_news_test" / "ag_news_test.csv"
    if ag.exists():
        with ag.open(newline="") as f:
            for r in csv.DictReader(f):
                out += [fold(r["title"]), fold(r["description"]), fold(f"{r['title']} {r['description']}")]
    emotion = SHARED_DATA / "emotion_test" / "emotion_test.txt"
    if emotion.exists():
        out += [fold(line.rsplit(";", 1)[0]) for line in emotion.read_text().splitlines()[1:]]
    banking = SHARED_DATA / "banking77_test" / "banking77_test.csv"
    if banking.exists():
        with banking.open(newline="") as f:
            out += [fold(r["text"]) for r in csv.DictReader(f)]
    return [t for t in out if t]


def test_no_few_shot_example_is_taken_from_a_gold_set() -> None:
    gold = gold_texts()
    if not gold:
        pytest.skip(f"no gold sets under {SHARED_DATA}")
    exact = set(gold)
    found = []
    for path in sorted(PROMPTS.glob("*.yaml")):
        for shot in yaml.safe_load(path.read_text()).get("few_shot") or []:
            for value in shot["input"].values():
                text = fold(str(value))
                hit = text in exact or (
                    len(text) > 25 and any((text in g or g in text) for g in gold if len(g) > 25)
                )
                if hit:
                    found.append(f"{path.name}: {value!r}")
    assert not found, "few-shot examples found in a gold set:\n" + "\n".join(found)
