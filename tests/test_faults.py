"""A teacher that fails in every way at once: each item ends labeled, or failed with its reason.

2,000 items against the test server set to 10% HTTP 500, 2% 429 with retry-after, 2%
garbage bodies, 2% dropped connections and 2% answers that hang past the client's
timeout. The server's log says what each attempt of each prompt got, so the test checks
the store against it item by item; every failure there is transient, so a plain rerun
sends exactly the failed items again.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from procs import ServerProcess, item_keys, item_of, write_items

from labeler import Job, run_job
from labeler.cli import main
from labeler.store import Store

ROWS = 2000
ATTEMPTS = 3
FAULTS = [
    "--error-rate",
    "0.10",
    "--rate-limit-rate",
    "0.02",
    "--retry-after",
    "0.05",
    "--garbage-rate",
    "0.02",
    "--drop-rate",
    "0.02",
    "--hang-rate",
    "0.02",
    "--hang",
    "5",
    "--seed",
    "7",
    "--labels",
    "negative,positive",
]
TIMEOUT_S = 1.0
# What the client records for what its last attempt met ("cancelled": the client gave up
# waiting, on a hung answer or, on a busy machine, a slow one).
REASON_OF_FAULT = {
    "error": {"http_500"},
    "rate_limit": {"http_429"},
    "garbage": {"invalid_json"},
    "drop": {"disconnected", "connection"},
    "hang": {"timeout"},
    "cancelled": {"timeout"},
}


def _attempts(log: list[dict[str, Any]]) -> dict[int, list[str | None]]:
    """item -> what each attempt met, in order (None: answered)."""
    out: dict[int, list[str | None]] = defaultdict(list)
    for r in sorted(log, key=lambda r: r["received"]):
        item = item_of(r["prompt"])
        if item is not None:
            met = r["fault"]  # a garbage body comes with a 200
            if met is None and r["status"] != 200:
                met = "cancelled" if r["status"] is None else f"status_{r['status']}"
            out[item].append(met)
    return out


@pytest.mark.slow
def test_every_item_ends_labeled_or_failed_with_its_reason(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", ROWS)
    store = tmp_path / "s.sqlite"
    # The server in its own process: the client's work must not slow its answers down.
    with ServerProcess(*FAULTS) as srv:
        job = Job(
            task="sentiment",
            input=data,
            teacher="openai-compatible:teacher-test",
            base_url=srv.api,
            store=store,
            progress=False,
            concurrency=64,
            max_attempts=ATTEMPTS,
            retry_initial_wait=0.01,
            teacher_options={"timeout": TIMEOUT_S},
        )
        s = asyncio.run(run_job(job, on_warning=lambda _: None)).summary
        log = srv.log()
        attempts = _attempts(log)
        keys = item_keys("sentiment", data, srv.api)

        assert (s.labeled + s.failed, s.rows) == (ROWS, ROWS)
        assert s.failed > 0 and s.outcome == "partial"
        with Store(store) as st:
            answered = st.known(list(keys.values()))
            failures = st.failures_for(list(keys.values()))
        assert len(answered) == s.labeled and len(failures) == s.failed
        for item, key in keys.items():
            faults = attempts[item]
            if key in answered:
                assert faults[-1] is None and len(faults) <= ATTEMPTS
                assert key not in failures
            else:  # failed after the retry cap, for the reason its last attempt met
                f = failures[key]
                assert len(faults) == ATTEMPTS and None not in faults
                assert f.attempts == ATTEMPTS and f.reason in REASON_OF_FAULT[faults[-1]]
        assert set(s.failures_by_reason) <= set().union(*REASON_OF_FAULT.values())
        assert s.retries > ROWS * 0.1 and s.rate_limited > 0

        runner = CliRunner()
        stats = runner.invoke(main, ["stats", "--store", str(store)])
        assert stats.exit_code == 0, stats.output
        assert f"responses        {s.labeled}" in stats.output
        assert f"failed           {s.failed}" in stats.output
        for reason, n in s.failures_by_reason.items():
            assert f"  {reason:<15}{n}" in stats.output

        args = [
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
            "--json",
            "--max-attempts",
            str(ATTEMPTS),
            "--retry-initial-wait",
            "0.01",
        ]
        # Every failure was transient: a plain rerun sends exactly the failed items again.
        assert (s.failed_transient, s.failed_final) == (s.failed, 0)
        sent = len(log)
        srv.configure(hang_rate=0.0)  # the CLI's client would wait 60s for a hung answer
        retried = runner.invoke(main, args)
        assert retried.exit_code in (0, 3), retried.output
        again = _attempts(srv.log()[sent:])
        failed_items = {i for i, k in keys.items() if k in failures}
        assert set(again) == failed_items
        after = json.loads(retried.stdout.splitlines()[-1])
        assert after["labeled"] + after["failed"] == len(failed_items)
        assert after["cached"] == s.labeled
        stats = runner.invoke(main, ["stats", "--store", str(store), "--json"])
        counts = json.loads(stats.output)
        assert counts["failed"] == after["failed"]
        assert counts["responses"] == s.labeled + after["labeled"]
