"""``hf://datasets/NAME[:CONFIG][:SPLIT]`` as input, with no network.

`datasets.load_dataset(NAME)` reads a local folder of that name before it asks the Hub,
so each test keeps its "Hub" dataset in a folder `acme/reviews` under the working
directory: the input goes through the same `load_dataset` call, streaming and all, that a
Hub id does. The missing-dataset test runs `labeler` in a process of its own with the Hub
switched off (HF_HUB_OFFLINE), as a machine without network would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml
from click.testing import CliRunner

import labeler
from labeler.cli import main
from labeler.inputs import count_rows, read_rows
from labeler.refresh import refresh
from labeler.testing import TeacherServer

from conftest import chat_requests

TEACHER = "openai-compatible:teacher-test"
TRAIN = [
    "A delight from start to finish.",
    "Dull and far too long.",
    "I loved every minute.",
    "A waste of an evening.",
    "Warm, funny and wise.",
]
VALIDATION = ["Gorgeous to look at.", "The plot makes no sense.", "An instant favourite."]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dataset `acme/reviews` (splits train and validation; configs default and short)
    laid out as on the Hub, in the working directory."""
    root = tmp_path / "acme" / "reviews"
    (root / "data").mkdir(parents=True)
    (root / "short").mkdir()
    for split, texts in (("train", TRAIN), ("validation", VALIDATION)):
        rows = [{"text": t, "label": i % 2} for i, t in enumerate(texts)]
        datasets.Dataset.from_list(rows).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    datasets.Dataset.from_list([{"text": TRAIN[0], "label": 0}]).to_parquet(
        root / "short" / "train-00000-of-00001.parquet"
    )
    card = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": "train", "path": "data/train-*.parquet"},
                    {"split": "validation", "path": "data/validation-*.parquet"},
                ],
            },
            {"config_name": "short", "data_files": [{"split": "train", "path": "short/train-*.parquet"}]},
        ]
    }
    (root / "README.md").write_text(f"---\n{yaml.safe_dump(card)}---\n# reviews\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(server: TeacherServer, hub: Path, *args: str) -> object:
    return CliRunner().invoke(
        main,
        [*args, "--teacher", TEACHER, "--base-url", server.url + "/v1", "--store", str(hub / "s.sqlite")],
    )


def test_rows_are_named_by_split_and_index_and_read_the_same_each_time(hub: Path) -> None:
    items = list(read_rows("hf://datasets/acme/reviews:validation", required_fields=["text"]))
    assert [(r.source, r.line, r.id) for r in items] == [
        ("hf://datasets/acme/reviews:validation", i, str(i)) for i in (1, 2, 3)
    ]
    assert [r.data["text"] for r in items] == VALIDATION
    again = list(read_rows("hf://datasets/acme/reviews:validation"))
    assert [(r.id, r.data) for r in again] == [(r.id, r.data) for r in items]
    # CONFIG:SPLIT, and a lone suffix that names a config
    short = list(read_rows("hf://datasets/acme/reviews:short:train"))
    assert [r.source for r in short] == ["hf://datasets/acme/reviews:short:train"]
    assert len(list(read_rows("hf://datasets/acme/reviews:short"))) == 1
    assert len(list(read_rows("hf://datasets/acme/reviews", split="train"))) == 5
    assert count_rows("hf://datasets/acme/reviews:validation") in (None, 3)


@pytest.mark.parametrize(
    ("spec", "told"),
    [
        ("hf://datasets/acme/reviews", "has several splits; name one as hf://datasets/acme/reviews:SPLIT"),
        ("hf://datasets/acme/reviews:test", "test"),
        ("hf://datasets/acme/reviews:nope:train", "nope"),
        ("hf://datasets/acme/reviews:a:b:c", "expected hf://datasets/NAME[:CONFIG][:SPLIT]"),
    ],
)
def test_a_bad_spec_is_one_line_naming_it(hub: Path, spec: str, told: str) -> None:
    res = CliRunner().invoke(main, ["estimate", "sentiment", spec, "--teacher", "openai:gpt-4o-mini"])
    assert res.exit_code == 1, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"labeler: error: {spec}"), res.stderr
    assert told in lines[0]


