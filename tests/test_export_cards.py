"""Dataset cards and export metadata a Hub user can act on: splits, labels, no local paths."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from labeler import Job, run_job
from labeler.exports import ExportOptions, ExportReport, merge_card
from labeler.exports.card import dataset_card, size_category
from labeler.task import load_task
from labeler.testing import ServerConfig, TeacherServer

from conftest import REPO, SAMPLES


@pytest.fixture
def server() -> TeacherServer:
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        yield srv


def _run(srv: TeacherServer, tmp_path: Path, out: Path, task: str = "sentiment", **export: object) -> None:
    job = Job(
        task=task,
        input=SAMPLES / "reviews.jsonl",
        teacher="openai-compatible:teacher-test",
        base_url=srv.url + "/v1",
        store=tmp_path / "s.sqlite",
        out=out,
        progress=False,
        export=ExportOptions(**export),
    )  # type: ignore[arg-type]
    asyncio.run(run_job(job))


def _snippet(card: str) -> str:
    return re.search(r"## Load\n\n```python\n(.*?)```", card, re.S).group(1)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_card_snippet_of_a_split_export_loads_both_splits(
    server: TeacherServer, tmp_path: Path, fmt: str
) -> None:
    _run(server, tmp_path, tmp_path / "out", kind="classification", format=fmt, validation_size=0.3, seed=1)
    card = (tmp_path / "out" / "README.md").read_text()
    code = _snippet(card) + "\nimport json\nprint(json.dumps({k: len(v) for k, v in ds.items()}))\n"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    sizes = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(sizes) == {"train", "validation"} and sum(sizes.values()) == 24
    assert sizes["validation"] > 0
    # the YAML configs map the files to their splits for load_dataset(folder) too
    dd = datasets.load_dataset(str(tmp_path / "out"))
    assert {k: len(v) for k, v in dd.items()} == sizes


def test_jsonl_export_keeps_label_names_in_index_order(server: TeacherServer, tmp_path: Path) -> None:
    _run(server, tmp_path, tmp_path / "out", kind="classification", format="jsonl")
    meta = json.loads((tmp_path / "out" / "labeler_export.json").read_text())
    assert meta["labels"] == ["negative", "positive"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| 0 | negative |" in card and "| 1 | positive |" in card
    row = json.loads((tmp_path / "out" / "train.jsonl").read_text().splitlines()[0])
    assert row["label"] in (0, 1)


def test_no_card_names_a_local_path_or_the_endpoint(server: TeacherServer, tmp_path: Path) -> None:
    template = tmp_path / "my-sentiment.yaml"
    template.write_text((REPO / "prompts" / "sentiment.yaml").read_text())
    cards = []
    for kind in ("records", "classification", "sft", "kd"):
        for fmt in ("hf", "parquet", "jsonl"):
            out = tmp_path / f"out-{kind}-{fmt}"
            _run(server, tmp_path, out, task=str(template), kind=kind, format=fmt)
            cards.append((out / "README.md").read_text())
            cards.append((out / "labeler_export.json").read_text())
    for text in cards:
        assert str(tmp_path) not in text and "/tmp" not in text
        assert server.url not in text and "127.0.0.1" not in text
    assert "my-sentiment.yaml" in cards[0]
    out = tmp_path / "with-endpoint"
    _run(server, tmp_path, out, kind="classification", card_endpoint=True)
    assert server.url in (out / "README.md").read_text()


def test_card_documents_columns_prompt_size_and_licence(server: TeacherServer, tmp_path: Path) -> None:
    _run(server, tmp_path, tmp_path / "out", kind="classification", card_license="cc-by-4.0")
    card = (tmp_path / "out" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "cc-by-4.0" and meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-classification"]
    for column in ("`label`", "`soft_label`", "`outside_mass`", "`valid`", "-100"):
        assert column in card
    assert "sentiment (shipped with labeler)" in card
    assert "Answer with exactly one word" in card and "Review: {{ text }}" in card


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 54_321, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "1M<n<10M",
    ]


def test_push_card_merges_the_metadata_datasets_generated() -> None:
    generated = (
        "---\ndataset_info:\n  features:\n  - name: label\n    dtype:\n      class_label:\n"
        "        names:\n          '0': negative\n          '1': positive\n  splits:\n"
        "  - name: train\n    num_examples: 24\nconfigs:\n- config_name: default\n"
        "  data_files:\n  - split: train\n    path: data/train-*\n---\n"
    )
    ours = (
        "---\nlicense: mit\npretty_name: x\ntags: [distillation]\n---\n\n# x\n\n"
        '```python\nds = load_dataset("someone/reviews")\n```\n'
    )
    merged = merge_card(generated, ours)
    meta = yaml.safe_load(merged.split("---")[1])
    assert meta["license"] == "mit" and meta["tags"] == ["distillation"]
    assert meta["dataset_info"]["features"][0]["dtype"]["class_label"]["names"] == {
        "0": "negative",
        "1": "positive",
    }
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*"
    assert 'load_dataset("someone/reviews")' in merged and merged.count("---\n") == 2


def test_pushed_card_loads_from_the_repo_and_names_no_endpoint() -> None:
    identity = {"provider": "openai-compatible", "model": "m", "base_url": "http://10.1.2.3:8000/v1"}
    report = ExportReport(
        "/srv/private/out", "classification", "parquet", exported=3, splits={"train": 2, "validation": 1}
    )
    card = dataset_card(
        load_task("sentiment"),
        identity,
        ExportOptions(kind="classification", format="parquet"),
        report,
        repo="someone/reviews",
    )
    assert 'ds = load_dataset("someone/reviews")' in card
    assert "configs" not in card.split("---")[1]  # the Hub's generated configs are kept
    assert "/srv/private" not in card and "10.1.2.3" not in card
