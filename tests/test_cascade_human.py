"""A cascade that ends in "human": what the last teacher is unsure of waits for a person.

Two teacher servers over real HTTP, then the review page as a real `labeler review`
process, driven through its JSON API with the token. Server A (cheap) is sure of the
"firm" rows; server B (dear) is sure of everything but the "tough" rows, which go on to
the review queue instead of to any teacher.
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
from click.testing import CliRunner

from labeler import Job, run_job
from labeler.cascade import CascadeSpec
from labeler.cli import main
from labeler.errors import ConfigError
from labeler.exports import ExportOptions
from labeler.testing import Reply, ScriptedResponder, ServerConfig, TeacherServer

from conftest import REPO, chat_requests, review_api, sentiment_reply

KINDS = {"firm": 4, "unsure": 3, "tough": 3, "bad": 1, "fail": 1}
TOUGH = [f"tough-row{i:02d}" for i in range(KINDS["tough"])]
UNSURE = [f"unsure-row{i:02d}" for i in range(KINDS["unsure"])]


def _texts() -> list[str]:
    return [f"{kind}-row{i:02d}" for kind, n in KINDS.items() for i in range(n)]


@pytest.fixture
def servers() -> Iterator[tuple[TeacherServer, TeacherServer]]:
    a_rules = [
        ("firm-", sentiment_reply(0.97)),
        ("unsure-", sentiment_reply(0.6)),
        ("tough-", sentiment_reply(0.55)),
        ("bad-", Reply("I cannot tell", tokens=["I", " cannot", " tell"])),
    ]
    a = ServerConfig(model="small", responder=ScriptedResponder(a_rules), status_for=[("fail-", 400)])
    # B: sure (and negative) everywhere but the tough rows, where it leans positive at 0.7
    b = ServerConfig(
        model="big",
        responder=ScriptedResponder(
            [("tough-", sentiment_reply(0.7))], default=lambda v: sentiment_reply(0.01)
        ),
    )
    with TeacherServer(a) as sa, TeacherServer(b) as sb:
        yield sa, sb


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": t, "text": t}) + "\n" for t in _texts()))
    return path


def _cascade(a: TeacherServer, b: TeacherServer) -> str:
    return f"openai-compatible:small@{a.url}/v1,openai-compatible:big@{b.url}/v1,human"


def _job(tmp_path: Path, a: TeacherServer, b: TeacherServer, **kw: object) -> Job:
    return Job(
        task="sentiment",
        input=_input(tmp_path),
        teacher="unused:x",
        cascade=_cascade(a, b),
        escalate_below="0.9",
        store=tmp_path / "s.sqlite",
        out=tmp_path / "out",
        progress=False,
        max_attempts=1,
        **kw,
    )  # type: ignore[arg-type]


def _rows(out: Path) -> dict[str, dict]:
    ds = datasets.load_from_disk(str(out))
    return {r["id"]: r for r in (ds["train"] if isinstance(ds, datasets.DatasetDict) else ds)}


def _report(out: Path) -> dict:
    return json.loads((out / "labeler_export.json").read_text())["report"]


def test_rows_past_the_last_teacher_are_queued_for_a_person_not_sent(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    result = asyncio.run(run_job(_job(tmp_path, a, b)))
    assert (chat_requests(a), chat_requests(b)) == (12, 8)  # B: unsure, tough, bad, fail
    s = result.summary
    assert s.outcome == "ok", s.to_dict()
    assert [(st["stage"], st["teacher"], st["rows"]) for st in s.stages] == [
        (1, "openai-compatible:small", 12),
        (2, "openai-compatible:big", 8),
        (3, "human", 3),
    ]
    assert s.stages[1]["escalated"] == 3
    assert (s.stages[2]["awaiting"], s.stages[2]["labeled"]) == (3, 0)
    # Held out of the export by default, and said so in the report and the card.
    rows = _rows(tmp_path / "out")
    assert sorted(rows) == sorted(t for t in _texts() if t not in TOUGH)
    assert not any(r["awaiting_human"] for r in rows.values())
    assert _report(tmp_path / "out")["awaiting_human"] == 3
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| rows awaiting a person (labeler review), held out of this export | 3 |" in card


def test_awaiting_rows_can_be_exported_with_the_last_teachers_label_marked(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    opts = ExportOptions(include_awaiting_human=True)
    asyncio.run(run_job(_job(tmp_path, a, b, export=opts)))
    rows = _rows(tmp_path / "out")
    assert len(rows) == 12
    for text in TOUGH:
        r = rows[text]
        assert (r["awaiting_human"], r["label_source"], r["cascade_stage"]) == (True, "teacher", 2)
        assert r["soft_label"] == pytest.approx([0.3, 0.7])
    assert not rows["firm-row00"]["awaiting_human"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert (
        "| rows awaiting a person (labeler review), exported with the last teacher's "
        "label and `awaiting_human` | 3 |"
    ) in card


def test_the_review_page_shows_the_queue_first_and_a_rerun_exports_its_decisions(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    job = _job(tmp_path, a, b)
    asyncio.run(run_job(job))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labeler.cli",
            "review",
            "sentiment",
            str(job.input),
            "--cascade",
            _cascade(a, b),
            "--escalate-below",
            "0.9",
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
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), proc.stderr.read() if proc.stderr else url
        base, token = url.split("/?", 1)[0], url.split("token=", 1)[1]
        status, meta = review_api(base, token, "/api/meta")
        assert (status, meta["total"], meta["queued"]) == (200, 12, 3)
        _, page = review_api(base, token, "/api/rows")
        assert sorted(r["id"] for r in page["rows"][:3]) == TOUGH  # the queue comes first
        assert all(r["queued"] for r in page["rows"][:3])
        assert not any(r["queued"] for r in page["rows"][3:])
        # then the rows whose answering stages disagree (A positive, B negative), though
        # the firm rows' confidence (0.97) is below theirs (0.99)
        assert sorted(r["id"] for r in page["rows"][3:6]) == UNSURE
        assert meta["disagree"] == 3
        assert [r["disagree"] for r in page["rows"]] == [False] * 3 + [True] * 3 + [False] * 6
        assert [(v["by"], v["teacher"], v["label"]) for v in page["rows"][3]["votes"]] == [
            ("stage 1", "openai-compatible:small", "positive"),
            ("stage 2", "openai-compatible:big", "negative"),
        ]
        _, queued = review_api(base, token, "/api/rows?status=queued")
        assert sorted(r["id"] for r in queued["rows"]) == TOUGH
        keys = {r["id"]: r["key"] for r in queued["rows"]}
        # the label shown is the last teacher's (B's positive at 0.7)
        assert {r["label"] for r in queued["rows"]} == {"positive"}
        assert (
            review_api(base, token, "/api/label", {"key": keys[TOUGH[0]], "label": "positive"})[0] == 200
        )  # accepted
        assert (
            review_api(base, token, "/api/label", {"key": keys[TOUGH[1]], "label": "negative"})[0] == 200
        )  # corrected
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    asked = (chat_requests(a), chat_requests(b))
    result = asyncio.run(run_job(job))
    assert (chat_requests(a), chat_requests(b)) == asked  # no teacher is asked again
    human = result.summary.stages[2]
    assert (human["rows"], human["labeled"], human["awaiting"]) == (3, 2, 1)
    rows = _rows(tmp_path / "out")
    assert TOUGH[2] not in rows  # still awaiting a person
    assert (rows[TOUGH[0]]["label_source"], rows[TOUGH[0]]["awaiting_human"]) == ("human", False)
    assert (rows[TOUGH[1]]["label_source"], rows[TOUGH[1]]["label"]) == ("human", 0)  # negative
    assert _report(tmp_path / "out")["awaiting_human"] == 1


def test_the_cli_says_how_many_rows_await_a_person(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    common = [
        "sentiment",
        str(_input(tmp_path)),
        "--cascade",
        _cascade(a, b),
        "--escalate-below",
        "0.9",
        "--store",
        str(tmp_path / "s.sqlite"),
        "--max-attempts",
        "1",
        "--quiet",
    ]
    res = CliRunner().invoke(main, ["run", *common, "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "stage 3 human: 3 rows queued, 0 decided, 3 await `labeler review`" in res.output
    assert "3 rows await a person (labeler review): held out" in res.output
    res = CliRunner().invoke(
        main, ["export", *common[:-3], "--out", str(tmp_path / "o2"), "--include-awaiting-human"]
    )
    assert res.exit_code == 0, res.output
    assert len(_rows(tmp_path / "o2")) == 12
    assert (chat_requests(a), chat_requests(b)) == (12, 8)


def test_human_is_only_a_last_stage(tmp_path: Path) -> None:
    spec = CascadeSpec.parse("a:x,b:y,human", 0.9)
    assert ([s.teacher for s in spec.stages], spec.human, spec.thresholds) == (
        ["a:x", "b:y"],
        True,
        (0.9, 0.9),
    )
    one = CascadeSpec.parse("a:x,human", "0.8")  # one teacher, then a person
    assert (len(one.stages), one.thresholds) == (1, (0.8,))
    with pytest.raises(ConfigError, match="'human' can only be the last stage"):
        CascadeSpec.parse("a:x,human,b:y", 0.9)
    with pytest.raises(ConfigError, match="at least two"):
        CascadeSpec.parse("human", 0.9)
    with pytest.raises(ConfigError, match="3 stages take one threshold or 2"):
        CascadeSpec.parse("a:x,b:y,human", "0.9,0.8,0.7")


def test_estimate_and_eval_count_the_rows_a_person_would_review(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    data = tmp_path / "gold.jsonl"
    data.write_text("".join(json.dumps({"id": t, "text": t, "gold": "negative"}) + "\n" for t in _texts()))
    args = [
        "sentiment",
        str(data),
        "--cascade",
        _cascade(a, b),
        "--escalate-below",
        "0.9",
        "--store",
        str(tmp_path / "s.sqlite"),
    ]
    assert CliRunner().invoke(main, ["run", *args, "--quiet", "--max-attempts", "1"]).exit_code == 0
    res = CliRunner().invoke(main, ["estimate", *args, "--json"])
    assert res.exit_code == 0, res.output
    stages = json.loads(res.output.strip().splitlines()[-1])["stages"]
    # measured on stored answers (A's 400 is none): A passes on 7 of 11, B 3 of those 7
    assert [(st["teacher"], round(st["reach"], 4)) for st in stages] == [
        ("openai-compatible:small", 1.0),
        ("openai-compatible:big", round(7 / 11, 4)),
        ("human", round(3 / 11, 4)),
    ]
    assert stages[1]["escalation_rate"] == pytest.approx(3 / 7)
    res = CliRunner().invoke(main, ["eval", *args, "--gold", "gold", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["cascade"]["queued_for_human"] == 3
    assert {s["stage"] for s in report["suggestions"]} == {1, 2}  # B's threshold too


def test_a_cascade_that_passes_nothing_on_still_reports_an_empty_queue(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    job = Job(
        task="sentiment",
        input=_input(tmp_path),
        teacher="unused:x",
        cascade=_cascade(a, b),
        escalate_below="0.5,0.5",
        store=tmp_path / "s.sqlite",
        progress=False,
        max_attempts=1,
        limit=4,
    )
    result = asyncio.run(run_job(job))
    assert chat_requests(b) == 0  # the four firm rows stop at A
    assert result.summary.stages[-1] == {
        "stage": 3,
        "teacher": "human",
        "rows": 0,
        "labeled": 0,
        "awaiting": 0,
    }
