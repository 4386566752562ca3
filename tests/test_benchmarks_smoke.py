"""The speed suite still runs: every row, at sizes too small to mean anything.

Benchmarks are programs, not tests: nothing here looks at a rate or a PASS/FAIL. This only
keeps `python -m benchmarks` from rotting as the code under it changes (a renamed
option, a child process that no longer starts, a table row that lost its numbers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TINY = [
    "--items",
    "200",
    "--sdk-items",
    "50",
    "--repeat",
    "1",
    "--concurrency",
    "16",
    "--latency-items",
    "200",
    "--in-flight",
    "32",
    "--latency",
    "0.02",
    "--rate-per-s",
    "100",
    "--rate-window",
    "1",
    "--rate-seconds",
    "1",
    "--rate-latency",
    "0",
    "--small",
    "200",
    "--big",
    "400",
    "--live-every",
    "10",
    "--share-items",
    "200",
    "--share-latency",
    "0.02",
    "--announced-high-seconds",
    "0.2",
    "--announced-low-seconds",
    "0.5",
    "--whole-items",
    "200",
]


@pytest.mark.slow  # the whole speed suite, each row in its own process
def test_the_speed_suite_runs_end_to_end_at_tiny_sizes(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY, "--json", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| benchmark | measured | target | result |" in proc.stdout
    results = json.loads(out.read_text())["results"]
    numbers = sorted(r["name"].split(".")[0] for r in results)
    assert numbers == ["1", "1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert all(r["result"] in ("PASS", "FAIL", "—") and r["measured"] for r in results)
