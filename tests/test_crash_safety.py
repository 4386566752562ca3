"""Never lose a paid response: kill -9, SIGINT/SIGTERM, a full disk, a read-only store.

The kill and signal tests run `labeler` as a real child process, because a signal or a
kill -9 means nothing inside pytest's own process; the teacher server's request log (its
`/_log`) is the record of what was paid for. A full disk is SQLite's size cap in-process
and, where mount namespaces are allowed, a real tmpfs that fills up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from procs import (
    LocalServer,
    ServerProcess,
    answered_items,
    dataset_rows,
    item_keys,
    item_of,
    run_args,
    start,
    stored_keys,
    wait_until,
    write_items,
)

from labeler import Job, run_job
from labeler.cli import main
from labeler.errors import StoreError
from labeler.store import MIGRATIONS, SCHEMA_VERSION, Store
from labeler.testing import ServerConfig, TeacherServer

from conftest import chat_requests

ROWS = 300
KILLS = 3
CONCURRENCY = 16
# A response the server sent this long before a kill -9 must be in the store. What it
# sent in the last moments may not have been read and committed yet: that cannot survive
# any kill -9, and the rerun asks again (the assertions below bound how much that is).
COMMIT_MARGIN_S = 1.0


@pytest.mark.slow
def test_kill_9_at_random_points_loses_nothing_stored_and_resends_nothing_stored(
    tmp_path: Path,
) -> None:
    rng = random.Random(20240605)
    data = write_items(tmp_path / "in.jsonl", ROWS)
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    with ServerProcess(
        "--labels", "negative,positive", "--latency", "0.02", "--latency-jitter", "0.03"
    ) as srv:
        args = run_args("sentiment", data, srv, store, "--out", str(out), "--concurrency", str(CONCURRENCY))
        keys = item_keys("sentiment", data, srv.api)
        item_by_key = {k: i for i, k in keys.items()}
        targets = sorted(rng.sample(range(10, ROWS - 10), KILLS))
        kills: list[tuple[float, float, set[int]]] = []  # (started, killed, items stored after)
        for n, target in enumerate(targets):
            started = time.monotonic()
            proc = start(args)
            reached = wait_until(lambda t=target: srv.answered() >= t, 60, proc)
            assert reached, f"the run ended before the kill point: {proc.communicate()}"
            time.sleep(rng.uniform(0, 0.03))  # land anywhere, mid-commit included
            if n % 2:
                # Every other time, the teacher goes quiet first: the answers already sent
                # are all older than the margin at the kill, so every one must be stored.
                srv.configure(latency_s=60.0)
                time.sleep(COMMIT_MARGIN_S + 0.2)
            killed_at = time.monotonic()
            proc.kill()
            proc.communicate()
            assert proc.returncode == -signal.SIGKILL
            srv.configure(latency_s=0.02)
            kills.append((started, killed_at, {item_by_key[k] for k in stored_keys(store)}))

        # Once more, killed while it writes the export (everything is labeled by then).
        proc = start(args)
        assert wait_until(lambda: any(tmp_path.glob(".out.work-*")), 60, proc), proc.communicate()
        proc.kill()
        proc.communicate()
        assert not out.exists() and any(tmp_path.glob(".out.*"))  # half an export, aside

        final = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
        assert not list(tmp_path.glob(".out.*"))  # the dead run's staging is cleaned up
        log = srv.log()

        # The same work, never interrupted, is the reference export.
        reference = asyncio.run(
            run_job(
                Job(
                    task="sentiment",
                    input=data,
                    teacher="openai-compatible:teacher-test",
                    base_url=srv.api,
                    store=tmp_path / "ref.sqlite",
                    out=tmp_path / "ref",
                    progress=False,
                )
            )
        )
        assert reference.summary.labeled == ROWS

    lost_total = 0
    for started, killed_at, stored in kills:
        # What the server answered to the run this kill ended.
        answers = [
            (r["responded"], i)
            for r in log
            if r["status"] == 200
            and started < r["received"] < killed_at
            and (i := item_of(r["prompt"])) is not None
        ]
        well_before = {i for t, i in answers if t < killed_at - COMMIT_MARGIN_S}
        assert well_before <= stored, f"answered, then lost: {sorted(well_before - stored)}"
        # Answers in flight at the kill (sent before, answered before or after it) are
        # paid for but cannot have been stored: the rerun asks again. At most one window.
        lost = {i for _, i in answers} - stored
        assert len(lost) <= 2 * CONCURRENCY, f"{len(lost)} answers lost at one kill"
        lost_total += len(lost)
        # Nothing stored before this kill is ever requested again.
        again = {i for r in log if r["received"] > killed_at and item_of(r["prompt"]) in stored}
        assert again == set(), f"stored items requested again: {sorted(again)[:10]}"

    per_item = answered_items(log)
    assert set(per_item) == set(range(ROWS))  # everything was labeled in the end
    # Answered twice only if that answer was in flight at a kill (lost_total bounds it).
    assert sum(per_item.values()) - ROWS <= lost_total
    assert {i for i, n in per_item.items() if n > 1} <= {
        i for _, _, stored in kills for i in range(ROWS) if i not in stored
    }
    assert len(stored_keys(store)) == ROWS
    assert dataset_rows(out) == dataset_rows(tmp_path / "ref")


@pytest.mark.slow
def test_kill_9_loses_at_most_what_is_in_flight(tmp_path: Path) -> None:
    """Answers already received are committed before their in-flight place is given back,
    so at any instant the paid answers not yet stored number at most `--concurrency`."""
    rng = random.Random(7)
    concurrency, rows = 32, 3000
    losses: list[int] = []
    data = write_items(tmp_path / "in.jsonl", rows)
    store = tmp_path / "s.sqlite"
    with ServerProcess("--labels", "negative,positive", "--latency", "0.1") as srv:
        args = run_args("sentiment", data, srv, store, "--concurrency", str(concurrency))
        item_by_key = {k: i for i, k in item_keys("sentiment", data, srv.api).items()}
        for _ in range(6):
            started = time.monotonic()
            proc = start(args)
            target = srv.answered() + rng.randint(100, 300)
            assert wait_until(lambda t=target: srv.answered() >= t, 60, proc), proc.communicate()
            time.sleep(rng.uniform(0, 0.05))
            killed_at = time.monotonic()
            proc.kill()
            proc.communicate()
            stored = {item_by_key[k] for k in stored_keys(store)}
            # Every request the server received before the kill is paid for (a provider
            # bills what it generates, answered or cut off); those not in the store are lost.
            sent = {
                i
                for r in srv.log()
                if started < r["received"] < killed_at and (i := item_of(r["prompt"])) is not None
            }
            lost = sent - stored
            assert len(lost) <= concurrency, f"{len(lost)} paid answers lost at one kill -9"
            losses.append(len(lost))
    print(f"paid answers lost at each kill -9 ({concurrency} in flight): {losses}")


# -- SIGINT / SIGTERM ----------------------------------------------------------------------


def _job(server: LocalServer | ServerProcess, data: Path, store: Path, **kw: object) -> Job:
    return Job(
        task="sentiment",
        input=data,
        teacher="openai-compatible:teacher-test",
        base_url=server.api,
        store=store,
        progress=False,
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_gracefully_keeps_the_old_export_and_a_rerun_resumes(
    tmp_path: Path, signum: int
) -> None:
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    first = write_items(tmp_path / "first.jsonl", 20)
    data = write_items(tmp_path / "in.jsonl", 100)
    with LocalServer(labels=["negative", "positive"], latency_s=0.5) as srv:
        assert asyncio.run(run_job(_job(srv, first, store, out=out))).summary.outcome == "ok"
        before = _tree(out)
        # Slow answers, and some that hang far longer than the grace period.
        srv.configure(hang_rate=0.2, hang_s=120.0)
        proc = start(
            run_args(
                "sentiment", data, srv, store, "--out", str(out), "--concurrency", "8", "--stop-grace", "1"
            )
        )
        assert wait_until(lambda: srv.answered() >= 20 + 12, 60, proc), proc.communicate()
        sent_at = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent_at
        log = srv.log()

        assert proc.returncode == 130, err
        assert took < 1 + 8, f"took {took:.1f}s to stop with a 1s grace period"
        # Requests the client had under way at the signal arrive at once; none after that.
        late = [r for r in log if r["received"] > sent_at + 0.5]
        assert late == [], f"{len(late)} requests sent after the signal"
        assert "interrupted; rerun the same command to resume" in err
        assert " rows, " in err and " not sent " in err  # the summary was printed
        assert _tree(out) == before  # no export on interruption; the previous one intact

        answered = {item_of(r["prompt"]) for r in log if r["status"] == 200}
        srv.configure(hang_rate=0.0, latency_s=0.0)
        resumed = asyncio.run(run_job(_job(srv, data, store, out=out)))
        again = [r for r in srv.log()[len(log) :] if item_of(r["prompt"]) in answered]
    assert resumed.summary.outcome == "ok" and resumed.summary.cached >= 12
    assert again == []  # what was answered before the signal is not asked again
    assert len(dataset_rows(out)) == 100


@pytest.mark.slow
def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", 100)
    with LocalServer(labels=["negative", "positive"], latency_s=0.2, hang_rate=0.5, hang_s=120.0) as srv:
        proc = start(
            run_args(
                "sentiment", data, srv, tmp_path / "s.sqlite", "--concurrency", "8", "--stop-grace", "120"
            )
        )
        assert wait_until(lambda: srv.answered() >= 5, 60, proc), proc.communicate()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent_at
    assert proc.returncode == 130
    assert took < 8, f"took {took:.1f}s after the second signal"
    assert "everything answered so far is stored" in err
    assert len(stored_keys(tmp_path / "s.sqlite")) >= 5


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- a full disk ---------------------------------------------------------------------------


def _integrity(store: Path) -> str:
    db = sqlite3.connect(store)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def test_disk_full_is_a_clear_error_and_the_store_stays_consistent(tmp_path: Path) -> None:
    """SQLite's own size cap gives the same SQLITE_FULL a full disk does."""
    from labeler import Labeler, load_task, make_teacher, read_rows

    rows = 300
    data = write_items(tmp_path / "in.jsonl", rows)
    path = tmp_path / "s.sqlite"
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        store = Store(path)
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        # Room for one chunk's claims and some batches of answers, not for all of them.
        store._db.execute(f"PRAGMA max_page_count = {pages + 16}")

        async def label() -> None:
            teacher = make_teacher("openai-compatible:teacher-test", base_url=srv.url + "/v1")
            async with Labeler(
                load_task("sentiment"), teacher, store=store, progress=False, concurrency=4
            ) as lb:
                await lb.run(read_rows(data))

        with pytest.raises(StoreError) as err:
            asyncio.run(label())
        store.close()
        assert str(path) in str(err.value) and "disk is full" in str(err.value)
        assert _integrity(path) == "ok"
        kept = stored_keys(path)
        assert 0 < len(kept) < rows
        sent = chat_requests(srv)

        # A rerun on a disk with room finishes and asks again only what was not stored.
        result = asyncio.run(
            run_job(
                Job(
                    task="sentiment",
                    input=data,
                    teacher="openai-compatible:teacher-test",
                    base_url=srv.url + "/v1",
                    store=path,
                    progress=False,
                )
            )
        )
        assert result.summary.outcome == "ok"
        assert result.summary.cached == len(kept)
        assert chat_requests(srv) - sent == rows - len(kept)
    assert _integrity(path) == "ok" and len(stored_keys(path)) == rows


