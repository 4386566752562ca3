"""`labeler review` on a generation run (`--samples`, `--verify`): every answer of a row
with its verdict, and a person's pick of one answer wins in the exports.

A real teacher server answers arithmetic questions right with probability 0.5 per sample;
a real `labeler review` process is driven through its JSON API with the token (no
browser); then `sft` and `preference` exports read the pick from the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest
from arithmetic_tasks import solve_template

from labeler import Job, run_job
from labeler.exports import ExportOptions
from labeler.human import human_labels
from labeler.job import export_job
from labeler.store import Store
from labeler.testing import ArithmeticResponder, ServerConfig, TeacherServer
from labeler.testing.browser import Browser, browser_missing

from conftest import REPO, review_api

TEMPLATE = solve_template()
ROWS, SAMPLES = 8, 4
VERIFY = "regex:Answer: (-?\\d+),numeric:answer"


@pytest.fixture
def server() -> Iterator[TeacherServer]:
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv:
        yield srv


@pytest.fixture
def job(tmp_path: Path, server: TeacherServer) -> Job:
    template = tmp_path / "solve.yaml"
    template.write_text(TEMPLATE)
    problems = tmp_path / "problems.jsonl"
    rows = [
        {"id": f"p{i}", "question": f"What is {31 + i} + {5 * i}?", "answer": 31 + 6 * i} for i in range(ROWS)
    ]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    made = Job(
        task=template,
        input=problems,
        teacher="openai-compatible:teacher-m",
        base_url=server.url + "/v1",
        api_key="k",
        samples=SAMPLES,
        verify=VERIFY,
        store=tmp_path / "s.sqlite",
        out=tmp_path / "sft",
        export=ExportOptions(kind="sft"),
        progress=False,
    )
    assert asyncio.run(run_job(made)).summary.outcome == "ok"
    return made


class Review:
    """`labeler review TEMPLATE INPUT --samples N --verify SPEC` as a child process."""

    def __init__(self, job: Job) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "labeler.cli", "review", str(job.task), str(job.input)),
                *("--teacher", job.teacher, "--base-url", str(job.base_url), "--store", str(job.store)),
                *("--samples", str(SAMPLES), "--verify", VERIFY),
                *("--port", "0", "--no-browser", "--reviewer", "ada"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "OPENAI_API_KEY": "k"},
        )
        assert self.proc.stdout is not None
        url = self.proc.stdout.readline().strip()
        if not url.startswith("http://"):
            self.proc.kill()
            raise AssertionError(f"no URL: {url!r} {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
        self.base, self.token = url.split("/?", 1)[0], url.split("token=", 1)[1]

    def get(self, path: str) -> dict:
        status, data = review_api(self.base, self.token, path)
        assert status == 200, data
        return data

    def pick(self, key: str, sample: object) -> tuple[int, dict]:
        return review_api(self.base, self.token, "/api/pick", {"key": key, "sample": sample})

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def _stated(text: str) -> int:
    return int(re.findall(r"Answer: (-?\d+)", text)[-1])


def _gold(job: Job) -> dict[str, int]:
    return {json.loads(line)["id"]: json.loads(line)["answer"] for line in Path(str(job.input)).open()}


def _rows(path: Path) -> list[dict]:
    ds = datasets.load_from_disk(str(path))
    return list(ds["train"] if isinstance(ds, datasets.DatasetDict) else ds)


def test_the_page_shows_every_sample_with_its_verdict_and_a_pick_wins_in_the_exports(
    job: Job, server: TeacherServer, tmp_path: Path
) -> None:
    gold = _gold(job)
    asked = len(server.log)
    review = Review(job)
    try:
        meta = review.get("/api/meta")
        assert (meta["total"], meta["samples"]) == (ROWS, True)
        rows = review.get("/api/rows")["rows"]
        assert len(rows) == ROWS
        for row in rows:
            assert [s["sample"] for s in row["samples"]] == list(range(SAMPLES))
            for s in row["samples"]:
                right = _stated(s["text"]) == gold[row["id"]]
                assert (s["status"], s["score"]) == (("pass", None) if right else ("fail", None)), s
        shares = [row["confidence"] for row in rows]
        assert shares == sorted(shares)  # fewest passing answers first
        # The row to overrule: one with two failed answers (a person knows better than the
        # check), so that the preference export has another failed one to pair the pick with
        row = next(r for r in rows if sum(s["status"] == "fail" for s in r["samples"]) >= 2)
        wrong = next(s for s in row["samples"] if s["status"] == "fail")
        status, told = review.pick(row["key"], wrong["sample"])
        assert status == 200 and (told["pick"], told["reviewed"]) == (wrong["sample"], 1), told
        # Refused: a sample out of range, a label on a generation row, an unknown row
        assert review.pick(row["key"], SAMPLES)[0] == 400
        assert review.pick(row["key"], True)[0] == 400
        assert (
            review_api(review.base, review.token, "/api/label", {"key": row["key"], "label": "x"})[0] == 400
        )
        assert review.pick("nope", 0)[0] == 404
    finally:
        review.stop()
    assert len(server.log) == asked  # the page asks the teacher nothing
    with Store(job.store_path()) as store:  # committed like any human decision
        [decided] = human_labels(store, [row["key"]]).values()
        assert (decided.label, decided.reviewer, decided.row_id) == (wrong["text"], "ada", row["id"])

    review = Review(job)  # a restart shows the pick
    try:
        again = {r["id"]: r for r in review.get("/api/rows")["rows"]}[row["id"]]
        assert (again["pick"], again["human"]) == (wrong["sample"], wrong["text"])
    finally:
        review.stop()

    export_job(job)  # sft: the picked answer is the row's one answer, though it failed
    sft = [r for r in _rows(tmp_path / "sft") if r["id"] == row["id"]]
    assert [(r["sample"], r["completion"][-1]["content"]) for r in sft] == [(wrong["sample"], wrong["text"])]
    others = [r for r in _rows(tmp_path / "sft") if r["id"] != row["id"]]
    assert all(_stated(r["completion"][-1]["content"]) == gold[r["id"]] for r in others)  # verdicts rule

    pref = dataclasses.replace(job, out=tmp_path / "pref", export=ExportOptions(kind="preference"))
    export_job(pref)  # preference: the pick is `chosen`, paired with another failed answer
    pairs = [r for r in _rows(tmp_path / "pref") if r["id"] == row["id"]]
    assert [p["chosen"][0]["content"] for p in pairs] == [wrong["text"]]
    assert pairs[0]["chosen_sample"] == wrong["sample"] != pairs[0]["rejected_sample"]
    assert row["samples"][pairs[0]["rejected_sample"]]["status"] == "fail"
    assert len(server.log) == asked


def test_taking_a_pick_back_returns_the_row_to_its_verdicts(job: Job, tmp_path: Path) -> None:
    review = Review(job)
    try:
        row = review.get("/api/rows")["rows"][0]
        assert review.pick(row["key"], 0)[0] == 200
        status, told = review.pick(row["key"], None)
        assert status == 200 and (told["pick"], told["previous"], told["reviewed"]) == (None, 0, 0)
    finally:
        review.stop()
    with Store(job.store_path()) as store:
        assert human_labels(store, [row["key"]]) == {}
    export_job(job)
    kept = sorted(r["sample"] for r in _rows(tmp_path / "sft") if r["id"] == row["id"])
    passing = [s["sample"] for s in row["samples"] if s["status"] == "pass"]
    distinct = [
        i
        for i in passing
        if row["samples"][i]["text"] not in {row["samples"][j]["text"] for j in passing if j < i}
    ]
    assert kept == distinct


def test_the_page_lists_the_answers_and_a_key_picks_one(job: Job) -> None:
    """In a real headless chromium (skipped where Debian's chromium is absent)."""
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    review = Review(job)
    try:
        first = review.get("/api/rows")["rows"][0]
        with Browser() as b:
            b.get(f"{review.base}/?token={review.token}")
            b.wait("Number(document.body.dataset.loads || 0) >= 1")
            shown = b.js(
                "const r = document.querySelector('article.row'); return ["
                "r.querySelector('.rowid').textContent,"
                "[...r.querySelectorAll('.sample .answer')].map(a => a.textContent),"
                "[...r.querySelectorAll('.sample')].map(s => s.classList.contains('is-pass'))];"
            )
            assert shown == [
                first["id"],
                [s["text"] for s in first["samples"]],
                [s["status"] == "pass" for s in first["samples"]],
            ]
            b.keys("2")  # the row's second answer
            b.wait(f"document.querySelector('#progress').textContent === '1 of {ROWS} reviewed'")
    finally:
        review.stop()
    with Store(job.store_path()) as store:
        assert [h.label for h in human_labels(store, [first["key"]]).values()] == [
            first["samples"][1]["text"]
        ]
