"""Prompt ensembles: each row asked in several prompt forms, their soft labels averaged.

Unit tests on hand-computed distributions, then one run over real HTTP against labeler's
test teacher server: the exported soft label is the mean of the forms' soft labels, each
form is its own cached request (adding forms relabels nothing), and a rerun sends nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from click.testing import CliRunner

from benchmarks.calibration import label_probs
from labeler.answer import read_answer, read_answers
from labeler.cli import main
from labeler.completion import Completion, TokenLogprob
from labeler.errors import TemplateError
from labeler.estimate import estimate
from labeler.plan import Planner, by_row
from labeler.soft_labels import Confidence, SoftLabel, ensemble_confidence, ensemble_soft_label
from labeler.store import Store
from labeler.task import Task, load_task, task_from_dict
from labeler.teachers import make_teacher
from labeler.testing import TeacherServer

from conftest import chat_requests

BASE: dict[str, Any] = {
    "name": "ens",
    "version": "1",
    "mode": "chat",
    "system": "Answer positive or negative.",
    "user": "Review: {{ text }}",
    "output": {"kind": "label", "labels": ["negative", "positive"]},
    "few_shot": [
        {"input": {"text": "bad"}, "output": "negative"},
        {"input": {"text": "good"}, "output": "positive"},
        {"input": {"text": "dull"}, "output": "negative"},
    ],
    "params": {"max_tokens": 2},
}
VARIANTS = [{"system": "Is this review positive or negative? One word."}]


def ensemble(**extra: Any) -> Task:
    return task_from_dict({**BASE, "variants": VARIANTS, "example_orders": 2, **extra})


def answer_of(probs: dict[str, float]) -> Completion:
    """A one-token answer whose top alternatives carry `probs`."""
    top = tuple((w, math.log(p)) for w, p in probs.items())
    best = max(probs, key=lambda w: probs[w])
    return Completion(text=best, tokens=[TokenLogprob(best, math.log(probs[best]), top)])


def test_forms_are_the_template_then_its_orders_then_each_variant_and_its_orders() -> None:
    task = ensemble()
    assert len(task.members) == 4  # (base, variant) x (written order, one shuffle)
    row = {"text": "fine"}
    requests = task.render_all(row)
    assert len({r.key({}) for r in requests}) == 4
    plain = task_from_dict(BASE).render(row)
    assert requests[0].key({}) == plain.key({})  # adding forms changes nothing already stored
    shots = [m["content"] for m in requests[1].messages or () if m["role"] == "user"][:-1]
    assert sorted(shots) == sorted(f"Review: {w}" for w in ("bad", "good", "dull"))
    assert shots != ["Review: bad", "Review: good", "Review: dull"]
    assert requests[2].messages[0]["content"] == VARIANTS[0]["system"]  # type: ignore[index]
    assert ensemble().render_all(row) == requests  # the shuffles are fixed: same keys every load


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"example_orders": 7}, "example_orders", "only 6"),
        ({"example_orders": 0}, "example_orders", "from 1 to 16"),
        ({"variants": [{"temperature": 1}]}, "variants[0].temperature", "unknown key"),
        ({"variants": ["system: x"]}, "variants[0]", "must be a mapping"),
        ({"output": {"kind": "text"}}, "variants", "output kind 'label'"),
    ],
)
def test_a_bad_ensemble_is_one_error_naming_the_key(extra: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(TemplateError) as err:
        ensemble(**extra)
    assert err.value.field == field and reason in str(err.value)


def test_the_ensemble_soft_label_is_the_mean_and_agreement_the_majority_share() -> None:
    softs = [
        SoftLabel((0.8, 0.2), 0.1, "logprobs"),
        SoftLabel((0.4, 0.6), 0.0, "logprobs"),
        SoftLabel((0.0, 0.0), 1.0, "logprobs"),
        SoftLabel((0.9, 0.1), 0.1, "logprobs"),
    ]
    mean = ensemble_soft_label(softs)
    assert mean.probs == pytest.approx((0.7, 0.3), abs=1e-12)  # the three valid forms
    assert mean.outside == pytest.approx(0.3)  # (0.1 + 0 + 1 + 0.1) / 4
    assert mean.source == "ensemble"
    confs = [
        Confidence(0.8, 0.6, 0.5, -0.2),
        Confidence(0.6, 0.2, 0.67, -0.4),
        Confidence(0.0, 0.0, 0.69, None),
        Confidence(0.9, 0.8, 0.3, -0.3),
    ]
    conf = ensemble_confidence(softs, confs, mean)
    assert conf.agreement == pytest.approx(2 / 4)  # two of four forms name "negative"
    assert conf.max_prob == pytest.approx(0.7) and conf.margin == pytest.approx(0.4)
    assert conf.mean_logprob == pytest.approx(-0.3)
    assert conf.entropy == pytest.approx(-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)))


def test_forms_that_disagree_can_change_the_label() -> None:
    task = task_from_dict({**BASE, "variants": VARIANTS})
    first = answer_of({"positive": 0.55, "negative": 0.45})
    second = answer_of({"negative": 0.95, "positive": 0.05})
    assert read_answer(task, first).label == "positive"
    both = read_answers(task, [first, second])
    assert both.soft is not None and both.soft.probs == pytest.approx((0.7, 0.3))
    assert both.label == "negative" and both.confidence is not None
    assert both.confidence.agreement == 0.5
    with pytest.raises(ValueError, match="2 prompt forms"):
        read_answers(task, [first, second, first])


def test_estimate_counts_rows_once_and_prices_every_form() -> None:
    rows = [{"id": str(i), "text": f"review {i}"} for i in range(5)]
    plain = estimate(task_from_dict(BASE), rows, "openai:gpt-4o-mini")
    est = estimate(ensemble(), rows, "openai:gpt-4o-mini")
    assert (plain.rows, plain.requests) == (5, 5)
    assert (est.rows, est.requests) == (5, 20)
    assert est.prompt_tokens > 3.5 * plain.prompt_tokens
    assert est.cost_usd is not None and plain.cost_usd is not None
    assert est.cost_usd > 3.5 * plain.cost_usd
    assert any("4 prompt forms" in n for n in est.notes)


def test_an_ensemble_run_over_http_exports_the_mean_and_a_rerun_sends_nothing(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    rows = [
        {"id": f"r{i}", "text": f"item {i}: it was {w}", "gold": g}
        for i, (w, g) in enumerate(
            [
                ("great", "positive"),
                ("awful", "negative"),
                ("fine", "positive"),
                ("odd", "negative"),
                ("slow", "negative"),
            ]
        )
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain_file, ens_file = tmp_path / "plain.yaml", tmp_path / "ens.yaml"
    plain_file.write_text(yaml.safe_dump(BASE))
    ens_file.write_text(yaml.safe_dump({**BASE, "variants": VARIANTS, "example_orders": 2}))
    store = tmp_path / "s.sqlite"
    args = [
        "--teacher",
        "openai-compatible:teacher-test",
        "--base-url",
        f"{teacher_server.url}/v1",
        "--store",
        str(store),
    ]

    def labeler(*argv: str) -> None:
        res = CliRunner().invoke(main, [*argv, *args])
        assert res.exit_code == 0, res.output

    labeler("run", str(plain_file), str(data), "--quiet")
    assert chat_requests(teacher_server) == 5
    labeler("run", str(ens_file), str(data), "--quiet")
    assert chat_requests(teacher_server) == 5 + 15  # the written form was stored already
    labeler("run", str(ens_file), str(data), "--quiet")
    assert chat_requests(teacher_server) == 20  # a rerun sends nothing
    labeler("export", str(ens_file), str(data), "--out", str(tmp_path / "out"), "--kind", "classification")
    assert chat_requests(teacher_server) == 20

    task = load_task(ens_file)
    identity = make_teacher("openai-compatible:teacher-test", base_url=f"{teacher_server.url}/v1").identity
    expected: dict[str, list[float]] = {}
    seen: set[tuple[str, tuple[float, ...]]] = set()
    with Store(store) as st:
        for member in task.members:  # each form read on its own, as a one-form template
            alone = dataclasses.replace(member, others=())
            for item in Planner(alone, identity, st).plan(rows):
                assert item.completion is not None
                soft = read_answer(member, item.completion).soft
                assert soft is not None and soft.valid
                acc = expected.setdefault(item.row.id, [0.0, 0.0])
                for j, p in enumerate(soft.probs):
                    acc[j] += p / len(task.members)
                seen.add((item.row.id, soft.probs))
        planned = Planner(task, identity, st).plan(rows)
    assert len(seen) > 5  # the forms' answers differ, so the mean is not any one form's
    assert [len(forms) for forms in by_row(planned)] == [4] * 5
    out = datasets.load_from_disk(str(tmp_path / "out"))
    out = out["train"] if isinstance(out, datasets.DatasetDict) else out
    assert len(out) == 5
    assert "each row was asked in 4 prompt forms" in (tmp_path / "out" / "README.md").read_text()
    for rec in out:
        assert rec["soft_label"] == pytest.approx(expected[rec["id"]], abs=1e-9)
        assert rec["label"] == max(range(2), key=lambda j: expected[rec["id"]][j])

    # `labeler eval` scores each row once, on the mean, with agreement among the measures.
    res = CliRunner().invoke(main, ["eval", str(ens_file), str(data), *args, "--gold", "gold", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.splitlines()[0])
    right = sum(max(range(2), key=lambda j: expected[r["id"]][j]) == (r["gold"] == "positive") for r in rows)
    assert report["n"] == 5 and report["accuracy"] == pytest.approx(right / 5)
    assert "agreement" in json.dumps(report)
    assert chat_requests(teacher_server) == 20

    # The quality benchmarks read an ensemble's rows the same way.
    teacher = make_teacher("openai-compatible:teacher-test", base_url=f"{teacher_server.url}/v1")
    probs = asyncio.run(label_probs(task, teacher, rows, store, 4))  # type: ignore[arg-type]
    for rid, p in probs.items():
        assert p == pytest.approx(expected[rid], abs=1e-9)
    assert chat_requests(teacher_server) == 20
