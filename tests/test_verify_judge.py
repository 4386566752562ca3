"""`--verify judge:TEACHER[:TEMPLATE]` over real HTTP: a second teacher labels every
(input, answer) pair, its soft label scores the answer, its answers are cached like any
other, and a bad judge is refused before anything is paid.

Two test servers: the answering teacher (Anthropic's API, `ArithmeticResponder`, right
with probability 0.5 per sample) and the judge (an OpenAI-compatible server with
`ArithmeticJudge`, which solves the problem itself and puts 0.9 of its mass on the right
verdict), so every verdict and score is known in advance.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from arithmetic_tasks import solve_template

from labeler import Job, run_job
from labeler.exports import ExportOptions
from labeler.job import export_job
from labeler.testing import ArithmeticJudge, ArithmeticResponder, ServerConfig, TeacherServer

TEMPLATE = solve_template("arith", soft_targets=True)
ROWS = 10
SAMPLES = 4
ANTHROPIC = "anthropic:claude-haiku-4-5"
P_SURE = 0.9


@pytest.fixture
def arith(tmp_path: Path) -> Path:
    path = tmp_path / "arith.yaml"
    path.write_text(TEMPLATE)
    return path


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    with path.open("w") as f:
        for i in range(ROWS):
            a, b = 23 + 9 * i, 4 + 5 * i
            f.write(json.dumps({"id": f"p{i}", "question": f"What is {a} + {b}?", "answer": a + b}) + "\n")
    return path


@pytest.fixture
def teacher() -> TeacherServer:
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv:
        yield srv


@pytest.fixture
def judge() -> TeacherServer:
    with TeacherServer(ServerConfig(responder=ArithmeticJudge(p_sure=P_SURE))) as srv:
        yield srv


def _spec(judge: TeacherServer, template: str = "") -> str:
    return f"judge:openai-compatible:judge-m{':' + template if template else ''}@{judge.url}/v1"


def _job(arith: Path, problems: Path, teacher: TeacherServer, tmp_path: Path, **kw) -> Job:
    return Job(
        task=arith,
        input=problems,
        teacher=ANTHROPIC,
        base_url=teacher.url,
        api_key="k",
        samples=SAMPLES,
        store=tmp_path / "s.sqlite",
        out=kw.pop("out", tmp_path / "out"),
        progress=False,
        **kw,
    )


def _asked(teacher: TeacherServer) -> int:
    return sum(1 for r in teacher.log if r.path.endswith("/messages"))


def _judged(judge: TeacherServer) -> int:
    return sum(1 for r in judge.log if r.path.endswith("/chat/completions"))


def _stated(answer: str) -> int:
    return int(re.findall(r"Answer: (-?\d+)", answer)[-1])


def _gold(problems: Path) -> dict[str, int]:
    return {json.loads(line)["id"]: json.loads(line)["answer"] for line in problems.open()}


def test_a_judge_scores_every_answer_once_and_a_rerun_asks_nobody(
    arith: Path, problems: Path, teacher: TeacherServer, judge: TeacherServer, tmp_path: Path
) -> None:
    result = asyncio.run(run_job(_job(arith, problems, teacher, tmp_path, verify=_spec(judge))))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    gold = _gold(problems)
    assert _asked(teacher) == ROWS * SAMPLES
    # one judge request per distinct answer of a row (two samples that read the same are
    # one request, as any two equal requests are)
    distinct = sum(len({v["text"] for v in row["verdicts"]}) for row in ds)
    assert _judged(judge) == distinct
    for row in ds:
        assert len(row["verdicts"]) == SAMPLES
        for v in row["verdicts"]:
            right = _stated(v["text"]) == gold[row["id"]]
            assert v["status"] == ("pass" if right else "fail"), v
            assert v["score"] == pytest.approx(P_SURE if right else 1 - P_SURE, abs=1e-6)
            assert v["detail"].startswith(f"judge: {'correct' if right else 'incorrect'} (score ")
            assert "logprobs" in v["detail"]
    [j] = result.summary.judges
    assert j["teacher"] == "openai-compatible:judge-m" and j["template"].endswith("judge.yaml")
    assert j["answers"] == ROWS * SAMPLES and j["labeled"] + j["cached"] == ROWS * SAMPLES
    assert j["requests"] == distinct and j["failed"] == 0
    v = result.summary.verification
    assert v["checked"] == ROWS * SAMPLES and 0 < v["passed"] < ROWS * SAMPLES

    again = asyncio.run(run_job(_job(arith, problems, teacher, tmp_path, verify=_spec(judge))))
    assert _asked(teacher) == ROWS * SAMPLES and _judged(judge) == distinct
    assert again.summary.judges[0]["requests"] == 0
    assert again.summary.judges[0]["cached"] == ROWS * SAMPLES
    assert again.summary.verification["cached"] == ROWS * SAMPLES
    assert again.summary.verification["passed"] == v["passed"]

    # another verifier reads the same stored answers: nothing is asked of either
    other = asyncio.run(run_job(_job(arith, problems, teacher, tmp_path, verify="numeric:answer")))
    assert _asked(teacher) == ROWS * SAMPLES and _judged(judge) == distinct
    assert other.summary.verification["passed"] == v["passed"]  # the judge was right


def test_a_judges_score_picks_the_best_answer_and_the_preference_pairs(
    arith: Path, problems: Path, teacher: TeacherServer, judge: TeacherServer, tmp_path: Path
) -> None:
    asyncio.run(run_job(_job(arith, problems, teacher, tmp_path, verify=_spec(judge), keep="best")))
    asked, judged = _asked(teacher), _judged(judge)
    gold = _gold(problems)
    best = export_job(
        _job(
            arith,
            problems,
            teacher,
            tmp_path,
            out=tmp_path / "best",
            verify=_spec(judge),
            keep="best",
            export=ExportOptions(kind="sft"),
        )
    )
    pairs = export_job(
        _job(
            arith,
            problems,
            teacher,
            tmp_path,
            out=tmp_path / "pairs",
            verify=_spec(judge),
            export=ExportOptions(kind="preference"),
        )
    )
    assert (_asked(teacher), _judged(judge)) == (asked, judged)  # exports send nothing
    sft = datasets.load_from_disk(str(tmp_path / "best"))
    assert len(sft) == best.verification["rows_with_a_pass"] and len(set(sft["id"])) == len(sft)
    for row in sft:
        assert _stated(row["completion"][0]["content"]) == gold[row["id"]]
    pref = datasets.load_from_disk(str(tmp_path / "pairs"))
    assert len(pref) > 0 and pairs.unpaired == ROWS - len(set(pref["id"]))
    for row in pref:
        assert _stated(row["chosen"][0]["content"]) == gold[row["id"]]
        assert _stated(row["rejected"][0]["content"]) != gold[row["id"]]


def test_an_export_before_the_judge_has_answered_stores_no_verdict(
    arith: Path, problems: Path, teacher: TeacherServer, judge: TeacherServer, tmp_path: Path
) -> None:
    asyncio.run(run_job(_job(arith, problems, teacher, tmp_path)))  # answers, no judge
    report = export_job(_job(arith, problems, teacher, tmp_path, verify=_spec(judge)))
    assert _judged(judge) == 0  # an export never asks
    assert report.verification["verdicts"] == {"error": ROWS * SAMPLES}
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert {v["detail"] for r in ds for v in r["verdicts"]} == {
        "not judged yet (a run with this --verify asks the judge)"
    }
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 0
    asked = _asked(teacher)
    result = asyncio.run(run_job(_job(arith, problems, teacher, tmp_path, verify=_spec(judge))))
    assert _asked(teacher) == asked and _judged(judge) > 0
    assert "error" not in result.summary.verification["verdicts"]


def test_a_judge_asked_through_the_cli_says_what_it_judged(
    arith: Path, problems: Path, teacher: TeacherServer, judge: TeacherServer, tmp_path: Path
) -> None:
    args = [
        "run",
        str(arith),
        str(problems),
        "--teacher",
        ANTHROPIC,
        "--base-url",
        teacher.url,
        "--samples",
        str(SAMPLES),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--verify",
        _spec(judge),
    ]
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    judged = _judged(judge)
    assert f"judge openai-compatible:judge-m: {ROWS * SAMPLES} answers, {judged} judged" in done.stderr
    again = _cli(*args, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.splitlines()[-1])
    [j] = summary["judges"]
    assert j["requests"] == 0 and j["cached"] == ROWS * SAMPLES and _judged(judge) == judged
    assert summary["verification"]["answers"] == ROWS * SAMPLES


BAD_TEMPLATE = """\
name: free
version: "1"
mode: chat
user: "{{ prompt }}"
fields: [prompt]
output: {kind: text}
"""


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labeler.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ANTHROPIC_API_KEY": "k", **(env or {})},
    )


def test_a_bad_judge_is_one_line_and_pays_nothing(
    arith: Path, problems: Path, teacher: TeacherServer, judge: TeacherServer, tmp_path: Path
) -> None:
    (tmp_path / "free.yaml").write_text(BAD_TEMPLATE)
    base = [
        "run",
        str(arith),
        str(problems),
        "--teacher",
        ANTHROPIC,
        "--base-url",
        teacher.url,
        "--store",
        str(tmp_path / "s.sqlite"),
        "--out",
        str(tmp_path / "o"),
        "--verify",
    ]
    no_openai_key = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    cases = {
        "judge:nosuch:m": "unknown provider 'nosuch'",
        _spec(judge, "nosuch-template"): "judge template nosuch-template: no such template",
        _spec(judge, str(tmp_path / "free.yaml")): "must be a label template with at least two labels",
        "judge:openai:gpt-4o-mini": "no OpenAI API key",
        "judge:": "needs an argument: judge:PROVIDER:MODEL",
        "judge:openai": "expected judge:PROVIDER:MODEL",
    }
    for spec, needle in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "labeler.cli", *base, spec],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**no_openai_key, "ANTHROPIC_API_KEY": "k"},
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, (spec, done.stderr)
        assert needle in lines[0] and "--verify judge" in lines[0], (spec, lines)
    done = _cli(*base, _spec(judge), "--budget", "1", cwd=tmp_path)
    assert done.returncode == 1 and "--budget needs a price for the judge 'judge-m'" in done.stderr
    assert len(teacher.log) == 0 and len(judge.log) == 0


def test_a_batch_run_samples_through_the_batch_api_then_the_judge_labels_live(
    arith: Path, problems: Path, judge: TeacherServer, tmp_path: Path
) -> None:
    with TeacherServer(
        ServerConfig(responder=ArithmeticResponder(p_correct=0.5), batch_speed_s=0.1)
    ) as teacher:
        result = asyncio.run(
            run_job(_job(arith, problems, teacher, tmp_path, verify=_spec(judge), batch=True))
        )
        posted = [r.path for r in teacher.log if r.method == "POST"]
        assert posted == ["/v1/messages/batches"] and _asked(teacher) == 0  # no live request
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        assert all(len(row["verdicts"]) == SAMPLES for row in ds) and len(ds) == ROWS
        distinct = sum(len({v["text"] for v in row["verdicts"]}) for row in ds)
        assert _judged(judge) == distinct == result.summary.judges[0]["requests"]
        gold = _gold(problems)
        for row in ds:
            for v in row["verdicts"]:
                assert v["status"] == ("pass" if _stated(v["text"]) == gold[row["id"]] else "fail")
        asyncio.run(run_job(_job(arith, problems, teacher, tmp_path, verify=_spec(judge), batch=True)))
        assert [r.path for r in teacher.log if r.method == "POST"] == posted
        assert _judged(judge) == distinct


def test_a_judge_without_logprobs_scores_from_its_sampled_verdicts(
    arith: Path, problems: Path, teacher: TeacherServer, judge: TeacherServer, tmp_path: Path
) -> None:
    spec = f"judge:anthropic:claude-judge@{judge.url}"
    result = asyncio.run(run_job(_job(arith, problems, teacher, tmp_path, verify=spec)))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    distinct = sum(len({v["text"] for v in row["verdicts"]}) for row in ds)
    judged = sum(1 for r in judge.log if r.path.endswith("/messages"))
    assert judged == 5 * distinct  # the Messages API has no n: five requests per answer
    assert result.summary.judges[0]["requests"] == distinct
    gold = _gold(problems)
    for row in ds:
        for v in row["verdicts"]:
            right = _stated(v["text"]) == gold[row["id"]]
            assert v["status"] == ("pass" if right else "fail")
            assert v["score"] == (1.0 if right else 0.0)  # five samples, one verdict
            assert "samples:5" in v["detail"]


def test_kill_9_in_the_judge_pass_resumes_without_paying_twice(
    arith: Path, problems: Path, teacher: TeacherServer, tmp_path: Path
) -> None:
    import signal
    import time

    in_flight = 2
    with TeacherServer(ServerConfig(responder=ArithmeticJudge(), latency_s=0.2)) as slow_judge:
        args = [
            "run",
            str(arith),
            str(problems),
            "--teacher",
            ANTHROPIC,
            "--base-url",
            teacher.url,
            "--samples",
            str(SAMPLES),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--out",
            str(tmp_path / "out"),
            "--concurrency",
            str(in_flight),
            "--quiet",
            "--json",
            "--verify",
            _spec(slow_judge),
        ]
        env = {**os.environ, "ANTHROPIC_API_KEY": "k"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "labeler.cli", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while _judged(slow_judge) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        asked, before = _asked(teacher), _judged(slow_judge)
        assert asked == ROWS * SAMPLES and before >= 8  # every answer was paid before judging
        done = _cli(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        [j] = json.loads(done.stdout.splitlines()[-1])["judges"]
        assert _asked(teacher) == asked  # the teacher is asked nothing again
        total = _judged(slow_judge)
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        distinct = sum(len({v["text"] for v in row["verdicts"]}) for row in ds)
        # what was stored before the kill is read, not asked again: only the requests in
        # flight at the kill are paid twice
        assert distinct <= total <= distinct + in_flight
        assert j["cached"] >= before - in_flight
