"""`labeler estimate --verify judge:...`: the judge's requests counted (one per answer, so
N samples a row are up to N judge requests a row) and priced with the judge's model; then
a real run over HTTP, whose judge asks no more than the estimate said."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from arithmetic_tasks import solve_template
from click.testing import CliRunner

from labeler import Job, run_job
from labeler.cli import main
from labeler.estimate import TokenCounter, estimate
from labeler.pricing import PriceTable
from labeler.task import load_task
from labeler.testing import ArithmeticJudge, ArithmeticResponder, ServerConfig, TeacherServer
from labeler.verify.judge import judge_data
from labeler.verify.judge_estimate import estimate_judge, judge_specs

TEMPLATE = solve_template(max_tokens=40)
SAMPLES = 3


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, list[dict[str, object]]]:
    template = tmp_path / "solve.yaml"
    template.write_text(TEMPLATE)
    rows: list[dict[str, object]] = [
        {"id": f"p{i}", "question": f"What is {20 + i} + {7 * i}?", "answer": 20 + 8 * i} for i in range(4)
    ]
    rows.append({"id": "dup", "question": rows[0]["question"], "answer": rows[0]["answer"]})  # sent once
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return template, problems, rows


def _judge_prompt_tokens(template: Path, rows: list[dict[str, object]], model: str) -> int:
    """Each distinct row's judge prompt (the answer left out) plus max_tokens for the answer."""
    answered, judge = load_task(template), load_task("judge")
    counter = TokenCounter(model)
    distinct = {str(r["question"]): r for r in rows}.values()
    return sum(counter.prompt(judge.render(judge_data(answered, r, "")))[0] + 40 for r in distinct)


