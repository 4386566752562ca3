"""Teacher cascades over real HTTP: two teacher servers, the cheap one first.

Server A (the cheap stage) is sure of some rows, unsure of others, answers some with no
label at all and refuses some outright; server B (the dear stage) is sure of everything.
Each server's request log is the record of what each stage was asked.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
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
from labeler.pricing import PriceTable
from labeler.testing import Reply, ScriptedResponder, ServerConfig, TeacherServer

from conftest import chat_requests, sentiment_reply

# max_prob of stage A's answer per row kind; "bad" names no label, "fail" gets a 400
SURE, UNSURE, HALF = 0.97, 0.6, 0.8
KINDS = {"firm": 6, "unsure": 4, "half": 3, "bad": 2, "fail": 2}


def _texts() -> list[str]:
    return [f"{kind}-row{i:02d}" for kind, n in KINDS.items() for i in range(n)]


def _stage_a() -> ServerConfig:
    rules = [
        ("firm-", sentiment_reply(SURE)),
        ("unsure-", sentiment_reply(UNSURE)),
        ("half-", sentiment_reply(HALF)),
        ("bad-", Reply("I cannot tell", tokens=["I", " cannot", " tell"])),
    ]
    return ServerConfig(model="small", responder=ScriptedResponder(rules), status_for=[("fail-", 400)])


def _stage_b() -> ServerConfig:
    # sure of everything, and of the opposite label: a row's export shows who answered
    return ServerConfig(model="big", responder=ScriptedResponder([], default=lambda v: sentiment_reply(0.01)))


@pytest.fixture
def servers() -> Iterator[tuple[TeacherServer, TeacherServer]]:
    with TeacherServer(_stage_a()) as a, TeacherServer(_stage_b()) as b:
        yield a, b


def _asked(server: TeacherServer, texts: list[str] | None = None) -> list[str]:
    """The rows a server was asked about, in order (one entry per HTTP request)."""
    out = []
    for r in server.log:
        if r.path.endswith("/chat/completions"):
            out.extend(t for t in texts or _texts() if t in r.prompt)
    return out


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": t, "text": t}) + "\n" for t in _texts()))
    return path


def _cascade(a: TeacherServer, b: TeacherServer) -> str:
    return f"openai-compatible:small@{a.url}/v1,openai-compatible:big@{b.url}/v1"


def _job(tmp_path: Path, a: TeacherServer, b: TeacherServer, below: str | float, **kw: object) -> Job:
    kw.setdefault("cascade", _cascade(a, b))
    return Job(
        task="sentiment",
        input=_input(tmp_path),
        teacher="unused:x",
        escalate_below=below,
        store=tmp_path / "s.sqlite",
        out=tmp_path / "out",
        progress=False,
        max_attempts=1,
        **kw,
    )  # type: ignore[arg-type]


def _rows(out: Path) -> dict[str, dict]:
    ds = datasets.load_from_disk(str(out))
    return {r["id"]: r for r in (ds["train"] if isinstance(ds, datasets.DatasetDict) else ds)}


def test_escalation_by_threshold_asks_the_second_stage_exactly_the_unsure_rows(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    prices = PriceTable.default().with_override("small=1,2").with_override("big=30,60")
    result = asyncio.run(run_job(_job(tmp_path, a, b, 0.9, prices=prices)))
    # Stage A: every row once. Stage B: unsure, half, bad (invalid) and fail (400) rows.
    assert sorted(_asked(a)) == sorted(_texts())
    escalated = sorted(t for t in _texts() if not t.startswith("firm-"))
    assert sorted(_asked(b)) == escalated
    s = result.summary
    assert s.outcome == "ok", s.to_dict()
    assert [(st["stage"], st["rows"], st["escalated"]) for st in s.stages] == [(1, 17, 11), (2, 11, 0)]
    assert s.stages[0]["failed"] == 2 and s.failed == 0  # failed at A, answered by B
    assert (s.requests, s.labeled) == (17 + 11, 15 + 11)  # the two 400s were sent, not answered

    rows = _rows(tmp_path / "out")
    assert len(rows) == 17
    for text, r in rows.items():
        if text.startswith("firm-"):
            assert (r["cascade_stage"], r["teacher"]) == (1, "openai-compatible:small")
            assert r["soft_label"] == pytest.approx([1 - SURE, SURE])
            assert [st["stage"] for st in r["cascade"]] == [1]
        else:
            assert (r["cascade_stage"], r["teacher"]) == (2, "openai-compatible:big")
            assert r["soft_label"] == pytest.approx([0.99, 0.01])
            trail = {st["stage"]: st for st in r["cascade"]}
            assert trail[2]["label"] == "negative"
            assert trail[2]["soft_label"] == pytest.approx([0.99, 0.01])
            if text.startswith("fail-"):
                assert 1 not in trail  # the first stage never answered it
            elif text.startswith("bad-"):
                assert trail[1]["valid"] is False and trail[1]["label"] is None
            else:
                assert trail[1]["label"] == "positive"
                assert trail[1]["confidence"] == pytest.approx(UNSURE if text.startswith("unsure-") else HALF)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| rows answered by cascade stage 1: openai-compatible:small | 6 |" in card
    assert "| rows answered by cascade stage 2: openai-compatible:big | 11 |" in card
    # per stage: what it answered and what that cost, as the run reported it
    report = json.loads((tmp_path / "out" / "labeler_export.json").read_text())["report"]
    used = {t["teacher"]: t for t in report["teachers"]}
    small, big = used["stage 1: openai-compatible:small"], used["stage 2: openai-compatible:big"]
    assert (small["rows"], big["rows"]) == (15, 11)
    assert small["cost_usd"] == pytest.approx(s.stages[0]["cost_usd"], abs=1e-6)
    assert big["cost_usd"] == pytest.approx(s.stages[1]["cost_usd"], abs=1e-6)
    assert big["cost_usd"] > small["cost_usd"] > 0
    assert f"| stage 2: openai-compatible:big | 11 | {big['prompt_tokens']} |" in card


def test_a_stage_without_a_price_costs_unknown_never_zero(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    """The second stage's model has no price: its stage, the run and the card's teacher
    table say its cost is unknown; the priced first stage keeps its figure."""
    a, b = servers
    prices = PriceTable.default().with_override("small=1,2")
    s = asyncio.run(run_job(_job(tmp_path, a, b, 0.9, prices=prices))).summary
    assert s.stages[0]["cost_usd"] > 0 and s.stages[1]["cost_usd"] is None
    assert s.unpriced == 11 and s.to_dict()["cost_usd"] is None
    assert s.to_dict()["priced_cost_usd"] == pytest.approx(s.stages[0]["cost_usd"], abs=1e-6)
    report = json.loads((tmp_path / "out" / "labeler_export.json").read_text())["report"]
    used = {t["teacher"]: t for t in report["teachers"]}
    assert used["stage 2: openai-compatible:big"]["cost_usd"] is None
    card = (tmp_path / "out" / "README.md").read_text()
    row = "| stage 2: openai-compatible:big | 11 |"
    big = next(line for line in card.splitlines() if line.startswith(row))
    assert big.endswith("| unknown |")


def test_a_threshold_change_asks_only_rows_no_stage_has_answered(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    asyncio.run(run_job(_job(tmp_path, a, b, 0.9)))
    asked_a, asked_b = len(_asked(a)), len(_asked(b))
    # Lower: half rows (0.8) now stop at A; nothing is asked of anyone.
    asyncio.run(run_job(_job(tmp_path, a, b, 0.7)))
    assert (len(_asked(a)), len(_asked(b))) == (asked_a, asked_b)
    rows = _rows(tmp_path / "out")
    assert rows["half-row00"]["cascade_stage"] == 1
    assert rows["half-row00"]["soft_label"] == pytest.approx([1 - HALF, HALF])
    # Higher: sure rows (0.97) now escalate; B is asked those six, A nothing.
    asyncio.run(run_job(_job(tmp_path, a, b, 0.98)))
    assert len(_asked(a)) == asked_a
    assert sorted(_asked(b)[asked_b:]) == sorted(t for t in _texts() if t.startswith("firm-"))
    assert all(r["cascade_stage"] == 2 for r in _rows(tmp_path / "out").values())


def test_margin_and_entropy_measures(servers: tuple[TeacherServer, TeacherServer], tmp_path: Path) -> None:
    a, b = servers
    # margin of the unsure rows: 0.2, of the half rows 0.6, of the sure rows 0.94
    asyncio.run(run_job(_job(tmp_path, a, b, 0.5, escalate_on="margin")))
    assert sorted(set(_asked(b))) == sorted(
        t for t in _texts() if t.split("-")[0] in ("unsure", "bad", "fail")
    )
    spec = CascadeSpec.parse("x:a,y:b", 0.5, "entropy")
    assert spec.thresholds == (0.5,)


def test_a_cascade_of_three_appends_a_stage_without_relabeling(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    asyncio.run(run_job(_job(tmp_path, a, b, 0.9)))
    before_a, before_b = len(_asked(a)), len(_asked(b))
    with TeacherServer(ServerConfig(model="huge", labels=["negative", "positive"])) as c:
        job = _job(tmp_path, a, b, "0.9,1.0", cascade=f"{_cascade(a, b)},openai-compatible:huge@{c.url}/v1")
        result = asyncio.run(run_job(job))
        # A and B: nothing new; C: what B passed on (everything: B's 0.99 < 1.0)
        assert (len(_asked(a)), len(_asked(b))) == (before_a, before_b)
        assert chat_requests(c) == 11
    # stage 1: 15 answers read back, and its two stored 400s escalate again unasked
    assert [st["cached"] for st in result.summary.stages] == [15, 11, 0]
    assert result.summary.stages[0]["failed"] == 2


def test_bad_cascade_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least two"):
        CascadeSpec.parse("openai:x", 0.9)
    with pytest.raises(ConfigError, match="needs --escalate-below"):
        CascadeSpec.parse("openai:x,openai:y", None)
    with pytest.raises(ConfigError, match="3 stages take one threshold or 2"):
        CascadeSpec.parse("a:x,b:y,c:z", "0.9,0.8,0.7")
    with pytest.raises(ConfigError, match="max_prob threshold must be in"):
        CascadeSpec.parse("a:x,b:y", 1.5)
    with pytest.raises(ConfigError, match="--escalate-on 'wrong'"):
        CascadeSpec.parse("a:x,b:y", 0.5, "wrong")
    with pytest.raises(ConfigError, match="expected numbers"):
        CascadeSpec.parse("a:x,b:y", "high")
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(_input(tmp_path)),
            "--cascade",
            "openai:a,openai:b",
            "--escalate-below",
            "2",
        ],
    )
    assert res.exit_code != 0
    assert "--escalate-below 2: a max_prob threshold must be in [0, 1]" in res.output


def test_the_cli_runs_a_cascade_and_prints_each_stage(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(_input(tmp_path)),
            "--cascade",
            _cascade(a, b),
            "--escalate-below",
            "0.9",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--quiet",
            "--max-attempts",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert [st["rows"] for st in summary["stages"]] == [17, 11]
    assert len(_asked(b)) == 11
    common = [
        "sentiment",
        str(_input(tmp_path)),
        "--cascade",
        _cascade(a, b),
        "--escalate-below",
        "0.9",
        "--store",
        str(tmp_path / "s.sqlite"),
    ]
    res = CliRunner().invoke(main, ["run", *common, "--quiet"])
    assert res.exit_code == 0, res.output
    assert "failed (http_400)" in res.output and "[cascade: passed on to stage 2]" in res.output
    assert "stage 2 openai-compatible:big: 11 rows, 0 labeled, 11 cached" in res.output
    res = CliRunner().invoke(main, ["export", *common, "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert len(_asked(b)) == 11  # a rerun and an export ask nobody
    assert {r["cascade_stage"] for r in _rows(tmp_path / "o").values()} == {1, 2}


@pytest.mark.slow
def test_kill_9_mid_cascade_resumes_with_nothing_paid_twice(tmp_path: Path) -> None:
    """Killed while stage 2 is under way: the rerun asks stage 1 nothing and stage 2 only
    what it had not answered (at most the requests in flight at the kill)."""
    n = 60
    texts = [f"{'firm' if i % 3 == 0 else 'unsure'}-row{i:02d}" for i in range(n)]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": t, "text": t}) + "\n" for t in texts))
    first = ServerConfig(
        model="small",
        responder=ScriptedResponder(
            [("unsure-", sentiment_reply(UNSURE))], default=lambda v: sentiment_reply(SURE)
        ),
    )
    with TeacherServer(first) as a, TeacherServer(_stage_b()) as b:
        b.config.latency_s = 0.05
        args = [
            sys.executable,
            "-m",
            "labeler.cli",
            "run",
            "sentiment",
            str(data),
            "--cascade",
            _cascade(a, b),
            "--escalate-below",
            "0.9",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--concurrency",
            "4",
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while chat_requests(b) < 12 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        asked_a_before = chat_requests(a)
        assert asked_a_before == n
        asked_b_before = len(_asked(b, texts))
        assert 12 <= asked_b_before < 40
        b.config.latency_s = 0.0
        final = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
        assert chat_requests(a) == n  # stage 1 is never asked again
        per_row: dict[str, int] = {}
        for t in _asked(b, texts):
            per_row[t] = per_row.get(t, 0) + 1
        unsure = {t for t in texts if t.startswith("unsure-")}
        assert set(per_row) == unsure
        assert sum(per_row.values()) - len(unsure) <= 4  # only what was in flight at the kill
    rows = _rows(tmp_path / "out")
    assert {r["cascade_stage"] for t, r in rows.items() if t in unsure} == {2}
    assert {r["cascade_stage"] for t, r in rows.items() if t not in unsure} == {1}


def test_export_replays_the_cascade_from_the_store(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    """`labeler export` of a cascade reads every stage's stored answers, asks nobody."""
    a, b = servers
    asyncio.run(run_job(_job(tmp_path, a, b, 0.9)))
    sent = len(a.log) + len(b.log)
    from labeler.job import export_job

    job = _job(tmp_path, a, b, 0.9, export=ExportOptions(kind="classification"))
    job.out = tmp_path / "cls"
    report = export_job(job)
    assert report.exported == 17 and len(a.log) + len(b.log) == sent
    assert report.stages == {
        "cascade stage 1: openai-compatible:small": 6,
        "cascade stage 2: openai-compatible:big": 11,
    }
    labels = {i: r["label"] for i, r in _rows(tmp_path / "cls").items()}
    assert labels["firm-row00"] == 1 and labels["unsure-row00"] == 0  # ClassLabel indices


