"""`labeler refresh CONFIG`, the cron job: incremental, locked, atomic, versioned, observable."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from procs import LABELER, LocalServer, dataset_rows, item_of, start, wait_until, write_items

from labeler.cli import main
from labeler.refresh import Locked, RefreshConfig, RefreshLock, refresh


def _config(tmp: Path, server: LocalServer | None, **changes: Any) -> Path:
    """A config with paths relative to its own folder, as a user would write one."""
    cfg: dict[str, Any] = {
        "task": "sentiment",
        "input": "in.jsonl",
        "teacher": "openai-compatible:teacher-test",
        "base_url": server.api if server else "http://127.0.0.1:9/v1",
        "store": "state/labels.sqlite",
        "out": "datasets/reviews",
        "keep": 2,
        "concurrency": 8,
        "id_field": "id",
        "max_attempts": 2,
        "retry_initial_wait": 0.01,
        "export": {"kind": "classification"},
        "filters": {"min_confidence": 0.0},
    }
    cfg.update(changes)
    path = tmp / "refresh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _refresh(config: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """One in-process `labeler refresh`: exit code, its JSON line, stderr."""
    res = CliRunner().invoke(main, ["refresh", str(config), *args])
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.output  # exactly one line on stdout, whatever happened
    return res.exit_code, json.loads(lines[0]), res.stderr


def _requests(server: LocalServer, since: int = 0) -> list[dict[str, Any]]:
    return server.log()[since:]


def _versions(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "versions").iterdir())


def test_refresh_is_incremental_atomic_versioned_and_prints_one_json_line(tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 20)
    out = tmp_path / "datasets" / "reviews"
    with LocalServer(labels=["negative", "positive"]) as srv:
        config = _config(tmp_path, srv)
        # The first run as cron runs it: a process whose stdout is one JSON line.
        first = subprocess.run(
            [*LABELER, "refresh", str(config)], capture_output=True, text=True, timeout=120, cwd="/"
        )
        assert first.returncode == 0, first.stderr
        assert len(first.stdout.splitlines()) == 1
        line = json.loads(first.stdout)
        assert (line["outcome"], line["exit_code"], line["labeled"], line["exported"]) == ("ok", 0, 20, 20)
        assert {"cost_usd", "duration_s", "version", "requests", "failed"} <= set(line)
        v1 = Path(line["version"])
        assert v1.parent == out / "versions" and (out / "current").resolve() == v1
        assert os.readlink(out / "current") == f"versions/{v1.name}"  # relative: OUT can move
        assert len(dataset_rows(out / "current")) == 20

        # Two rows change, three leave, four arrive: only six requests go out.
        rows = [json.loads(x) for x in (tmp_path / "in.jsonl").read_text().splitlines()]
        rows[0]["text"] += " (edited)"
        rows[1]["text"] += " (edited)"
        rows = rows[:17] + [
            json.loads(x) for x in write_items(tmp_path / "new.jsonl", 4, start=100).read_text().splitlines()
        ]
        (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        sent = len(srv.log())
        code, line, _ = _refresh(config)
        assert code == 0
        assert (line["rows"], line["labeled"], line["cached"], line["requests"]) == (21, 6, 15, 6)
        assert len(srv.log()) - sent == 6
        v2 = Path(line["version"])
        assert (out / "current").resolve() == v2 and v1.exists()  # the old version stays
        ids = sorted(r["id"] for r in dataset_rows(out / "current"))
        assert ids == sorted(r["id"] for r in rows)  # rows that left the input left the export
        assert len(dataset_rows(v1)) == 20  # and the previous version is untouched

        # Nothing changed: no request; keep=2 prunes the oldest version.
        sent = len(srv.log())
        code, line, _ = _refresh(config)
        assert (code, line["requests"], line["cached"]) == (0, 0, 21)
        assert len(srv.log()) == sent
        assert line["pruned"] == [v1.name] and _versions(out) == sorted([v2.name, Path(line["version"]).name])


def test_partial_refresh_exits_3_and_still_publishes(tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 10)
    with LocalServer(labels=["negative", "positive"], status_for=[("item-00003", 400)]) as srv:
        code, line, err = _refresh(_config(tmp_path, srv))
    assert (code, line["outcome"], line["failed"], line["exported"]) == (3, "partial", 1, 9)
    assert line["failures_by_reason"] == {"http_400": 1}
    assert (tmp_path / "datasets/reviews/current").resolve() == Path(line["version"])
    assert "in.jsonl:4: failed (http_400)" in err


@pytest.mark.parametrize("breakage", ["unreachable teacher", "export error"])
def test_a_failed_refresh_leaves_current_untouched(tmp_path: Path, breakage: str) -> None:
    write_items(tmp_path / "in.jsonl", 10)
    out = tmp_path / "datasets" / "reviews"
    with LocalServer(labels=["negative", "positive"]) as srv:
        assert _refresh(_config(tmp_path, srv))[0] == 0
        before, versions = (out / "current").resolve(), _versions(out)
        write_items(tmp_path / "in.jsonl", 12)  # two new rows to label
        if breakage == "unreachable teacher":
            config = _config(tmp_path, None)
        else:  # classification needs a label task: this fails after labeling, in export
            config = _config(tmp_path, srv, task="instruct")
            (tmp_path / "in.jsonl").write_text('{"id": "x", "instruction": "say hi"}\n')
        code, line, err = _refresh(config)
    assert (code, line["outcome"], line["version"]) == (1, "failed", None)
    assert line["error"] and line["error"] in err
    assert (out / "current").resolve() == before and line["current"] == str(before)
    assert _versions(out) == versions  # nothing half-written left behind


def test_max_age_relabels_and_overwrites_old_answers(tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 8)
    with LocalServer(labels=["negative", "positive"]) as srv:
        config = _config(tmp_path, srv)
        assert _refresh(config)[0] == 0
        store = tmp_path / "state" / "labels.sqlite"
        db = sqlite3.connect(store)
        db.execute("UPDATE responses SET created_at = created_at - 10 * 86400")
        db.commit()
        db.close()
        sent = len(srv.log())
        code, line, _ = _refresh(config)  # no max age: ten-day-old answers are fine
        assert (code, line["requests"], len(srv.log())) == (0, 0, sent)
        code, line, _ = _refresh(config, "--max-age", "5")
        assert (code, line["labeled"], line["requests"]) == (0, 8, 8)
        assert len(srv.log()) - sent == 8
        db = sqlite3.connect(store)
        ages = [time.time() - t for (t,) in db.execute("SELECT created_at FROM responses")]
        db.close()
        assert len(ages) == 8 and max(ages) < 600  # overwritten, not added beside
        code, line, _ = _refresh(config, "--max-age", "5")
        assert (code, line["requests"]) == (0, 0)


@pytest.mark.slow
def test_the_lock_refuses_a_second_refresh_and_survives_signals_and_kill_9(tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 5)
    out = tmp_path / "datasets" / "reviews"
    with LocalServer(labels=["negative", "positive"]) as srv:
        config = _config(tmp_path, srv, concurrency=2)
        assert _refresh(config)[0] == 0
        published = (out / "current").resolve()
        write_items(tmp_path / "in.jsonl", 40)
        srv.configure(latency_s=0.5)  # a long refresh

        # While one refresh runs, a second exits at once with code 4.
        holder = start([*LABELER, "refresh", str(config)])
        assert wait_until(lambda: len(srv.log()) > 6, 60, holder), holder.communicate()
        began = time.monotonic()
        code, line, err = _refresh(config)
        assert (code, line["outcome"]) == (4, "locked") and time.monotonic() - began < 5
        assert f"pid {holder.pid}" in err and "another refresh" in err

        # SIGTERM: a graceful stop, nothing published, the lock released.
        holder.send_signal(signal.SIGTERM)
        stdout, _ = holder.communicate(timeout=60)
        assert holder.returncode == 130
        assert json.loads(stdout)["outcome"] == "interrupted"
        assert (out / "current").resolve() == published
        assert (out / ".refresh.lock").read_text() == ""

        # kill -9 mid-run: the lock file still names the dead run; the next one takes over.
        killed = start([*LABELER, "refresh", str(config)])
        assert wait_until(lambda: len(srv.log()) > 14, 60, killed), killed.communicate()
        killed.kill()
        killed.communicate()
        assert (out / ".refresh.lock").read_text().split()[0] == str(killed.pid)
        assert (out / "current").resolve() == published
        srv.configure(latency_s=0.0)
        code, line, err = _refresh(config)
    assert (code, line["lock_taken_over_from"]) == (0, killed.pid)
    assert f"left by pid {killed.pid} which is no longer running" in err
    assert (out / "current").resolve() == Path(line["version"]) != published
    assert [p.name for p in (out / "versions").glob(".*")] == []  # staging of the dead run gone
    assert len(dataset_rows(out / "current")) == 40


def test_a_lock_held_by_an_orphan_of_a_dead_run_is_taken_over(tmp_path: Path) -> None:
    """The dead run's child kept the lock descriptor open: the lock file is replaced."""
    lock_path = tmp_path / "out" / ".refresh.lock"
    lock_path.parent.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    orphan = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import fcntl, os, sys, time
