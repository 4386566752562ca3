"""Output folders are labeler's alone, and an export is always in place.

An export replaces its whole folder, so `--out` (and a library call's `out`) may only name
a folder labeler wrote as an export of the same kind and format (`--force`: of another
kind), an empty folder, or a path that does not exist yet; never one that holds the
store, the input or anything else, nor a refresh folder or anything inside one. The
refusal is one line before any request is sent. The swap itself leaves the old export or
the new one at `--out` at every instant, a kill -9 included.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from click.testing import CliRunner, Result
from procs import LocalServer, write_items

from labeler import Job, run_job
from labeler.cli import main
from labeler.errors import ExportError
from labeler.job import export_job
from labeler.refresh import refresh
from labeler.store import Store

TEACHER = "openai-compatible:teacher-test"


def _sent(srv: LocalServer) -> int:
    return sum(1 for r in srv.server.log if r.path.endswith("/chat/completions"))


def _cli(command: str, srv: LocalServer, data: Path, store: Path, out: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            command,
            "sentiment",
            str(data),
            "--teacher",
            TEACHER,
            "--base-url",
            srv.api,
            "--store",
            str(store),
            "--out",
            str(out),
            *(["--quiet"] if command == "run" else []),
            *extra,
        ],
    )


def _refused(res: Result, *words: str) -> str:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("labeler: error: ")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _rows(out: Path) -> int:
    return len(datasets.load_from_disk(str(out)))


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def srv() -> Any:
    with LocalServer(labels=["negative", "positive"]) as server:
        yield server


# -- folders that are not an export --------------------------------------------------------


def test_out_on_a_folder_with_an_unrelated_file_is_refused_and_nothing_is_sent(
    tmp_path: Path, srv: LocalServer
) -> None:
    data, out = write_items(tmp_path / "in.jsonl", 5), tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("three weeks of notes")
    res = _cli("run", srv, data, tmp_path / "s.sqlite", out)
    _refused(res, str(out), "notes.txt", "nothing was sent")
    assert _sent(srv) == 0
    assert (out / "notes.txt").read_text() == "three weeks of notes"
    assert os.listdir(out) == ["notes.txt"]


def test_out_holding_the_store_is_refused_and_the_store_is_intact(tmp_path: Path, srv: LocalServer) -> None:
    data, folder = write_items(tmp_path / "in.jsonl", 5), tmp_path / "work"
    store = folder / "labels.sqlite"
    assert _cli("run", srv, data, store, tmp_path / "elsewhere").exit_code == 0
    paid = _sent(srv)
    for command in ("run", "export"):
        res = _cli(command, srv, data, store, folder)
        _refused(res, str(folder), "the store", str(store))
    assert _sent(srv) == paid == 5
    with Store(store) as st:
        assert st.stats()["responses"] == 5


def test_out_holding_the_store_from_the_first_run_is_refused(tmp_path: Path, srv: LocalServer) -> None:
    """`--store DIR/labels.sqlite --out DIR` with neither there yet: the store would be
    made in DIR and wiped by the export, so a rerun would pay again."""
    data, folder = write_items(tmp_path / "in.jsonl", 5), tmp_path / "work"
    _refused(_cli("run", srv, data, folder / "labels.sqlite", folder), "the store")
    assert _sent(srv) == 0


def test_out_holding_the_input_is_refused(tmp_path: Path, srv: LocalServer) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    data = write_items(folder / "in.jsonl", 5)
    before = data.read_bytes()
    res = _cli("run", srv, data, tmp_path / "s.sqlite", folder)
    _refused(res, str(folder), "the input", str(data))
    assert _sent(srv) == 0 and data.read_bytes() == before


def test_out_inside_a_saved_dataset_given_as_input_is_refused(tmp_path: Path, srv: LocalServer) -> None:
    source = tmp_path / "source"
    datasets.Dataset.from_list([{"id": f"r{i}", "text": f"text {i}"} for i in range(3)]).save_to_disk(
        str(source)
    )
    res = _cli("run", srv, source, tmp_path / "s.sqlite", source / "labeled")
    _refused(res, "inside the input", str(source))
    assert _sent(srv) == 0 and not (source / "labeled").exists()


def test_rejects_file_inside_out_is_refused(tmp_path: Path, srv: LocalServer) -> None:
    data, out = write_items(tmp_path / "in.jsonl", 5), tmp_path / "out"
    res = _cli("run", srv, data, tmp_path / "s.sqlite", out, "--rejects", str(out / "bad.jsonl"))
    _refused(res, "--rejects", str(out / "bad.jsonl"))
    assert _sent(srv) == 0


def test_an_empty_folder_is_a_fine_out(tmp_path: Path, srv: LocalServer) -> None:
    data, out = write_items(tmp_path / "in.jsonl", 5), tmp_path / "out"
    out.mkdir()
    assert _cli("run", srv, data, tmp_path / "s.sqlite", out).exit_code == 0
    assert _rows(out) == 5


def test_out_that_is_a_symbolic_link_is_refused(tmp_path: Path, srv: LocalServer) -> None:
    data, target = write_items(tmp_path / "in.jsonl", 5), tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    _refused(_cli("run", srv, data, tmp_path / "s.sqlite", tmp_path / "link"), "symbolic link", str(target))
    assert _sent(srv) == 0 and (tmp_path / "link").is_symlink()


# -- refresh folders -------------------------------------------------------------------------


def _refresh_folder(tmp_path: Path, srv: LocalServer) -> tuple[Path, Path]:
    """A refresh config and its published output folder (versions/ and current)."""
    write_items(tmp_path / "in.jsonl", 5)
    config = tmp_path / "refresh.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "sentiment",
                "input": "in.jsonl",
                "teacher": TEACHER,
                "base_url": srv.api,
                "store": "state/labels.sqlite",
                "out": "datasets/reviews",
                "keep": 2,
                "export": {"kind": "classification"},
            }
        )
    )
    result = refresh(config)
    assert result.outcome == "ok", result.error
    return config, tmp_path / "datasets" / "reviews"


def test_out_on_a_refresh_folder_or_inside_one_is_refused(tmp_path: Path, srv: LocalServer) -> None:
    config, folder = _refresh_folder(tmp_path, srv)
    published = (folder / "current").resolve()
    before = _listing(folder)
    data, store = tmp_path / "in.jsonl", tmp_path / "state" / "labels.sqlite"
    paid = _sent(srv)
    for out in (
        folder,
        folder / "current",
        folder / "versions",
        published,
        folder / "versions" / "mine",
        published / "train",
    ):
        for command in ("run", "export"):
            _refused(_cli(command, srv, data, store, out, "--kind", "classification"), str(out), "refresh")
    assert _sent(srv) == paid
    assert _listing(folder) == before and (folder / "current").is_symlink()
    assert (folder / "current").resolve() == published
    assert refresh(config).outcome == "ok"  # the refresh folder goes on working


def test_a_refresh_into_a_folder_that_is_not_its_own_is_refused(tmp_path: Path, srv: LocalServer) -> None:
    data, store = write_items(tmp_path / "in.jsonl", 5), tmp_path / "s.sqlite"
    export = tmp_path / "plain"
    assert _cli("run", srv, data, store, export).exit_code == 0
    paid = _sent(srv)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for out in (export, foreign, export / "train"):
        config = tmp_path / "refresh.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "task": "sentiment",
                    "input": "in.jsonl",
                    "teacher": TEACHER,
                    "base_url": srv.api,
                    "store": str(tmp_path / "other.sqlite"),
                    "out": str(out),
                }
            )
        )
        result = refresh(config)
        assert (result.outcome, result.exit_code) == ("failed", 1)
        assert str(out) in (result.error or "") and "refresh" in (result.error or "")
    assert _sent(srv) == paid
    assert os.listdir(foreign) == ["notes.txt"] and _rows(export) == 5
    assert not (export / "versions").exists()


# -- previous exports ----------------------------------------------------------------------


def test_a_rerun_replaces_its_own_export_and_another_kind_needs_force(
    tmp_path: Path, srv: LocalServer
) -> None:
    data, store, out = write_items(tmp_path / "in.jsonl", 5), tmp_path / "s.sqlite", tmp_path / "o"
    assert _cli("run", srv, data, store, out).exit_code == 0
    first = _listing(out)
    for command in ("run", "export"):  # cron reruns the same command into the same folder
        res = _cli(command, srv, data, store, out)
        assert res.exit_code == 0, res.output
    assert _sent(srv) == 5
    for extra in (["--kind", "classification"], ["--format", "parquet"]):
        res = _cli("export", srv, data, store, out, *extra)
        _refused(res, str(out), "--force")
        assert set(_listing(out)) == set(first)
    res = _cli("export", srv, data, store, out, "--kind", "classification", "--force")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "labeler_export.json").read_text())["kind"] == "classification"
    assert datasets.load_from_disk(str(out)).features["label"].names == ["negative", "positive"]
    assert _sent(srv) == 5


def test_force_never_replaces_a_folder_that_is_not_an_export(tmp_path: Path, srv: LocalServer) -> None:
    data, out = write_items(tmp_path / "in.jsonl", 5), tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _refused(_cli("run", srv, data, tmp_path / "s.sqlite", out, "--force"), "notes.txt")
    assert _sent(srv) == 0 and os.listdir(out) == ["notes.txt"]


def test_a_file_added_inside_an_export_is_never_replaced(tmp_path: Path, srv: LocalServer) -> None:
    data, store, out = write_items(tmp_path / "in.jsonl", 5), tmp_path / "s.sqlite", tmp_path / "o"
    assert _cli("run", srv, data, store, out, "--validation-size", "0.4").exit_code == 0
    (out / "train" / "checkpoint.pt").write_bytes(b"weights")
    for extra in ([], ["--force"]):
        _refused(_cli("export", srv, data, store, out, "--validation-size", "0.4", *extra), "checkpoint.pt")
    assert (out / "train" / "checkpoint.pt").read_bytes() == b"weights"


def test_out_inside_an_export_is_refused(tmp_path: Path, srv: LocalServer) -> None:
    data, store, out = write_items(tmp_path / "in.jsonl", 5), tmp_path / "s.sqlite", tmp_path / "o"
    assert _cli("run", srv, data, store, out).exit_code == 0
    _refused(_cli("export", srv, data, store, out / "nested"), "inside the labeler export")
    assert not (out / "nested").exists() and _rows(out) == 5


def test_an_export_written_by_the_previous_release_is_recognised(tmp_path: Path, srv: LocalServer) -> None:
    """The first releases wrote labeler_export.json with the kind only in its report."""
    data, store, out = write_items(tmp_path / "in.jsonl", 5), tmp_path / "s.sqlite", tmp_path / "o"
    assert _cli("run", srv, data, store, out, "--kind", "sft").exit_code == 0
    meta = json.loads((out / "labeler_export.json").read_text())
    oldest = {
        "report": {**meta["report"], "path": str(out)},
        "task": meta["task"],
        "teacher": meta["teacher"],
    }
    (out / "labeler_export.json").write_text(json.dumps(oldest))
    _refused(_cli("export", srv, data, store, out), "'sft'", "--force")
    assert _cli("export", srv, data, store, out, "--kind", "sft").exit_code == 0
    assert json.loads((out / "labeler_export.json").read_text())["kind"] == "sft"


# -- the library applies the same rule -----------------------------------------------------


def test_library_exports_apply_the_same_rule(tmp_path: Path, srv: LocalServer) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    data = write_items(folder / "in.jsonl", 5)
    job = Job(
        task="sentiment",
        input=data,
        teacher=TEACHER,
        base_url=srv.api,
        store=tmp_path / "labels.sqlite",
        out=folder,
        progress=False,
    )
    with pytest.raises(ExportError, match="the input"):
        asyncio.run(run_job(job))
    with pytest.raises(ExportError, match="the input"):
        export_job(job)
    assert _sent(srv) == 0 and sorted(os.listdir(folder)) == ["in.jsonl"]


# -- the swap -------------------------------------------------------------------------------


_EXPORTS = f"""
import sys
from labeler import Job
from labeler.job import export_job
data, store, out, api, times = sys.argv[1:6]
for _ in range(int(times)):
    export_job(Job(task="sentiment", input=data, teacher="{TEACHER}", base_url=api,
                   store=store, out=out, progress=False))
