"""`labeler merge-stores`: the per-machine stores of one job merged into one, by key."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from labeler.cli import main
from labeler.store import Store
from labeler.testing import ServerConfig, TeacherServer

from conftest import chat_requests

TEACHER = "openai-compatible:teacher-test"
FIXTURE = Path(__file__).with_name("data") / "store-v4.sqlite"  # see test_reasoning_store.py


def write_rows(path: Path, ids: range) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": f"item-{i:04d} was fine"}) + "\n" for i in ids))
    return path


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code in (0, 3), result.output
    return result.output


def table(store: Path, sql: str) -> dict[str, float]:
    with sqlite3.connect(store) as db:
        return dict(db.execute(sql).fetchall())


def test_shards_merge_by_key_and_the_merged_store_exports_without_a_request(tmp_path: Path) -> None:
    a, b, merged = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "m.sqlite"
    # Shard a labels rows 0-59 (row 7 fails: a final 400), shard b rows 40-99 (row 7 is not
    # in it); rows 40-59 were answered on both machines, later on b.
    with TeacherServer(ServerConfig(labels=["negative", "positive"], status_for=[("item-0007", 400)])) as srv:
        common = ["-t", TEACHER, "--base-url", srv.url + "/v1", "-q"]
        run("run", "sentiment", str(write_rows(tmp_path / "a.jsonl", range(60))), *common, "--store", str(a))
        run(
            "run",
            "sentiment",
            str(write_rows(tmp_path / "b.jsonl", range(40, 100))),
            *common,
            "--store",
            str(b),
        )
        srv.config.status_for = []
        run(
            "run",
            "sentiment",
            str(write_rows(tmp_path / "c.jsonl", [7])),
            *common,
            "--store",
            str(b),
            "--retry-failed",
        )
        assert chat_requests(srv) == 60 + 60 + 1

        out = run("merge-stores", str(merged), str(a), str(b))
        assert f"{a}: 59 answers, 1 failures" in out
        # b: rows 60-99 and row 7 are new, rows 40-59 newer than a's
        assert f"{b}: 61 answers" in out
        answers = table(merged, "SELECT key, created_at FROM responses")
        assert len(answers) == 100
        newer = table(b, "SELECT key, created_at FROM responses")
        assert all(answers[k] == t for k, t in newer.items())  # b's answers won where both
        assert table(merged, "SELECT key, reason FROM failures") == {}  # row 7: answered on b
        again = run("merge-stores", str(merged), str(a), str(b))
        assert "0 answers, 0 failures" in again  # idempotent

        # The merged store holds the whole job: an export of every row sends nothing.
        every = write_rows(tmp_path / "all.jsonl", range(100))
        run(
            "export",
            "sentiment",
            str(every),
            "-t",
            TEACHER,
            "--base-url",
            srv.url + "/v1",
            "--store",
            str(merged),
            "--out",
            str(tmp_path / "out"),
        )
        assert chat_requests(srv) == 121
    meta = json.loads((tmp_path / "out" / "labeler_export.json").read_text())
    assert meta["report"]["exported"] == 100 and meta["report"]["missing"] == 0


def test_a_failure_only_a_shard_knows_is_merged_and_a_bad_shard_is_one_line(tmp_path: Path) -> None:
    a, merged = tmp_path / "a.sqlite", tmp_path / "m.sqlite"
    with TeacherServer(ServerConfig(labels=["negative", "positive"], status_for=[("item-0003", 400)])) as srv:
        run(
            "run",
            "sentiment",
            str(write_rows(tmp_path / "a.jsonl", range(5))),
            "-t",
            TEACHER,
            "--base-url",
            srv.url + "/v1",
            "-q",
            "--store",
            str(a),
        )
    run("merge-stores", str(merged), str(a))
    assert len(table(merged, "SELECT key, reason FROM failures")) == 1
    assert len(table(merged, "SELECT key, created_at FROM responses")) == 4
    result = CliRunner().invoke(main, ["merge-stores", str(merged), str(tmp_path / "nope.sqlite")])
    assert result.exit_code != 0
    assert "nope.sqlite: no such store" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_shard_written_by_the_previous_release_merges_and_is_left_as_it_was(tmp_path: Path) -> None:
    """A node's store from the release before (schema 4, tests/data/store-v4.sqlite) is read
    through a migrated copy: the shard is never written, so that release still opens it."""
    shard, merged = tmp_path / "node1.sqlite", tmp_path / "m.sqlite"
    shutil.copyfile(FIXTURE, shard)
    before = shard.read_bytes()
    out = run("merge-stores", str(merged), str(shard))
    assert "2 answers, 1 failures" in out
    assert shard.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sqlite", "node1.sqlite"]  # no copy left
    with sqlite3.connect(shard) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    migrated = tmp_path / "migrated.sqlite"  # what opening the shard read-write makes of it
    shutil.copyfile(FIXTURE, migrated)
    keys = list(table(migrated, "SELECT key, created_at FROM responses"))
    failed = list(table(migrated, "SELECT key, reason FROM failures"))
    with Store(migrated) as want, Store(merged) as got:
        assert len(got.get_many(keys)) == 2 and got.get_many(keys) == want.get_many(keys)
        assert got.failures_for(failed) == want.failures_for(failed)
