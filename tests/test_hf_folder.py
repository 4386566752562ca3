"""The hf export folder is written without `datasets`, and is what `datasets` writes.

`labeler/exports/features.py` declares columns in the JSON form `datasets` saves, and
`labeler/exports/hf_folder.py` writes `save_to_disk`'s layout with pyarrow alone. These tests hold
both to the library: the same features and Arrow schema for every column an export
declares, the same files byte for byte (state.json aside, whose fingerprint `datasets`
derives from a temporary path), `load_from_disk` reading the folder back, the fallback
through `datasets` where `save_to_disk` would write several shards, and an export process
that never imports `datasets`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pytest

from labeler import Job, run_job
from labeler.exports import features as hf
from labeler.exports import hf_folder
from labeler.exports.hf_folder import SplitFile
from labeler.exports.options import ExportOptions, ExportReport
from labeler.exports.rows import RowBuilder
from labeler.job import export_job
from labeler.task import load_task
from labeler.testing import ServerConfig, TeacherServer

KINDS = [
    ("sentiment", {"kind": "classification"}),
    ("sentiment", {"kind": "records"}),
    ("sentiment", {"kind": "sft"}),
    ("sentiment", {"kind": "sft", "sft_shape": "messages"}),
    ("sentiment", {"kind": "kd"}),
    ("sentiment", {"kind": "kd", "kd_layout": "ids"}),
    ("sentiment", {"kind": "kd", "format": "jsonl"}),
    ("sentiment-completion", {"kind": "sft"}),
    ("extract", {"kind": "records"}),
    ("instruct", {"kind": "records"}),
    # with a reasoning teacher's traces carried apart or inline
    ("sentiment", {"kind": "classification", "reasoning": "separate"}),
    ("sentiment", {"kind": "records", "reasoning": "separate"}),
    ("instruct", {"kind": "records", "reasoning": "inline"}),
    ("sentiment", {"kind": "sft", "reasoning": "separate"}),
    ("sentiment", {"kind": "sft", "sft_shape": "messages", "reasoning": "separate"}),
    ("sentiment", {"kind": "sft", "reasoning": "inline", "format": "jsonl"}),
    ("sentiment-completion", {"kind": "sft", "reasoning": "separate"}),
    ("instruct", {"kind": "records", "verify": "exact:text"}),
    ("instruct", {"kind": "sft", "verify": "exact:text", "reasoning": "separate"}),
    ("instruct", {"kind": "preference", "verify": "exact:text"}),
    ("sentiment-completion", {"kind": "preference", "verify": "exact:text"}),
]


@pytest.mark.parametrize(("task", "export"), KINDS)
def test_declared_features_are_datasets_features(task: str, export: dict[str, Any]) -> None:
    opts = ExportOptions(**export)
    builder = RowBuilder(
        load_task(task), {"provider": "p", "model": "m"}, opts, ExportReport("", opts.kind, opts.format)
    )
    sample = {"text": "x", "score": 3, "weight": 0.5, "flag": True}
    for provenance in (None, "cascade", "ensemble"):
        builder.provenance = provenance
        builder.input_fields = list(sample)
        ours = builder.features(sample)
        theirs = hf.to_datasets(ours)
        assert theirs.to_dict() == ours
        assert theirs.arrow_schema == hf.arrow_schema(ours)
        assert theirs.arrow_schema.metadata == hf.arrow_schema(ours).metadata


FEATURES = {
    "id": hf.value("string"),
    "label": hf.class_label(["neg", "pos"]),
    "soft": hf.list_of(hf.value("float64")),
    "ok": hf.value("bool"),
    "msgs": hf.list_of({"role": hf.value("string"), "content": hf.value("string")}),
}


def _rows(n: int, seed: int) -> list[list[Any]]:
    return [
        [
            f"r{seed}-{i}",
            i % 2 if i % 7 else -1,
            [i / 3, 1 - i / 3] if i % 5 else None,
            i % 3 == 0,
            [{"role": "user", "content": f"text {i} é 🎬"}],
        ]
        for i in range(n)
    ]


def _split(path: Path, rows: list[list[Any]]) -> SplitFile:
    split = SplitFile(path, FEATURES)
    for values in rows:
        split.add(values)
    split.close()
    return split


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "state.json"
    }


@pytest.mark.parametrize("splits", [("train",), ("train", "validation"), ("test", "train")])
def test_folder_is_what_save_to_disk_writes(tmp_path: Path, splits: tuple[str, ...]) -> None:
    datasets.disable_progress_bars()
    files = {
        name: _split(tmp_path / f"{name}.arrow", _rows(2345 + 10 * i, i)) for i, name in enumerate(splits)
    }
    as_dict = splits != ("train",)
    # datasets' own: read the same split files, save them (before ours moves them away)
    theirs = tmp_path / "theirs"
    parts = {k: datasets.Dataset.from_file(str(files[k].path)) for k in hf_folder.order(splits)}
    if as_dict:
        datasets.DatasetDict(parts).save_to_disk(str(theirs))
    else:
        parts["train"].save_to_disk(str(theirs))
    ours = tmp_path / "ours"
    ours.mkdir()
    ordered = {k: files[k] for k in hf_folder.order(splits)}
    assert hf_folder.save(ours, ordered, FEATURES, as_dict=as_dict)

    assert _files(ours) == _files(theirs)
    for state in theirs.rglob("state.json"):
        want = json.loads(state.read_text())
        got = json.loads((ours / state.relative_to(theirs)).read_text())
        assert set(got) == set(want)
        assert {k: v for k, v in got.items() if k != "_fingerprint"} == {
            k: v for k, v in want.items() if k != "_fingerprint"
        }
    loaded = datasets.load_from_disk(str(ours))
    again = datasets.load_from_disk(str(theirs))
    for name in splits:
        got_ds = loaded[name] if as_dict else loaded
        want_ds = again[name] if as_dict else again
        assert got_ds.features == hf.to_datasets(FEATURES)
        assert got_ds.to_list() == want_ds.to_list()


def test_same_rows_same_fingerprint(tmp_path: Path) -> None:
    """A rerun that writes the same export names it the same (datasets' caches key on it)."""
    prints = []
    for run in ("a", "b", "c"):
        folder = tmp_path / run
        folder.mkdir()
        split = _split(tmp_path / f"{run}.arrow", _rows(50, 0 if run != "c" else 1))
        assert hf_folder.save(folder, {"train": split}, FEATURES, as_dict=False)
        prints.append(json.loads((folder / "state.json").read_text())["_fingerprint"])
    assert prints[0] == prints[1] != prints[2]


def test_what_save_to_disk_would_shard_is_left_to_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = _split(tmp_path / "train.arrow", _rows(3000, 0))
    assert hf_folder.fits(split)
    monkeypatch.setattr(hf_folder, "_MAX_SPLIT_BYTES", split.nbytes - 1)
    assert not hf_folder.fits(split)
    folder = tmp_path / "out"
    folder.mkdir()
    assert not hf_folder.save(folder, {"train": split}, FEATURES, as_dict=False)
    assert split.path.exists() and not any(folder.iterdir()), "nothing moved"


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("labeled")
    data = tmp / "in.jsonl"
    data.write_text(
        "".join(json.dumps({"id": i, "text": f"review {i}"}) + "\n" for i in range(1200)), "utf-8"
    )
    store = tmp / "s.sqlite"
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        base_url = srv.url + "/v1"
        asyncio.run(
            run_job(
                Job(
                    task="sentiment",
                    input=data,
                    teacher="openai-compatible:t",
                    base_url=base_url,
                    store=store,
                    progress=False,
                )
            )
        )
    return data, store, base_url


def _export(labeled: tuple[Path, Path, str], out: Path, **export: Any) -> None:
    data, store, base_url = labeled
    export_job(
        Job(
            task="sentiment",
            input=data,
            teacher="openai-compatible:t",
            base_url=base_url,
            store=store,
            out=out,
            progress=False,
            export=ExportOptions(**export),
        )
    )


@pytest.mark.parametrize("export", [{"kind": "classification"}, {"kind": "records", "validation_size": 0.2}])
def test_export_falls_back_to_datasets_with_the_same_files(
    labeled: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export: dict[str, Any]
) -> None:
    _export(labeled, tmp_path / "lean", **export)
    monkeypatch.setattr(hf_folder, "_MAX_SPLIT_BYTES", 0)  # every split "too big": datasets
    _export(labeled, tmp_path / "datasets", **export)
    lean, full = _files(tmp_path / "lean"), _files(tmp_path / "datasets")
    for meta in ("labeler_export.json", "README.md"):  # they carry the export's timing
        lean.pop(meta), full.pop(meta)
    assert lean == full


def test_an_hf_export_does_not_import_datasets(labeled: tuple[Path, Path, str], tmp_path: Path) -> None:
    data, store, base_url = labeled
    code = (
        "import sys; from labeler.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('imported:', ' '.join(m for m in ('datasets', 'openai') if m in sys.modules))"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "export",
            "sentiment",
            str(data),
            "--store",
            str(store),
            "-t",
            "openai-compatible:t",
            "--base-url",
            base_url,
            "--out",
            str(tmp_path / "o"),
            "--kind",
            "classification",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "imported:", out.stdout + out.stderr
    table = pa.ipc.open_stream(str(tmp_path / "o" / "data-00000-of-00001.arrow")).read_all()
    assert table.num_rows == 1200
    assert datasets.load_from_disk(str(tmp_path / "o")).features["label"].names == ["negative", "positive"]
