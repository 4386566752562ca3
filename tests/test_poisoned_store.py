"""A store holding an answer no command can use: every command goes on without it.

A labeler without the answer checks could store a finite but absurd logprob (800, where a
logprob is at most 0). The label path turns a top-logprob alternative into a probability
(exp), so such a row crashed every later export, eval and review of the store with
`OverflowError: math range error`, and `merge-stores` copied it into the merged store
unchecked. Each test poisons one stored answer the way that release kept it: the first
token's first alternative (the one the old label path read) and, cheaply, the sampled
token's own logprob. The store stays readable: the row is left out as failed, in one line.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from labeler.cli import main
from labeler.testing import TeacherServer

from conftest import REPO, SAMPLES, review_api

TEACHER = "openai-compatible:teacher-test"
ROWS = 24  # samples/reviews.jsonl
REVIEW = [sys.executable, "-m", "labeler.cli", "review"]
# Where the absurd logprob goes in the stored `tokens` JSON: [[token, logprob, [[alt, logprob], ...]], ...].
SPOTS = {
    "top_alternative": lambda rows: rows[0][2][0].__setitem__(1, 800.0),
    "sampled_token": lambda rows: rows[0].__setitem__(1, 800.0),
}


def poison(store: Path, spot: str) -> str:
    """Give one stored answer an absurd logprob at `spot`, as a labeler without the answer
    checks kept one; returns its key."""
    db = sqlite3.connect(store)
    try:
        key, tokens = db.execute("SELECT key, tokens FROM responses ORDER BY key LIMIT 1").fetchone()
        rows = json.loads(tokens)
        SPOTS[spot](rows)
        db.execute("UPDATE responses SET tokens = ? WHERE key = ?", (json.dumps(rows).encode(), key))
        db.commit()
        return str(key)
    finally:
        db.close()


def cli(*args: str) -> tuple[int, str]:
    """The CLI in process; an uncaught exception (a traceback for a user) fails the test."""
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def job_args(srv: TeacherServer, store: Path) -> list[str]:
    return [
        "sentiment",
        str(SAMPLES / "reviews.jsonl"),
        "-t",
        TEACHER,
        "--base-url",
        srv.url + "/v1",
        "--store",
        str(store),
    ]


def sent(srv: TeacherServer) -> int:
    return sum(1 for r in srv.log if r.path.startswith("/v1/"))


def exported_rows(out: Path) -> int:
    import datasets

    return len(datasets.load_from_disk(str(out)))


def one_warning(out: str) -> None:
    warnings = [line for line in out.splitlines() if "cannot be used" in line]
    assert len(warnings) == 1 and "1 stored answer" in warnings[0], out


@pytest.fixture
def labeled(teacher_server: TeacherServer, tmp_path: Path) -> Path:
    store = tmp_path / "s.sqlite"
    code, _ = cli("run", *job_args(teacher_server, store), "-q")
    assert code == 0
    return store


@pytest.mark.parametrize("spot", SPOTS)
def test_export_eval_run_and_stats_leave_the_poisoned_answer_out_in_one_line(
    spot: str, teacher_server: TeacherServer, labeled: Path, tmp_path: Path
) -> None:
    common = job_args(teacher_server, labeled)
    poison(labeled, spot)
    before = sent(teacher_server)

    code, out = cli("export", *common, "--out", str(tmp_path / "out"), "--kind", "classification")
    assert code == 0
    one_warning(out)
    assert exported_rows(tmp_path / "out") == ROWS - 1

    code, out = cli("eval", *common, "--gold", "label")
    assert code == 0 and "Traceback" not in out
    one_warning(out)

    code, out = cli("run", *common, "-q", "--out", str(tmp_path / "again"), "--kind", "classification")
    assert code == 0 and sent(teacher_server) == before  # paid once: not asked again
    assert exported_rows(tmp_path / "again") == ROWS - 1
    code, out = cli("stats", "--store", str(labeled))
    assert code == 0


def test_review_of_a_poisoned_store_shows_the_other_rows(
    teacher_server: TeacherServer, labeled: Path
) -> None:
    """`labeler review` on the store: the page's API answers, with every other row."""
    poison(labeled, "top_alternative")
    proc = subprocess.Popen(
        [*REVIEW, *job_args(teacher_server, labeled), "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": "sk-test"},
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            proc.wait(60)
            raise AssertionError(f"no URL printed: {url!r}; stderr: {proc.stderr.read()[-2000:]}")
        base, token = url.split("/?", 1)[0], url.split("token=", 1)[1]
        status, page = review_api(base, token, "/api/rows?limit=100")
        assert status == 200, page
        rows = page["rows"]
        assert len(rows) in (ROWS - 1, ROWS)  # left out, or shown as a row without an answer
        assert len({r["key"] for r in rows if r.get("label")}) == ROWS - 1
    finally:
        proc.terminate()
        proc.wait(20)
        told = proc.stderr.read() if proc.stderr is not None else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert "Traceback" not in told
    one_warning(told)


@pytest.mark.parametrize("spot", SPOTS)
def test_merge_stores_leaves_the_poisoned_answer_behind_and_the_merged_store_exports(
    spot: str, teacher_server: TeacherServer, labeled: Path, tmp_path: Path
) -> None:
    merged = tmp_path / "m.sqlite"
    key = poison(labeled, spot)
    code, told = cli("merge-stores", str(merged), str(labeled))
    assert code == 0

    out_dir = tmp_path / "out"
    code, out = cli(
        "export", *job_args(teacher_server, merged), "--out", str(out_dir), "--kind", "classification"
    )
    assert code == 0, out
    assert exported_rows(out_dir) == ROWS - 1
    assert "cannot be used" not in out  # the merged store is clean: the row stayed behind
    assert f"{ROWS - 1} answers" in told and "1 answers cannot be used" in told
    with sqlite3.connect(merged) as db:
        keys = {k for (k,) in db.execute("SELECT key FROM responses")}
    assert len(keys) == ROWS - 1 and key not in keys