fd = os.open({str(lock_path)!r}, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"{dead}\\n2024-01-01T00:00:00+00:00\\n")
print("locked", flush=True)
time.sleep(60)
""",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert orphan.stdout is not None and orphan.stdout.readline().strip() == "locked"
        with RefreshLock(lock_path) as lock:
            assert lock.took_over_from == int(dead)
            assert lock_path.read_text().split()[0] == str(os.getpid())
            with pytest.raises(Locked, match=f"pid {os.getpid()}"):
                RefreshLock(lock_path).acquire()  # and the new lock really excludes
    finally:
        orphan.kill()
        orphan.wait()
        orphan.stdout.close()  # type: ignore[union-attr]


def test_a_live_holder_is_never_taken_over(tmp_path: Path) -> None:
    lock_path = tmp_path / ".refresh.lock"
    with RefreshLock(lock_path):
        for _ in range(3):
            with pytest.raises(Locked, match="another refresh"):
                RefreshLock(lock_path).acquire()
    with RefreshLock(lock_path) as again:
        assert again.took_over_from is None  # a clean release leaves no stale PID


# -- the config ---------------------------------------------------------------------------


def test_config_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = RefreshConfig.load(_config(tmp_path, None, task="prompts/mine.yaml"))
    assert cfg.input == str(tmp_path / "in.jsonl") and cfg.out == tmp_path / "datasets/reviews"
    assert cfg.store == tmp_path / "state/labels.sqlite"
    assert cfg.task == str(tmp_path / "prompts/mine.yaml")
    assert RefreshConfig.load(_config(tmp_path, None)).task == "sentiment"  # a shipped name


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"concurency": 8}, "unknown key 'concurency'"),
        ({"api_key": "sk-oops"}, "a key does not belong in a config file"),
        ({"export": {"kind": "classification", "fromat": "hf"}}, "unknown key 'export.fromat'"),
        ({"keep": 0}, "keep must be at least 1"),
        ({"concurrency": "many"}, "concurrency must be int"),
        ({"input": "-"}, "stdin cannot be refreshed"),
        ({"api_key_env": "LABELER_TEST_NO_SUCH_VAR"}, "LABELER_TEST_NO_SUCH_VAR (api_key_env) is not set"),
    ],
)
def test_bad_configs_fail_with_the_reason(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    write_items(tmp_path / "in.jsonl", 1)
    code, line, err = _refresh(_config(tmp_path, None, **changes))
    assert (code, line["outcome"]) == (1, "failed")
    assert message in line["error"] and message in err


def test_api_key_file_must_be_private(tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 1)
    key = tmp_path / "key"
    key.write_text("sk-test\n")
    key.chmod(0o644)
    code, line, _ = _refresh(_config(tmp_path, None, api_key_file="key"))
    assert code == 1 and "must not be readable by others (chmod 600" in line["error"]


def test_library_refresh_returns_a_result(tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 3)
    with LocalServer(labels=["negative", "positive"]) as srv:
        result = refresh(_config(tmp_path, srv))
    assert (result.outcome, result.exit_code, result.exported) == ("ok", 0, 3)
    assert {item_of(r["prompt"]) for r in srv.log()} == {0, 1, 2}


def test_an_output_folder_that_cannot_be_made_is_a_failed_refresh(tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 1)
    (tmp_path / "afile").write_text("not a folder")
    code, line, err = _refresh(_config(tmp_path, None, out="afile/out"))
    assert (code, line["outcome"]) == (1, "failed") and "afile" in line["error"]
    assert "Traceback" not in err
