"""Soft labels, parsing and confidence, checked against hand-computed numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from labeler.completion import Completion, TokenLogprob
from labeler.errors import ConfigError
from labeler.soft_labels import (
    Confidence,
    LabelSpace,
    SoftLabel,
    confidence,
    parse_label,
    sampled_soft_label,
    soft_label,
    token_confidence,
)

from conftest import SHARED_DATA

BANKING77 = SHARED_DATA / "banking77_test" / "categories.json"
SENTIMENT = LabelSpace(("positive", "negative", "neutral"))
CITIES = LabelSpace(("New York", "New Delhi", "Paris"))


def tok(token: str, p: float, *alts: tuple[str, float]) -> TokenLogprob:
    """A generated token with probability ``p`` and top-k alternatives given as probabilities."""
    return TokenLogprob(token, math.log(p), tuple((t, math.log(q)) for t, q in alts))


def completion(*tokens: TokenLogprob, text: str | None = None) -> Completion:
    if text is None:
        text = "".join(t.token for t in tokens)
    return Completion(text=text, tokens=list(tokens))


def assert_probs(soft: SoftLabel, expected: tuple[float, ...]) -> None:
    assert soft.probs == pytest.approx(expected, abs=1e-9)
    assert sum(soft.probs) == pytest.approx(1.0, abs=1e-9) or not any(expected)


# --- soft labels from logprobs -------------------------------------------------------------


def test_single_token_labels_with_uncovered_remainder_outside() -> None:
    c = completion(tok("positive", 0.7, ("positive", 0.7), ("negative", 0.2), ("neutral", 0.05)))
    soft = soft_label(c, SENTIMENT)
    # top-k covers 0.95; the missing 0.05 is unknown and goes outside.
    assert_probs(soft, (0.7 / 0.95, 0.2 / 0.95, 0.05 / 0.95))
    assert soft.outside == pytest.approx(0.05, abs=1e-9)
    assert soft.source == "logprobs"
    assert not soft.ambiguous
    assert soft.label(SENTIMENT) == "positive"


def test_space_and_case_variants_of_one_label_sum() -> None:
    c = completion(
        tok(
            " Positive",
            0.5,
            (" Positive", 0.5),
            ("positive", 0.2),
            ("POSITIVE", 0.1),
            (" negative", 0.15),
        )
    )
    soft = soft_label(c, SENTIMENT)
    assert_probs(soft, (0.8 / 0.95, 0.15 / 0.95, 0.0))
    assert soft.outside == pytest.approx(0.05, abs=1e-9)


def test_case_sensitive_space_sends_other_cases_outside() -> None:
    space = LabelSpace(("Positive", "negative"), case_sensitive=True)
    c = completion(
        tok(
            " Positive",
            0.5,
            (" Positive", 0.5),
            ("positive", 0.2),
            ("POSITIVE", 0.1),
            ("Ġnegative", 0.15),
        )
    )
    soft = soft_label(c, space)
    assert_probs(soft, (0.5 / 0.65, 0.15 / 0.65))
    assert soft.outside == pytest.approx(0.35, abs=1e-9)


def test_prefix_token_and_token_running_past_the_label() -> None:
    # "pos" starts "positive"; "negative." extends "negative" at a non-alphanumeric boundary;
    # "neutrality" extends "neutral" with a letter, so it is not that label.
    c = completion(tok("pos", 0.4, ("pos", 0.4), ("negative.", 0.3), ("▁neutral", 0.2), ("neutrality", 0.1)))
    soft = soft_label(c, SENTIMENT)
    assert_probs(soft, (0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9))
    assert soft.outside == pytest.approx(0.1, abs=1e-9)


def test_multi_token_labels_resolved_by_descent() -> None:
    c = completion(
        tok("New", 0.6, ("New", 0.6), (" Paris", 0.3), ("Los", 0.05)),
        tok(" York", 0.75, (" York", 0.75), (" Delhi", 0.2), (" Jersey", 0.01)),
    )
    soft = soft_label(c, CITIES)
    # P(New York) = .6·.75, P(New Delhi) = .6·.2, P(Paris) = .3;
    # outside = .05 (Los) + .05 (uncovered at p0) + .6·(.01 + .04) (Jersey, uncovered at p1).
    assert_probs(soft, (0.45 / 0.87, 0.12 / 0.87, 0.30 / 0.87))
    assert soft.outside == pytest.approx(0.13, abs=1e-9)
    assert not soft.ambiguous


def test_descent_three_levels_deep() -> None:
    space = LabelSpace(("card_arrival", "card_linking", "top_up"))
    c = completion(
        tok("card", 0.8, ("card", 0.8), ("top", 0.15)),
        tok("_", 0.9, ("_", 0.9), ("s", 0.1)),
        tok("arr", 0.7, ("arr", 0.7), ("link", 0.25), ("x", 0.05)),
        tok("ival", 0.99, ("ival", 0.99)),
    )
    soft = soft_label(c, space)
    arrival, linking, top_up = 0.8 * 0.9 * 0.7, 0.8 * 0.9 * 0.25, 0.15
    total = arrival + linking + top_up
    assert_probs(soft, (arrival / total, linking / total, top_up / total))
    # .05 uncovered at p0, "cards" .8·.1, "card_x" .8·.9·.05
    assert soft.outside == pytest.approx(0.05 + 0.08 + 0.036, abs=1e-9)
    assert soft.outside == pytest.approx(1 - total, abs=1e-9)


def test_shared_prefix_off_the_generated_path_is_split_and_flagged() -> None:
    c = completion(tok("Paris", 0.6, ("Paris", 0.6), ("New", 0.3), ("Rome", 0.05)))
    soft = soft_label(c, CITIES)
    assert_probs(soft, (0.15 / 0.9, 0.15 / 0.9, 0.6 / 0.9))
    assert soft.outside == pytest.approx(0.1, abs=1e-9)
    assert soft.ambiguous


def test_generated_path_that_stops_while_shared_is_split_and_flagged() -> None:
    c = completion(tok("New", 0.9, ("New", 0.9), ("Paris", 0.1)))
    soft = soft_label(c, CITIES)
    assert_probs(soft, (0.45, 0.45, 0.1))
    assert soft.outside == pytest.approx(0.0, abs=1e-9)
    assert soft.ambiguous


def test_code_that_prefixes_another_code_completes_at_a_word_end() -> None:
    space = LabelSpace(("x", "y", "z"), {"x": ("A",), "y": ("AA",), "z": ("C",)})
    c = completion(
        tok("A", 0.7, ("A", 0.7), ("AA", 0.2), ("B", 0.1)),
        tok("\n", 0.6, ("\n", 0.6), ("A", 0.3), (" ", 0.05)),
    )
    soft = soft_label(c, space)
    x = 0.7 * 0.6 + 0.7 * 0.05  # "A\n" and "A " end the code A
    y = 0.7 * 0.3 + 0.2  # "A"+"A" on the path, and "AA" directly
    assert_probs(soft, (x / (x + y), y / (x + y), 0.0))
    assert soft.outside == pytest.approx(0.1 + 0.7 * 0.05, abs=1e-9)
    assert not soft.ambiguous


def test_leading_filler_tokens_are_skipped_and_filler_alternatives_are_outside() -> None:
    c = completion(
        tok("**", 0.5, ("**", 0.5), ("positive", 0.3)),
        tok("\n", 0.9, ("\n", 0.9)),
        tok(" ", 0.9),
        tok("Positive", 0.8, ("Positive", 0.8), ('"', 0.1), ("negative", 0.05)),
    )
    soft = soft_label(c, SENTIMENT)
    # Read at the first content token only: .1 on a quote and .05 uncovered are outside.
    assert_probs(soft, (0.8 / 0.85, 0.05 / 0.85, 0.0))
    assert soft.outside == pytest.approx(0.15, abs=1e-9)


def test_chosen_token_missing_from_top_and_empty_top() -> None:
    missing = completion(tok("neutral", 0.1, ("positive", 0.6), ("negative", 0.25)))
    soft = soft_label(missing, SENTIMENT)
    assert_probs(soft, (0.6 / 0.95, 0.25 / 0.95, 0.1 / 0.95))
    assert soft.outside == pytest.approx(0.05, abs=1e-9)

    bare = completion(tok("negative", 0.9))
    soft = soft_label(bare, SENTIMENT)
    assert_probs(soft, (0.0, 1.0, 0.0))
    assert soft.outside == pytest.approx(0.1, abs=1e-9)


def test_no_label_mass_gives_all_zero() -> None:
    c = completion(tok("maybe", 0.7, ("maybe", 0.7), ("unsure", 0.3)))
    soft = soft_label(c, SENTIMENT)
    assert soft.probs == (0.0, 0.0, 0.0)
    assert soft.outside == pytest.approx(1.0, abs=1e-9)
    assert soft.label(SENTIMENT) is None
    empty = soft_label(completion(tok(" ", 0.9), tok("\n", 0.9)), SENTIMENT)
    assert empty.probs == (0.0, 0.0, 0.0) and empty.outside == 1.0


def test_completion_mode_reads_only_the_next_token_distribution() -> None:
    c = completion(
        tok(" negative", 0.6, (" negative", 0.6), (" positive", 0.4)),
        tok("\n\n", 0.9),
        tok("Review", 0.8, ("Review", 0.8)),
        tok(":", 0.9),
    )
    soft = soft_label(c, SENTIMENT)
    assert_probs(soft, (0.4, 0.6, 0.0))
    assert soft.outside == pytest.approx(0.0, abs=1e-9)


def test_without_logprobs_falls_back_to_samples_or_parsed_text() -> None:
    sampled = Completion(text="positive", samples=["positive", "negative", "positive", "?"])
    soft = soft_label(sampled, SENTIMENT)
    assert soft.source == "samples:4"  # the source names how many answers it is the share of
    assert_probs(soft, (2 / 3, 1 / 3, 0.0))
    assert soft.outside == pytest.approx(0.25, abs=1e-9)

    one = soft_label(Completion(text="Negative."), SENTIMENT)
    assert (one.probs, one.outside, one.source) == ((0.0, 1.0, 0.0), 0.0, "none")
    bad = soft_label(Completion(text="no idea"), SENTIMENT)
    assert (bad.probs, bad.outside, bad.source) == ((0.0, 0.0, 0.0), 1.0, "none")


def test_sampled_soft_label_is_the_empirical_distribution() -> None:
    samples = ["positive", "Positive.", "negative", "maybe", "positive"]
    soft = sampled_soft_label(samples, SENTIMENT)
    assert_probs(soft, (0.75, 0.25, 0.0))
    assert soft.outside == pytest.approx(0.2, abs=1e-9)
    assert not soft.ambiguous
    none = sampled_soft_label(["?", "!"], SENTIMENT)
    assert none.probs == (0.0, 0.0, 0.0) and none.outside == 1.0


# --- parse_label ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("positive", "positive"),
        ("  Positive\n", "positive"),
        ('"negative".', "negative"),
        ("**Neutral**", "neutral"),
        ("`negative`", "negative"),
        ("Label: positive", "positive"),
        ("**Sentiment:** Negative.", "negative"),
        ("answer = neutral", "neutral"),
        ("positive, because the plot is great", "positive"),
        ("\n\nnegative\nThe review complains.", "negative"),
        ("positively", None),
        ("I think it is positive", None),
        ("mixed", None),
        ("", None),
        ("  \n ** \n", None),
    ],
)
def test_parse_label(text: str, expected: str | None) -> None:
    assert parse_label(text, SENTIMENT) == expected


def test_parse_label_case_codes_punctuation_and_longest_match() -> None:
    cs = LabelSpace(("Positive", "negative"), case_sensitive=True)
    assert parse_label("Positive", cs) == "Positive"
    assert parse_label("positive", cs) is None

    codes = LabelSpace(("pos", "neg"), {"pos": ("A",), "neg": ("B",)})
    assert parse_label("B", codes) == "neg"
    assert parse_label("(a)", codes) == "pos"
    assert parse_label("A) positive", codes) == "pos"
    assert parse_label("C", codes) is None

    # A label that ends in punctuation still matches with or without it.
    odd = LabelSpace(("reverted_card_payment?", "request_refund"))
    assert parse_label("reverted_card_payment?", odd) == "reverted_card_payment?"
    assert parse_label("Reverted_card_payment", odd) == "reverted_card_payment?"

    synonyms = LabelSpace(("positive", "negative"), {"positive": ("pos", "positive", "good")})
    assert parse_label("Good!", synonyms) == "positive"

    cities = LabelSpace(("New", "New York"))
    assert parse_label("New York City", cities) == "New York"
    assert parse_label("New Jersey", cities) == "New"


# --- the label space -----------------------------------------------------------------------


def test_label_space_validation() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        LabelSpace(("a", "a"))
    with pytest.raises(ConfigError, match="used by both"):
        LabelSpace(("a", "b"), {"a": ("x",), "b": ("X",)})
    with pytest.raises(ConfigError, match="unknown labels"):
        LabelSpace(("a",), {"b": ("x",)})
    with pytest.raises(ConfigError):
        LabelSpace(())
    space = LabelSpace(["a", "b"], {"a": "alpha"})  # type: ignore[arg-type]
    assert space.labels == ("a", "b")
    assert space.verbalizers == {"a": ("alpha",), "b": ("b",)}
    assert hash(space) == hash(LabelSpace(("a", "b"), {"a": ("alpha",)}))


def test_ambiguity_small_sets() -> None:
    assert SENTIMENT.ambiguity() == []
    (warning,) = LabelSpace(("pos", "positive", "neg")).ambiguity()
    assert "'pos' is a prefix of 'positive'" in warning
    (warning,) = CITIES.ambiguity()
    assert "New York" in warning and "New Delhi" in warning and "'new'" in warning


def test_with_codes() -> None:
    assert SENTIMENT.with_codes().codes() == {"positive": "A", "negative": "B", "neutral": "C"}
    many = LabelSpace(tuple(f"label_{i}" for i in range(30)))
    codes = list(many.with_codes().codes().values())
    assert codes[:3] == ["AA", "AB", "AC"] and codes[-1] == "BD"
    assert many.with_codes().ambiguity() == []
    digits = list(many.with_codes("digits").codes().values())
    assert digits[0] == "01" and digits[-1] == "30"
    assert many.with_codes("digits").ambiguity() == []
    with pytest.raises(ConfigError):
        many.with_codes("roman")


def test_ambiguity_on_banking77_labels() -> None:
    if not BANKING77.exists():
        pytest.skip(f"needs the Banking77 label names at {BANKING77}")
    space = LabelSpace(tuple(json.loads(BANKING77.read_text())))
    warnings = space.ambiguity()
    card = [w for w in warnings if "'card'" in w]
    assert len(card) == 1
    assert "card_arrival" in card[0] and "card_linking" in card[0]
    assert any("'top' is a prefix of 'topping'" in w for w in warnings)
    coded = space.with_codes()
    assert coded.ambiguity() == []
    assert parse_label("CY", coded) == space.labels[-1]
    # Codes that are whole tokens resolve at the first position.
    c = completion(tok("AB", 0.7, ("AB", 0.7), (" AC", 0.2)))
    soft = soft_label(c, coded)
    assert soft.probs[1] == pytest.approx(0.7 / 0.9, abs=1e-9)
    assert soft.probs[2] == pytest.approx(0.2 / 0.9, abs=1e-9)
    assert not soft.ambiguous


# --- confidence ----------------------------------------------------------------------------


def test_confidence_measures() -> None:
    c = completion(tok("neg", 0.5), tok("ative", 0.8))
    soft = SoftLabel((0.5, 0.3, 0.2), 0.1, "logprobs")
    conf = confidence(c, soft)
    assert conf.max_prob == pytest.approx(0.5, abs=1e-9)
    assert conf.margin == pytest.approx(0.2, abs=1e-9)
    h = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert conf.entropy == pytest.approx(h, abs=1e-9)
    assert conf.mean_logprob == pytest.approx((math.log(0.5) + math.log(0.8)) / 2, abs=1e-9)
    assert conf.agreement is None
    assert token_confidence(c) == conf.mean_logprob


def test_confidence_without_mass_and_for_sampled_teachers() -> None:
    empty = confidence(Completion(text="?"), SoftLabel((0.0, 0.0, 0.0), 1.0, "none"))
    assert empty == Confidence(0.0, 0.0, math.log(3), None, None)

    samples = ["positive", "positive", "negative", "junk", "positive"]
    c = Completion(text="positive", samples=samples)
    conf = confidence(c, soft_label(c, SENTIMENT))
    assert conf.max_prob == pytest.approx(0.75, abs=1e-9)
    assert conf.margin == pytest.approx(0.5, abs=1e-9)
    assert conf.agreement == pytest.approx(0.6, abs=1e-9)  # 3 of all 5 samples
    assert conf.mean_logprob is None
    assert token_confidence(c) is None

    one_hot = confidence(Completion(text="neutral"), soft_label(Completion("neutral"), SENTIMENT))
    assert (one_hot.max_prob, one_hot.margin, one_hot.entropy) == (1.0, 1.0, 0.0)


def test_completion_mode_answer_is_the_label_with_the_most_summed_mass() -> None:
    """sentiment-completion maps positive <- positive/good/great. The greedy token is
    " negative" (0.40), but " good" + " great" + " positive" carry 0.55: the answer, the
    export's hard label, is positive. A chat template still answers with its text."""
    from labeler.answer import read_answer
    from labeler.task import load_task

    c = completion(
        tok(
            " negative",
            0.40,
            (" negative", 0.40),
            (" good", 0.25),
            (" great", 0.20),
            (" positive", 0.10),
            (" the", 0.05),
        )
    )
    task = load_task("sentiment-completion")
    answer = read_answer(task, c)
    assert answer.label == "positive" and answer.valid
    assert answer.soft is not None and answer.soft.label(task.label_space) == "positive"
    chat = load_task("sentiment")
    assert (
        read_answer(chat, completion(tok("negative", 0.40, ("negative", 0.40), ("positive", 0.55)))).label
        == "negative"
    )


