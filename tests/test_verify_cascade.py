"""`--verify` in a cascade over real HTTP: a row whose answers all fail verification goes
on to the next teacher, as an unsure one does, and the export replays the same choice;
and `--samples`/`--verify`/`--keep` in a refresh config (`verify_keep`, `keep` being the
versions a refresh keeps).

Two test servers: a cheap teacher right with probability 0.3 per sampled answer and a
dear one always right (`ArithmeticResponder`), so which rows escalate is known in
advance from `right(question, sample)`.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import datasets
import pytest
from arithmetic_tasks import solve_template

from labeler import Job, run_job
from labeler.job import export_job
from labeler.testing import ArithmeticJudge, ArithmeticResponder, ServerConfig, TeacherServer

TEMPLATE = solve_template("arith", soft_targets=True)
ROWS = 16
SAMPLES = 2
CHEAP = ArithmeticResponder(p_correct=0.3)


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
            a, b = 31 + 11 * i, 7 + 2 * i
            f.write(json.dumps({"id": f"p{i}", "question": f"What is {a} + {b}?", "answer": a + b}) + "\n")
    return path


def _servers() -> tuple[TeacherServer, TeacherServer]:
    cheap = TeacherServer(ServerConfig(responder=CHEAP))
    dear = TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=1.0)))
    return cheap, dear


def _asked(srv: TeacherServer) -> int:
    return sum(1 for r in srv.log if r.path.endswith("/messages"))


def _job(arith: Path, problems: Path, cheap: TeacherServer, dear: TeacherServer, tmp_path: Path, **kw) -> Job:
    return Job(
        task=arith,
        input=problems,
        cascade=f"anthropic:cheap@{cheap.url},anthropic:dear@{dear.url}",
        escalate_below=0.9,
        api_key="k",
        samples=SAMPLES,
        store=tmp_path / "s.sqlite",
        out=kw.pop("out", tmp_path / "out"),
        progress=False,
        **kw,
    )


def _all_wrong(problems: Path) -> set[str]:
    """The rows none of whose cheap answers is right: those the cascade must pass on."""
    out = set()
    for line in problems.open():
        row = json.loads(line)
        if not any(CHEAP.right(row["question"], k) for k in range(SAMPLES)):
            out.add(row["id"])
    return out


def _stated(answer: str) -> int:
    return int(re.findall(r"Answer: (-?\d+)", answer)[-1])


def test_a_row_whose_answers_all_fail_goes_to_the_next_teacher(
    arith: Path, problems: Path, tmp_path: Path
) -> None:
    failing = _all_wrong(problems)
    assert 0 < len(failing) < ROWS  # the draw gives both kinds of row
    cheap, dear = _servers()
    with cheap, dear:
        plain = asyncio.run(run_job(_job(arith, problems, cheap, dear, tmp_path, out=None)))
        assert (_asked(cheap), _asked(dear)) == (ROWS * SAMPLES, 0)  # a text answer never escalates
        assert plain.summary.stages[0]["escalated"] == 0
        result = asyncio.run(run_job(_job(arith, problems, cheap, dear, tmp_path, verify="numeric:answer")))
        # stage 1's answers are stored: only the failing rows are asked again, of stage 2
        assert (_asked(cheap), _asked(dear)) == (ROWS * SAMPLES, len(failing) * SAMPLES)
        first, second = result.summary.stages
        assert first["escalated"] == len(failing) and second["rows"] == len(failing)
        assert result.summary.verification["rows_with_a_pass"] == ROWS  # stage 2 is right
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        gold = {r["id"]: r["answer"] for r in map(json.loads, problems.open())}
        for row in ds:
            assert row["cascade_stage"] == (2 if row["id"] in failing else 1), row["id"]
            assert any(_stated(v["text"]) == gold[row["id"]] for v in row["verdicts"])
        again = asyncio.run(run_job(_job(arith, problems, cheap, dear, tmp_path, verify="numeric:answer")))
        assert (_asked(cheap), _asked(dear)) == (ROWS * SAMPLES, len(failing) * SAMPLES)
        assert again.summary.verification["cached"] == again.summary.verification["answers"]
        report = export_job(
            _job(arith, problems, cheap, dear, tmp_path, out=tmp_path / "again", verify="numeric:answer")
        )
        assert report.stages == {
            "cascade stage 1: anthropic:cheap": ROWS - len(failing),
            "cascade stage 2: anthropic:dear": len(failing),
        }
        assert (_asked(cheap), _asked(dear)) == (ROWS * SAMPLES, len(failing) * SAMPLES)


def test_a_judge_in_a_cascade_judges_each_stage_before_it_passes_rows_on(
    arith: Path, problems: Path, tmp_path: Path
) -> None:
    failing = _all_wrong(problems)
    cheap, dear = _servers()
    with cheap, dear, TeacherServer(ServerConfig(responder=ArithmeticJudge())) as judge:
        spec = f"judge:openai-compatible:judge-m@{judge.url}/v1"
        result = asyncio.run(run_job(_job(arith, problems, cheap, dear, tmp_path, verify=spec)))
        assert (_asked(cheap), _asked(dear)) == (ROWS * SAMPLES, len(failing) * SAMPLES)
        judged = sum(1 for r in judge.log if r.path.endswith("/chat/completions"))
        # stage 1's answers are judged before it passes rows on; the exported answers
        # (stage 2's for the rows it answered) after the last stage
        gated, final = result.summary.judges
        assert gated["stage"] == 1 and gated["answers"] == ROWS * SAMPLES
        assert "stage" not in final and final["answers"] == ROWS * SAMPLES
        # judged at stage 1 (and a stage-2 answer the same as another of its row)
        assert final["cached"] >= (ROWS - len(failing)) * SAMPLES
        assert final["labeled"] + final["cached"] == ROWS * SAMPLES
        assert gated["requests"] + final["requests"] == judged
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        for row in ds:
            assert row["cascade_stage"] == (2 if row["id"] in failing else 1), row["id"]
        # the export counts each stage's answers once, though the judge read them too
        assert [t["rows"] for t in result.export.teachers] == [ROWS, len(failing)]
        again = asyncio.run(run_job(_job(arith, problems, cheap, dear, tmp_path, verify=spec)))
        assert sum(1 for r in judge.log if r.path.endswith("/chat/completions")) == judged
        assert (_asked(cheap), _asked(dear)) == (ROWS * SAMPLES, len(failing) * SAMPLES)
        assert all(j["requests"] == 0 for j in again.summary.judges)


def _refresh_config(tmp_path: Path, teacher: TeacherServer, **changes: object) -> Path:
    import yaml

    cfg: dict[str, object] = {
        "task": "arith.yaml",
        "input": "problems.jsonl",
        "teacher": "anthropic:claude-haiku-4-5",
        "base_url": teacher.url,
        "store": "state/s.sqlite",
        "out": "datasets/solved",
        "keep": 2,
        "samples": SAMPLES,
        "verify": "numeric:answer",
        "export": {"kind": "sft"},
    }
    cfg.update(changes)
    path = tmp_path / "refresh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_refresh_config_keeps_versions_with_keep_and_answers_with_verify_keep(
    arith: Path, problems: Path, tmp_path: Path
) -> None:
    from labeler.errors import ConfigError
    from labeler.refresh import RefreshConfig

    with TeacherServer(ServerConfig(responder=CHEAP)) as srv:
        cfg = RefreshConfig.load(_refresh_config(tmp_path, srv, verify_keep="best"))
        assert cfg.keep == 2
        job = cfg.job(tmp_path / "v1")
        assert (job.keep, job.export.keep, job.samples) == ("best", "best", SAMPLES)
        # `keep` counts versions; it never chose answers
        job = RefreshConfig.load(_refresh_config(tmp_path, srv)).job(tmp_path / "v1")
        assert job.export.keep == "all"
        with pytest.raises(ConfigError, match=r"refresh.yaml: keep must be int, got 'best'"):
            RefreshConfig.load(_refresh_config(tmp_path, srv, keep="best"))
        with pytest.raises(ConfigError, match=r"verify_keep must be str or int, got 1.5"):
            RefreshConfig.load(_refresh_config(tmp_path, srv, verify_keep=1.5))


def test_a_refresh_samples_verifies_and_keeps_the_best_answers(
    arith: Path, problems: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labeler.refresh import RefreshConfig, refresh

    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    gold = {r["id"]: r["answer"] for r in map(json.loads, problems.open())}
    with TeacherServer(ServerConfig(responder=CHEAP)) as srv:
        config = _refresh_config(tmp_path, srv, verify_keep="best", id_field="id")
        first = refresh(RefreshConfig.load(config))
        assert first.outcome == "ok", first
        assert _asked(srv) == ROWS * SAMPLES
        ds = datasets.load_from_disk(str(tmp_path / "datasets" / "solved" / "current"))
        passing = ROWS - len(_all_wrong(problems))
        assert len(ds) == passing and len(set(ds["id"])) == passing  # best: one per row
        for row in ds:
            assert _stated(row["completion"][0]["content"]) == gold[row["id"]]
        again = refresh(RefreshConfig.load(config))
        assert again.outcome == "ok" and _asked(srv) == ROWS * SAMPLES
