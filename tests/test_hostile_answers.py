"""A teacher's answer is data, never code.

Every broken shape of a 200 answer (the test server's hostile modes) costs its own row and
never the run: the row is stored as a final failure whose message names the field, the
raw body is kept beside it, the other rows are labeled, and a rerun sends nothing. A store
that already holds an answer no command can use (written before these checks, or merged
in) is tested in test_poisoned_store.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from procs import LABELER, ServerProcess, item_of, write_items

from labeler import Job, run_job
from labeler.engine import RunSummary
from labeler.testing import ServerConfig, TeacherServer, hostile

from conftest import SAMPLES

LABELS = ["negative", "positive"]
ROWS = 3
LIGHT = [name for name in hostile.SHAPES if name not in hostile.HEAVY]
BROKEN = [name for name in LIGHT if name not in hostile.LEGITIMATE]
TEACHER = "openai-compatible:teacher-test"


def label(
    srv: TeacherServer, tmp_path: Path, *, task: str = "sentiment", teacher: str = TEACHER, **options: Any
) -> RunSummary:
    base_url = srv.url if teacher.startswith("anthropic") else srv.url + "/v1"
    job = Job(
        task=task,
        input=SAMPLES / "reviews.jsonl",
        teacher=teacher,
        base_url=base_url,
        store=tmp_path / "s.sqlite",
        progress=False,
        limit=ROWS,
        teacher_options=options,
    )
    return asyncio.run(run_job(job, on_warning=lambda _: None)).summary


def stored_failures(store: Path) -> list[tuple[str, str, bytes | None]]:
    """(reason, message, kept body) of every stored failure."""
    db = sqlite3.connect(store)
    try:
        return db.execute(
            "SELECT f.reason, f.message, b.body FROM failures f LEFT JOIN failure_bodies b USING (key)"
        ).fetchall()
    finally:
        db.close()


def sent(srv: TeacherServer) -> int:
    return sum(1 for r in srv.log if r.path.startswith("/v1/"))


def assert_each_row_failed_for_its_field(
    shape: str, srv: TeacherServer, tmp_path: Path, summary: RunSummary, **options: Any
) -> None:
    assert summary.failures_by_reason == {"malformed_answer": ROWS}, shape
    assert summary.failed_final == ROWS and summary.labeled == 0
    failures = stored_failures(tmp_path / "s.sqlite")
    assert len(failures) == ROWS
    for reason, message, body in failures:
        assert reason == "malformed_answer"
        assert ": " in message and len(message.splitlines()) == 1
        assert body  # what the server sent, kept for inspection
    before = sent(srv)
    again = label(srv, tmp_path, **options)
    assert sent(srv) == before  # a final failure is not paid for twice
    assert again.failed == ROWS and again.requests == 0


@pytest.mark.parametrize("shape", LIGHT)
def test_each_hostile_chat_answer_costs_its_own_row_and_a_rerun_sends_nothing(
    shape: str, tmp_path: Path
) -> None:
    with TeacherServer(ServerConfig(labels=LABELS, hostile_rate=1.0, hostile=[shape])) as srv:
        summary = label(srv, tmp_path)
        if shape in hostile.LEGITIMATE:  # content as a list of text parts: joined, kept
            assert summary.labeled == ROWS and summary.failed == 0
            with sqlite3.connect(tmp_path / "s.sqlite") as db:
                texts = {t for (t,) in db.execute("SELECT text FROM responses")}
            assert texts <= set(LABELS) and texts
            return
        assert_each_row_failed_for_its_field(shape, srv, tmp_path, summary)


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
@pytest.mark.parametrize("shape", ["logprob_null", "message_string", "usage_huge", "deep_nesting"])
def test_the_sdk_transports_check_answers_the_same_way(shape: str, transport: str, tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=LABELS, hostile_rate=1.0, hostile=[shape])) as srv:
        summary = label(srv, tmp_path, transport=transport)
        assert_each_row_failed_for_its_field(shape, srv, tmp_path, summary, transport=transport)


@pytest.mark.parametrize(
    "shape", ["logprob_string", "logprob_absurd", "top_not_object", "message_string", "usage_negative"]
)
def test_completion_answers_are_checked_field_by_field(shape: str, tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=LABELS, hostile_rate=1.0, hostile=[shape])) as srv:
        summary = label(srv, tmp_path, task="sentiment-completion")
    assert summary.failures_by_reason == {"malformed_answer": ROWS}


@pytest.mark.parametrize(
    "shape",
    [
        "message_string",
        "choices_not_list",
        "choice_not_object",
        "usage_string",
        "usage_huge",
        "finish_reason_object",
        "deep_nesting",
    ],
)
def test_anthropic_answers_are_checked_field_by_field(
    shape: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    with TeacherServer(ServerConfig(labels=LABELS, hostile_rate=1.0, hostile=[shape])) as srv:
        summary = label(srv, tmp_path, teacher="anthropic:teacher-test")
    assert summary.failures_by_reason == {"malformed_answer": ROWS}
    assert all(body for _, _, body in stored_failures(tmp_path / "s.sqlite"))


@pytest.mark.parametrize("transport", ["lean", "httpx"])
@pytest.mark.parametrize("shape", ["gzip_bomb", "oversize"])
def test_a_body_over_the_size_limit_is_a_failure_not_read_whole(
    shape: str, transport: str, tmp_path: Path
) -> None:
    with TeacherServer(ServerConfig(labels=LABELS, hostile_rate=1.0, hostile=[shape])) as srv:
        hostile.gzip_bomb()  # built once, before the clock starts
        start = time.monotonic()
        summary = label(srv, tmp_path, transport=transport)
        elapsed = time.monotonic() - start
    assert summary.failures_by_reason == {"response_too_large": ROWS}
    assert summary.failed_final == ROWS
    assert elapsed < 30


@pytest.mark.slow
def test_a_run_where_one_answer_in_a_hundred_is_hostile_finishes_and_a_rerun_sends_nothing(
    tmp_path: Path,
) -> None:
    """The issue's acceptance run: 5,000 rows, 1% hostile bodies, the CLI end to end."""
    rows = 5000
    data = write_items(tmp_path / "in.jsonl", rows)
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    with ServerProcess("--hostile-rate", "0.01", "--labels", "negative,positive", "--seed", "3") as srv:
        args = [
            *LABELER,
            "run",
            "sentiment",
            str(data),
            "-t",
            TEACHER,
            "--base-url",
            srv.api,
            "--store",
            str(store),
            "--out",
            str(out),
            "--quiet",
        ]
        first = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert first.returncode == 3, first.stderr[-2000:]  # partial: some rows failed
        assert "Traceback" not in first.stderr
        log = srv.log()
        hostile_items = {
            item_of(r["prompt"])
            for r in log
            if (r["fault"] or "").startswith("hostile:") and r["fault"] != "hostile:content_parts"
        }
        assert len(log) == rows and 20 <= len(hostile_items) <= 90

        import datasets

        exported = {int(r["id"][2:]) for r in datasets.load_from_disk(str(out))}
        assert exported == set(range(rows)) - hostile_items
        db = sqlite3.connect(store)
        reasons = dict(db.execute("SELECT reason, count(*) FROM failures GROUP BY reason"))
        kept = db.execute("SELECT count(*) FROM failure_bodies").fetchone()[0]
        db.close()
        assert reasons == {"malformed_answer": len(hostile_items)} and kept == len(hostile_items)

        stats = subprocess.run(
            [*LABELER, "stats", "--store", str(store), "--json"], capture_output=True, text=True, timeout=120
        )
        assert json.loads(stats.stdout)["failures_by_reason"] == reasons

        again = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert again.returncode == 3 and "Traceback" not in again.stderr, again.stderr[-2000:]
        assert len(srv.log()) == rows  # the rerun sent nothing


def test_a_hostile_answer_in_a_batch_result_file_is_a_failure_of_its_row(tmp_path: Path) -> None:
    config = ServerConfig(
        labels=LABELS,
        batch_speed_s=0.2,
        hostile_rate=1.0,
        hostile=["logprob_absurd", "message_string", "usage_huge"],
    )
    with TeacherServer(config) as srv:
        job = Job(
            task="sentiment",
            input=SAMPLES / "reviews.jsonl",
            teacher=TEACHER,
            base_url=srv.url + "/v1",
            store=tmp_path / "s.sqlite",
            progress=False,
            batch=True,
            limit=ROWS,
        )
        summary = asyncio.run(run_job(job, on_warning=lambda _: None)).summary
        assert summary.failures_by_reason == {"malformed_answer": ROWS}
        assert all(body for _, _, body in stored_failures(tmp_path / "s.sqlite"))
        again = asyncio.run(run_job(job, on_warning=lambda _: None)).summary
        assert again.failed == ROWS and again.requests == 0
