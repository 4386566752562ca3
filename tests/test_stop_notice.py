"""The first Ctrl-C says what the run waits for and how to stop at once, instead of a
silence that can last the whole stop grace while requests in flight land."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from procs import LocalServer, run_args, start, wait_until, write_items


@pytest.mark.slow
def test_the_first_ctrl_c_says_what_it_waits_for(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", 100)
    with LocalServer(labels=["negative", "positive"], latency_s=0.2, hang_rate=0.5, hang_s=15.0) as srv:
        proc = start(
            run_args(
                "sentiment", data, srv, tmp_path / "s.sqlite", "--concurrency", "8", "--stop-grace", "45"
            )
        )
        assert wait_until(lambda: srv.answered() >= 5, 60, proc), proc.communicate()
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    first = [line for line in err.splitlines() if line.startswith("stopping:")]
    assert len(first) == 1, err
    assert "in flight" in first[0] and "up to 45s" in first[0], first[0]
    assert "Ctrl-C again to stop now" in first[0], first[0]


def _ctrl_c_twice(args: list[str], srv: LocalServer) -> tuple[int, list[str]]:
    """Run `labeler`, press Ctrl-C once some answers landed and again a second later:
    (exit code, the lines the first Ctrl-C printed)."""
    proc = start(args)
    assert wait_until(lambda: srv.answered() >= 5, 60, proc), proc.communicate()
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, [line for line in err.splitlines() if line.startswith("stopping:")]


@pytest.mark.slow
def test_a_cascade_says_what_its_stage_waits_for(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", 100)
    cascade = "openai-compatible:teacher-test,openai-compatible:teacher-big"
    with LocalServer(labels=["negative", "positive"], latency_s=0.2, hang_rate=0.5, hang_s=15.0) as srv:
        code, first = _ctrl_c_twice(
            run_args(
                "sentiment",
                data,
                srv,
                tmp_path / "s.sqlite",
                "--cascade",
                cascade,
                "--escalate-below",
                "0.99",
                "--concurrency",
                "8",
                "--stop-grace",
                "45",
            ),
            srv,
        )
    assert code == 130
    assert len(first) == 1, first
    assert "in flight" in first[0] and "up to 45s" in first[0], first[0]
    assert "stage 1 of 2" in first[0] and "openai-compatible:teacher-test" in first[0], first[0]
    assert "Ctrl-C again to stop now" in first[0], first[0]


@pytest.mark.slow
def test_an_ensemble_says_what_its_members_wait_for(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", 100)
    ensemble = "openai-compatible:teacher-test,openai-compatible:teacher-big"
    with LocalServer(labels=["negative", "positive"], latency_s=0.2, hang_rate=0.5, hang_s=15.0) as srv:
        code, first = _ctrl_c_twice(
            run_args(
                "sentiment",
                data,
                srv,
                tmp_path / "s.sqlite",
                "--ensemble",
                ensemble,
                "--concurrency",
                "8",
                "--stop-grace",
                "45",
            ),
            srv,
        )
    assert code == 130
    assert len(first) == 1, first
    assert "in flight" in first[0] and "up to 45s" in first[0], first[0]
    assert "2 teachers" in first[0], first[0]
    assert "Ctrl-C again to stop now" in first[0], first[0]


@pytest.mark.slow
def test_a_batch_run_says_what_it_waits_for(tmp_path: Path) -> None:
    """A batch run waits on the provider, not on requests in flight: its first Ctrl-C says
    that the call under way finishes, how long one may take, and that the submitted
    batches are collected by the next run."""
    data = write_items(tmp_path / "in.jsonl", 20)
    with LocalServer(labels=["negative", "positive"], batch_speed_s=120.0) as srv:
        proc = start(run_args("sentiment", data, srv, tmp_path / "s.sqlite", "--batch"))
        created = lambda: httpx.get(srv.url + "/_batches").json()["openai"]["batches"] >= 1  # noqa: E731
        assert wait_until(created, 60, proc, every=0.1), proc.communicate()
        time.sleep(0.5)  # polling the batch
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    first = [line for line in err.splitlines() if line.startswith("stopping:")]
    assert len(first) == 1, err
    assert "batch" in first[0] and "up to 300s" in first[0], first[0]
    assert "next run collects" in first[0], first[0]
    assert "Ctrl-C again to stop now" in first[0], first[0]
