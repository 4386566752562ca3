"""A judge calibrated like any labeler label, over real HTTP: `labeler eval --verify judge:J
--judge-gold SPEC` measures the judge against a deterministic verifier and fits its
temperature, and `--judge-calibration FILE` reads the judge's soft label through it.

The answering teacher (Anthropic's API, `ArithmeticResponder`) is right on half of its
samples; the judge (`ArithmeticJudge(p_sure=0.99, p_right=0.75)`) is wrong on a quarter
of the answers and 99% sure of every verdict: overconfident, so the fitted temperature is
above 1 and the judge's ECE against `numeric:answer` (the truth) falls.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from arithmetic_tasks import solve_template

from labeler import Job, run_job
from labeler.calibration import Calibration, load_calibration
from labeler.job import export_job
from labeler.testing import ArithmeticJudge, ArithmeticResponder, ServerConfig, TeacherServer
from labeler.verify.judge import expected_score

TEMPLATE = solve_template("arith", soft_targets=True)
ROWS = 20
SAMPLES = 4
ANTHROPIC = "anthropic:claude-haiku-4-5"
P_SURE = 0.99
P_RIGHT = 0.75


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
    with TeacherServer(ServerConfig(responder=ArithmeticJudge(p_sure=P_SURE, p_right=P_RIGHT))) as srv:
        yield srv


def _spec(judge: TeacherServer) -> str:
    return f"judge:openai-compatible:judge-m@{judge.url}/v1"


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


def _requests(*servers: TeacherServer) -> int:
    return sum(len(s.log) for s in servers)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labeler.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ANTHROPIC_API_KEY": "k"},
    )


def _common(arith: Path, problems: Path, teacher: TeacherServer, tmp_path: Path) -> list[str]:
    return [
        str(arith),
        str(problems),
        "-t",
        ANTHROPIC,
        "--base-url",
        teacher.url,
        "--samples",
        str(SAMPLES),
        "--store",
        str(tmp_path / "s.sqlite"),
    ]


def test_eval_fits_an_overconfident_judge_and_the_export_reads_it_through_the_fit(
    arith: Path, problems: Path, teacher: TeacherServer, judge: TeacherServer, tmp_path: Path
) -> None:
    asyncio.run(run_job(_job(arith, problems, teacher, tmp_path, verify=_spec(judge))))
    raw = {
        (r["id"], v["text"]): v for r in datasets.load_from_disk(str(tmp_path / "out")) for v in r["verdicts"]
    }
    paid = _requests(teacher, judge)
    cal_file = tmp_path / "judge-cal.json"
    done = _cli(
        "eval",
        *_common(arith, problems, teacher, tmp_path),
        "--verify",
        _spec(judge),
        "--judge-gold",
        "numeric:answer",
        "--save-judge-calibration",
        str(cal_file),
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert _requests(teacher, judge) == paid  # eval reads the store only
    assert report["answers"] == ROWS * SAMPLES and report["unjudged"] == 0 and report["undecided"] == 0
    assert report["judged"] == ROWS * SAMPLES
    # the judge is wrong on about a quarter of the answers, 99% sure of all of them
    assert 0.6 < report["raw"]["agreement"] < 0.9
    assert report["raw"]["ece"] > 0.1
    assert report["calibrated"]["ece"] < report["raw"]["ece"] - 0.08
    assert report["calibrated"]["nll"] < report["raw"]["nll"]
    assert report["calibrated"]["auroc"] == pytest.approx(report["raw"]["auroc"])  # T keeps the order
    cal = load_calibration(cal_file)
    assert cal.temperature > 1.5 and cal.labels == ("incorrect", "correct")
    assert cal.fitted_rows == ROWS * SAMPLES and cal.details["truth"] == "numeric:answer"
    assert f"--judge-calibration {cal_file}" in done.stderr

    out = tmp_path / "calibrated"
    export = export_job(
        _job(
            arith, problems, teacher, tmp_path, out=out, verify=_spec(judge), judge_calibration=str(cal_file)
        )
    )
    assert _requests(teacher, judge) == paid  # a new calibration asks nobody
    assert export.verification["checked"] == ROWS * SAMPLES  # every stored answer checked again
    for row in datasets.load_from_disk(str(out)):
        for v in row["verdicts"]:
            before = raw[(row["id"], v["text"])]
            expected = expected_score(cal.apply_probs((1 - before["score"], before["score"])))
            assert v["score"] == pytest.approx(expected, abs=1e-6)
            assert abs(v["score"] - 0.5) < abs(before["score"] - 0.5)  # less sure
            assert v["status"] == before["status"]  # a temperature never crosses 0.5
            assert "calibrated T=" in v["detail"]
    again = export_job(
        _job(
            arith, problems, teacher, tmp_path, out=out, verify=_spec(judge), judge_calibration=str(cal_file)
        )
    )
    assert again.verification["cached"] == ROWS * SAMPLES and _requests(teacher, judge) == paid


def test_a_calibration_of_another_judge_is_refused_in_one_line(
    arith: Path, problems: Path, teacher: TeacherServer, judge: TeacherServer, tmp_path: Path
) -> None:
    asyncio.run(run_job(_job(arith, problems, teacher, tmp_path, verify=_spec(judge))))
    paid = _requests(teacher, judge)
    other = Calibration(labels=("incorrect", "correct"), temperature=2.0, template="strict-judge@1")
    other_file = other.save(tmp_path / "other.json")
    base = ["export", *_common(arith, problems, teacher, tmp_path), "--out", str(tmp_path / "x")]
    done = _cli(*base, "--verify", _spec(judge), "--judge-calibration", str(other_file), cwd=tmp_path)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert str(other_file) in line and "strict-judge@1" in line, line
    assert not (tmp_path / "x").exists() and _requests(teacher, judge) == paid

    no_judge = _cli(*base, "--verify", "numeric:answer", "--judge-calibration", str(other_file), cwd=tmp_path)
    assert no_judge.returncode == 1
    [line] = no_judge.stderr.strip().splitlines()
    assert "--judge-calibration goes with --verify judge:" in line, line

    common = _common(arith, problems, teacher, tmp_path)
    no_truth = _cli("eval", *common, "--verify", _spec(judge), "--judge-gold", _spec(judge), cwd=tmp_path)
    assert no_truth.returncode == 1
    [line] = no_truth.stderr.strip().splitlines()
    assert "deterministic" in line, line


def test_eval_before_the_judge_has_answered_counts_the_unjudged_and_sends_nothing(
    arith: Path, problems: Path, teacher: TeacherServer, judge: TeacherServer, tmp_path: Path
) -> None:
    asyncio.run(run_job(_job(arith, problems, teacher, tmp_path)))  # answers, no judge yet
    paid = _requests(teacher, judge)
    common = _common(arith, problems, teacher, tmp_path)
    done = _cli("eval", *common, "--verify", _spec(judge), "--judge-gold", "numeric:answer", cwd=tmp_path)
    assert done.returncode == 1 and _requests(teacher, judge) == paid
    [line] = done.stderr.strip().splitlines()
    assert f"0 of {ROWS * SAMPLES} stored answers are judged" in line
    assert f"({ROWS * SAMPLES} unjudged)" in line, line


def test_a_refresh_config_names_the_judge_calibration_relative_to_itself(tmp_path: Path) -> None:
    from labeler.refresh import RefreshConfig

    cfg = tmp_path / "conf" / "r.yaml"
    cfg.parent.mkdir()
    cfg.write_text(
        "task: sentiment\ninput: in.jsonl\nteacher: openai:gpt-4o-mini\nout: out\n"
        "verify: judge:openai:gpt-4o\njudge_calibration: cal/judge.json\n"
    )
    loaded = RefreshConfig.load(cfg)
    assert loaded.options["judge_calibration"] == str(tmp_path / "conf" / "cal" / "judge.json")
