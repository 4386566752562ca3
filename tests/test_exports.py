"""Exports for student trainers: kinds, features, splits, filters, exact soft labels."""

from __future__ import annotations

import asyncio
import http.server
import json
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import datasets
import pytest

from labeler import Job, run_job
from labeler.exports import ExportOptions, export_dataset
from labeler.filters import FilterSpec
from labeler.inputs import read_rows
from labeler.soft_labels import IGNORE_LABEL
from labeler.store import Store
from labeler.task import load_task
from labeler.testing import Reply, ScriptedResponder, ServerConfig, TeacherServer

from conftest import SAMPLES

# Known distributions per prompt word: (answer, top logprobs at the first position).
DIST = {
    "alpha": [("positive", 0.70), (" positive", 0.05), ("negative", 0.20), ("Maybe", 0.03)],
    "beta": [("negative", 0.55), ("positive", 0.40), ("neg", 0.01)],
    "gamma": [("positive", 0.50), ("negative", 0.48)],
    "delta": [("I", 0.60), ("negative", 0.30), ("positive", 0.05)],  # answer is not a label
}
TEXT = {"alpha": "positive", "beta": "negative", "gamma": "positive", "delta": "I think so"}


def responder() -> ScriptedResponder:
    rules = []
    for word, dist in DIST.items():
        top = [(tok, math.log(p)) for tok, p in dist]
        rules.append((word, Reply(TEXT[word], tokens=[dist[0][0]], top_logprobs=[top])))
    return ScriptedResponder(rules, default=lambda view: Reply("positive"))


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[TeacherServer, Path]]:
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": w, "text": f"{w} review", "split": "test" if w == "beta" else "train"}) + "\n"
            for w in DIST
        )
    )
    with TeacherServer(ServerConfig(responder=responder())) as srv:
        yield srv, data


def job(srv: TeacherServer, data: Path, tmp_path: Path, **export: object) -> Job:
    return Job(
        task="sentiment",
        input=data,
        teacher="openai-compatible:teacher-test",
        base_url=srv.url + "/v1",
        store=tmp_path / "s.sqlite",
        out=tmp_path / "out",
        progress=False,
        export=ExportOptions(**export),
    )  # type: ignore[arg-type]


def by_id(ds: datasets.Dataset) -> dict[str, dict]:
    return {r["id"]: r for r in ds}


def test_soft_labels_are_exact(scripted: tuple[TeacherServer, Path], tmp_path: Path) -> None:
    srv, data = scripted
    asyncio.run(
        run_job(job(srv, data, tmp_path, kind="classification", filters=FilterSpec(drop_invalid=False)))
    )
    rows = by_id(datasets.load_from_disk(str(tmp_path / "out")))
    # alpha: positive 0.70 + " positive" 0.05, negative 0.20; outside = 1 - 0.95 + 0.03.
    a = rows["alpha"]
    assert a["soft_label"] == pytest.approx([0.20 / 0.95, 0.75 / 0.95], abs=1e-9)
    assert a["outside_mass"] == pytest.approx(1 - 0.95, abs=1e-9)
    # beta: "neg" is a prefix of negative only: 0.56 vs 0.40.
    assert rows["beta"]["soft_label"] == pytest.approx([0.56 / 0.96, 0.40 / 0.96], abs=1e-9)
    assert rows["gamma"]["max_prob"] == pytest.approx(0.50 / 0.98, abs=1e-9)
    assert rows["gamma"]["margin"] == pytest.approx(0.02 / 0.98, abs=1e-9)
    p = [0.48 / 0.98, 0.50 / 0.98]
    assert rows["gamma"]["entropy"] == pytest.approx(-sum(x * math.log(x) for x in p), abs=1e-9)
    assert rows["delta"]["label"] == IGNORE_LABEL  # kept only because drop_invalid is off
    for r in rows.values():
        if r["label"] != IGNORE_LABEL:
            assert sum(r["soft_label"]) == pytest.approx(1.0, abs=1e-12)


def test_invalid_rows_get_an_ignored_label_and_no_soft_label(
    scripted: tuple[TeacherServer, Path], tmp_path: Path
) -> None:
    """delta answered "I think so": 0.35 of its mass on labels, renormalised it would read
    as a confident "negative" (0.86); a trainer must neither learn it nor fail on it."""
    srv, data = scripted
    asyncio.run(
        run_job(
            job(
                srv,
                data,
                tmp_path,
                kind="classification",
                format="parquet",
                filters=FilterSpec(drop_invalid=False),
            )
        )
    )
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "train.parquet"), split="train")
    rows = by_id(ds)
    delta = rows["delta"]
    assert delta["label"] == -100 and delta["valid"] is False
    assert delta["soft_label"] is None and delta["max_prob"] is None
    assert delta["outside_mass"] == pytest.approx(1 - 0.35, abs=1e-9)
    assert all(r["valid"] and r["soft_label"] is not None for k, r in rows.items() if k != "delta")
    # datasets re-validates ClassLabel values when a map rewrites the column
    assert ds.map(lambda r: {"label": r["label"]})["label"] == ds["label"]
    meta = json.loads((tmp_path / "out" / "labeler_export.json").read_text())
    assert meta["ignore_label"] == -100


def test_filters_report_what_each_removed(scripted: tuple[TeacherServer, Path], tmp_path: Path) -> None:
    srv, data = scripted
    result = asyncio.run(
        run_job(job(srv, data, tmp_path, filters=FilterSpec(min_confidence=0.6, min_margin=0.1)))
    )
    report = result.export
    assert report is not None
    # delta invalid; beta max 0.583 < 0.6; gamma max 0.51 < 0.6; alpha kept.
    assert report.filtered["invalid"] == 1 and report.filtered["confidence"] == 2
    assert report.exported == 1
    card = (tmp_path / "out" / "README.md").read_text()
    assert "min_confidence=0.6" in card and "confidence" in card


