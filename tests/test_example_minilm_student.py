"""examples/minilm_student.py: the whole path (label, calibrated export, pretrained student,
score) runs as documented against the test teacher over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

pytestmark = pytest.mark.slow  # trains a sentence-encoder student on CPU

REPO = Path(__file__).resolve().parent.parent


def test_example_labels_calibrates_trains_and_scores(tmp_path: Path, capsys) -> None:
    from examples.minilm_student import main
    from labeler.testing import ServerConfig, TeacherServer

    reviews = REPO / "samples" / "reviews.jsonl"
    with TeacherServer(ServerConfig(labels=["positive", "negative"])) as srv:
        main(
            [
                "sentiment",
                str(reviews),
                str(reviews),
                "--teacher",
                "openai-compatible:teacher-test",
                "--base-url",
                srv.url + "/v1",
                "--gold",
                "label",
                "--out",
                str(tmp_path / "out"),
                "--store",
                str(tmp_path / "s.sqlite"),
            ]
        )
        assert len(srv.log) == 24
    out = capsys.readouterr().out
    assert "teacher: 24 labeled, 0 cached; calibration: " in out
    assert "student (MiniLM, frozen, soft labels): " in out and "on 24 test rows" in out
    assert (tmp_path / "out" / "README.md").exists()
