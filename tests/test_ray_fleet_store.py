"""The fleet's store actor on its own (a plain object here; the Ray tests run it as an
actor on a two-node cluster): what one call answers, and claims across owners."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="labeler.ray needs the ray extra: pip install 'labeler-distill[ray]'")
from labeler.answer_checks import UNUSABLE
from labeler.completion import Completion, Usage
from labeler.owner import Owner
from labeler.ray.fleet_store import FleetStore
from labeler.teacher_params import TeacherParams


def answer(text: str) -> Completion:
    return Completion(text=text, tokens=None, usage=Usage(3, 1), finish_reason="stop")


def elsewhere(name: str) -> Owner:
    """An owner on another machine: only its lease says whether it still works."""
    return Owner(f"{name}-id", f"{name}-host", "", 4242)


def test_one_look_up_answers_a_chunk_its_ages_and_the_misses_failures(tmp_path: Path) -> None:
    server = FleetStore(str(tmp_path / "s.sqlite"))
    server.put_many([("a", answer("positive"), 0.01)])
    server.record_failures([("b", "http_400", "bad request", 400, 1)])
    found, created, failed = server.look_up(["a", "b", "c"], True, True, True)
    assert set(found) == {"a"} and found["a"] is not None and found["a"].text == "positive"
    assert set(created) == {"a"} and created["a"] <= time.time()
    assert set(failed) == {"b"} and failed["b"].reason == "http_400"
    known, _, _ = server.look_up(["a", "c"], False, False, False)
    assert known == {"a": None}
    assert server.report()["calls"] == {"put_many": 1, "record_failures": 1, "look_up": 2}


def test_claims_cross_owners_and_a_lapsed_lease_is_taken_over(tmp_path: Path) -> None:
    server = FleetStore(str(tmp_path / "s.sqlite"))
    one, two = elsewhere("one"), elsewhere("two")
    assert server.claim(one, "node-1", 60.0, ["k1", "k2"], None) == {"k1", "k2"}
    assert server.claim(two, "node-2", 60.0, ["k1", "k2", "k3"], None) == {"k3"}
    # Answered by its owner: the claim goes with the commit, and nobody sends it again.
    server.put_many([("k1", answer("positive"), None)])
    assert server.claim(two, "node-2", 60.0, ["k1"], None) == set()
    server.release_all(one)
    assert server.claim(two, "node-2", 60.0, ["k2"], None) == {"k2"}
    # An owner that stopped renewing (its node died): its claims lapse with the lease.
    three = elsewhere("three")
    assert server.claim(three, "node-1", 0.05, ["k9"], None) == {"k9"}
    assert server.claim(two, "node-2", 60.0, ["k9"], None) == set()
    time.sleep(0.1)
    assert server.claim(two, "node-2", 60.0, ["k9"], None) == {"k9"}
    assert server.report()["owners_by_node"] == {"node-1": 2, "node-2": 1}


def test_a_stored_answer_the_store_cannot_use_is_a_final_failure_of_the_look_up(tmp_path: Path) -> None:
    """What a planner on one machine counts as failed (labeler/plan.py), a fleet's does too."""
    path = tmp_path / "s.sqlite"
    server = FleetStore(str(path))
    server.put_many([("a", answer("positive"), None), ("b", answer("negative"), None)])
    with sqlite3.connect(path) as db:  # a count no server sends, as a store merged in keeps it
        db.execute("UPDATE responses SET prompt_tokens = -1 WHERE key = 'b'")
    found, _, failed = server.look_up(["a", "b"], True, False, False)
    assert set(found) == {"a"}
    assert set(failed) == {"b"} and failed["b"].reason == UNUSABLE and failed["b"].message


def test_the_run_reads_and_writes_its_own_tables_and_failure_bodies_through_the_actor(tmp_path: Path) -> None:
    """A run remembers refused parameters (`TeacherParams`) and keeps the raw body of a
    broken answer: both reach the store actor's file."""
    path = tmp_path / "s.sqlite"
    server = FleetStore(str(path))
    server.record_failures([("k", "malformed_answer", "choices: missing", 200, 1)], {"k": b"{oops"})
    known = TeacherParams.load(server, {"provider": "openai", "model": "m"})
    known.save(server, accepted=["logprobs"])
    assert TeacherParams.load(server, {"provider": "openai", "model": "m"}).accepted == {"logprobs"}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT body FROM failure_bodies WHERE key = 'k'").fetchone() == (b"{oops",)
