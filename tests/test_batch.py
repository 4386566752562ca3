"""Batch mode over real HTTP: the official SDKs against the teacher server's batch APIs.

What must hold: a job is submitted once and collected into the same store rows a live
run writes (so the export is identical), a rerun sends nothing, a kill -9 between the
provider creating a batch and the journal recording it is healed by adoption (never by
a second submission), expired and failed batches keep what they answered and the rest
is sent by the next run, per-request errors are failures with their reason, and the cost
is the batch price.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import httpx
import pytest
from click.testing import CliRunner

from labeler import Job, run_job
from labeler.batch import BatchRunner, BatchSummary, journal, make_client
from labeler.cli import EXIT_PENDING, main
from labeler.pricing import PriceTable
from labeler.store import Store
from labeler.task import load_task
from labeler.teachers import make_teacher
from labeler.testing import ServerConfig, TeacherServer

from conftest import SAMPLES, chat_requests

PRICES = PriceTable.default().with_override("teacher-test=1,2")  # USD per 1M in, out
ROWS = 24  # samples/reviews.jsonl


@pytest.fixture
def server() -> Iterator[TeacherServer]:
    with TeacherServer(ServerConfig(labels=["negative", "positive"], batch_speed_s=0.2)) as srv:
        yield srv


def make_job(server: TeacherServer, tmp_path: Path, provider: str = "openai", **kw: Any) -> Job:
    if provider == "openai":
        who: dict[str, Any] = dict(teacher="openai-compatible:teacher-test", base_url=server.url + "/v1")
    else:
        who = dict(teacher="anthropic:teacher-test", base_url=server.url, api_key="test")
    base: dict[str, Any] = dict(
        task="sentiment",
        input=SAMPLES / "reviews.jsonl",
        store=tmp_path / "store.sqlite",
        out=tmp_path / "out",
        progress=False,
        batch=True,
        prices=PRICES,
        **who,
    )
    base.update(kw)
    return Job(**base)


def run(job: Job) -> BatchSummary:
    summary = asyncio.run(run_job(job, on_warning=lambda m: None)).summary
    assert isinstance(summary, BatchSummary)
    return summary


def submitted(server: TeacherServer, provider: str = "openai") -> dict[str, int]:
    data = httpx.get(server.url + "/_batches").json()
    return data[provider]


def sources(store: Path) -> dict[str, int]:
    with sqlite3.connect(store) as db:
        return dict(db.execute("SELECT source, count(*) FROM responses GROUP BY source"))


def rows_of(out: Path) -> list[dict[str, Any]]:
    return datasets.load_from_disk(str(out)).to_list()


def test_submitted_once_collected_and_a_rerun_sends_nothing(server: TeacherServer, tmp_path: Path) -> None:
    s = run(make_job(server, tmp_path))
    assert (s.outcome, s.labeled, s.requests) == ("ok", ROWS, ROWS)
    assert (s.batches_created, s.batches_collected) == (1, 1)
    assert submitted(server) == {"batches": 1, "requests": ROWS, "files": 1}
    assert chat_requests(server) == 0  # nothing went through the live endpoint
    assert sources(tmp_path / "store.sqlite") == {"batch": ROWS}
    assert len(rows_of(tmp_path / "out")) == ROWS

    again = run(make_job(server, tmp_path))
    assert (again.outcome, again.cached, again.requests, again.batches_created) == ("ok", ROWS, 0, 0)
    assert submitted(server) == {"batches": 1, "requests": ROWS, "files": 1}


def test_export_is_identical_to_a_live_run(server: TeacherServer, tmp_path: Path) -> None:
    live = asyncio.run(run_job(make_job(server, tmp_path / "live", batch=False))).summary
    assert live.labeled == ROWS
    server.reset()
    s = run(make_job(server, tmp_path / "batch"))
    assert s.labeled == ROWS
    assert rows_of(tmp_path / "batch" / "out") == rows_of(tmp_path / "live" / "out")


def test_cost_is_the_batch_price(server: TeacherServer, tmp_path: Path) -> None:
    live = asyncio.run(run_job(make_job(server, tmp_path / "live", batch=False))).summary
    s = run(make_job(server, tmp_path / "batch"))
    assert (s.prompt_tokens, s.completion_tokens) == (live.prompt_tokens, live.completion_tokens)
    expected = (s.prompt_tokens * 1.0 + s.completion_tokens * 2.0) / 1e6 * PRICES.batch_discount
    assert s.cost_usd == pytest.approx(expected) and s.cost_usd == pytest.approx(live.cost_usd / 2)
    with sqlite3.connect(tmp_path / "batch" / "store.sqlite") as db:
        (stored,) = db.execute("SELECT sum(cost_usd) FROM responses").fetchone()
        (journaled,) = db.execute("SELECT sum(cost_usd) FROM batches").fetchone()
    assert stored == pytest.approx(expected) and journaled == pytest.approx(expected)


def test_work_is_split_by_the_count_and_byte_limits(server: TeacherServer, tmp_path: Path) -> None:
    task = load_task("sentiment")
    teacher = make_teacher("openai-compatible:teacher-test", base_url=server.url + "/v1")
    job = make_job(server, tmp_path)

    async def go(**limits: int) -> BatchSummary:
        client = make_client(teacher)
        try:
            with Store(tmp_path / f"{sorted(limits)[0]}.sqlite") as store:
                runner = BatchRunner(task, teacher, client, store, prices=PRICES, progress=False, **limits)  # type: ignore[arg-type]
                return await runner.run(job.rows(task))
        finally:
            await client.aclose()

    by_count = asyncio.run(go(max_requests=10))
    assert (by_count.batches_created, by_count.labeled) == (3, ROWS)  # 10 + 10 + 4
    line = len(make_client(teacher).encode("b2-" + "0" * 32, task.render({"text": "x" * 60}))[0])
    by_bytes = asyncio.run(go(max_bytes=line * 6))
    assert by_bytes.batches_created >= 4 and by_bytes.labeled == ROWS
    assert submitted(server)["requests"] == 2 * ROWS
    asyncio.run(teacher.aclose())


def labeler_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labeler.cli", "run", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_kill_9_between_creation_and_journal_adopts_the_batch(server: TeacherServer, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    args = [
        "sentiment",
        str(SAMPLES / "reviews.jsonl"),
        "--teacher",
        "openai-compatible:teacher-test",
        "--base-url",
        server.url + "/v1",
        "--store",
        str(store),
        "--out",
        str(tmp_path / "out"),
        "--batch",
        "--json",
        "-q",
    ]
    crashed = labeler_cli(*args, env={"LABELER_TEST_CRASH_AFTER": "batch_created"})
    assert crashed.returncode == 137, crashed.stderr
    assert submitted(server)["batches"] == 1
    with Store(store) as st:
        (entry,) = journal.listing(st)
    assert (entry.state, entry.remote_id) == ("uploaded", None)  # the provider's id was never journaled

    rerun = labeler_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.splitlines()[-1])
    assert (summary["batches_adopted"], summary["batches_created"], summary["labeled"]) == (1, 0, ROWS)
    assert submitted(server) == {"batches": 1, "requests": ROWS, "files": 1}  # nothing sent twice
    assert "adopted" in rerun.stderr and len(rows_of(tmp_path / "out")) == ROWS


class Crash(BaseException):
    """Stands in for a kill -9 in-process: nothing after the crash point runs."""


def test_anthropic_batch_lost_in_a_crash_is_adopted_by_size_and_time(
    server: TeacherServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labeler.batch import runner

    decoy = run(make_job(server, tmp_path / "decoy", "anthropic", limit=5))  # another job's batch
    assert decoy.batches_created == 1

    def crash(name: str) -> None:
        if name == "batch_created":
            raise Crash

    monkeypatch.setattr(runner, "crash_point", crash)
    with pytest.raises(Crash):
        run(make_job(server, tmp_path, "anthropic"))
    assert submitted(server, "anthropic")["batches"] == 2
    monkeypatch.setattr(runner, "crash_point", lambda name: None)
    s = run(make_job(server, tmp_path, "anthropic"))
    assert (s.batches_adopted, s.batches_created, s.labeled, s.outcome) == (1, 0, ROWS, "ok")
    assert submitted(server, "anthropic")["batches"] == 2


def test_no_wait_returns_pending_then_a_later_run_collects_and_exports(
    server: TeacherServer, tmp_path: Path
) -> None:
    server.config.batch_speed_s = 1.5
    args = [
        "run",
        "sentiment",
        str(SAMPLES / "reviews.jsonl"),
        "--teacher",
        "openai-compatible:teacher-test",
        "--base-url",
        server.url + "/v1",
        "--store",
        str(tmp_path / "store.sqlite"),
        "--out",
        str(tmp_path / "out"),
        "--batch",
        "--no-wait",
        "--json",
        "-q",
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == EXIT_PENDING, first.output
    line = json.loads(first.stdout.splitlines()[-1])
    assert (line["outcome"], line["pending"], len(line["batches_live"])) == ("pending", ROWS, 1)
    assert not (tmp_path / "out").exists()  # nothing exported while answers are pending

    again = CliRunner().invoke(main, args)  # still running: nothing new is submitted
    assert again.exit_code == EXIT_PENDING and submitted(server)["batches"] == 1

    listing = CliRunner().invoke(main, ["batches", "--store", str(tmp_path / "store.sqlite")])
    assert listing.exit_code == 0 and "openai" in listing.stdout and line["batches_live"][0] in listing.stdout
    ids = CliRunner().invoke(main, ["batches", "--store", str(tmp_path / "store.sqlite"), "--live", "-q"])
    assert (ids.exit_code, ids.stdout, ids.stderr) == (0, line["batches_live"][0] + "\n", "")

    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/_batches").json()["batches"][0]["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.splitlines()[-1])["labeled"] == ROWS
    assert len(rows_of(tmp_path / "out")) == ROWS and submitted(server)["batches"] == 1


def test_an_expired_batch_keeps_its_answers_and_the_rest_is_sent_next_run(
    server: TeacherServer, tmp_path: Path
) -> None:
    server.config.batch_fault = "expire"
    s = run(make_job(server, tmp_path))
    assert (s.outcome, s.labeled, s.unfinished) == ("partial", ROWS // 2, ROWS // 2)
    assert sources(tmp_path / "store.sqlite") == {"batch": ROWS // 2}

    server.config.batch_fault = None
    again = run(make_job(server, tmp_path))
    assert (again.outcome, again.cached, again.labeled) == ("ok", ROWS // 2, ROWS // 2)
    assert again.requests == ROWS // 2
    assert submitted(server)["requests"] == ROWS + ROWS // 2


def test_a_failed_batch_is_sent_again_by_the_next_run(server: TeacherServer, tmp_path: Path) -> None:
    server.config.batch_fault = "fail"
    warnings: list[str] = []
    s = asyncio.run(run_job(make_job(server, tmp_path), on_warning=warnings.append)).summary
    assert (s.outcome, s.labeled, s.unfinished) == ("partial", 0, ROWS)
    assert any("failed" in w and "injected fault" in w for w in warnings)
    server.config.batch_fault = None
    again = run(make_job(server, tmp_path))
    assert (again.outcome, again.labeled) == ("ok", ROWS)
    assert submitted(server)["batches"] == 2


def test_per_request_errors_are_failures_with_their_reason(server: TeacherServer, tmp_path: Path) -> None:
    server.config.status_for = [("battery", 400), ("broken", 503)]  # r002 + r021; r010
    s = run(make_job(server, tmp_path))
    assert (s.outcome, s.labeled, s.failed) == ("partial", ROWS - 3, 3)
    assert s.failures_by_reason == {"http_400": 2, "http_503": 1}
    with Store(tmp_path / "store.sqlite") as st:
        assert st.stats()["failures_by_reason"] == {"http_400": 2, "http_503": 1}

    server.config.status_for = []
    again = run(make_job(server, tmp_path))  # the transient one is sent again, the final ones not
    assert (again.requests, again.labeled, again.failed) == (1, 1, 2)
    assert again.failures_by_reason == {"http_400": 2}
    retried = run(make_job(server, tmp_path, retry_failed=True))
    assert (retried.outcome, retried.labeled) == ("ok", 2)


def test_anthropic_batches(server: TeacherServer, tmp_path: Path) -> None:
    live = asyncio.run(run_job(make_job(server, tmp_path / "live", "anthropic", batch=False))).summary
    server.reset()
    s = run(make_job(server, tmp_path / "batch", "anthropic"))
    samples = make_teacher("anthropic:teacher-test", base_url=server.url, api_key="test").samples
    assert (s.outcome, s.labeled, s.requests) == ("ok", ROWS, ROWS * samples)  # sampled soft targets
    assert submitted(server, "anthropic") == {"batches": 1, "requests": ROWS * samples, "files": 0}
    assert sources(tmp_path / "batch" / "store.sqlite") == {"batch": ROWS}
    assert s.cost_usd == pytest.approx(live.cost_usd / 2, rel=0.05)  # cache reads may differ a little
    cols = ("id", "label", "soft_label")
    live_rows = [{c: r[c] for c in cols} for r in rows_of(tmp_path / "live" / "out")]
    assert [{c: r[c] for c in cols} for r in rows_of(tmp_path / "batch" / "out")] == live_rows

    server.config.batch_fault = "expire"
    part = run(make_job(server, tmp_path / "expire", "anthropic"))
    assert part.outcome == "partial" and part.labeled + part.unfinished == ROWS and part.unfinished > 0
    again = run(make_job(server, tmp_path / "batch", "anthropic"))
    assert (again.cached, again.requests) == (ROWS, 0)


def test_cancel_keeps_answers_and_the_rest_is_sent_later(server: TeacherServer, tmp_path: Path) -> None:
    server.config.batch_speed_s = 3.0
    s = run(make_job(server, tmp_path, no_wait=True))
    assert s.outcome == "pending"
    (batch_id,) = s.batches_live
    time.sleep(1.0)  # part of it answered
    out = CliRunner().invoke(
        main, ["batches", "cancel", batch_id, "--store", str(tmp_path / "store.sqlite"), "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"id": batch_id, "status": "cancelling"} and out.stderr == ""
    server.config.batch_speed_s = 0.2
    collected = run(make_job(server, tmp_path))
    assert collected.outcome == "partial" and 0 < collected.labeled < ROWS
    assert collected.labeled + collected.unfinished == ROWS
    rest = run(make_job(server, tmp_path))
    assert (rest.outcome, rest.requests) == ("ok", collected.unfinished)
    listing = CliRunner().invoke(main, ["batches", "--store", str(tmp_path / "store.sqlite"), "--json"])
    states = sorted(json.loads(line)["state"] for line in listing.stdout.splitlines())
    assert states == ["collected (cancelled)", "collected (completed)"]


def test_the_budget_caps_what_is_submitted(server: TeacherServer, tmp_path: Path) -> None:
    task = load_task("sentiment")
    one = PRICES.estimate_request("teacher-test", task.render({"text": "x" * 80}), 2, batch=True)
    s = run(make_job(server, tmp_path, budget_usd=one * 10))
    assert s.outcome == "budget" and s.budget_stopped
    assert 0 < s.requests <= 12 and s.labeled == s.requests and s.skipped == ROWS - s.requests
    assert submitted(server)["requests"] == s.requests


def test_no_wait_needs_batch(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["run", "sentiment", str(SAMPLES / "reviews.jsonl"), "--no-wait"])
    assert out.exit_code == 1 and "--no-wait goes with --batch" in out.stderr


def test_a_teacher_without_a_batch_api_is_refused(tmp_path: Path) -> None:
    from labeler.errors import ConfigError

    class Local:
        provider, model = "local", "smollm2-135m"

        @property
        def identity(self) -> dict[str, Any]:
            return {"provider": "local", "model": self.model, "base_url": "http://127.0.0.1:1"}

    with pytest.raises(ConfigError, match="no batch API"):
        make_client(Local())  # type: ignore[arg-type]
