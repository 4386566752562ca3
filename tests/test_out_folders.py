"""An export is always in place: the swap leaves the old export or the new one at `--out`
at every instant, a kill -9 included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import datasets
import pytest
from click.testing import CliRunner, Result
from procs import LocalServer, write_items

from labeler.cli import main

TEACHER = "openai-compatible:teacher-test"


def _sent(srv: LocalServer) -> int:
    return sum(1 for r in srv.server.log if r.path.endswith("/chat/completions"))


def _cli(command: str, srv: LocalServer, data: Path, store: Path, out: Path,
         *extra: str) -> Result:
    return CliRunner().invoke(main, [
        command, "sentiment", str(data), "--teacher", TEACHER, "--base-url", srv.api,
        "--store", str(store), "--out", str(out),
        *(["--quiet"] if command == "run" else []), *extra])


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
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def srv() -> Any:
    with LocalServer(labels=["negative", "positive"]) as server:
        yield server


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
        tmp_path: Path, srv: LocalServer) -> None:
    data, store, out = write_items(tmp_path / "in.jsonl", 30), tmp_path / "s.sqlite", tmp_path / "o"
    assert _cli("run", srv, data, store, out).exit_code == 0
    exports = subprocess.Popen(
        [sys.executable, "-c", _EXPORTS, str(data), str(store), str(out), srv.api, "12"],
        stderr=subprocess.PIPE, text=True)
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
    import labeler.folder_swap
    labeler.folder_swap.exchange = lambda new, old: False
sys.addaudithook(kill_at_step)
from labeler import Job
from labeler.job import export_job
data, store, out, api = sys.argv[4:8]
export_job(Job(task="sentiment", input=data, teacher="{TEACHER}", base_url=api,
               store=store, out=out, progress=False))
"""


def test_a_kill_9_at_any_step_of_the_swap_leaves_an_export_in_place(
        tmp_path: Path, srv: LocalServer) -> None:
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
            [sys.executable, "-c", _KILL_AT, out.name, str(k), "exchange", str(data), str(store),
             str(out), srv.api], capture_output=True, text=True, timeout=120)
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


def test_without_an_atomic_exchange_a_kill_between_renames_is_repaired_by_the_next_export(
        tmp_path: Path, srv: LocalServer) -> None:
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
            [sys.executable, "-c", _KILL_AT, out.name, str(k), "no-exchange", str(data),
             str(store), str(out), srv.api], capture_output=True, text=True, timeout=120)
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
