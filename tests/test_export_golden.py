"""Exports stay exactly what they were: every kind and format of one realistic store,
compared with digests recorded from the row-by-row exporter that came before the
columnar one.

The store is labeled for real (the test teacher over HTTP, four templates: chat and
completion labels, JSON, free text with per-token logprobs and vocabulary ids) from rows
that exercise every branch an export takes: invalid answers, decorated labels, rejects,
input columns of every type, splits, a human label. Each export is reduced to digests of
its data (column types and every value, bit for bit), its features, its metadata file
and its card; with the library versions the digests were recorded with, the data files'
bytes are compared too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import datasets
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeler import Job, run_job
from labeler.exports import ExportOptions
from labeler.filters import FilterSpec
from labeler.human import record_label
from labeler.inputs import read_rows
from labeler.job import export_job
from labeler.plan import Planner
from labeler.store import Store
from labeler.task import load_task
from labeler.testing import LabelResponder, Reply, RequestView, ServerConfig, TeacherServer

# The digests, and the versions the data files' bytes were recorded with (their schema
# metadata and writer names carry them; with other versions only the content is
# compared). `LABELER_RECORD_GOLDEN=1 pytest tests/test_export_golden.py` rewrites them:
# only ever from an exporter whose output is known to be right.
GOLDEN_FILE = Path(__file__).with_name("export_golden.json")

_labels = LabelResponder(["negative", "positive"])


def respond(view: RequestView) -> Reply:
    """Labels with a per-prompt distribution, and the odd answers real teachers give."""
    prompt = view.prompt
    if "Extract named entities" in prompt:
        if "zqbroken" in prompt:
            return Reply('{"people": ["Ada"')  # cut off: invalid JSON
        if "zqpartial" in prompt:
            return Reply('{"people": ["Ada"]}')  # misses required keys
        return Reply(
            orjson.dumps(
                {
                    "people": ["Ada Lovelace"],
                    "organizations": ["ÉCOLE"],
                    "locations": [f"row {view.prompt_hash % 97}"],
                }
            ).decode()
        )
    if "helpful, precise assistant" in prompt:
        return Reply(f"Answer {view.prompt_hash % 1000}: naïve café, ünïcode — done.")
    last = prompt.rsplit("Review:", 1)[-1]
    if "zqodd" in last:
        return Reply(
            "I think so",
            tokens=["I", " think", " so"],
            top_logprobs=[
                [("I", math.log(0.6)), ("negative", math.log(0.3)), ("positive", math.log(0.05))],
                [(" think", -0.1)],
                [(" so", -0.2)],
            ],
        )
    if "zqshout" in last:
        return Reply(
            "**Positive**.",
            tokens=["**", "Positive", "**."],
            top_logprobs=[
                [("**", -0.01)],
                [("Positive", math.log(0.7)), ("Negative", math.log(0.25))],
                [("**.", -0.05)],
            ],
        )
    return _labels(view)


def _rows() -> list[str]:
    lines = []
    for i in range(40):
        text = f"review {i}: the plot was {['dull', 'bright', 'vivid', 'stale'][i % 4]}"
        if i % 9 == 3:
            text += " zqodd"
        if i % 11 == 5:
            text += " zqshout"
        if i % 7 == 2:
            text += " — très bien, ünïcode 🎬"
        row: dict[str, Any] = {
            "id": f"r{i}",
            "text": text,
            "score": i * 3,
            "weight": i / 7,
            "flag": i % 2 == 0,
            "meta": {"n": i, "tags": ["a", "b"]},
            "split": ["train", "test", None][i % 3],
            "instruction": f"Explain item {i}",
            "label": "positive",
        }
        if i == 17:
            row["text"] = None  # a template reject: null field
        lines.append(json.dumps(row, ensure_ascii=False))
        if i == 23:
            lines.append("{not json")  # an input reject
    for bad in ("zqbroken", "zqpartial"):
        lines.append(json.dumps({"id": bad, "text": f"{bad} text", "instruction": "x"}))
    return lines


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "classification-hf": ("sentiment", {"kind": "classification"}),
    "classification-jsonl": ("sentiment", {"kind": "classification", "format": "jsonl"}),
    "classification-parquet-split": (
        "sentiment",
        {"kind": "classification", "format": "parquet", "split_field": "split"},
    ),
    "classification-invalid-kept": (
        "sentiment",
        {
            "kind": "classification",
            "filters": FilterSpec(drop_invalid=False),
            "validation_size": 0.3,
            "seed": 4,
        },
    ),
    "classification-min-confidence": (
        "sentiment",
        {"kind": "classification", "filters": FilterSpec(min_confidence=0.8)},
    ),
    "records-hf": ("sentiment", {"kind": "records"}),
    "records-jsonl": ("sentiment", {"kind": "records", "format": "jsonl"}),
    "sft-hf": ("sentiment", {"kind": "sft"}),
    "sft-messages": ("sentiment", {"kind": "sft", "sft_shape": "messages"}),
    "kd-hf": ("sentiment", {"kind": "kd"}),
    "kd-jsonl": ("sentiment", {"kind": "kd", "format": "jsonl"}),
    "kd-ids": ("sentiment", {"kind": "kd", "kd_layout": "ids"}),
    "completion-records": ("sentiment-completion", {"kind": "records"}),
    "completion-classification": ("sentiment-completion", {"kind": "classification"}),
    "completion-sft": ("sentiment-completion", {"kind": "sft"}),
    "extract-records": ("extract", {"kind": "records", "format": "jsonl"}),
    "extract-records-hf": ("extract", {"kind": "records", "filters": FilterSpec(drop_invalid=False)}),
    "instruct-records": ("instruct", {"kind": "records"}),
    "instruct-sft": ("instruct", {"kind": "sft", "format": "parquet"}),
    "instruct-kd": ("instruct", {"kind": "kd"}),
}


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One store holding all four templates' answers, and the server URL they are keyed by."""
    tmp = tmp_path_factory.mktemp("golden")
    data = tmp / "in.jsonl"
    data.write_text("\n".join(_rows()) + "\n", "utf-8")
    with TeacherServer(ServerConfig(responder=respond, token_ids=True)) as srv:
        base_url = srv.url + "/v1"
        for task in {t for t, _ in CASES.values()}:
            asyncio.run(run_job(_job(task, data, tmp, base_url)))
        # A person's label on one row: it wins over the teacher's in label exports.
        task = load_task("sentiment")
        with Store(tmp / "s.sqlite") as store:
            planner = Planner(
                task, _job("sentiment", data, tmp, base_url).make_teacher().identity, store, failures=False
            )
            items = [
                i
                for chunk in planner.plan_rows(read_rows(data))
                for i in chunk
                if i.row.data.get("id") == "r4"
            ]
            assert items and items[0].key
            record_label(store, items[0].key, "negative", reviewer="ada", row_id="r4")
    return data, base_url