def test_classification_features(scripted: tuple[TeacherServer, Path], tmp_path: Path) -> None:
    srv, data = scripted
    asyncio.run(run_job(job(srv, data, tmp_path, kind="classification")))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    f = ds.features
    assert isinstance(f["label"], datasets.ClassLabel) and f["label"].names == ["negative", "positive"]
    assert f["soft_label"] == datasets.List(datasets.Value("float64"))
    assert f["text"] == datasets.Value("string")
    assert {"max_prob", "margin", "entropy", "outside_mass"} <= set(ds.column_names)


def test_chat_sft_rows_complete_only_the_teachers_answer(
    scripted: tuple[TeacherServer, Path], tmp_path: Path
) -> None:
    """TRL's conversational prompt-completion: system and few-shot turns are prompt, the
    one assistant turn that is trained is the teacher's answer."""
    srv, data = scripted
    asyncio.run(run_job(job(srv, data, tmp_path, kind="sft")))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds.column_names == ["id", "prompt", "completion"]
    row = by_id(ds)["alpha"]
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert row["prompt"][-1]["content"].startswith("Review: alpha review")
    assert row["completion"] == [{"role": "assistant", "content": "positive"}]
    assert by_id(ds)["beta"]["completion"] == [{"role": "assistant", "content": "negative"}]


def test_sft_messages_shape_is_an_option(scripted: tuple[TeacherServer, Path], tmp_path: Path) -> None:
    srv, data = scripted
    asyncio.run(run_job(job(srv, data, tmp_path, kind="sft", sft_shape="messages")))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds.column_names == ["id", "messages"]
    msgs = by_id(ds)["alpha"]["messages"]
    assert msgs[0]["role"] == "system" and msgs[-1] == {"role": "assistant", "content": "positive"}


def test_kd_export_keeps_top_logprobs(scripted: tuple[TeacherServer, Path], tmp_path: Path) -> None:
    srv, data = scripted
    asyncio.run(run_job(job(srv, data, tmp_path, kind="kd")))
    row = by_id(datasets.load_from_disk(str(tmp_path / "out")))["alpha"]
    assert row["tokens"] == ["positive"] and row["token_bytes"] == [b"positive"]
    assert row["response_ids"] == [None]  # an OpenAI-shaped server sends no ids
    assert [t["token"] for t in row["top_logprobs"][0]] == ["positive", "negative", " positive", "Maybe"]
    assert row["top_logprobs"][0][2]["bytes"] == b" positive"
    assert row["top_logprobs"][0][0]["logprob"] == pytest.approx(math.log(0.70), abs=1e-12)


def test_split_column_and_seeded_validation(scripted: tuple[TeacherServer, Path], tmp_path: Path) -> None:
    srv, data = scripted
    asyncio.run(run_job(job(srv, data, tmp_path, split_field="split")))
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    assert set(dd) == {"train", "test"} and dd["test"]["id"] == ["beta"]
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"id": f"x{i}", "text": f"text {i}"}) + "\n" for i in range(200)))
    splits = []
    for _ in range(2):
        asyncio.run(run_job(job(srv, big, tmp_path, validation_size=0.2, seed=7)))
        dd = datasets.load_from_disk(str(tmp_path / "out"))
        splits.append(sorted(dd["validation"]["id"]))
    assert splits[0] == splits[1] and 20 <= len(splits[0]) <= 60


def test_failed_export_leaves_the_last_good_one(teacher_server: TeacherServer, tmp_path: Path) -> None:
    j = Job(
        task="sentiment",
        input=SAMPLES / "reviews.jsonl",
        teacher="openai-compatible:teacher-test",
        base_url=teacher_server.url + "/v1",
        store=tmp_path / "s.sqlite",
        out=tmp_path / "out",
        progress=False,
    )
    asyncio.run(run_job(j))
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    task = load_task("sentiment")

    def exploding() -> Iterator:
        for i, row in enumerate(read_rows(SAMPLES / "reviews.jsonl")):
            if i == 10:
                raise OSError("disk went away")
            yield row

    from labeler.teachers import make_teacher

    identity = make_teacher(j.teacher, base_url=j.base_url).identity
    with Store(tmp_path / "s.sqlite") as st, pytest.raises(OSError):
        export_dataset(task, identity, exploding(), st, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 24
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


class _HubStub(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def _deny(self) -> None:
        _HubStub.seen.append(f"{self.command} {self.path}")
        body = b'{"error": "Invalid credentials"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _deny

    def log_message(self, *args: object) -> None:
        pass


def test_push_to_hub_reaches_the_hub_call(teacher_server: TeacherServer, tmp_path: Path) -> None:
    """The Hub cannot be reached here: a stub endpoint proves the upload is attempted."""
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubStub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    env = dict(
        os.environ,
        HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}",
        HF_TOKEN="hf_test_token",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    try:
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "labeler.cli",
                "run",
                "sentiment",
                str(SAMPLES / "reviews.jsonl"),
                "--teacher",
                "openai-compatible:teacher-test",
                "--base-url",
                teacher_server.url + "/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
                "--out",
                str(tmp_path / "out"),
                "--push-to-hub",
                "someone/reviews",
                "--quiet",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        hub.shutdown()
    assert res.returncode == 1
    assert "someone/reviews" in res.stderr and "intact" in res.stderr
    assert any("someone/reviews" in s for s in _HubStub.seen)
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 24
