"""Which input field an export takes for gold when not told (`labeler.gold.find_gold_field`)."""

from __future__ import annotations

from labeler.gold import SCAN_ROWS, GoldField, find_gold_field

LABELS = ("negative", "positive")


def _rows(**columns: list[object]) -> list[dict[str, object]]:
    n = max(len(v) for v in columns.values())
    return [{k: v[i] for k, v in columns.items() if i < len(v)} for i in range(n)]


def test_the_one_field_of_label_names_is_found_in_any_case_with_gaps() -> None:
    rows = _rows(text=["a", "b", "c", "d"], gold=["Positive", "", None, "negative "])
    assert find_gold_field(rows, LABELS, {"text"}) == GoldField("gold", 2)


def test_a_field_the_prompt_reads_is_input_not_gold() -> None:
    rows = _rows(text=["positive", "negative"], id=["1", "2"])
    assert find_gold_field(rows, LABELS, {"text"}) == GoldField(None)
    assert find_gold_field(rows, LABELS, set()) == GoldField("text", 2)


def test_one_value_that_is_not_a_label_rules_the_field_out() -> None:
    rows = _rows(gold=["positive", "negative", "neutral", "positive"])
    assert find_gold_field(rows, LABELS, ()).field is None


def test_class_indices_and_a_constant_field_are_not_taken() -> None:
    """Reading 1 as the second label would be a guess (AG News counts from 1); a field
    that always says one label is a tag, not gold."""
    assert find_gold_field(_rows(y=[0, 1, 1, 0]), LABELS, ()).field is None
    assert find_gold_field(_rows(y=["0", "1"]), LABELS, ()).field is None
    assert find_gold_field(_rows(src=["positive"] * 5), LABELS, ()).field is None


def test_two_fields_of_labels_are_named_and_neither_is_chosen() -> None:
    rows = _rows(gold=["positive", "negative"], label=["negative", "positive"])
    assert find_gold_field(rows, LABELS, ()) == GoldField(None, ambiguous=("gold", "label"))


def test_only_the_first_rows_are_read() -> None:
    rows = [{"gold": "positive" if i % 2 else "negative"} for i in range(SCAN_ROWS)]
    rows.append({"gold": "not a label"})
    assert find_gold_field(rows, LABELS, ()) == GoldField("gold", SCAN_ROWS)