"""


def test_a_reader_finds_the_export_at_every_instant_of_repeated_exports(
    tmp_path: Path, srv: LocalServer
) -> None:
    data, store, out = write_items(tmp_path / "in.jsonl", 30), tmp_path / "s.sqlite", tmp_path / "o"
    assert _cli("run", srv, data, store, out).exit_code == 0
    exports = subprocess.Popen(
        [sys.executable, "-c", _EXPORTS, str(data), str(store), str(out), srv.api, "12"],
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = str(out / "dataset_info.json")
    checks, missing, loads, failed_loads = 0, 0, 0, []
    stop = threading.Event()

    def load_repeatedly() -> None:
        nonlocal loads
        while not stop.is_set():
            try:
                assert _rows(out) == 30
                loads += 1
            except Exception as exc:
                failed_loads.append(repr(exc))

    loader = threading.Thread(target=load_repeatedly)
    loader.start()
    try:
        while exports.poll() is None:
            checks += 1
            if not os.path.exists(marker):
                missing += 1
    finally:
        stop.set()
        loader.join()
    assert exports.returncode == 0, exports.stderr.read()  # type: ignore[union-attr]
    assert checks > 1000 and loads > 0
    assert (missing, failed_loads) == (0, [])
    assert not list(tmp_path.glob(".o.*"))  # nothing left aside


_KILL_AT = f"""
import os, signal, sys
name, k = sys.argv[1], int(sys.argv[2])
steps = 0
def kill_at_step(event, args):
    global steps
    if event in {{"os.rename", "os.rmdir", "os.remove", "os.mkdir", "os.symlink",
                  "shutil.rmtree", "ctypes.call_function"}} and name in str(args):
        steps += 1
        if steps == k:
            os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[3] == "no-exchange":  # a file system without an atomic exchange
    import labeler.exports.folder_swap
    labeler.exports.folder_swap.exchange = lambda new, old: False
