"""The default export of a label template is calibrated from gold, says so, and checks its prior.

A tilted teacher (real SDK over HTTP to the test server): gold-positive rows get
P(positive) = .9, gold-negative rows .6, so its raw argmax says "positive" to every row
of a balanced set. A balanced teacher gets .9 and .1.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from labeler.cli import main
from labeler.gold_calibration import min_gold_rows
from labeler.testing import ScriptedResponder, ServerConfig, TeacherServer

from conftest import sentiment_reply

N = 60  # rows; the first GOLD of them carry a gold value
GOLD = 40
LEAST = min_gold_rows(2)


def _rows() -> list[tuple[str, str]]:
    return [(f"item{i:02d}x", "positive" if i % 2 == 0 else "negative") for i in range(N)]


def _serve(tmp_path: Path, p_negative_rows: float, gold_rows: int = GOLD):
    rules = [
        (text, sentiment_reply(0.9 if gold == "positive" else p_negative_rows)) for text, gold in _rows()
    ]
    responder = ScriptedResponder(rules, default=lambda view: sentiment_reply(0.8))
    data = tmp_path / "reviews.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": t, "text": t, **({"gold": g} if i < gold_rows else {})}) + "\n"
            for i, (t, g) in enumerate(_rows())
        )
    )
    return TeacherServer(ServerConfig(responder=responder)), data


def _args(srv: TeacherServer, data: Path, tmp_path: Path) -> list[str]:
    return [
        "sentiment",
        str(data),
        "--teacher",
        "openai-compatible:teacher-test",
        "--base-url",
        srv.url + "/v1",
        "--store",
        str(tmp_path / "s.sqlite"),
    ]


def _load(out: Path) -> datasets.Dataset:
    ds = datasets.load_from_disk(str(out))
    return ds["train"] if isinstance(ds, datasets.DatasetDict) else ds


def test_run_with_gold_exports_calibrated_labels_and_keeps_the_raw(tmp_path: Path) -> None:
    srv, data = _serve(tmp_path, 0.6)
    with srv:
        out = tmp_path / "out"
        res = CliRunner().invoke(
            main,
            [
                "run",
                *_args(srv, data, tmp_path),
                "--quiet",
                "--kind",
                "classification",
                "--gold",
                "gold",
                "--out",
                str(out),
            ],
        )
        assert res.exit_code == 0, res.output
        sent = len(srv.log)
    assert sent == N  # gold calibration costs no request
    ds = _load(out)
    names = ds.features["label"].names
    gold = dict(_rows())
    # every row, the 20 without gold included, now carries its true label
    assert all(names[r["label"]] == gold[r["id"]] for r in ds)
    assert all(r["soft_label_raw"][names.index("positive")] >= 0.6 for r in ds)
    assert all(r["max_prob"] == pytest.approx(max(r["soft_label"])) for r in ds)
    assert {r["calibration"] for r in ds} == {"bias"}
    card = (out / "README.md").read_text()
    assert "bias, T=" in card and f"fitted on {GOLD} gold rows of 'gold'" in card
    assert "soft_label_raw" in card
    meta = json.loads((out / "labeler_export.json").read_text())
    assert meta["calibration"]["method"] == "bias"
    assert meta["calibration"]["details"]["held_out"]["calibrated"]["accuracy"] == 1.0
    assert "calibration: bias" in res.output  # the summary says it too


def test_records_export_carries_the_raw_distribution_beside_the_calibrated(tmp_path: Path) -> None:
    """The records kind declares and fills the calibrated columns as classification does."""
    srv, data = _serve(tmp_path, 0.6)
    with srv:
        out = tmp_path / "out"
        res = CliRunner().invoke(
            main,
            [
                "run",
                *_args(srv, data, tmp_path),
                "--quiet",
                "--kind",
                "records",
                "--gold",
                "gold",
                "--out",
                str(out),
            ],
        )
        assert res.exit_code == 0, res.output
    ds = _load(out)
    names = ds.features["label"].names
    gold = dict(_rows())
    assert all(names[r["label"]] == gold[r["id"]] for r in ds)
    assert all(r["soft_label_raw"][names.index("positive")] >= 0.6 for r in ds)
    assert {r["calibration"] for r in ds} == {"bias"}
    assert "`soft_label_raw`: the teacher's own distribution" in (out / "README.md").read_text()


def test_export_without_gold_stays_raw_and_says_why(tmp_path: Path) -> None:
    srv, data = _serve(tmp_path, 0.6, gold_rows=0)
    with srv:
        args = _args(srv, data, tmp_path)
        out = tmp_path / "out"
        res = CliRunner().invoke(
            main, ["run", *args, "--quiet", "--kind", "classification", "--out", str(out)]
        )
        assert res.exit_code == 0, res.output
    ds = _load(out)
    assert "soft_label_raw" not in ds.column_names
    card = (out / "README.md").read_text()
    assert "none: no gold rows given or found (--gold FIELD" in card
    assert json.loads((out / "labeler_export.json").read_text())["calibration"] is None


def test_an_input_field_of_labels_is_found_and_calibrated_on_unasked(tmp_path: Path) -> None:
    """No --gold: the rows' `gold` field holds label names on 40 rows, so the default
    export is calibrated on them exactly as with --gold, and says which field it read."""
    srv, data = _serve(tmp_path, 0.6)
    with srv:
        args = _args(srv, data, tmp_path)
        found, named = tmp_path / "found", tmp_path / "named"
        res = CliRunner().invoke(
            main, ["run", *args, "--kind", "classification", "--out", str(found), "--json"]
        )
        assert res.exit_code == 0, res.output
        res2 = CliRunner().invoke(
            main, ["export", *args, "--kind", "classification", "--gold", "gold", "--out", str(named)]
        )
        assert res2.exit_code == 0, res2.output
        url = srv.url
    ds, by_flag = _load(found), _load(named)
    names = ds.features["label"].names
    gold = dict(_rows())
    assert all(names[r["label"]] == gold[r["id"]] for r in ds)
    assert ds["soft_label"] == by_flag["soft_label"]
    assert {r["calibration"] for r in ds} == {"bias"}
    card = (found / "README.md").read_text()
    assert "gold read from the input's field 'gold', found holding label names" in card
    meta = json.loads((found / "labeler_export.json").read_text())
    assert meta["calibration"]["details"]["gold_field"] == "gold"
    # the calibration names its teacher as the card does: no private endpoint URL
    assert url not in (found / "labeler_export.json").read_text()


def test_a_found_field_with_too_few_gold_rows_leaves_the_export_raw_without_refusing(
    tmp_path: Path,
) -> None:
    """Where --gold gold is refused (too few rows), a field found unasked only says so."""
    srv, data = _serve(tmp_path, 0.6, gold_rows=LEAST - 1)
    with srv:
        out = tmp_path / "out"
        res = CliRunner().invoke(
            main, ["run", *_args(srv, data, tmp_path), "--kind", "classification", "--out", str(out)]
        )
        assert res.exit_code == 0, res.output
    assert "soft_label_raw" not in _load(out).column_names
    card = " ".join((out / "README.md").read_text().split())
    assert (
        f"none: {LEAST - 1} labeled rows have a gold value in 'gold', a calibration needs "
        f"at least {LEAST} (gold read from the input's field 'gold'"
    ) in card


def test_two_fields_of_labels_are_not_guessed_between(tmp_path: Path) -> None:
    srv, _ = _serve(tmp_path, 0.6)
    data = tmp_path / "two.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": t, "text": t, "gold": g, "label": "negative" if i % 3 else "positive"}) + "\n"
            for i, (t, g) in enumerate(_rows())
        )
    )
    with srv:
        out = tmp_path / "out"
        res = CliRunner().invoke(
            main, ["run", *_args(srv, data, tmp_path), "--kind", "classification", "--out", str(out)]
        )
        assert res.exit_code == 0, res.output
    assert "soft_label_raw" not in _load(out).column_names
    card = " ".join((out / "README.md").read_text().split())
    assert "none: fields 'gold', 'label' all hold label names; name the gold one with --gold FIELD" in card


def test_calibration_none_exports_the_raw_teacher(tmp_path: Path) -> None:
    srv, data = _serve(tmp_path, 0.6)
    with srv:
        args = _args(srv, data, tmp_path)
        assert CliRunner().invoke(main, ["run", *args, "--quiet"]).exit_code == 0
        out = tmp_path / "out"
        res = CliRunner().invoke(
            main,
            [
                "export",
                *args,
                "--kind",
                "classification",
                "--gold",
                "gold",
                "--calibration",
                "none",
                "--out",
                str(out),
            ],
        )
        assert res.exit_code == 0, res.output
    ds = _load(out)
    names = ds.features["label"].names
    assert {names[r["label"]] for r in ds} == {"positive"}
    assert "--calibration none" in (out / "README.md").read_text()


def test_too_few_gold_rows_are_refused_in_one_line(tmp_path: Path) -> None:
    srv, data = _serve(tmp_path, 0.6, gold_rows=LEAST - 1)
    with srv:
        args = _args(srv, data, tmp_path)
        assert CliRunner().invoke(main, ["run", *args, "--quiet"]).exit_code == 0
        out = tmp_path / "out"
        res = CliRunner().invoke(main, ["export", *args, "--gold", "gold", "--out", str(out)])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines == [
        f"labeler: error: --gold gold: {LEAST - 1} labeled rows have a "
        f"gold value, calibration needs at least {LEAST} (add gold, or "
        "export with --calibration none)"
    ]
    assert not out.exists()


def test_prior_check_fires_on_a_skewed_teacher(tmp_path: Path) -> None:
    srv, data = _serve(tmp_path, 0.6)
    with srv:
        args = _args(srv, data, tmp_path)
        assert CliRunner().invoke(main, ["run", *args, "--quiet"]).exit_code == 0
        out = tmp_path / "out"
        res = CliRunner().invoke(
            main, ["export", *args, "--gold", "gold", "--calibration", "none", "--out", str(out)]
        )
        assert res.exit_code == 0, res.output
    assert (
        "warning: label prior: the exported labels depart from the gold rows' labels "
        "(total variation 0.50): 'positive' is 100% of exported labels, 50% of the gold "
        "rows' labels"
    ) in res.output
    card = (out / "README.md").read_text()
    assert "## Label prior" in card and "'positive' is 100% of exported labels" in card


def test_prior_check_is_quiet_on_a_balanced_teacher(tmp_path: Path) -> None:
    srv, data = _serve(tmp_path, 0.1)
    with srv:
        args = _args(srv, data, tmp_path)
        assert CliRunner().invoke(main, ["run", *args, "--quiet"]).exit_code == 0
        for mode in ("none", "auto"):
            out = tmp_path / f"out-{mode}"
            res = CliRunner().invoke(
                main, ["export", *args, "--gold", "gold", "--calibration", mode, "--out", str(out)]
            )
            assert res.exit_code == 0, res.output
            assert "label prior" not in res.output
            assert "## Label prior" not in (out / "README.md").read_text()


def test_calibrated_export_is_checked_against_its_calibrated_distribution(tmp_path: Path) -> None:
    """After calibration the skewed teacher's labels match the gold rows': no warning."""
    srv, data = _serve(tmp_path, 0.6)
    with srv:
        args = _args(srv, data, tmp_path)
        assert CliRunner().invoke(main, ["run", *args, "--quiet"]).exit_code == 0
        out = tmp_path / "out"
        res = CliRunner().invoke(main, ["export", *args, "--gold", "gold", "--out", str(out)])
        assert res.exit_code == 0, res.output
    assert "label prior" not in res.output


def test_calibration_batch_divides_out_the_teacher_tilt_without_gold(tmp_path: Path) -> None:
    """The tilted teacher says "positive" to every row; its mean (P(positive) = .75) divided
    out, every row gets its gold label back, with no gold and no request beyond the rows'."""
    srv, data = _serve(tmp_path, 0.6, gold_rows=0)
    with srv:
        args = _args(srv, data, tmp_path)
        out = tmp_path / "out"
        cmd = ["run", *args, "--kind", "classification", "--calibration", "batch", "--out", str(out)]
        res = CliRunner().invoke(main, cmd)
        assert res.exit_code == 0, res.output
        sent = srv.stats()["requests"]
        assert sent == N
        again = CliRunner().invoke(main, [*cmd, "--force"])
        assert again.exit_code == 0, again.output
        assert srv.stats()["requests"] == sent  # the rerun sent nothing
    ds = _load(out)
    names = ds.features["label"].names
    gold = dict(_rows())
    assert all(names[r["label"]] == gold[r["id"]] for r in ds)
    assert all(r["soft_label_raw"][names.index("positive")] >= 0.6 for r in ds)
    assert {r["calibration"] for r in ds} == {"batch"}
    note = json.loads((out / "labeler_export.json").read_text())["calibration_note"]
    assert note.startswith("batch, T=1.000, bias negative=-0.55, positive=+0.55")
    assert "mean over 60 rows, no gold; 'positive' 100% of labels raw -> 50% calibrated" in note
    assert note in (out / "README.md").read_text()
    assert "calibration: batch" in res.output


