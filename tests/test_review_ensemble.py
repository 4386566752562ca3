"""`labeler review --ensemble`: where the members disagree, a person looks first.

Three teacher servers over real HTTP label every row as an ensemble; then a real
`labeler review` process is driven through its JSON API with the token. The "split"
rows are ones the members disagree on, though the ensemble is fairly sure of them; the
"torn" rows are ones every member agrees on at low confidence. The page must list the
split rows first; a decision there outlives a server restart and wins in the export.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest

from labeler import Job, run_job
from labeler.human import human_labels
from labeler.store import Store
from labeler.testing import ScriptedResponder, ServerConfig, TeacherServer
from labeler.testing.browser import Browser, browser_missing

from conftest import REPO, review_api, sentiment_reply

# Each row's P(positive) from members a, b and c.
P = {
    "sure-0": (0.95, 0.95, 0.95),
    "sure-1": (0.9, 0.92, 0.94),
    "torn-0": (0.55, 0.55, 0.55),
    "torn-1": (0.56, 0.57, 0.58),  # agree, unsure
    "split-0": (0.95, 0.95, 0.05),  # c dissents; the ensemble says positive (0.65)
    "split-1": (0.9, 0.2, 0.1),  # a dissents; the ensemble says negative (0.6)
}
SPLIT = ["split-1", "split-0"]  # lower certainty first at equal agreement (2 of 3)


def _config(member: int) -> ServerConfig:
    rules = [(text, sentiment_reply(ps[member])) for text, ps in P.items()]
    return ServerConfig(model=f"member-{member}", responder=ScriptedResponder(rules))


@pytest.fixture
def servers() -> Iterator[list[TeacherServer]]:
    with TeacherServer(_config(0)) as a, TeacherServer(_config(1)) as b, TeacherServer(_config(2)) as c:
        yield [a, b, c]


def _ensemble(servers: list[TeacherServer]) -> str:
    return ",".join(f"openai-compatible:member-{n}@{s.url}/v1" for n, s in enumerate(servers))


def _job(tmp_path: Path, servers: list[TeacherServer]) -> Job:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": t, "text": t}) + "\n" for t in P))
    return Job(
        task="sentiment",
        input=data,
        teacher="unused:x",
        ensemble=_ensemble(servers),
        store=tmp_path / "s.sqlite",
        out=tmp_path / "out",
        progress=False,
        max_attempts=1,
    )


class Review:
    """`labeler review --ensemble ...` as a child process; stopped with SIGTERM."""

    def __init__(self, job: Job, servers: list[TeacherServer]) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labeler.cli",
                "review",
                "sentiment",
                str(job.input),
                "--ensemble",
                _ensemble(servers),
                "--store",
                str(job.store),
                "--port",
                "0",
                "--no-browser",
                "--reviewer",
                "ada",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "OPENAI_API_KEY": "unused"},
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

    def post(self, body: dict) -> tuple[int, dict]:
        return review_api(self.base, self.token, "/api/label", body)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def test_disagreeing_rows_come_first_and_a_decision_wins_in_the_export(
    servers: list[TeacherServer],
    tmp_path: Path,
) -> None:
    job = _job(tmp_path, servers)
    assert asyncio.run(run_job(job)).summary.outcome == "ok"
    review = Review(job, servers)
    try:
        meta = review.get("/api/meta")
        assert (meta["total"], meta["disagree"]) == (6, 2)
        assert meta["teacher"].startswith("ensemble: openai-compatible:member-0")
        rows = review.get("/api/rows")["rows"]
        # disagreement first, though the agreeing torn rows have the lower confidence
        assert [r["id"] for r in rows] == [*SPLIT, "torn-0", "torn-1", "sure-1", "sure-0"]
        assert [r["disagree"] for r in rows] == [True, True, False, False, False, False]
        first = rows[0]
        assert first["label"] == "negative"  # the ensemble's label and mean soft label
        assert first["probs"] == pytest.approx([0.6, 0.4])
        assert first["agreement"] == pytest.approx(2 / 3, abs=1e-3)
        assert [(v["teacher"], v["label"]) for v in first["votes"]] == [
            ("openai-compatible:member-0", "positive"),
            ("openai-compatible:member-1", "negative"),
            ("openai-compatible:member-2", "negative"),
        ]
        only = review.get("/api/rows?status=disagree")
        assert [r["id"] for r in only["rows"]] == SPLIT
        assert review.post({"key": first["key"], "label": "positive"})[0] == 200  # corrected
        assert review.post({"key": rows[1]["key"], "label": "positive"})[0] == 200  # accepted
    finally:
        review.stop()
    with Store(job.store_path()) as store:  # committed, under the key the export looks up
        assert {h.label for h in human_labels(store, [first["key"]]).values()} == {"positive"}
    review = Review(job, servers)  # a restart shows the decisions
    try:
        rows = {r["id"]: r for r in review.get("/api/rows")["rows"]}
        assert (rows["split-1"]["human"], rows["split-0"]["human"]) == ("positive", "positive")
        assert review.get("/api/meta")["reviewed"] == 2
    finally:
        review.stop()
    assert asyncio.run(run_job(job)).summary.outcome == "ok"  # cached: re-exports
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    out = {r["id"]: r for r in (ds["train"] if isinstance(ds, datasets.DatasetDict) else ds)}
    assert (out["split-1"]["label_source"], out["split-1"]["label"]) == ("human", 1)  # positive
    assert out["split-1"]["soft_label"] == pytest.approx([0.6, 0.4])  # still the ensemble's
    assert out["split-0"]["label_source"] == "human"
    assert {out[t]["label_source"] for t in ("torn-0", "torn-1", "sure-0", "sure-1")} == {"teacher"}


def test_the_page_shows_who_said_what_and_enter_accepts_the_ensembles_label(
    servers: list[TeacherServer],
    tmp_path: Path,
) -> None:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    job = _job(tmp_path, servers)
    assert asyncio.run(run_job(job)).summary.outcome == "ok"
    review = Review(job, servers)
    try:
        with Browser() as b:
            b.get(f"{review.base}/?token={review.token}")
            b.wait("Number(document.body.dataset.loads || 0) >= 1")
            first = b.js(
                "const r = document.querySelector('article.row'); return ["
                "r.querySelector('.rowid').textContent, r.classList.contains('disagree'),"
                "[...r.querySelectorAll('.vote')].map(v => v.textContent),"
                "[...r.querySelectorAll('.vote.differs')].length];"
            )
            assert first == [
                "split-1",
                True,
                [
                    "member 1 openai-compatible:member-0: positive",
                    "member 2 openai-compatible:member-1: negative",
                    "member 3 openai-compatible:member-2: negative",
                ],
                1,
            ]
            b.keys("Enter")  # accept the ensemble's label
            b.wait("document.querySelector('#progress').textContent === '1 of 6 reviewed'")
        key = review.get("/api/rows")["rows"][0]["key"]
    finally:
        review.stop()
    with Store(job.store_path()) as store:
        assert [h.label for h in human_labels(store, [key]).values()] == ["negative"]
