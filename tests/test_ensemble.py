"""Teacher ensembles over real HTTP: two teacher servers answer every row at once."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from labeler import Job, run_job
from labeler.cli import main
from labeler.ensemble import EnsembleSpec
from labeler.errors import ConfigError
from labeler.testing import Reply, ScriptedResponder, ServerConfig, TeacherServer

from conftest import chat_requests, sentiment_reply

TEXTS = [f"row{i:02d}" for i in range(8)] + ["broken-row"]


def _p(text: str, member: str) -> float:
    """Each member's P(positive) for a row: they disagree, by different amounts."""
    i = int(text[3:5]) if text.startswith("row") else 0
    return 0.55 + 0.05 * i if member == "a" else 0.35 - 0.03 * i


def _config(member: str, **kw: object) -> ServerConfig:
    def respond(view: object) -> Reply:
        text = next((t for t in TEXTS if t in view.prompt), "row00")  # type: ignore[attr-defined]
        return sentiment_reply(_p(text, member))

    return ServerConfig(model=f"member-{member}", responder=ScriptedResponder([], respond), **kw)  # type: ignore[arg-type]


@pytest.fixture
def servers() -> Iterator[tuple[TeacherServer, TeacherServer]]:
    with (
        TeacherServer(_config("a", status_for=[("broken-", 400)], latency_s=0.05)) as a,
        TeacherServer(_config("b", latency_s=0.05)) as b,
    ):
        yield a, b


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": t, "text": t}) + "\n" for t in TEXTS))
    return path


def _members(a: TeacherServer, b: TeacherServer, wa: str = "", wb: str = "") -> str:
    return f"openai-compatible:member-a@{a.url}/v1{wa},openai-compatible:member-b@{b.url}/v1{wb}"


def _run(tmp_path: Path, ensemble: str, out: str = "out", **kw: object) -> dict[str, dict]:
    result = asyncio.run(
        run_job(
            Job(
                task="sentiment",
                input=_input(tmp_path),
                teacher="unused:x",
                ensemble=ensemble,
                store=tmp_path / "s.sqlite",
                out=tmp_path / out,
                progress=False,
                max_attempts=1,
                **kw,
            )
        )
    )  # type: ignore[arg-type]
    assert result.summary.outcome == "ok", result.summary.to_dict()
    ds = datasets.load_from_disk(str(tmp_path / out))
    return {r["id"]: r for r in (ds["train"] if isinstance(ds, datasets.DatasetDict) else ds)}


def test_the_soft_label_is_the_mean_of_the_members(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    rows = _run(tmp_path, _members(a, b))
    assert chat_requests(a) == chat_requests(b) == len(TEXTS)  # every member, every row
    for text in TEXTS[:-1]:
        r = rows[text]
        members = {m["member"]: m for m in r["ensemble"]}
        mean = [(x + y) / 2 for x, y in zip(members[1]["soft_label"], members[2]["soft_label"], strict=True)]
        assert r["soft_label"] == pytest.approx(mean, abs=1e-9)
        pa, pb = _p(text, "a"), _p(text, "b")
        assert r["soft_label"][1] == pytest.approx((pa + pb) / 2, abs=1e-9)
        assert r["soft_label_source"] == "ensemble"
        # agreement: the share of members naming the ensemble's label
        label = r["label"]
        named = [m["label"] for m in r["ensemble"]]
        assert r["agreement"] == pytest.approx(
            named.count(datasets.load_from_disk(str(tmp_path / "out")).features["label"].int2str(label)) / 2
        )
    # A member that fails a row leaves the other's answer standing, and says who answered.
    broken = rows["broken-row"]
    assert [m["teacher"] for m in broken["ensemble"]] == ["openai-compatible:member-b"]
    assert broken["soft_label"] == pytest.approx(broken["ensemble"][0]["soft_label"], abs=1e-9)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| rows answered by ensemble member 1: openai-compatible:member-a | 8 |" in card
    assert "| rows answered by ensemble member 2: openai-compatible:member-b | 9 |" in card
    assert "| member 1: openai-compatible:member-a | 8 |" in card  # the Teachers table


def test_weights_and_product_of_experts(servers: tuple[TeacherServer, TeacherServer], tmp_path: Path) -> None:
    a, b = servers
    rows = _run(tmp_path, _members(a, b, "=3"), out="weighted")
    pa, pb = _p("row04", "a"), _p("row04", "b")
    assert rows["row04"]["soft_label"][1] == pytest.approx((3 * pa + pb) / 4, abs=1e-9)
    sent = chat_requests(a) + chat_requests(b)
    rows = _run(tmp_path, _members(a, b), out="poe", ensemble_combine="product")
    assert chat_requests(a) + chat_requests(b) == sent  # a new combination asks nobody
    pos, neg = math.sqrt(pa * pb), math.sqrt((1 - pa) * (1 - pb))
    assert rows["row04"]["soft_label"][1] == pytest.approx(pos / (pos + neg), abs=1e-9)


def test_members_answer_at_once(servers: tuple[TeacherServer, TeacherServer], tmp_path: Path) -> None:
    """With one request in flight per member, two members take the time of one."""
    a, b = servers
    result = asyncio.run(
        run_job(
            Job(
                task="sentiment",
                input=_input(tmp_path),
                teacher="unused:x",
                ensemble=_members(a, b),
                store=tmp_path / "s.sqlite",
                progress=False,
                concurrency=1,
                max_attempts=1,
            )
        )
    )
    times = {m["teacher"]: m["elapsed_s"] for m in result.summary.stages}
    assert result.summary.elapsed_s < 0.8 * sum(times.values())
    assert result.summary.failed == 0  # broken-row: member b answered it
    assert [m["failed"] for m in result.summary.stages] == [1, 0]


def test_bad_ensembles_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least two"):
        EnsembleSpec.parse("openai:x")
    with pytest.raises(ConfigError, match="weight must be a positive"):
        EnsembleSpec.parse("openai:x=0,openai:y")
    with pytest.raises(ConfigError, match="the weight after '=' must be a number"):
        EnsembleSpec.parse("openai:x=heavy,openai:y")
    with pytest.raises(ConfigError, match="--ensemble-combine 'median'"):
        EnsembleSpec.parse("openai:x,openai:y", "median")
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(_input(tmp_path)),
            "--ensemble",
            "openai:a,openai:b",
            "--cascade",
            "openai:a,openai:b",
            "--escalate-below",
            "0.5",
        ],
    )
    assert res.exit_code != 0 and "--cascade and --ensemble: choose one" in res.output


def test_the_cli_runs_an_ensemble_and_prints_each_member(
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
            "--ensemble",
            _members(a, b, "", "=2"),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--quiet",
            "--max-attempts",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "member 2 openai-compatible:member-b: 9 rows, 9 labeled" in res.output
    assert "member 1 openai-compatible:member-a: 9 rows, 8 labeled, 0 cached, 1 failed;" in (res.output)