def test_calibration_batch_refuses_too_few_rows_in_one_line(tmp_path: Path) -> None:
    srv, data = _serve(tmp_path, 0.6, gold_rows=0)
    with srv:
        args = _args(srv, data, tmp_path)
        assert CliRunner().invoke(main, ["run", *args, "--quiet"]).exit_code == 0
        few = tmp_path / "few.jsonl"
        few.write_text("".join(data.read_text().splitlines(keepends=True)[: LEAST - 1]))
        out = tmp_path / "out"
        args[1] = str(few)
        res = CliRunner().invoke(main, ["export", *args, "--calibration", "batch", "--out", str(out)])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines == [
        f"labeler: error: --calibration batch: {LEAST - 1} answered rows, the teacher's "
        f"mean needs at least {LEAST} (label more rows, or export with --calibration none)"
    ]
    assert not out.exists()


def test_no_document_says_labels_are_calibrated_by_default() -> None:
    """What the tests above show: calibrated with gold (`--gold FIELD`, or a field of
    label names found in the rows), raw without any (unless `--calibration batch` or a
    file). A bare claim of calibration "by default" in the README or docs would promise a
    newcomer without gold calibrated labels they do not get (the changelog, being
    history, is left as written)."""
    import re

    from conftest import REPO

    claim = re.compile(r"calibrat\w*[^.]{0,60}?\bby default", re.IGNORECASE)
    places = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found = [
        f"{path.name}: {m.group(0)}"
        for path in places
        if path.name != "changelog.md"
        for m in claim.finditer(" ".join(path.read_text("utf-8").split()))
    ]
    assert found == []


