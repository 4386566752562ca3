"""Money: recorded usage priced exactly, estimates before sending, and the --budget stop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from labeler import Job, run_job
from labeler.cli import main
from labeler.completion import Usage
from labeler.errors import ConfigError
from labeler.estimate import TokenCounter, estimate
from labeler.pricing import PriceTable
from labeler.store import Store
from labeler.task import load_task
from labeler.teachers import make_teacher
from labeler.testing import ServerConfig, TeacherServer

from conftest import SAMPLES, chat_requests

LABELS = ["negative", "positive"]
# USD per 1M tokens: input, output, cached input
OVERRIDE = "teacher-test=2,10,0.5"


def job(server: TeacherServer, tmp_path: Path, **kw: Any) -> Job:
    base: dict[str, Any] = dict(
        task="sentiment",
        input=SAMPLES / "reviews.jsonl",
        teacher="openai-compatible:teacher-test",
        base_url=server.url + "/v1",
        store=tmp_path / "store.sqlite",
        progress=False,
        prices=PriceTable.default().with_override(OVERRIDE),
    )
    base.update(kw)
    return Job(**base)


def test_cost_is_usage_times_the_price(teacher_server: TeacherServer, tmp_path: Path) -> None:
    result = asyncio.run(run_job(job(teacher_server, tmp_path)))
    s = result.summary
    assert s.labeled == 24 and s.prompt_tokens > 0 and s.completion_tokens >= 24
    expected = (
        (s.prompt_tokens - s.cached_tokens) * 2 + s.cached_tokens * 0.5 + s.completion_tokens * 10
    ) / 1e6
    assert s.cost_usd == pytest.approx(expected, rel=1e-9)
    with Store(tmp_path / "store.sqlite", readonly=True) as st:
        stats = st.stats()
    assert stats["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (s.prompt_tokens, s.completion_tokens)


def test_stats_never_counts_an_unpriced_answer_as_zero(teacher_server: TeacherServer, tmp_path: Path) -> None:
    """Answers stored without a price make the store's cost unknown (`null`, "unknown"),
    not $0; once some are priced, what those cost is shown beside how many are not."""

    def stats(*extra: str) -> Any:
        res = CliRunner().invoke(main, ["stats", "--store", str(tmp_path / "store.sqlite"), *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout) if extra else res.stdout

    asyncio.run(run_job(job(teacher_server, tmp_path, prices=PriceTable.default())))
    unpriced = stats("--json")
    assert (unpriced["cost_usd"], unpriced["priced_cost_usd"], unpriced["unpriced_responses"]) == (
        None,
        0,
        24,
    )
    assert "cost             unknown (24 answers without a price)\n" in stats()

    priced = asyncio.run(run_job(job(teacher_server, tmp_path, teacher="openai-compatible:teacher-test-2")))
    assert priced.summary.cost_usd > 0
    mixed = stats("--json")
    assert mixed["cost_usd"] is None and mixed["unpriced_responses"] == 24
    assert mixed["priced_cost_usd"] == pytest.approx(priced.summary.cost_usd, abs=1e-6)
    cost = f"${mixed['priced_cost_usd']:.4f}"
    assert f"cost             unknown: {cost} for 24 priced answers, 24 answers without a price" in stats()


def test_a_run_never_counts_an_unpriced_answer_as_zero(teacher_server: TeacherServer, tmp_path: Path) -> None:
    """`run --json` of a model with no price gives cost_usd null (with the priced part and
    how many answers had none), and the summary says the cost is unknown; a price makes it
    a number again."""
    base = [
        *("run", "sentiment", str(SAMPLES / "reviews.jsonl"), "-t", "openai-compatible:teacher-test"),
        *("--base-url", teacher_server.url + "/v1", "--store", str(tmp_path / "s.sqlite"), "--json"),
    ]
    res = CliRunner().invoke(main, base)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert (summary["cost_usd"], summary["priced_cost_usd"], summary["unpriced"]) == (None, 0, 24)
    told = CliRunner().invoke(main, [*base[:-1], "--store", str(tmp_path / "told.sqlite")])
    assert "cost unknown: 24 paid answers had no price" in told.stderr
    priced = CliRunner().invoke(
        main, [*base, "--store", str(tmp_path / "priced.sqlite"), "--price", OVERRIDE]
    )
    assert priced.exit_code == 0, priced.output
    summary = json.loads(priced.stdout.strip().splitlines()[-1])
    assert summary["unpriced"] == 0 and summary["cost_usd"] == summary["priced_cost_usd"] > 0
    assert "cost unknown" not in priced.stderr


def test_cached_tokens_are_priced_at_the_cached_rate(tmp_path: Path) -> None:
    config = ServerConfig(labels=LABELS, openai_cache_min_tokens=64)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": "word " * 60 + str(i)}) + "\n" for i in range(4)))
    with TeacherServer(config) as srv:
        result = asyncio.run(run_job(job(srv, tmp_path, input=data, concurrency=1)))
    s = result.summary
    assert s.cached_tokens > 0
    full = (s.prompt_tokens * 2 + s.completion_tokens * 10) / 1e6
    assert s.cost_usd == pytest.approx(full - s.cached_tokens * 1.5 / 1e6)


def test_anthropic_cache_reads_and_writes_priced_apart() -> None:
    prices = PriceTable.default()
    p = prices.lookup("claude-haiku-4-5")
    assert p is not None and p.cache_write is not None and p.cached_input is not None
    usage = Usage(prompt_tokens=1000, completion_tokens=10, cached_tokens=800, cache_write_tokens=300)
    cost = prices.cost("claude-haiku-4-5", usage)
    assert cost == pytest.approx(
        (200 * p.input + 800 * p.cached_input + 300 * p.cache_write + 10 * p.output) / 1e6
    )
    assert prices.cost("no-such-model", usage) is None


def test_anthropic_run_records_cache_tokens_and_their_cost(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        j = Job(
            task="sentiment",
            input=SAMPLES / "reviews.jsonl",
            teacher="anthropic:claude-haiku-4-5",
            base_url=srv.url,
            api_key="k",
            teacher_options={"samples": 3},
            store=tmp_path / "s.sqlite",
            progress=False,
        )
        result = asyncio.run(run_job(j))
    s = result.summary
    assert s.labeled == 24 and s.cached_tokens > 0
    with Store(tmp_path / "s.sqlite", readonly=True) as st:
        stats = st.stats()
    assert stats["cost_usd"] == pytest.approx(s.cost_usd, abs=1e-6) and s.cost_usd > 0


# -- estimates ---------------------------------------------------------------------------


def rows(n: int) -> list[dict[str, str]]:
    return [{"text": f"review number {i}, quite good"} for i in range(n)]


def test_estimate_sends_nothing_and_counts_label_outputs_honestly() -> None:
    task = load_task("sentiment")  # max_tokens 2; labels negative/positive
    est = estimate(task, [*rows(10), rows(1)[0]], "openai:gpt-4o-mini")
    assert (est.rows, est.requests, est.http_requests) == (11, 10, 10)  # a duplicate is free
    counter = TokenCounter("gpt-4o-mini")
    longest = max(counter.count("negative"), counter.count("positive"))
    assert est.output_tokens == 10 * min(longest, 2) and not est.output_is_upper_bound
    assert est.max_output_tokens == 10 * 2
    p = PriceTable.default().lookup("gpt-4o-mini")
    assert p is not None and est.cost_usd == pytest.approx(
        (est.prompt_tokens * p.input + est.output_tokens * p.output) / 1e6
    )
    assert est.max_cost_usd is not None and est.max_cost_usd >= est.cost_usd


def test_estimate_of_a_sampled_teacher_pays_every_sample() -> None:
    task = load_task("sentiment")
    plain = estimate(task, rows(4), "openai:gpt-4o-mini")
    sampled = estimate(task, rows(4), "anthropic:claude-haiku-4-5", samples=5)
    assert sampled.http_requests == 20 and sampled.requests == 4
    assert sampled.prompt_tokens == 5 * plain.prompt_tokens
    assert sampled.output_tokens == 5 * plain.output_tokens


def test_estimate_of_free_text_says_it_is_an_upper_bound() -> None:
    task = load_task("instruct")  # max_tokens 512
    est = estimate(task, [{"instruction": "Say hi."}], "anthropic:claude-haiku-4-5")
    assert est.http_requests == 1  # free text is not sampled
    assert est.output_is_upper_bound and est.output_tokens == 512


def test_estimate_with_a_teacher_skips_what_is_stored(teacher_server: TeacherServer, tmp_path: Path) -> None:
    asyncio.run(run_job(job(teacher_server, tmp_path, limit=10)))
    teacher = make_teacher("openai-compatible:teacher-test", base_url=teacher_server.url + "/v1")
    task = load_task("sentiment")
    data = [json.loads(x) for x in (SAMPLES / "reviews.jsonl").read_text().splitlines()]
    with Store(tmp_path / "store.sqlite") as st:
        est = estimate(task, data, teacher, store=st)
    asyncio.run(teacher.aclose())
    assert (est.rows, est.already_stored, est.requests) == (24, 10, 14)


def test_estimate_is_close_to_what_the_server_counts(teacher_server: TeacherServer, tmp_path: Path) -> None:
    """The heuristic counts ~4 characters a token; the test server counts words and marks,
    a different tokenizer, so only the order of magnitude can agree."""
    result = asyncio.run(run_job(job(teacher_server, tmp_path)))
    data = [json.loads(x) for x in (SAMPLES / "reviews.jsonl").read_text().splitlines()]
    est = estimate(load_task("sentiment"), data, "openai-compatible:teacher-test")
    assert 0.6 < est.prompt_tokens / result.summary.prompt_tokens < 1.6


def test_cli_estimate_needs_no_key_and_sends_nothing(teacher_server: TeacherServer, tmp_path: Path) -> None:
    args = [
        "estimate",
        "sentiment",
        str(SAMPLES / "reviews.jsonl"),
        "--teacher",
        "anthropic:claude-haiku-4-5",
    ]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output.strip().splitlines()[-1])
    assert data["rows"] == 24 and data["http_requests"] == 24 * 5 and data["cost_usd"] > 0
    res = CliRunner().invoke(main, [*args, "--samples", "2"])
    assert res.exit_code == 0 and "48 HTTP requests" in res.output and "$" in res.output
    res = CliRunner().invoke(
        main,
        [
            "estimate",
            "sentiment",
            str(SAMPLES / "reviews.jsonl"),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            teacher_server.url + "/v1",
        ],
    )
    assert res.exit_code == 0 and "unknown" in res.output and "--price" in res.output
    assert chat_requests(teacher_server) == 0


# -- budget ------------------------------------------------------------------------------


def test_budget_stops_new_requests_and_a_rerun_continues(tmp_path: Path) -> None:
    """$0.001 a token: each request's worst case is ~$0.09, so $0.5 buys about five.
    The budget stops new requests, what is in flight lands and is stored, the exit code
    is 5, and reruns continue where it stopped without sending anything twice."""
    with TeacherServer(ServerConfig(labels=LABELS, latency_s=0.2)) as srv:
        args = [
            "run",
            "sentiment",
            str(SAMPLES / "reviews.jsonl"),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            srv.url + "/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--price",
            "teacher-test=1000,1000",
            "--concurrency",
            "4",
            "--quiet",
        ]
        runner = CliRunner()
        first = runner.invoke(main, [*args, "--budget", "0.5"])
        assert first.exit_code == 5, first.output
        assert "budget stopped new requests" in first.output
        sent = chat_requests(srv)
        with Store(tmp_path / "s.sqlite", readonly=True) as st:
            stored = st.stats()
        assert 1 <= sent < 24 and stored["responses"] == sent  # in flight landed, all stored
        assert stored["cost_usd"] <= 0.5 and stored["failed"] == 0

        second = runner.invoke(main, [*args, "--budget", "0.5", "--json"])
        assert second.exit_code == 5
        summary = json.loads(second.output.strip().splitlines()[-1])
        assert summary["cached"] == sent and summary["labeled"] >= 1
        assert chat_requests(srv) == sent + summary["labeled"]  # nothing sent twice

        last = runner.invoke(main, [*args, "--json"])
        assert last.exit_code == 0
        assert chat_requests(srv) == 24


def test_budget_needs_a_price(teacher_server: TeacherServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--price"):
        asyncio.run(run_job(job(teacher_server, tmp_path, prices=None, budget_usd=1.0)))
    assert chat_requests(teacher_server) == 0
