"""benchmarks/round_trip.py end to end at a tiny size: the test teacher over HTTP labels
SST-2 rows, four exports (raw, calibrated on gold, the default with no flag, which finds
the gold field, batch) train the pretrained MiniLM student."""

from __future__ import annotations

import pytest

from conftest import SHARED_DATA

pytest.importorskip("all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

pytestmark = pytest.mark.slow  # trains a sentence-encoder student on CPU


def test_round_trip_prints_every_target_with_retention_and_gap(tmp_path, capsys) -> None:
    if not (SHARED_DATA / "sst2_validation").exists():
        pytest.skip(f"needs SST-2 at {SHARED_DATA}")
    from benchmarks.round_trip import EXPORTS, main
    from labeler.testing import ServerConfig, TeacherServer

    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        main(
            [
                "--dataset",
                "sst2",
                "--train",
                "30",
                "--test",
                "12",
                "--gold",
                "20",
                "--teacher",
                "openai-compatible:teacher-test",
                "--base-url",
                srv.url + "/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
            ]
        )
        sent = len(srv.log)
    out = capsys.readouterr().out
    assert sent == 42  # every train and test row once; the exports send nothing
    for title, _ in EXPORTS.values():
        for form in ("hard", "soft"):
            assert f"| {title}, {form} labels | " in out
    assert "| gold labels | " in out and "| — | +0.0% |" in out
    gold_note = out.split("calibration of calibrated on gold (--gold) (seed 0): ")[1]
    assert gold_note.startswith(("bias, ", "temperature, ", "none: no calibration fitted"))
    found_note = out.split("calibration of default, no flag (gold field found) (seed 0): ")[1]
    assert found_note.startswith(gold_note.split(" (gold read from")[0].splitlines()[0][:20])
    assert "(gold read from the input's field 'gold', found holding label names" in found_note
    assert "(--calibration batch) (seed 0): batch, T=1.000, bias negative=" in out


def test_round_trip_fine_tunes_the_encoder_and_tunes_soft_labels_on_validation(tmp_path, capsys) -> None:
    if not (SHARED_DATA / "sst2_validation").exists():
        pytest.skip(f"needs SST-2 at {SHARED_DATA}")
    from benchmarks.round_trip import main
    from labeler.testing import ServerConfig, TeacherServer

    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        main(
            [
                *("--dataset", "sst2", "--train", "24", "--test", "8", "--gold", "20"),
                *("--student", "both", "--tune", "--exports", "raw,calibrated"),
                *("--teacher", "openai-compatible:teacher-test", "--base-url", srv.url + "/v1"),
                *("--store", str(tmp_path / "s.sqlite")),
            ]
        )
    out = capsys.readouterr().out
    frozen, finetuned = out.split("student: MiniLM frozen + linear head")[1].split(
        "student: MiniLM fine-tuned end to end"
    )
    for table in (frozen, finetuned):
        for export in ("raw (--calibration none)", "calibrated on gold (--gold)"):
            for form in ("hard", "soft"):
                assert f"| {export}, {form} labels | " in table
        assert "| gold labels | " in table and "| — | +0.0% |" in table
        assert "default, no flag" not in table  # not asked for
    assert "| raw (--calibration none), tuned labels | " in frozen
    assert "tuned labels" not in finetuned  # --tune is the frozen student's
    note = out.split("tuned on validation, raw (--calibration none) (seed 0): ")[1].splitlines()[0]
    assert note.startswith("T=") and "alpha=" in note and "on 6 rows" in note  # 25% of 24


def test_round_trip_refuses_an_unknown_export(capsys) -> None:
    from benchmarks.round_trip import main

    with pytest.raises(SystemExit) as exc:
        main(["--exports", "raw,calibratd"])
    assert "--exports: unknown calibratd" in str(exc.value)