def test_the_library_calibrates_on_found_gold_and_takes_gold_and_calibration(tmp_path: Path) -> None:
    """`labeler.label()` as the CLI: the rows' gold field is found, `calibration="none"`
    exports raw, and `gold=` names the field (too few rows refused in one line)."""
    import labeler
    from labeler.errors import ConfigError

    srv, data = _serve(tmp_path, 0.6)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    with srv:
        common = {
            "base_url": srv.url + "/v1",
            "api_key": "k",
            "store": tmp_path / "s.sqlite",
            "kind": "classification",
            "progress": False,
        }
        found = labeler.label(rows, "sentiment", "openai-compatible:teacher-test", **common)
        raw = labeler.label(rows, "sentiment", "openai-compatible:teacher-test", calibration="none", **common)
        named = labeler.label(rows, "sentiment", "openai-compatible:teacher-test", gold="gold", **common)
        with pytest.raises(ConfigError, match="--gold nope: 0 labeled rows have a gold value"):
            labeler.label(rows, "sentiment", "openai-compatible:teacher-test", gold="nope", **common)
    names = found.features["label"].names
    gold = dict(_rows())
    assert all(names[r["label"]] == gold[r["id"]] for r in found)
    assert found["soft_label"] == named["soft_label"]
    assert "soft_label_raw" not in raw.column_names
    assert {names[r["label"]] for r in raw} == {"positive"}  # the tilted teacher, raw
