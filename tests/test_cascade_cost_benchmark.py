"""The cascade cost benchmark still runs, at a size too small to mean anything: a test
server that knows the gold label stands in for the local first stage too."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cascade_cost import GoldResponder, main
from benchmarks.local_quality import data_dir, load_gold
from labeler.testing import ServerConfig, TeacherServer


def test_the_stand_in_api_is_wrong_on_about_the_error_share() -> None:
    texts = [f"row {i}" for i in range(2000)]
    api = GoldResponder(texts, ["positive"] * 2000, ["negative", "positive"], 0.05)
    wrong = sum(api.answer_for(t) != "positive" for t in texts)
    assert 60 < wrong < 140
    again = GoldResponder(texts, ["positive"] * 2000, ["negative", "positive"], 0.05)
    assert [api.answer_for(t) for t in texts] == [again.answer_for(t) for t in texts]


def test_the_cascade_cost_table_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sst2 = data_dir() / "sst2_validation" / "sst2_validation.tsv"
    if not sst2.exists():
        pytest.skip(f"needs the SST-2 validation set at {sst2} (or set LABELER_DATA)")
    gold = load_gold("sst2", 40, 0)
    first = GoldResponder([r["text"] for r in gold.rows], gold.gold, ["negative", "positive"], 0.0, seed=1)
    with TeacherServer(ServerConfig(model="first", responder=first)) as srv:
        assert (
            main(
                [
                    "--n",
                    "40",
                    "--first",
                    f"openai-compatible:first@{srv.url}/v1",
                    "--targets",
                    "0.6",
                    "--work",
                    str(tmp_path),
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "not a real model" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| API alone | — | ") and "| 20 (100%) |" in lines[1]
    # A first stage right and sure of every calibration row keeps them all.
    assert lines[3].startswith("| cascade, target 0.6 | ")
    assert "| 100.0% | 0 (0%) | $0.00000 | 0% |" in lines[3]
