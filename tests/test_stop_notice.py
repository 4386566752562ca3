"""The first Ctrl-C says what the run waits for and how to stop at once, instead of a
silence that can last the whole stop grace while requests in flight land."""

from __future__ import annotations

import signal
import time
from pathlib import Path

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