def test_a_refresh_config_declares_a_cascade(tmp_path: Path) -> None:
    from labeler.refresh import RefreshConfig

    path = tmp_path / "refresh.yaml"
    path.write_text(
        "task: sentiment\ninput: in.jsonl\nteacher: unused:x\nout: out\n"
        "cascade: [local:smollm2-135m, 'openai-compatible:big@http://h:1/v1']\n"
        "escalate_below: 0.85\nescalate_on: margin\n"
    )
    spec = RefreshConfig.load(path).job(tmp_path / "v1").cascade_spec()
    assert spec is not None and spec.thresholds == (0.85,) and spec.measure == "margin"
    assert [(s.teacher, s.base_url) for s in spec.stages] == [
        ("local:smollm2-135m", None),
        ("openai-compatible:big", "http://h:1/v1"),
    ]
    path.write_text(path.read_text().replace("0.85", "[0.9, 0.8]"))
    with pytest.raises(ConfigError, match="2 stages take one threshold, got 2"):
        RefreshConfig.load(path).job(tmp_path / "v1")


@pytest.fixture
def gold_run(tmp_path: Path) -> Iterator[tuple[TeacherServer, TeacherServer, list[str]]]:
    """60 gold rows: stage A is right and sure on 40, wrong and unsure on 20; B says
    negative to everything (right on those 20)."""
    texts = [f"firm-g{i:02d}" for i in range(40)] + [f"unsure-g{i:02d}" for i in range(20)]
    path = tmp_path / "gold.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": t, "text": t, "gold": "positive" if t.startswith("firm") else "negative"})
            + "\n"
            for t in texts
        )
    )
    with TeacherServer(_stage_a()) as a, TeacherServer(_stage_b()) as b:
        args = [
            "sentiment",
            str(path),
            "--cascade",
            _cascade(a, b),
            "--escalate-below",
            "0.9",
            "--store",
            str(tmp_path / "s.sqlite"),
        ]
        yield a, b, args