def _can_mount() -> bool:
    """A private mount namespace (root with CAP_SYS_ADMIN): real tmpfs and ro mounts."""
    if sys.platform != "linux" or shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True
    )
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces")


@needs_mount
@pytest.mark.slow
def test_a_really_full_disk_mid_run(tmp_path: Path) -> None:
    """The store on a tiny tmpfs that fills up mid-run: ENOSPC from the kernel itself."""
    rows = 200
    data = write_items(tmp_path / "in.jsonl", rows)
    disk, saved = tmp_path / "disk", tmp_path / "saved"
    disk.mkdir()
    saved.mkdir()
    with LocalServer(labels=["negative", "positive"]) as srv:
        args = run_args(
            "sentiment", data, srv, disk / "s.sqlite", "--rejects", str(tmp_path / "rejects.jsonl")
        )
        # Run, then copy the store (and its WAL) off the tmpfs before the mount goes away.
        script = (
            f'mount -t tmpfs -o size=320k tmpfs "{disk}" && '
            f'{subprocess.list2cmdline(args)}; echo $? > "{saved}/rc"; '
            f'cp "{disk}"/s.sqlite* "{saved}/"'
        )
        res = subprocess.run(
            ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120
        )
        assert (saved / "rc").read_text().strip() == "1", res.stderr
        assert f"{disk / 's.sqlite'}: cannot write to the store: the disk is full" in res.stderr
        assert res.stderr.count("\n") <= 3  # one clear line, not a traceback
        store = saved / "s.sqlite"
        assert _integrity(store) == "ok"
        kept = stored_keys(store)
        assert 0 < len(kept) < rows
        before = len(srv.log())
        assert asyncio.run(run_job(_job(srv, data, store))).summary.outcome == "ok"
        keys = item_keys("sentiment", data, srv.api)
        asked = {keys[i] for r in srv.log()[before:] if (i := item_of(r["prompt"])) is not None}
    assert asked.isdisjoint(kept) and len(stored_keys(store)) == rows


