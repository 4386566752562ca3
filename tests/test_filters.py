"""Confidence filters: which filter removes which row, and the report the card prints."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from labeler.errors import ConfigError
from labeler.filters import FILTER_ORDER, Filter, FilterReport, FilterSpec, apply_filters
from labeler.soft_labels import Confidence

SPEC = FilterSpec(min_confidence=0.6, min_margin=0.2, max_entropy=1.0)


def conf(max_prob: float, margin: float, entropy: float) -> Confidence:
    return Confidence(max_prob, margin, entropy)


ROWS: list[tuple[str | None, Confidence | None]] = [
    ("a", conf(0.9, 0.8, 0.3)),  # kept
    (None, conf(0.9, 0.8, 0.3)),  # invalid
    ("a", conf(0.5, 0.4, 0.3)),  # confidence
    ("a", conf(0.7, 0.1, 0.3)),  # margin
    ("a", conf(0.7, 0.3, 1.2)),  # entropy
    (None, conf(0.1, 0.0, 2.0)),  # invalid (first of several failures)
    ("a", conf(0.5, 0.1, 2.0)),  # confidence (first of three)
    ("a", None),  # confidence: unknown cannot meet a threshold
    ("a", conf(math.nan, 0.5, 0.1)),  # confidence: NaN is rejected
    ("b", conf(0.6, 0.2, 1.0)),  # kept: bounds are inclusive
]


def test_first_rejecting_filter_gets_the_count() -> None:
    flt = Filter(SPEC)
    kept = [row for row in ROWS if flt.keep(*row)]
    assert kept == [ROWS[0], ROWS[9]]
    report = flt.report
    assert report.removed() == {"invalid": 2, "confidence": 4, "margin": 1, "entropy": 1}
    assert (report.total, report.kept, report.removed_total) == (10, 2, 8)
    assert list(report.removed()) == list(FILTER_ORDER)


def test_reason_does_not_count() -> None:
    flt = Filter(SPEC)
    assert [flt.reason(*row) for row in ROWS[:5]] == [
        None,
        "invalid",
        "confidence",
        "margin",
        "entropy",
    ]
    assert flt.report.total == 0


def test_switched_off_filters_keep_rows() -> None:
    flt = Filter(FilterSpec(drop_invalid=False))
    assert all(flt.keep(*row) for row in ROWS)
    assert flt.report.kept == 10 and flt.report.removed_total == 0
    assert not FilterSpec(drop_invalid=False).active
    assert FilterSpec().active  # invalid rows are dropped by default


def test_apply_filters_streams_lazily() -> None:
    pulled = 0

    def rows() -> Iterator[tuple[str | None, Confidence | None]]:
        nonlocal pulled
        for row in ROWS:
            pulled += 1
            yield row

    kept, report = apply_filters(rows(), SPEC, lambda row: row)
    assert pulled == 0 and report.total == 0
    assert next(kept) == ROWS[0]
    assert pulled == 1
    assert list(kept) == [ROWS[9]]
    assert (report.total, report.kept) == (10, 2)
    assert report.removed()["confidence"] == 4


def test_large_stream_counts() -> None:
    n = 100_000
    items = (("x" if i % 10 else None, conf((i % 100) / 100, 1.0, 0.0)) for i in range(n))
    kept, report = apply_filters(items, FilterSpec(min_confidence=0.5), lambda r: r)
    assert sum(1 for _ in kept) == report.kept
    assert report.removed()["invalid"] == n // 10
    # Of the valid rows (i % 10 != 0), those with i % 100 < 50 fail: 45 of every 100.
    assert report.removed()["confidence"] == 45 * n // 100
    assert report.kept == n - n // 10 - 45 * n // 100


def test_report_renders_for_the_card() -> None:
    flt = Filter(SPEC)
    for row in ROWS:
        flt.keep(*row)
    d = flt.report.to_dict()
    assert d["total"] == 10 and d["kept"] == 2
    assert d["removed"] == {"invalid": 2, "confidence": 4, "margin": 1, "entropy": 1}
    assert d["thresholds"]["confidence"] == "max_prob ≥ 0.6"
    table = flt.report.to_table()
    assert "| confidence | max_prob ≥ 0.6 | 4 |" in table
    assert "| entropy | entropy ≤ 1 | 1 |" in table
    assert "2 of 10 (20.0%)" in table
    assert str(flt.report) == table
    assert "| margin | off | 0 |" in FilterReport().to_table()


@pytest.mark.parametrize(
    "kwargs",
    [{"min_confidence": 1.5}, {"min_margin": -0.1}, {"max_entropy": -1.0}],
)
def test_spec_rejects_impossible_thresholds(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        FilterSpec(**kwargs)