def test_eval_scores_each_stage_and_the_cascade_and_suggests_a_guaranteed_threshold(
    gold_run: tuple[TeacherServer, TeacherServer, list[str]],
) -> None:
    a, b, args = gold_run
    assert CliRunner().invoke(main, ["run", *args, "--quiet"]).exit_code == 0
    sent = len(a.log) + len(b.log)
    res = CliRunner().invoke(
        main,
        ["eval", *args, "--gold", "gold", "--json", "--target-accuracy", "0.9", "--target-accuracy", "0.95"],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.splitlines()[-1])
    assert len(a.log) + len(b.log) == sent  # eval asks nobody
    first, second = report["stages"]
    assert (first["rows"], first["accuracy"], first["escalation_rate"]) == (
        60,
        pytest.approx(40 / 60),
        pytest.approx(20 / 60),
    )
    assert (second["rows"], second["accuracy"]) == (20, 1.0)
    assert report["cascade"]["rows"] == 60 and report["cascade"]["accuracy"] == 1.0
    at_90, at_95 = report["suggestions"]
    # 40 right of 40 kept: a 95% lower bound of 0.025 ** (1 / 40) = 0.912 reaches 0.9 only
    t = at_90["threshold"]
    assert t["threshold"] == pytest.approx(SURE) and t["kept"] == 40
    assert t["accuracy_lower_bound"] == pytest.approx(0.025 ** (1 / 40), abs=1e-6)
    assert at_95["threshold"] is None
    res = CliRunner().invoke(main, ["eval", *args, "--gold", "gold", "--target-accuracy", "0.9"])
    assert "stage 1: for accuracy 0.9 escalate max_prob below 0.9700: keeps 67%" in res.output


