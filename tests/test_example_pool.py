"""Few-shot examples chosen per row by BM25: hand-computed scores and rendered prompts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from labeler.errors import TemplateError
from labeler.example_pool import ExamplePool, PoolExample, tokens
from labeler.task import load_task

POOL = [
    PoolExample({"text": "Apple, banana!"}, "fruit"),
    PoolExample({"text": "apple apple cherry"}, "fruit"),
    PoolExample({"text": "dog"}, "animal"),
]


def test_tokens_fold_case_and_split_punctuation() -> None:
    assert tokens("Apple, banana! x_y 42") == ["apple", "banana", "x", "y", "42"]


def test_bm25_scores_by_hand() -> None:
    pool = ExamplePool(POOL, ["text"])
    # N = 3, lengths 2, 3, 1 (mean 2); "apple" is in 2 docs: idf = ln(1 + 1.5 / 2.5).
    idf = math.log(1.6)
    # d0: tf 1, length = mean -> 1 · 2.2 / (1 + 1.2) = 1.
    # d1: tf 2, length 3 -> 2 · 2.2 / (2 + 1.2 · (0.25 + 0.75 · 1.5)) = 4.4 / 3.65.
    assert pool.scores({"text": "APPLE"}) == pytest.approx([idf, idf * 4.4 / 3.65, 0.0])


def test_nearest_puts_the_best_last_and_never_the_row_itself() -> None:
    pool = ExamplePool(POOL, ["text"])
    assert [e.input["text"] for e in pool.nearest({"text": "apple"}, 2)] == [
        "Apple, banana!",
        "apple apple cherry",
    ]
    # The row's own text is excluded; ties go to the earlier pool row.
    assert [e.input["text"] for e in pool.nearest({"text": "apple apple cherry"}, 2)] == [
        "dog",
        "Apple, banana!",
    ]


def _template(tmp_path: Path, mode: str, pool: str = "pool.jsonl") -> Path:
    (tmp_path / "pool.jsonl").write_text(
        "".join(json.dumps({"text": e.input["text"], "label": e.output}) + "\n" for e in POOL)
    )
    path = tmp_path / "t.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "version": "1",
                "mode": mode,
                "system": "Sort.",
                "user": "Item: {{ text }}\nKind:",
                "output": {"kind": "label", "labels": {"fruit": ["Fruit"], "animal": ["Animal"]}},
                "few_shot": [{"input": {"text": "cat"}, "output": "animal"}],
                "few_shot_pool": {"file": pool, "k": 2},
            }
        )
    )
    return path


def test_completion_prompt_keeps_the_fixed_prefix_first(tmp_path: Path) -> None:
    task = load_task(_template(tmp_path, "completion"))
    prompt = task.render({"text": "green apple"}).prompt
    assert prompt == (
        "Sort.\n\nItem: cat\nKind: Animal\n\n"  # fixed prefix, identical for every row
        "Item: Apple, banana!\nKind: Fruit\n\n"
        "Item: apple apple cherry\nKind: Fruit\n\n"  # the most similar, next to the row
        "Item: green apple\nKind:"
    )
    assert task.render({"text": "dog days"}).prompt.startswith("Sort.\n\nItem: cat\nKind: Animal\n\n")


def test_chat_prompt_adds_the_chosen_examples_as_turns(tmp_path: Path) -> None:
    task = load_task(_template(tmp_path, "chat"))
    msgs = task.render({"text": "hot dog with cherry"}).messages
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("system", "Sort."),
        ("user", "Item: cat\nKind:"),
        ("assistant", "Animal"),
        ("user", "Item: apple apple cherry\nKind:"),
        ("assistant", "Fruit"),
        ("user", "Item: dog\nKind:"),
        ("assistant", "Animal"),
        ("user", "Item: hot dog with cherry\nKind:"),
    ]


def test_bad_pool_rows_name_the_file_line_and_field(tmp_path: Path) -> None:
    path = _template(tmp_path, "completion")
    (tmp_path / "pool.jsonl").write_text('{"text": "a", "label": "fruit"}\n{"text": "b", "label": "rock"}\n')
    with pytest.raises(TemplateError, match=r"pool\.jsonl:2.*'rock' is not one of the labels"):
        load_task(path)
    (tmp_path / "pool.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(TemplateError, match=r"pool\.jsonl:1.*label"):
        load_task(path)
    with pytest.raises(TemplateError, match="few_shot_pool"):
        load_task(_template(tmp_path, "completion", pool="missing.jsonl"))