sys.addaudithook(kill_at_step)
from labeler import Job
from labeler.job import export_job
data, store, out, api = sys.argv[4:8]
export_job(Job(task="sentiment", input=data, teacher="{TEACHER}", base_url=api,
               store=store, out=out, progress=False))
"""


@pytest.mark.slow  # one export killed at each step of the swap: a dozen processes
def test_a_kill_9_at_any_step_of_the_swap_leaves_an_export_in_place(tmp_path: Path, srv: LocalServer) -> None:
    """The child kills itself at its k-th file system step on the export's paths, for
    every k until one finishes: after each kill the old export (3 rows) or the new one
    (6) loads from `out`, and the next export cleans up what the dead one left."""
    data, store = write_items(tmp_path / "in.jsonl", 6), tmp_path / "s.sqlite"
    out = tmp_path / "reviews"
    assert _cli("run", srv, data, store, tmp_path / "all").exit_code == 0
    old_input = write_items(tmp_path / "old.jsonl", 3)
    assert _cli("export", srv, old_input, store, out).exit_code == 0
    seen = []
    for k in range(1, 60):
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                _KILL_AT,
                out.name,
                str(k),
                "exchange",
                str(data),
                str(store),
                str(out),
                srv.api,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, child.stderr
        seen.append(_rows(out))
        assert seen[-1] in (3, 6)
    else:
        pytest.fail("the export never finished")
    assert 3 in seen and 6 in seen  # kills landed before and after the swap
    assert _rows(out) == 6
    assert _cli("export", srv, old_input, store, out).exit_code == 0
    assert _rows(out) == 3 and not list(tmp_path.glob(".reviews.*"))
    assert _sent(srv) == 6


@pytest.mark.slow  # kills between the two renames, then the repairing export
def test_without_an_atomic_exchange_a_kill_between_renames_is_repaired_by_the_next_export(
    tmp_path: Path, srv: LocalServer
) -> None:
    """Where the file system has no atomic exchange (some network file systems), the old
    export is renamed aside for a moment; a kill -9 then leaves it there, and the next
    export (or refresh of the same command) puts it back before anything else."""
    data, store = write_items(tmp_path / "in.jsonl", 6), tmp_path / "s.sqlite"
    out = tmp_path / "reviews"
    assert _cli("run", srv, data, store, tmp_path / "all").exit_code == 0
    old_input = write_items(tmp_path / "old.jsonl", 3)
    assert _cli("export", srv, old_input, store, out).exit_code == 0
    gaps = 0
    for k in range(1, 60):
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                _KILL_AT,
                out.name,
                str(k),
                "no-exchange",
                str(data),
                str(store),
                str(out),
                srv.api,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, child.stderr
        if not out.exists():
            gaps += 1
            aside = list(tmp_path.glob(".reviews.old-*"))
            assert len(aside) == 1 and len(datasets.load_from_disk(str(aside[0]))) == 3
            res = _cli("export", srv, old_input, store, out)
            assert res.exit_code == 0, res.output
        assert _rows(out) in (3, 6)
    else:
        pytest.fail("the export never finished")
    assert gaps == 1
    assert _rows(out) == 6 and _sent(srv) == 6


def test_the_swap_keeps_out_a_plain_folder(tmp_path: Path, srv: LocalServer) -> None:
    """What a user sees at --out: a folder (not a link), loadable, copyable as it is."""
    data, store, out = write_items(tmp_path / "in.jsonl", 5), tmp_path / "s.sqlite", tmp_path / "o"
    for _ in range(2):
        assert _cli("run", srv, data, store, out).exit_code == 0
        assert out.is_dir() and not out.is_symlink() and _rows(out) == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".o")) == []