def test_estimate_prices_a_cascade_from_measured_or_given_escalation(
    gold_run: tuple[TeacherServer, TeacherServer, list[str]],
    tmp_path: Path,
) -> None:
    *_, args = gold_run
    prices = ["--price", "small=1,2", "--price", "big=30,60"]

    def cost(extra: list[str]) -> dict:
        res = CliRunner().invoke(main, ["estimate", *args, *prices, "--json", *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.output.splitlines()[-1])

    def alone(teacher: str) -> float:
        res = CliRunner().invoke(main, ["estimate", *args[:2], "--teacher", teacher, *prices, "--json"])
        return json.loads(res.output.splitlines()[-1])["cost_usd"]

    small, big = alone("openai-compatible:small"), alone("openai-compatible:big")
    res = CliRunner().invoke(main, ["estimate", *args, *prices])
    assert res.exit_code != 0 and "no stored answers" in res.output and "--escalation-rate" in res.output
    given = cost(["--escalation-rate", "0.5"])
    assert given["cost_usd"] == pytest.approx(small + big / 2, abs=1e-6)
    assert given["last_alone_usd"] == pytest.approx(big, abs=1e-6)
    assert CliRunner().invoke(main, ["run", *args, "--quiet"]).exit_code == 0
    measured = cost([])
    assert measured["stages"][0]["escalation_rate"] == pytest.approx(20 / 60)
    assert measured["stages"][0]["rate_source"] == "measured on 60 stored answers"
    assert measured["cost_usd"] == pytest.approx(small + big / 3, abs=1e-6)


def test_batch_stages_pass_on_what_their_stored_answers_say(tmp_path: Path) -> None:
    """With --batch each stage goes through the batch API; --no-wait returns pending at
    stage 1, and the next run collects it, submits stage 2 and exports."""
    a_cfg, b_cfg = _stage_a(), _stage_b()
    a_cfg.batch_speed_s = b_cfg.batch_speed_s = 0.2
    with TeacherServer(a_cfg) as a, TeacherServer(b_cfg) as b:
        job = _job(tmp_path, a, b, 0.9, batch=True, no_wait=True)
        first = asyncio.run(run_job(job))
        assert first.summary.outcome == "pending" and first.export is None
        assert [(st["stage"], st["requests"]) for st in first.summary.stages] == [(1, 17)]
        done = asyncio.run(run_job(_job(tmp_path, a, b, 0.9, batch=True)))
        assert done.summary.outcome == "ok", done.summary.to_dict()
        assert [(st["rows"], st["requests"], st["escalated"]) for st in done.summary.stages] == [
            (17, 0, 11),
            (11, 11, 0),
        ]  # A's batch collected, B asked the 11 only
        assert done.summary.stages[0]["failed"] == 2 and done.summary.failed == 0
    rows = _rows(tmp_path / "out")
    assert {t for t, r in rows.items() if r["cascade_stage"] == 1} == {
        t for t in _texts() if t.startswith("firm-")
    }
