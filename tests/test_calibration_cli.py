"""Calibration through the real path: eval fits it, export and the library apply it as a view."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from labeler import Job, run_job
from labeler.calibration import load_calibration
from labeler.cli import main
from labeler.errors import ConfigError
from labeler.exports import ExportOptions
from labeler.testing import ScriptedResponder, ServerConfig, TeacherServer

from conftest import sentiment_reply

# A teacher tilted towards "positive": gold-positive rows get P(positive) = .9, gold-negative
# rows .6, and content-free inputs ("N/A") .8. Raw argmax: every row positive, 50% right.
# Divided by the content-free (.8, .2): .9/.8 > .1/.2 and .6/.8 < .4/.2, so 100% right.
N = 20


def _rows() -> list[tuple[str, str]]:
    return [(f"item{i:02d}x", "positive" if i % 2 == 0 else "negative") for i in range(N)]


@pytest.fixture
def tilted(tmp_path: Path):
    rules = [(text, sentiment_reply(0.9 if gold == "positive" else 0.6)) for text, gold in _rows()]
    responder = ScriptedResponder(rules, default=lambda view: sentiment_reply(0.8))
    data = tmp_path / "gold.jsonl"
    data.write_text("".join(json.dumps({"id": t, "text": t, "gold": g}) + "\n" for t, g in _rows()))
    with TeacherServer(ServerConfig(responder=responder)) as srv:
        args = [
            "sentiment",
            str(data),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            srv.url + "/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
        ]
        assert CliRunner().invoke(main, ["run", *args, "--quiet"]).exit_code == 0
        yield srv, args


def test_eval_fits_contextual_calibration_and_scores_it_held_out(tilted, tmp_path: Path) -> None:
    srv, args = tilted
    cal_path = tmp_path / "cal.json"
    res = CliRunner().invoke(
        main,
        [
            "eval",
            *args,
            "--gold",
            "gold",
            "--json",
            "--calibrate",
            "contextual",
            "--calibrate",
            "temperature",
            "--save-calibration",
            str(cal_path),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.splitlines()[0])
    assert report["accuracy"] == pytest.approx(0.5)
    ctx, temp = report["calibration"]
    assert ctx["method"] == "contextual" and ctx["rows"] == N
    assert ctx["scheme"] == "5-fold cross-validation"
    assert ctx["before"]["accuracy"] == pytest.approx(0.5)
    assert ctx["after"]["accuracy"] == pytest.approx(1.0)
    assert temp["after"]["accuracy"] == pytest.approx(0.5)  # temperature keeps the argmax
    saved = load_calibration(cal_path)
    assert saved.method == "contextual" and saved.template.startswith("sentiment@")
    assert saved.teacher["model"] == "teacher-test"
    bias = dict(zip(saved.labels, saved.bias or (), strict=True))
    # The content-free (.8 positive, .2 negative) prior, centred: ±ln(4)/2.
    assert bias["positive"] == pytest.approx(math.log(4) / 2)
    assert bias["negative"] == pytest.approx(-math.log(4) / 2)
    # The three content-free inputs went through the store: a second fit sends nothing.
    sent = len(srv.log)
    assert sent == N + 3
    res = CliRunner().invoke(main, ["eval", *args, "--gold", "gold", "--calibrate", "contextual"])
    assert res.exit_code == 0, res.output
    assert "contextual" in res.output and "accuracy raw" in res.output
    assert len(srv.log) == sent


def test_fit_fraction_scores_only_the_rows_it_did_not_fit(tilted) -> None:
    _, args = tilted
    res = CliRunner().invoke(
        main, ["eval", *args, "--gold", "gold", "--json", "--calibrate", "bias", "--fit-fraction", "0.5"]
    )
    assert res.exit_code == 0, res.output
    (score,) = json.loads(res.output.splitlines()[0])["calibration"]
    assert score["rows"] == N // 2 and score["scheme"].startswith("fit on 50%")
    assert score["after"]["accuracy"] == pytest.approx(1.0)


def test_export_reads_through_the_calibration_and_the_store_is_unchanged(tilted, tmp_path: Path) -> None:
    _, args = tilted
    cal_path = tmp_path / "cal.json"
    runner = CliRunner()
    assert (
        runner.invoke(
            main,
            [
                "eval",
                *args,
                "--gold",
                "gold",
                "--calibrate",
                "contextual",
                "--save-calibration",
                str(cal_path),
            ],
        ).exit_code
        == 0
    )
    out = tmp_path / "out"
    res = runner.invoke(
        main, ["export", *args, "--out", str(out), "--kind", "classification", "--calibration", str(cal_path)]
    )
    assert res.exit_code == 0, res.output
    ds = datasets.load_from_disk(str(out))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"]
    names = ds.features["label"].names
    gold = dict(_rows())
    assert all(names[r["label"]] == gold[r["id"]] for r in ds)
    assert all(r["max_prob"] == pytest.approx(max(r["soft_label"])) for r in ds)
    card = (out / "README.md").read_text()
    assert "contextual, T=" in card
    assert json.loads((out / "labeler_export.json").read_text())["calibration"]["method"] == "contextual"
    # A filter reads the calibrated confidence; the stored answers still read raw.
    res = runner.invoke(main, ["eval", *args, "--gold", "gold", "--json"])
    assert json.loads(res.output.splitlines()[0])["accuracy"] == pytest.approx(0.5)
    res = runner.invoke(main, ["eval", *args, "--gold", "gold", "--json", "--calibration", str(cal_path)])
    report = json.loads(res.output.splitlines()[0])
    assert report["accuracy"] == pytest.approx(1.0) and report["applied_calibration"]


def test_library_job_applies_calibration_and_refuses_another_teacher(tilted, tmp_path: Path) -> None:
    srv, args = tilted
    cal_path = tmp_path / "cal.json"
    assert (
        CliRunner()
        .invoke(
            main,
            [
                "eval",
                *args,
                "--gold",
                "gold",
                "--calibrate",
                "contextual",
                "--save-calibration",
                str(cal_path),
            ],
        )
        .exit_code
        == 0
    )
    cal = load_calibration(cal_path)
    job = Job(
        task="sentiment",
        input=args[1],
        teacher="openai-compatible:teacher-test",
        base_url=srv.url + "/v1",
        store=tmp_path / "s.sqlite",
        out=tmp_path / "lib",
        export=ExportOptions(kind="classification", calibration=cal),
        progress=False,
    )
    result = asyncio.run(run_job(job))
    assert result.export is not None and result.export.label_counts == {"positive": 10, "negative": 10}
    res = CliRunner().invoke(
        main,
        [
            "export",
            "sentiment",
            args[1],
            "--teacher",
            "openai-compatible:other-model",
            "--base-url",
            srv.url + "/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--out",
            str(tmp_path / "x"),
            "--calibration",
            str(cal_path),
        ],
    )
    assert res.exit_code != 0
    assert "calibration was fitted for teacher openai-compatible:teacher-test" in res.output


def test_refresh_config_names_a_calibration_file_relative_to_itself(tmp_path: Path) -> None:
    from labeler.calibration import Calibration
    from labeler.refresh import RefreshConfig

    Calibration(("negative", "positive"), temperature=2.0).save(tmp_path / "cal" / "c.json")
    cfg = tmp_path / "r.yaml"
    cfg.write_text(
        "task: sentiment\ninput: in.jsonl\nteacher: openai:gpt-4o-mini\nout: out\n"
        "export: {kind: classification, calibration: cal/c.json}\n"
    )
    loaded = RefreshConfig.load(cfg)
    assert loaded.export.calibration is not None and loaded.export.calibration.temperature == 2.0
    cfg.write_text(cfg.read_text().replace("cal/c.json", "cal/none.json"))
    with pytest.raises(ConfigError, match=r"none\.json: cannot read calibration file"):
        RefreshConfig.load(cfg)