def test_cli_estimate_counts_and_prices_one_judge_request_per_answer(
    inputs: tuple[Path, Path, list[dict[str, object]]],
) -> None:
    template, problems, rows = inputs
    judge = "judge:openai-compatible:judge-m@http://127.0.0.1:9/v1"
    args = ["estimate", str(template), str(problems), "-t", "openai:gpt-4o-mini", "--samples", str(SAMPLES)]
    priced = ["--price", "judge-m=2,10"]
    res = CliRunner().invoke(main, [*args, "--verify", f"numeric:answer,{judge}", *priced, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output.strip().splitlines()[-1])
    assert (data["requests"], data["answers"]) == (4, 4 * SAMPLES)
    [judged] = data["judges"]
    assert judged["model"] == "judge-m"
    assert (judged["requests"], judged["http_requests"]) == (4 * SAMPLES, 4 * SAMPLES)
    prompt = SAMPLES * _judge_prompt_tokens(template, rows, "judge-m")
    assert judged["prompt_tokens"] == prompt
    one_word = max(TokenCounter("judge-m").count(w) for w in ("incorrect", "correct"))
    assert judged["output_tokens"] == 4 * SAMPLES * min(one_word, 2)
    assert judged["cost_usd"] == round((prompt * 2 + judged["output_tokens"] * 10) / 1e6, 6)

    res = CliRunner().invoke(main, [*args, "--verify", judge, "--price", "judge-m=2,10"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.stdout.splitlines() if x.startswith("judge "))
    assert f"up to {4 * SAMPLES} HTTP requests" in line and "priced as judge-m" in line
    assert "total cost" in res.stdout
    assert f"up to {SAMPLES} request(s) per row, one per distinct answer" in res.stderr

    res = CliRunner().invoke(main, [*args, "--verify", judge])  # no price for the judge
    assert res.exit_code == 0, res.output
    assert "cost unknown (no price for judge-m)" in res.stdout and "total cost" not in res.stdout


def test_a_judge_without_logprobs_pays_every_sample_at_its_own_price(
    inputs: tuple[Path, Path, list[dict[str, object]]],
) -> None:
    template, _, rows = inputs
    task = load_task(template)
    teacher = estimate(task, rows, "openai:gpt-4o-mini", samples=SAMPLES)
    [spec] = judge_specs("regex:Answer: (\\d+),judge:anthropic:claude-haiku-4-5")
    judged = estimate_judge(spec, task, rows, teacher, PriceTable.default())
    assert judged.requests == 4 * SAMPLES and judged.http_requests == 5 * 4 * SAMPLES  # 5 samples each
    price = PriceTable.default().lookup("claude-haiku-4-5")
    assert price is not None and judged.model == "claude-haiku-4-5"
    assert judged.prompt_tokens == 5 * SAMPLES * _judge_prompt_tokens(template, rows, "claude-haiku-4-5")
    assert judged.cost_usd == pytest.approx(
        (judged.prompt_tokens * price.input + judged.output_tokens * price.output) / 1e6, rel=1e-12
    )
    assert judge_specs("numeric:answer") == [] and judge_specs(None) == []


def test_a_cascade_estimate_counts_each_stage_samples_and_judge(
    inputs: tuple[Path, Path, list[dict[str, object]]],
) -> None:
    """`estimate --cascade A,B --samples N --verify judge:`: every stage asks N answers a
    row and has them judged before a row goes on, so each stage's cost holds its samples
    and the judge's requests over the rows that reach it (both were left out)."""
    template, problems, _ = inputs
    judge = "judge:openai-compatible:judge-m@http://127.0.0.1:9/v1"
    cascade = "openai:gpt-4o-mini,openai:gpt-4o"
    args = [
        *("estimate", str(template), str(problems), "--cascade", cascade),
        *("--escalate-below", "0.8", "--escalation-rate", "0.5"),
    ]
    priced = ["--price", "judge-m=2,10", "--json"]
    res = CliRunner().invoke(main, [*args, "--samples", str(SAMPLES), "--verify", judge, *priced])
    assert res.exit_code == 0, res.output
    stages = json.loads(res.output.strip().splitlines()[-1])["stages"]
    task = load_task(template)
    for stage, teacher, reach in ((stages[0], "openai:gpt-4o-mini", 1.0), (stages[1], "openai:gpt-4o", 0.5)):
        prices = PriceTable.default().with_override("judge-m=2,10")
        alone = estimate(task, _rows(problems), teacher, prices, samples=SAMPLES)
        [spec] = judge_specs(judge)
        judged = estimate_judge(spec, task, _rows(problems), alone, prices)
        assert stage["cost_usd"] == pytest.approx(alone.cost_usd * reach, abs=1e-6)
        assert stage["judge_requests"] == round(4 * SAMPLES * reach)
        assert judged.cost_usd is not None
        assert stage["judge_cost_usd"] == pytest.approx(judged.cost_usd * reach, abs=1e-6)
    plain = CliRunner().invoke(main, [*args, "--json"])
    plain_stages = json.loads(plain.output.strip().splitlines()[-1])["stages"]
    assert plain_stages[0]["cost_usd"] < stages[0]["cost_usd"]  # samples cost more than one answer
    assert "judge_requests" not in plain_stages[0]
    text = CliRunner().invoke(main, [*args, "--samples", str(SAMPLES), "--verify", judge])
    assert f"judge {4 * SAMPLES} requests" in text.stdout


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_asks_the_judge_no_more_than_the_estimate_said(
    inputs: tuple[Path, Path, list[dict[str, object]]], tmp_path: Path
) -> None:
    template, problems, _ = inputs
    with (
        TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as teacher,
        TeacherServer(ServerConfig(responder=ArithmeticJudge(p_sure=0.9))) as judge,
    ):
        spec = f"judge:openai-compatible:judge-m@{judge.url}/v1"
        flags = ["--verify", spec, "--json"]
        res = CliRunner().invoke(
            main,
            ["estimate", str(template), str(problems), "-t", "openai:gpt-4o-mini", "--samples", "3", *flags],
        )
        assert res.exit_code == 0, res.output
        estimated = json.loads(res.output.strip().splitlines()[-1])["judges"][0]["http_requests"]
        assert len(judge.log) == 0  # an estimate sends nothing
        job = Job(
            task=template,
            input=problems,
            teacher="openai-compatible:teacher-m",
            base_url=teacher.url + "/v1",
            api_key="k",
            samples=SAMPLES,
            verify=spec,
            store=tmp_path / "s.sqlite",
            progress=False,
        )
        result = asyncio.run(run_job(job))
        sent = sum(1 for r in judge.log if r.path.endswith("/chat/completions"))
    [report] = result.summary.judges
    assert report["http_requests"] == sent
    assert 0 < sent <= estimated == 4 * SAMPLES
