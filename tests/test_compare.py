"""`labeler compare`: two teachers' stored labels side by side, nothing sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner, Result
from sklearn.metrics import cohen_kappa_score

from labeler import Job, run_job
from labeler.cli import main
from labeler.compare import compare
from labeler.errors import ConfigError
from labeler.testing import ServerConfig, TeacherServer

from conftest import SAMPLES

DATA = SAMPLES / "reviews.jsonl"
LABELS = ["negative", "positive"]


@pytest.fixture
def two() -> Iterator[tuple[TeacherServer, TeacherServer]]:
    """Two teachers that label the same reviews differently (their draws differ by seed)."""
    with (
        TeacherServer(ServerConfig(labels=LABELS, model="teacher-a", seed=1)) as a,
        TeacherServer(ServerConfig(labels=LABELS, model="teacher-b", seed=7)) as b,
    ):
        yield a, b


def spec(server: TeacherServer) -> str:
    return f"openai-compatible:{server.config.model}@{server.url}/v1"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def label_with(server: TeacherServer, tmp_path: Path, *extra: str) -> tuple[list[str], float]:
    """Label the reviews with one teacher (priced, so its answers cost something); its
    exported labels by row id order and what the run paid."""
    out = tmp_path / f"out-{server.config.model}"
    res = cli(
        "run",
        "sentiment",
        str(DATA),
        "-t",
        f"openai-compatible:{server.config.model}",
        "--base-url",
        server.url + "/v1",
        "--store",
        str(tmp_path / "s.sqlite"),
        "-q",
        "--json",
        "--out",
        str(out),
        "--kind",
        "classification",
        "--price",
        f"{server.config.model}=1,2",
        *extra,
    )
    assert res.exit_code == 0, res.output
    ds = datasets.load_from_disk(str(out))
    names = ds.features["label"].names
    return [names[i] for i in ds["label"]], json.loads(res.stdout.splitlines()[-1])["cost_usd"]


def test_agreement_kappa_confusion_and_cost_match_the_exports(
    two: tuple[TeacherServer, TeacherServer], tmp_path: Path
) -> None:
    a, b = two
    labels_a, paid_a = label_with(a, tmp_path)
    labels_b, paid_b = label_with(b, tmp_path)
    assert labels_a != labels_b  # a comparison worth making
    sent = len(a.log) + len(b.log)
    res = cli(
        "compare",
        "sentiment",
        str(DATA),
        "-t",
        spec(a),
        "-t",
        spec(b),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--json",
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    agree = sum(x == y for x, y in zip(labels_a, labels_b, strict=True))
    assert report["rows"] == report["both_answered"] == 24 and report["agree"] == agree
    assert report["agreement"] == pytest.approx(agree / 24, abs=1e-6)
    assert report["kappa"] == pytest.approx(cohen_kappa_score(labels_a, labels_b), abs=1e-6)
    confusion = report["confusion"]
    for i, x in enumerate(LABELS):
        for j, y in enumerate(LABELS):
            assert confusion[i][j] == sum(p == x and q == y for p, q in zip(labels_a, labels_b, strict=True))
    assert report["per_label"]["positive"]["a"] == labels_a.count("positive")
    assert report["a"]["cost_usd"] == pytest.approx(paid_a) and paid_a > 0
    assert report["b"]["cost_usd"] == pytest.approx(paid_b) and paid_b > 0
    assert report["a"]["missing"] == report["b"]["missing"] == 0
    assert len(a.log) + len(b.log) == sent  # read from the store: nothing sent
    table = cli(
        "compare", "sentiment", str(DATA), "-t", spec(a), "-t", spec(b), "--store", str(tmp_path / "s.sqlite")
    )
    assert table.exit_code == 0 and "cohen's kappa" in table.stdout, table.output


def test_rows_a_teacher_has_not_answered_are_counted_not_sent(
    two: tuple[TeacherServer, TeacherServer], tmp_path: Path
) -> None:
    a, b = two
    label_with(a, tmp_path)
    label_with(b, tmp_path, "--limit", "20")
    sent = len(b.log)
    res = cli(
        "compare",
        "sentiment",
        str(DATA),
        "-t",
        spec(a),
        "-t",
        spec(b),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--json",
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["both_answered"] == 20 and report["b"]["missing"] == 4
    assert f"-t openai-compatible:teacher-b --base-url {b.url}/v1 labels them" in res.stderr
    assert report["a"]["answered"] == 24 and report["b"]["answered"] == 20
    assert "4 rows have no answer from" in res.stderr and "labeler run sentiment" in res.stderr
    assert len(b.log) == sent


def test_the_library_call_and_bad_teachers(two: tuple[TeacherServer, TeacherServer], tmp_path: Path) -> None:
    a, b = two
    label_with(a, tmp_path)
    label_with(b, tmp_path)
    job = Job(task="sentiment", input=DATA, teacher=spec(a), store=tmp_path / "s.sqlite")
    report = compare(job, [spec(a), spec(b)])
    assert report.both == 24 and report.kappa is not None and -1 <= report.kappa <= 1
    # answers paid for at no known price: their cost is unknown, not $0
    for server in (a, b):
        asyncio.run(
            run_job(
                Job(
                    task="sentiment",
                    input=DATA,
                    progress=False,
                    teacher=f"openai-compatible:{server.config.model}",
                    base_url=server.url + "/v1",
                    store=tmp_path / "u.sqlite",
                )
            )
        )
    unpriced = Job(task="sentiment", input=DATA, teacher=spec(a), store=tmp_path / "u.sqlite")
    costs = compare(unpriced, [spec(a), spec(b)])
    assert costs.a.cost_usd is None and costs.to_dict()["b"]["cost_usd"] is None
    with pytest.raises(ConfigError, match="two teachers"):
        compare(job, [spec(a)])
    res = cli("compare", "sentiment", str(DATA), "-t", spec(a), "--store", str(tmp_path / "s.sqlite"))
    assert res.exit_code == 1 and res.stderr.startswith("labeler: error: compare needs two teachers")
    assert len(res.stderr.splitlines()) == 1
