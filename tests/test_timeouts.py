"""Time: a whole-attempt deadline per request, and a stop that does not wait for nothing.

A trickling server (headers at once, then one byte every so often) defeats every
per-read timeout; `--request-timeout` bounds the whole attempt, connect to last byte,
on every transport. And a stop while requests only wait on the rate limiter (none in
flight) ends the run at once instead of waiting out `--stop-grace`.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from procs import LocalServer, ServerProcess, run_args, start, wait_until, write_items

from labeler import Job, run_job
from labeler.refresh import refresh
from labeler.teachers import transport as http

TEACHERS = [
    *[("openai-compatible:teacher-test", t) for t in (http.LEAN, *http.TRANSPORTS)],
    *[("anthropic:claude-haiku-4-5", t) for t in http.TRANSPORTS],
]


@pytest.mark.parametrize(
    ("teacher", "transport"), TEACHERS, ids=[f"{t.split(':')[0]}-{x}" for t, x in TEACHERS]
)
def test_request_timeout_bounds_a_trickling_answer_on_every_transport(
    tmp_path: Path, teacher: str, transport: str
) -> None:
    data = write_items(tmp_path / "in.jsonl", 3)
    with LocalServer(labels=["negative", "positive"], trickle_s=0.5) as srv:
        base = srv.api if teacher.startswith("openai") else srv.url
        job = Job(
            task="sentiment",
            input=data,
            teacher=teacher,
            base_url=base,
            api_key="k",
            teacher_options={"transport": transport},
            store=tmp_path / "s.sqlite",
            progress=False,
            max_attempts=1,
            request_timeout=1.5,
        )
        teacher = job.make_teacher()  # the SDK import is not what is timed
        started = time.monotonic()
        # Without a whole-attempt deadline the run would take minutes: bounded here.
        result = asyncio.run(asyncio.wait_for(run_job(job, teacher=teacher), 30))
        elapsed = time.monotonic() - started
    assert result.summary.failures_by_reason == {"timeout": 3}, result.summary
    assert elapsed < 10, f"took {elapsed:.1f}s"


@pytest.mark.slow
def test_cli_request_timeout_against_a_trickling_server_exits_7_in_time(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", 4)
    with ServerProcess("--labels", "negative,positive", "--trickle", "3") as srv:
        args = run_args(
            "sentiment", data, srv, tmp_path / "s.sqlite", "--request-timeout", "5", "--max-attempts", "1"
        )
        started = time.monotonic()
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - started
    assert done.returncode == 7, done.stderr  # every row failed: 'empty', not 'partial'
    assert elapsed < 40, f"took {elapsed:.1f}s"
    assert "timeout" in done.stderr


def test_request_timeout_is_validated(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", 1)
    with LocalServer(labels=["negative", "positive"]) as srv:
        args = run_args("sentiment", data, srv, tmp_path / "s.sqlite", "--request-timeout", "0")
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--request-timeout" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_sigterm_while_requests_only_wait_on_the_rate_limiter_stops_at_once(
    tmp_path: Path,
) -> None:
    data = write_items(tmp_path / "in.jsonl", 40)
    with ServerProcess("--labels", "negative,positive") as srv:
        # 6 per minute: after the first request, every other row waits ~10 s for a token.
        proc = start(
            run_args("sentiment", data, srv, tmp_path / "s.sqlite", "--rpm", "6", "--concurrency", "4")
        )
        assert wait_until(lambda: srv.answered() >= 1, 30, proc), proc.communicate()
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert took < 5, f"nothing was in flight, yet the stop took {took:.1f}s"


def test_refresh_config_request_timeout(tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 2)
    with LocalServer(labels=["negative", "positive"], trickle_s=0.5) as srv:
        cfg = {
            "task": "sentiment",
            "input": "in.jsonl",
            "teacher": "openai-compatible:teacher-test",
            "base_url": srv.api,
            "store": "s.sqlite",
            "out": "out",
            "max_attempts": 1,
            "request_timeout": 1.5,
        }
        path = tmp_path / "refresh.yaml"
        path.write_text(yaml.safe_dump(cfg))
        started = time.monotonic()
        result = refresh(path)
        assert time.monotonic() - started < 20
    assert result.outcome == "empty", result.error  # both rows timed out: nothing labeled
    assert result.summary["failures_by_reason"] == {"timeout": 2}

    path.write_text(yaml.safe_dump({**cfg, "request_timeout": 0}))
    bad = refresh(path)
    assert bad.outcome == "failed" and "request_timeout must be > 0" in (bad.error or "")
