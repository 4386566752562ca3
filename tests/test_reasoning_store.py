"""Reasoning traces in the store: kept with their answer, and old stores read unchanged.

`tests/data/store-v4.sqlite` was written by the release before traces (schema 4, the
`labeler/store.py` and `labeler/completion.py` of that release, `git archive` of its
commit): two answers (one with token logprobs, one sampled), a failure and a run.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from labeler.completion import Completion, TokenLogprob, Usage
from labeler.store import SCHEMA_VERSION, Store

FIXTURE = Path(__file__).with_name("data") / "store-v4.sqlite"
LABEL_KEY = "b2:00000000000000000000000000000001"
TEXT_KEY = "b2:00000000000000000000000000000002"
FAILED_KEY = "b2:00000000000000000000000000000003"

BLOCKS = [
    {"type": "thinking", "thinking": "The reviewer liked it.", "signature": "EqQBCgIYAhIM1gbcDa"},
    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw"},
]


def _old_store(tmp_path: Path) -> Path:
    path = tmp_path / "old.sqlite"
    shutil.copyfile(FIXTURE, path)
    return path


def test_a_store_written_before_traces_opens_migrated_and_reads_as_it_was(tmp_path: Path) -> None:
    path = _old_store(tmp_path)
    with sqlite3.connect(path) as db:  # as the previous release left it
        assert db.execute("SELECT value FROM meta").fetchone() == ("4",)
    with Store(path) as st:
        assert st.schema_version == SCHEMA_VERSION
        got = st.get_many([LABEL_KEY, TEXT_KEY])
        assert not st.has_reasoning()
        assert st.failures_for([FAILED_KEY])[FAILED_KEY].reason == "http_400"
        assert st.stats()["responses"] == 2
    label, text = got[LABEL_KEY], got[TEXT_KEY]
    assert label == Completion(
        text="positive",
        tokens=[TokenLogprob("positive", -0.1, (("positive", -0.1), ("negative", -2.4)))],
        usage=Usage(31, 1, 0, 0),
        finish_reason="stop",
        model="teacher-test",
        latency_s=0.012,
    )
    assert text.samples == ["A short answer.", "Another answer."]
    assert text.usage == Usage(40, 4, 16, 0, 0)
    assert label.reasoning is None and label.reasoning_blocks is None
    assert label.usage.reasoning_tokens == 0


def test_a_migrated_store_keeps_new_traces_beside_the_old_answers(tmp_path: Path) -> None:
    path = _old_store(tmp_path)
    traced = Completion(
        text="negative",
        usage=Usage(20, 300, 0, 0, 290),
        model="r1",
        reasoning="Hmm, the plot was dull.\nSo: negative.",
        reasoning_blocks=BLOCKS,
    )
    with Store(path) as st:
        st.put("b2:new", traced, 0.002)
    with Store(path, readonly=True) as st:  # reopened: nothing left to migrate
        got = st.get("b2:new")
        old = st.get(LABEL_KEY)
        assert st.has_reasoning()
    assert got == traced
    assert got is not None and got.usage.reasoning_tokens == 290
    assert got.reasoning_blocks == BLOCKS  # the signature and the redacted data, as they came
    assert old is not None and old.text == "positive" and old.reasoning is None


def test_merging_stores_carries_the_traces(tmp_path: Path) -> None:
    from labeler.store_merge import merge_stores

    shard = tmp_path / "shard.sqlite"
    traced = Completion(
        text="positive", reasoning="It was vivid.", reasoning_blocks=BLOCKS, usage=Usage(10, 50, 0, 0, 40)
    )
    with Store(shard) as st:
        st.put("b2:t", traced)
    merge_stores(_old_store(tmp_path), [shard])
    with Store(tmp_path / "old.sqlite") as st:
        assert st.get("b2:t") == traced