# -- a read-only store ---------------------------------------------------------------------


def _completion() -> object:
    from labeler.completion import Completion, Usage

    return Completion(
        text="positive", tokens=None, usage=Usage(1, 1, 0), finish_reason="stop", model="m", latency_s=0.0
    )


def test_store_opened_read_only_refuses_writes_clearly(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    with Store(path, readonly=True) as st, pytest.raises(StoreError) as err:
        st.put("b2:k", _completion())  # type: ignore[arg-type]
    assert str(path) in str(err.value) and "read-only" in str(err.value)


@pytest.mark.slow
def test_read_only_file_system_is_a_clear_error(tmp_path: Path) -> None:
    """A store on a read-only mount (as root) or without write permission (as a user)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    with LocalServer(labels=["negative", "positive"]) as srv:
        data = write_items(tmp_path / "in.jsonl", 5)
        assert asyncio.run(run_job(_job(srv, data, folder / "s.sqlite"))).summary.labeled == 5
        args = run_args("sentiment", data, srv, folder / "s.sqlite")
        if os.geteuid() == 0:
            if not _can_mount():
                pytest.skip("root ignores permissions and cannot mount here")
            script = (
                f'mount --bind "{folder}" "{folder}" && '
                f'mount -o remount,bind,ro "{folder}" && {subprocess.list2cmdline(args)}'
            )
            cmd = ["unshare", "-m", "sh", "-c", script]
        else:
            os.chmod(folder / "s.sqlite", 0o444)
            os.chmod(folder, 0o555)
            cmd = args
        data.write_text(data.read_text() + '{"text": "item-99999: a new row"}\n')
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        finally:
            os.chmod(folder, 0o755)
    assert res.returncode == 1
    assert str(folder / "s.sqlite") in res.stderr and "read-only" in res.stderr
    assert "Traceback" not in res.stderr


# -- schema versions -----------------------------------------------------------------------


def test_an_older_store_with_answers_migrates_and_keeps_them(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    data = write_items(tmp_path / "in.jsonl", 6)
    job = Job(
        task="sentiment",
        input=data,
        teacher="openai-compatible:teacher-test",
        base_url=teacher_server.url + "/v1",
        store=tmp_path / "s.sqlite",
        progress=False,
    )
    asyncio.run(run_job(job))
    # Rebuild the same answers in a store at schema version 1, as the first release wrote it.
    old = tmp_path / "old.sqlite"
    src = sqlite3.connect(tmp_path / "s.sqlite")
    db = sqlite3.connect(old, isolation_level=None)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    MIGRATIONS[0](db)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    first_release = (
        "key, created_at, model, text, tokens, samples, prompt_tokens,"
        " completion_tokens, cached_tokens, cache_write_tokens, finish_reason,"
        " latency_ms, cost_usd, source"
    )
    db.executemany(
        "INSERT INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        src.execute(f"SELECT {first_release} FROM responses").fetchall(),
    )
    db.close()
    src.close()
    sent = chat_requests(teacher_server)
    again = asyncio.run(run_job(dataclasses.replace(job, store=old)))
    assert again.summary.cached == 6 and chat_requests(teacher_server) == sent
    with Store(old) as st:
        assert st.schema_version == SCHEMA_VERSION


def test_a_newer_store_is_refused_by_the_cli_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    data = write_items(tmp_path / "in.jsonl", 2)
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(data),
            "--teacher",
            "openai-compatible:t",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--store",
            str(path),
            "--quiet",
        ],
    )
    assert res.exit_code == 1
    assert str(path) in res.stderr and "newer than this labeler understands" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