def test_one_ambiguity_warning_per_label_set_lists_groups_and_the_yaml_fix() -> None:
    if not BANKING77.exists():
        pytest.skip(f"needs the Banking77 label names at {BANKING77}")
    space = LabelSpace(tuple(json.loads(BANKING77.read_text())))
    warning = space.ambiguity_warning()
    assert warning is not None and "\n" not in warning
    assert "card_arrival" in warning and "'top' is a prefix of 'topping'" in warning
    # 77 labels need two-character codes, which tokenizers that split digits give one
    # shared first token: no codes are suggested, the split is said instead
    assert "Fix:" not in warning and "codes would not help 77 labels" in warning
    assert "logprobs:split" in warning
    assert SENTIMENT.ambiguity_warning() is None


def test_codes_are_suggested_only_where_each_is_one_token() -> None:
    few = LabelSpace(("card_arrival", "card_linking", "balance"))
    warning = few.ambiguity_warning()
    assert warning is not None and "with_codes" not in warning  # a YAML fix, not an API
    assert (
        'output: labels: {"card_arrival": "1", "card_linking": "2", "balance": "3"} (single digits'
    ) in warning
    letters = LabelSpace(tuple(f"card_{i:02d}" for i in range(12)))
    assert 'labels: {"card_00": "A", "card_01": "B"' in (letters.ambiguity_warning() or "")


def test_a_template_with_ambiguous_labels_warns_once(tmp_path: Path) -> None:
    from labeler.task import load_task

    labels = json.dumps(
        [f"card_{w}" for w in ("arrival", "linking", "lost", "swallowed")]
        + [f"top_up_{w}" for w in ("failed", "limits", "reverted")]
        + ["topping"]
    )
    path = tmp_path / "intent.yaml"
    path.write_text(f"name: intent\nuser: '{{{{ text }}}}'\noutput:\n  kind: label\n  labels: {labels}\n")
    (warning,) = load_task(path).warnings
    assert "3 group(s)" in warning and "card_arrival" in warning and "top_up_failed" in warning
    # The fix it prints, pasted into the template, silences it.
    fix = warning.split("in the template write output: labels: ")[1].split(" (single")[0]
    path.write_text(f"name: intent\nuser: '{{{{ text }}}}'\noutput:\n  kind: label\n  labels: {fix}\n")
    assert load_task(path).warnings == ()
