"""The sampled-soft-label and rejection-sampling benchmarks still run, at sizes too small
to mean anything, against the project's teacher server standing in for the local model.

Benchmarks are programs, not tests: these only keep them from rotting (a renamed option,
a summary field that moved, a table that lost a column), and check that each line's
numbers are the ones the stand-in server's known answers imply."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import rejection_sampling, sampled_soft_labels
from benchmarks.cascade_cost import GoldResponder
from benchmarks.local_quality import data_dir, load_gold
from labeler.testing import Reply, RequestView, ServerConfig, TeacherServer


def _table(out: str) -> list[list[str]]:
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and not ln.startswith("|---")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows[1:]]


def test_the_sampled_soft_label_table_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sst2 = data_dir() / "sst2_validation" / "sst2_validation.tsv"
    if not sst2.exists():
        pytest.skip(f"needs the SST-2 validation set at {sst2} (or set LABELER_DATA)")
    gold = load_gold("sst2", 24, 0)
    server = GoldResponder(
        [r["text"] for r in gold.rows], gold.gold, ["negative", "positive"], 0.25, seed=3, confidence=0.8
    )
    wrong = sum(server.answer_for(r["text"]) != g for r, g in zip(gold.rows, gold.gold, strict=True))
    with TeacherServer(ServerConfig(model="m", responder=server)) as srv:
        assert (
            sampled_soft_labels.main(
                [
                    "--n",
                    "24",
                    "--samples",
                    "3",
                    "--teacher",
                    f"openai-compatible:m@{srv.url}/v1",
                    "--work",
                    str(tmp_path),
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "ECE calibrated: temperature fitted on 8 rows, scored on the other 16" in out
    lines = _table(out)
    assert [ln[0] for ln in lines] == ["logprobs", "3 samples"]
    # The stand-in answers the same label every time, so both ways find the same labels.
    for ln in lines:
        assert ln[1] == f"{(24 - wrong) / 24:.1%}"
    assert lines[0][5] == "24"  # one request per row with logprobs
    assert int(lines[1][5]) >= 24 and int(lines[1][7]) >= 3 * 24  # three answers per row


class WordProblems:
    """Right on every even sample, off by one on odd ones; each answer worded apart."""

    def __init__(self, problems: list[dict[str, object]]) -> None:
        self.answer = {str(p["question"]): int(str(p["answer"])) for p in problems}

    def __call__(self, view: RequestView) -> Reply:
        sample = view.sample_id if view.sampling else 0
        truth = self.answer[view.last_user]
        got = truth if sample % 2 == 0 else truth + 1
        return Reply(text=f"Working number {sample}. Answer: {got}")


def test_the_rejection_sampling_table_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    problems = rejection_sampling.problems(10, 0)
    assert problems == rejection_sampling.problems(10, 0)  # the same problems every run
    assert len({p["question"] for p in problems}) == 10
    with TeacherServer(ServerConfig(model="m", responder=WordProblems(problems))) as srv:
        assert (
            rejection_sampling.main(
                [
                    "--n",
                    "10",
                    "--samples",
                    "1,4",
                    "--teacher",
                    f"openai-compatible:m@{srv.url}/v1",
                    "--work",
                    str(tmp_path),
                ]
            )
            == 0
        )
    lines = _table(capsys.readouterr().out)
    assert [ln[:5] for ln in lines] == [
        ["1", "100.0%", "100.0%", "10 (100%)", "10"],
        ["4", "50.0%", "100.0%", "10 (100%)", "20"],  # two of four pass, worded apart
    ]
