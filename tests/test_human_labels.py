"""Human labels from the review page flow on: exports prefer them, eval scores against them."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from labeler import Job, run_job
from labeler.errors import ConfigError
from labeler.eval_job import evaluate_job
from labeler.exports import ExportOptions
from labeler.filters import FilterSpec
from labeler.human import record_label
from labeler.job import export_job
from labeler.review import load_index
from labeler.store import Store
from labeler.testing import Reply, ScriptedResponder, ServerConfig, TeacherServer

from conftest import REPO

# Per prompt word: the teacher's answer and its probability.
TEACHER = {"apple": ("positive", 0.9), "berry": ("negative", 0.55), "cherry": ("positive", 0.6)}


def responder() -> ScriptedResponder:
    rules = []
    for word, (text, p) in TEACHER.items():
        other = "negative" if text == "positive" else "positive"
        top = [(text, math.log(p)), (other, math.log(1 - p))]
        rules.append((word, Reply(text, tokens=[text], top_logprobs=[top])))
    return ScriptedResponder(rules, default=lambda view: Reply("positive"))


@pytest.fixture
def job(tmp_path: Path) -> Job:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": w, "text": f"{w} review"}) + "\n" for w in TEACHER))
    with TeacherServer(ServerConfig(responder=responder())) as srv:
        job = Job(
            task="sentiment",
            input=data,
            teacher="openai-compatible:teacher-test",
            base_url=srv.url + "/v1",
            store=tmp_path / "s.sqlite",
            progress=False,
            out=tmp_path / "out",
        )
        asyncio.run(run_job(job))
    return job


def review(job: Job, decisions: dict[str, str]) -> None:
    with Store(job.store_path()) as st:
        index = load_index(job, st)
        for item in index.items:
            if item.row_id in decisions:
                record_label(
                    st,
                    item.key,
                    decisions[item.row_id],
                    reviewer="ada",
                    teacher_label=item.label,
                    row_id=item.row_id,
                )


def test_export_prefers_the_human_label_and_says_so(job: Job) -> None:
    review(job, {"berry": "positive", "apple": "positive"})
    # the fixture's run exported `records` there: replacing it with another kind is asked for
    job.export = ExportOptions(kind="classification", filters=FilterSpec(min_confidence=0.7), force=True)
    report = export_job(job)
    ds = datasets.load_from_disk(str(job.out))
    rows = {r["id"]: r for r in ds}
    names = ds.features["label"].names
    # "berry" is human-labeled: kept despite the teacher's 0.55, with the person's label.
    assert {k: (names[r["label"]], r["label_source"]) for k, r in rows.items()} == {
        "apple": ("positive", "human"),
        "berry": ("positive", "human"),
    }
    assert rows["berry"]["max_prob"] == pytest.approx(0.55)  # the teacher's numbers stay
    assert report.human_labeled == 2
    card = (Path(job.out) / "README.md").read_text()
    assert "over the teacher's | 2 |" in card


def test_export_can_ignore_human_labels(job: Job) -> None:
    review(job, {"berry": "positive"})
    job.export = ExportOptions(kind="records", human_labels=False)
    export_job(job)
    rows = {r["id"]: r for r in datasets.load_from_disk(str(job.out))}
    assert rows["berry"]["label_source"] == "teacher"
    assert rows["berry"]["label"] == 0  # negative, the teacher's


def test_eval_against_human_gold(job: Job) -> None:
    with pytest.raises(ConfigError, match="no reviewed rows"):
        evaluate_job(job, "human")
    review(job, {"apple": "positive", "berry": "positive"})
    report = evaluate_job(job, "human")
    assert report.n == 2
    assert report.accuracy == pytest.approx(0.5)


def test_cli_eval_gold_human(job: Job) -> None:
    review(job, {"apple": "positive", "cherry": "negative"})
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "labeler.cli",
            "eval",
            "sentiment",
            str(job.input),
            "--teacher",
            job.teacher,
            "--base-url",
            str(job.base_url),
            "--store",
            str(job.store),
            "--gold",
            "human",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n"] == 2


def test_calibration_fits_on_human_labels(job: Job, tmp_path: Path) -> None:
    """The review page's labels are gold for calibration too: `labeler eval --gold human
    --calibrate ... --save-calibration FILE` fits on them and saves a calibration."""
    from labeler.calibration import load_calibration
    from labeler.eval_job import CalibrationOptions

    review(job, {"apple": "positive", "berry": "positive", "cherry": "positive"})
    saved = tmp_path / "cal.json"
    report = evaluate_job(
        job, "human", calibrate=CalibrationOptions(methods=("temperature",), folds=3, save=saved)
    )
    assert report.n == 3
    assert saved.exists()
    cal = load_calibration(saved)
    assert cal.to_dict()["template"] == "sentiment@1"