def test_a_missing_dataset_is_one_line_and_sends_nothing(hub: Path, teacher_server: TeacherServer) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "labeler.cli",
            "run",
            "sentiment",
            "hf://datasets/nobody/nothing-here",
            "--teacher",
            TEACHER,
            "--base-url",
            teacher_server.url + "/v1",
            "--quiet",
            "--store",
            str(hub / "s.sqlite"),
            "--out",
            str(hub / "out"),
        ],
        cwd=hub,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("labeler: error: hf://datasets/nobody/nothing-here: cannot load")
    assert chat_requests(teacher_server) == 0 and not (hub / "out").exists()


def test_run_export_estimate_and_eval_take_a_hub_input(hub: Path, teacher_server: TeacherServer) -> None:
    spec = "hf://datasets/acme/reviews:validation"
    res = _run(teacher_server, hub, "run", "sentiment", spec, "--out", str(hub / "out"), "-q", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1])["labeled"] == 3
    out = datasets.load_from_disk(str(hub / "out"))
    assert out["id"] == ["1", "2", "3"] and out["text"] == VALIDATION
    sent = chat_requests(teacher_server)
    res = _run(
        teacher_server,
        hub,
        "export",
        "sentiment",
        spec,
        "--out",
        str(hub / "again"),
        "--kind",
        "classification",
    )
    assert res.exit_code == 0, res.output
    assert len(datasets.load_from_disk(str(hub / "again"))) == 3
    res = CliRunner().invoke(
        main, ["estimate", "sentiment", spec, "--teacher", "openai:gpt-4o-mini", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"] == 3
    res = _run(
        teacher_server,
        hub,
        "eval",
        "sentiment",
        spec,
        "--gold",
        "label",
        "--gold-map",
        "0=negative,1=positive",
        "--json",
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 3
    assert chat_requests(teacher_server) == sent  # all from the store


def test_label_takes_a_hub_input(hub: Path, teacher_server: TeacherServer) -> None:
    ds = labeler.label(
        "hf://datasets/acme/reviews:short:train",
        "sentiment",
        TEACHER,
        base_url=teacher_server.url + "/v1",
        store=hub / "s.sqlite",
    )
    assert isinstance(ds, datasets.Dataset) and ds["text"] == [TRAIN[0]]


def test_a_refresh_config_takes_a_hub_input(hub: Path, teacher_server: TeacherServer) -> None:
    config = hub / "refresh.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "sentiment",
                "input": "hf://datasets/acme/reviews:train",
                "teacher": TEACHER,
                "base_url": teacher_server.url + "/v1",
                "out": "published",
                "store": "s.sqlite",
            }
        )
    )
    result = refresh(config)
    assert result.outcome == "ok", result.error
    assert len(datasets.load_from_disk(str(result.current))) == 5


def test_a_hub_dataset_with_its_own_column_names_maps_to_the_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teacher_server: TeacherServer
) -> None:
    root = tmp_path / "glue" / "sst2"
    root.mkdir(parents=True)
    datasets.Dataset.from_list(
        [{"idx": i, "sentence": t, "label": 1} for i, t in enumerate(TRAIN)]
    ).to_parquet(root / "train.parquet")
    monkeypatch.chdir(tmp_path)
    res = _run(
        teacher_server,
        tmp_path,
        "run",
        "sentiment",
        "hf://datasets/glue/sst2:train",
        "--map",
        "text=sentence",
        "--id-field",
        "idx",
        "--out",
        str(tmp_path / "out"),
        "-q",
    )
    assert res.exit_code == 0, res.output
    out = datasets.load_from_disk(str(tmp_path / "out"))
    assert out["id"] == ["0", "1", "2", "3", "4"] and out["text"] == TRAIN
