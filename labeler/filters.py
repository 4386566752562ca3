"""Dropping teacher labels that are unlikely to be right, and accounting for every drop.

A distilled student inherits its teacher's mistakes, and the teacher's own confidence is
the cheapest signal of which labels are mistakes. Filters run row by row (datasets can
have millions of rows), and the `FilterReport` records which filter removed how many rows,
so the dataset card can state exactly what the student never saw.

Each rejected row is charged to the *first* filter that rejects it, in the fixed order
invalid → confidence → margin → entropy, so the counts add up to the rows removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from labeler.confidence import Confidence
from labeler.errors import ConfigError
from labeler.option_fields import option

__all__ = ["FILTER_ORDER", "Filter", "FilterReport", "FilterSpec", "apply_filters"]

T = TypeVar("T")

FILTER_ORDER: tuple[str, ...] = ("invalid", "confidence", "margin", "entropy")


@dataclass(frozen=True)
class FilterSpec:
    """Thresholds a kept row must meet; None switches a filter off.

    ``min_confidence`` applies to `Confidence.max_prob`, ``min_margin`` to the top-1 minus
    top-2 gap and ``max_entropy`` to the entropy in nats. A row whose confidence is unknown
    fails any threshold that is switched on: nothing shows it meets the bar.
    """

    min_confidence: float | None = option(
        None, group="filter", help="Drop rows whose max label prob is lower."
    )
    min_margin: float | None = option(None, group="filter", help="Drop rows whose top-2 margin is lower.")
    max_entropy: float | None = option(None, group="filter", help="Drop rows whose label entropy is higher.")
    drop_invalid: bool = option(
        True,
        group="filter",
        flag="--keep-invalid",
        invert=True,
        help="Keep answers that are not a valid label.",
    )

    def __post_init__(self) -> None:
        for name in ("min_confidence", "min_margin"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {value}")
        if self.max_entropy is not None and not self.max_entropy >= 0.0:
            raise ConfigError(f"max_entropy must be >= 0 nats, got {self.max_entropy}")

    @property
    def active(self) -> bool:
        return (
            self.drop_invalid
            or self.min_confidence is not None
            or self.min_margin is not None
            or self.max_entropy is not None
        )

    def thresholds(self) -> dict[str, str]:
        """Each filter's setting as card text ("off" when it is switched off)."""

        def show(value: float | None, op: str) -> str:
            return "off" if value is None else f"{op} {value:g}"

        return {
            "invalid": "drop" if self.drop_invalid else "off",
            "confidence": show(self.min_confidence, "max_prob ≥"),
            "margin": show(self.min_margin, "margin ≥"),
            "entropy": show(self.max_entropy, "entropy ≤"),
        }


@dataclass
class FilterReport:
    """How many rows each filter removed and how many were kept.

    It is filled while rows stream through a `Filter`; read it once the stream is done.
    """

    spec: FilterSpec = field(default_factory=FilterSpec)
    total: int = 0
    kept: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTER_ORDER, 0))

    def removed(self) -> dict[str, int]:
        """Rows removed per filter, in filter order."""
        return {name: self.counts[name] for name in FILTER_ORDER}

    @property
    def removed_total(self) -> int:
        return self.total - self.kept

    def to_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "kept": self.kept,
            "removed": self.removed(),
            "thresholds": self.spec.thresholds(),
        }

    def to_table(self) -> str:
        """A Markdown table for the dataset card."""
        settings = self.spec.thresholds()
        lines = ["| filter | setting | rows removed |", "|---|---|---:|"]
        for name in FILTER_ORDER:
            lines.append(f"| {name} | {settings[name]} | {self.counts[name]} |")
        share = f" ({self.kept / self.total:.1%})" if self.total else ""
        lines.append(f"| **kept** | | **{self.kept} of {self.total}{share}** |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


class Filter:
    """Streaming filter: call `keep` once per row; `report` accumulates the counts."""

    def __init__(self, spec: FilterSpec) -> None:
        self.spec = spec
        self.report = FilterReport(spec=spec)

    def reason(self, label: str | None, conf: Confidence | None) -> str | None:
        """Name of the first filter that rejects the row, or None to keep it (counts nothing)."""
        spec = self.spec
        if spec.drop_invalid and label is None:
            return "invalid"
        # Written as `not (value >= bound)` so a NaN confidence is rejected, not kept.
        if spec.min_confidence is not None and (conf is None or not conf.max_prob >= spec.min_confidence):
            return "confidence"
        if spec.min_margin is not None and (conf is None or not conf.margin >= spec.min_margin):
            return "margin"
        if spec.max_entropy is not None and (conf is None or not conf.entropy <= spec.max_entropy):
            return "entropy"
        return None

    def keep(self, label: str | None, conf: Confidence | None) -> bool:
        """Whether to keep the row; the rejection, if any, is counted in `report`."""
        rejected = self.reason(label, conf)
        report = self.report
        report.total += 1
        if rejected is None:
            report.kept += 1
            return True
        report.counts[rejected] += 1
        return False


def apply_filters(
    items: Iterable[T],
    spec: FilterSpec,
    get: Callable[[T], tuple[str | None, Confidence | None]],
) -> tuple[Iterator[T], FilterReport]:
    """Lazily keep the items that pass ``spec``; ``get`` extracts (label, confidence).

    The iterator is lazy so a million-row dataset is never held in memory twice; the report
    it returns is complete once the iterator has been exhausted.
    """
    filt = Filter(spec)

    def kept() -> Iterator[T]:
        for item in items:
            label, conf = get(item)
            if filt.keep(label, conf):
                yield item

    return kept(), filt.report
