"""The store: cache + journal, durable, migrated, honest about failures."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from labeler.completion import Completion, TokenLogprob, Usage
from labeler.errors import StoreError
from labeler.request import Request
from labeler.store import SCHEMA_VERSION, Store


def completion(text: str = "positive") -> Completion:
    return Completion(
        text=text,
        tokens=[TokenLogprob("positive", -0.1, (("positive", -0.1), ("negative", -2.4)))],
        usage=Usage(12, 1, 4),
        finish_reason="stop",
        model="m",
        latency_s=0.25,
    )


def test_put_then_get_round_trips_everything(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as st:
        st.put("b2:k", completion(), 0.001)
        got = st.get("b2:k")
    assert got is not None
    assert got.text == "positive" and got.usage == Usage(12, 1, 4)
    assert got.tokens == completion().tokens
    assert got.finish_reason == "stop" and got.latency_s == 0.25


def test_an_answer_read_back_reads_compares_and_copies_as_the_one_stored(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as st:
        st.put("b2:k", completion(), 0.001)
        got = st.get_many(["b2:k"])["b2:k"]
        again = st.get_many(["b2:k"])["b2:k"]
    assert got == completion() and completion() == got
    assert pickle.loads(pickle.dumps(again)) == completion()
    assert copy.copy(got).usage == Usage(12, 1, 4)
    assert dataclasses.replace(got, text="x").usage == Usage(12, 1, 4)
    got.usage = Usage(1)
    assert got.usage == Usage(1) and got != completion()


def test_response_survives_reopen(tmp_path: Path) -> None:
    Store(tmp_path / "s.sqlite").put("b2:k", completion())
    assert Store(tmp_path / "s.sqlite").known(["b2:k", "b2:other"]) == {"b2:k"}


def test_failure_attempts_add_up_and_success_clears_it(tmp_path: Path) -> None:
    st = Store(tmp_path / "s.sqlite")
    st.record_failures([("b2:k", "http_500", "boom", 500, 3)])
    st.record_failures([("b2:k", "http_500", "boom", 500, 2)])
    assert st.failures_for(["b2:k"])["b2:k"].attempts == 5
    st.put("b2:k", completion())
    assert st.failures_for(["b2:k"]) == {}


def test_key_changes_with_system_prompt_and_params() -> None:
    ident = {"provider": "openai", "model": "m", "base_url": "u"}
    a = Request(messages=({"role": "system", "content": "A"}, {"role": "user", "content": "x"}))
    b = Request(messages=({"role": "system", "content": "B"}, {"role": "user", "content": "x"}))
    c = Request(messages=a.messages, params={"temperature": 0.5})
    keys = {a.key(ident), b.key(ident), c.key(ident), a.key({**ident, "model": "n"})}
    assert len(keys) == 4
    assert a.key(ident) == Request(messages=a.messages).key(dict(reversed(ident.items())))
    assert a.key(ident).startswith("b2:")


def test_newer_schema_is_refused_with_reason(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_old_store_without_meta_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    sqlite3.connect(path).close()  # an empty database: schema version 0
    with Store(path) as st:
        assert st.schema_version == SCHEMA_VERSION


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_store_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    os.chmod(path, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(StoreError):
            Store(path).put("b2:k", completion())
    finally:
        os.chmod(tmp_path, 0o755)


def test_read_only_open_of_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store"):
        Store(tmp_path / "nope.sqlite", readonly=True)


def _open_store(path: str, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        Store(path).close()
    except StoreError as exc:  # what a second `labeler run` started at once used to print
        errors.put(str(exc))


def test_processes_opening_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Two runs started together on a store that does not exist yet both create and migrate
    it: neither may fail with "table responses already exists" or "database is locked"."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    for trial in range(6):
        path = str(tmp_path / f"s{trial}.sqlite")
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_store, args=(path, barrier, errors)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    with Store(tmp_path / "s0.sqlite") as store:
        assert store.schema_version == SCHEMA_VERSION
