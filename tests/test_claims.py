"""Two processes on one store never pay twice: claims with owners and leases.

The store-level tests use real SQLite and, for a dead owner, a real process that has
ended; the end-to-end test runs two `labeler run` at once against the teacher server in
its own process and counts, server-side, the requests each item got.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import (
    ServerProcess,
    answered_items,
    item_of,
    run_args,
    start,
    wait_until,
    write_items,
)

from labeler.claims import Claims
from labeler.completion import Completion, Usage
from labeler.owner import Owner, alive
from labeler.store import Store


def _answer(text: str = "positive") -> Completion:
    return Completion(
        text=text, tokens=None, usage=Usage(3, 1), finish_reason="stop", model="m", latency_s=0.0
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not alive(proc.pid)
    return proc.pid


def test_a_key_held_by_a_live_owner_is_not_granted_until_released(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as one, Store(path) as two:
        a, b = Claims(one), Claims(two)
        assert a.owner != b.owner
        assert a.claim(["k1", "k2", "k2"]) == {"k1", "k2"}
        assert b.claim(["k1", "k2", "k3"]) == {"k3"}
        assert a.claim(["k1"]) == {"k1"}  # one's own claim is granted again
        a.release(["k1"])
        assert b.claim(["k1", "k2"]) == {"k1"}
        assert a.held() == {"k2"} and b.held() == {"k1", "k3"}
        b.release_all()
        assert b.held() == set()


def test_storing_an_answer_or_a_failure_drops_its_claim_and_it_is_not_granted_again(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        a, b = Claims(store), Claims(store)
        assert a.claim(["k1", "k2"]) == {"k1", "k2"}
        store.put_many([("k1", _answer(), None)])
        store.record_failures([("k2", "server_error", "boom", 500, 1)])
        assert a.held() == set()
        # k1 is answered: claiming it (after a stale lookup) must not let anyone send it.
        assert b.claim(["k1"]) == set()
        # Unless that answer is older than what counts (--max-age relabeling).
        assert b.claim(["k1"], fresh_since=time.time() + 1) == {"k1"}


def test_a_dead_owners_claims_are_taken_over_at_once(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        me = Owner.current()
        dead = Owner("ghost", me.host, me.boot, _dead_pid())
        rebooted = Owner("old-boot", me.host, "another-boot", os.getpid())
        remote = Owner("remote", "some-other-host", "b", 1)
        for owner, key in ((dead, "k1"), (rebooted, "k2"), (remote, "k3")):
            assert Claims(store, owner).claim([key]) == {key}
        mine = Claims(store, me)
        # The other host's owner cannot be checked: its lease is trusted.
        assert mine.claim(["k1", "k2", "k3"]) == {"k1", "k2"}
        assert mine.taken_over == 2


def test_an_expired_lease_is_taken_over_and_renewing_keeps_it(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        remote = Claims(store, Owner("remote", "some-other-host", "b", 1), lease_s=0.3)
        assert remote.claim(["k1", "k2"]) == {"k1", "k2"}
        mine = Claims(store)
        time.sleep(0.2)
        remote.renew()
        time.sleep(0.2)
        assert mine.claim(["k1"]) == set()  # renewed 0.2 s ago: still held
        time.sleep(0.35)
        assert mine.claim(["k1", "k2"]) == {"k1", "k2"}


def test_claims_survive_reopening_and_a_new_store_migrates(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    owner = Owner("remote", "some-other-host", "b", 1)
    with Store(path) as store:
        Claims(store, owner).claim(["k1"])
    with Store(path) as store:
        assert Claims(store, owner).held() == {"k1"}
        assert Claims(store).claim(["k1"]) == set()


ROWS = 300
CONCURRENCY = 16


@pytest.mark.slow
def test_a_claim_costs_no_fsync_and_answers_stay_durable(tmp_path: Path) -> None:
    """Claims are committed without waiting for the disk (a lease a power cut may lose);
    the connection is back to synchronous=FULL right after, so every paid answer still is."""
    with Store(tmp_path / "s.sqlite") as store:
        claims = Claims(store, Owner.current())
        assert claims.claim(["k1", "k2"]) == {"k1", "k2"}
        level = store.execute_read(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
        assert level == 2  # FULL
        store.put("k1", Completion("positive", usage=Usage(1, 1)))
        assert claims.held() == {"k2"}


def test_two_concurrent_runs_on_one_store_pay_once(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", ROWS)
    store = tmp_path / "s.sqlite"
    with ServerProcess(
        "--labels", "negative,positive", "--latency", "0.02", "--latency-jitter", "0.03"
    ) as srv:
        args = run_args("sentiment", data, srv, store, "--concurrency", str(CONCURRENCY), "--json")
        first = start(args)
        second = start(args)
        outs = [p.communicate(timeout=120) for p in (first, second)]
        log = srv.log()
    for proc, (_, err) in zip((first, second), outs, strict=True):
        assert proc.returncode == 0, err
    sent = [r for r in log if item_of(r["prompt"]) is not None]
    per_item = answered_items(log)
    assert set(per_item) == set(range(ROWS))
    assert len(sent) <= ROWS + CONCURRENCY, f"{len(sent)} requests for {ROWS} items"
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    for s in summaries:
        # Items the other run had in flight end as cached (read from the store), not failed.
        assert s["labeled"] + s["cached"] == ROWS and s["failed"] == s["skipped"] == 0, s
    assert sum(s["labeled"] for s in summaries) == len(per_item)
    with Store(store) as st:
        assert Claims(st).claim([]) == set()
        assert (
            st.execute_read(lambda db: db.execute("SELECT count(*) FROM claims").fetchone())[0] == 0
        )  # both runs released what they held


@pytest.mark.slow
def test_a_run_waiting_on_a_killed_run_takes_its_items_over(tmp_path: Path) -> None:
    rows = 120
    data = write_items(tmp_path / "in.jsonl", rows)
    store = tmp_path / "s.sqlite"
    with ServerProcess("--labels", "negative,positive", "--latency", "0.3") as srv:
        args = run_args("sentiment", data, srv, store, "--concurrency", "4", "--json")
        first = start(args)
        # The first run has claimed its first chunk (all 120 rows) and is sending them.
        assert wait_until(lambda: srv.answered() >= 4, 60, first), first.communicate()
        second = start(args)
        time.sleep(1.0)  # the second run finds every item claimed and waits
        first.kill()
        first.communicate()
        started = time.monotonic()
        out, err = second.communicate(timeout=120)
        took = time.monotonic() - started
        log = srv.log()
    assert second.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["labeled"] + summary["cached"] == rows and summary["failed"] == 0
    # Taken over at once (same machine, PID gone), not after the 60 s lease.
    assert took < 40, f"took {took:.1f}s"
    sent = [r for r in log if item_of(r["prompt"]) is not None]
    assert len(sent) <= rows + 4  # only what the killed run had in flight is asked again
    assert set(answered_items(log)) == set(range(rows))
