"""A rerun does what docs/cli.md says: transient failures are sent again by a plain rerun,
final ones only with --retry-failed, and the summary says which of the two remain.

Over real HTTP against the local teacher server: items whose prompt holds a marker get a
fixed status; the server's log says what each run really sent.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from procs import LocalServer, write_items

from labeler.cli import main

TRANSIENT = [("item-00001", 500), ("item-00002", 429), ("item-00003", 503)]
FINAL = [("item-00004", 400), ("item-00005", 404)]


def _sent(srv: LocalServer) -> int:
    return sum(1 for r in srv.server.log if r.path.endswith("/chat/completions"))


def _run(srv: LocalServer, data: Path, store: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(data),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            srv.api,
            "--store",
            str(store),
            "--quiet",
            "--max-attempts",
            "2",
            "--retry-initial-wait",
            "0.01",
            *extra,
        ],
    )


def test_a_plain_rerun_resends_transient_failures_and_only_those(tmp_path: Path) -> None:
    data, store = write_items(tmp_path / "in.jsonl", 8), tmp_path / "s.sqlite"
    with LocalServer(
        labels=["negative", "positive"], status_for=TRANSIENT + FINAL, retry_after_s=0.01
    ) as srv:
        first = _run(srv, data, store, "--json")
        assert first.exit_code == 3, first.output
        s = json.loads(first.stdout)
        assert (s["labeled"], s["failed"]) == (3, 5)
        assert (s["failed_transient"], s["failed_final"]) == (3, 2)
        # The server is back: a plain rerun sends the three transient failures again...
        srv.configure(status_for=[[m, st] for m, st in FINAL])
        before = _sent(srv)
        second = _run(srv, data, store)
        assert _sent(srv) - before == 3
        assert second.exit_code == 3, second.output
        assert "labeler: 2 failed finally" in second.output
        assert "rerun with --retry-failed" in second.output
        assert "transient" not in second.output  # nothing left a plain rerun would fix
        # ...and then nothing: the two final failures wait for --retry-failed.
        before = _sent(srv)
        third = _run(srv, data, store, "--json")
        assert _sent(srv) == before and third.exit_code == 3
        assert json.loads(third.stdout)["failed_final"] == 2
        srv.configure(status_for=[])
        fixed = _run(srv, data, store, "--retry-failed")
        assert fixed.exit_code == 0, fixed.output
        assert _sent(srv) - before == 2


def test_the_summary_says_a_plain_rerun_will_retry_transient_failures(tmp_path: Path) -> None:
    data, store = write_items(tmp_path / "in.jsonl", 4), tmp_path / "s.sqlite"
    with LocalServer(labels=["negative", "positive"], status_for=TRANSIENT) as srv:
        res = _run(srv, data, store)
    assert res.exit_code == 3
    assert (
        "labeler: 3 failed on transient errors (rate limits, server errors, timeouts): "
        "rerun the same command to send them again"
    ) in res.output
    assert "--retry-failed" not in res.output