def _job(task: str, data: Path, tmp: Path, base_url: str, **export: Any) -> Job:
    return Job(
        task=task,
        input=data,
        teacher="openai-compatible:teacher-test",
        base_url=base_url,
        store=tmp / "s.sqlite",
        out=tmp / "unused",
        progress=False,
        export=ExportOptions(**export),
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_matches_recorded_digests(case: str, labeled: tuple[Path, str], tmp_path: Path) -> None:
    data, base_url = labeled
    task, export = CASES[case]
    job = _job(task, data, data.parent, base_url, **export)
    job.out = tmp_path / "out"
    export_job(job)
    got = digests(tmp_path / "out", tmp_path)
    golden = orjson.loads(GOLDEN_FILE.read_bytes())
    if os.environ.get("LABELER_RECORD_GOLDEN"):
        golden["exports"][case] = got
        golden["recorded_with"] = {"datasets": datasets.__version__, "pyarrow": pa.__version__}
        GOLDEN_FILE.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        return
    want = golden["exports"][case]
    same_versions = golden["recorded_with"] == {"datasets": datasets.__version__, "pyarrow": pa.__version__}
    for part, digest in want.items():
        if part.startswith("bytes:") and not same_versions:
            continue
        assert got.get(part) == digest, f"{case}: {part} differs from the recorded export"
    assert set(got) == set(want), f"{case}: files differ: {sorted(set(got) ^ set(want))}"


def digests(out: Path, tmp: Path) -> dict[str, str]:
    """What an export folder holds, as digests: per data file its content (Arrow types and
    every value) and bytes; the features; the metadata file (timing left out); the card."""
    found: dict[str, str] = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_dir() or path.name == "state.json":  # state.json: fingerprints of paths
            continue
        raw = path.read_bytes()
        if path.suffix in (".arrow", ".parquet", ".jsonl"):
            found[f"content:{rel}"] = _sha(_content(path))
            found[f"bytes:{rel}"] = _sha(raw)
        elif path.name == "labeler_export.json":
            meta = orjson.loads(raw)
            meta["report"].pop("seconds")
            found[rel] = _sha(orjson.dumps(meta, option=orjson.OPT_SORT_KEYS))
        elif path.name == "README.md":
            text = raw.decode()
            text = text.replace(str(tmp), "<tmp>")
            found[rel] = _sha(
                "\n".join(
                    line for line in text.splitlines() if "seconds" not in line and " s |" not in line
                ).encode()
            )
        else:
            found[rel] = _sha(raw)
    return found


def _content(path: Path) -> bytes:
    if path.suffix == ".jsonl":
        return path.read_bytes()
    if path.suffix == ".parquet":
        table = pq.read_table(path)
    else:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
    rows = table.to_pylist()
    return (
        table.schema.to_string(show_schema_metadata=True).encode()
        + b"\n"
        + orjson.dumps(rows, default=_bytes_hex, option=orjson.OPT_SORT_KEYS)
    )


def _bytes_hex(value: Any) -> str:
    if isinstance(value, bytes):
        return "bytes:" + value.hex()
    raise TypeError(type(value))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]
