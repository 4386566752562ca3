"""A gold value of an input row, read as one of the task's labels.

Gold columns come as label names, in another case, as class indices in the template's
label order, or in the words of their source (AG News' 1-based classes) mapped with
``--gold-map``; eval, calibration and the label-prior check all read them the same way.
An export that is not told where gold is looks for a field of label names
(`find_gold_field`), so rows that carry a few gold labels are calibrated on them unasked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from labeler.errors import ConfigError

__all__ = ["SCAN_ROWS", "GoldField", "find_gold_field", "gold_label", "parse_gold_map"]


def parse_gold_map(spec: str | None) -> dict[str, str]:
    """``1=World,2=Sports`` -> {"1": "World", "2": "Sports"}."""
    if not spec:
        return {}
    out = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--gold-map '{spec}': expected GOLD=LABEL[,GOLD=LABEL...]")
        out[key.strip()] = value.strip()
    return out


def gold_label(raw: Any, labels: tuple[str, ...], gold_map: Mapping[str, str], where: str, field: str) -> str:
    """The label a gold value names; an unknown value is an error naming row and field."""
    text = str(raw).strip()
    if text in gold_map:
        return gold_map[text]
    if text in labels:
        return text
    folded = {label.lower(): label for label in labels}
    if text.lower() in folded:
        return folded[text.lower()]
    if isinstance(raw, int) or text.isdigit():
        index = int(text)
        if 0 <= index < len(labels):
            return labels[index]
    raise ConfigError(
        f"{where}: gold value {text!r} in field '{field}' is not a label of the task "
        f"({', '.join(labels[:8])}{'…' if len(labels) > 8 else ''}); map it with --gold-map"
    )


# A field is judged on this many rows: a bounded look (an export of a million rows should
# not read its input a third time to find a gold column), and the rows it keeps are
# checked in full when the calibration reads them (`gold_calibration.read_gold_rows`).
SCAN_ROWS = 2000


@dataclass(frozen=True)
class GoldField:
    """What a look at the input's first rows found: the one field that holds labels.

    `field` is None when no field, or more than one (`ambiguous`), holds only label names:
    choosing between two would be a guess, so the user names one with ``--gold``."""

    field: str | None
    rows: int = 0  # scanned rows with a label in `field`
    ambiguous: tuple[str, ...] = ()


def find_gold_field(
    rows: Iterable[Mapping[str, Any]], labels: tuple[str, ...], prompt_fields: Iterable[str]
) -> GoldField:
    """The input field whose every non-empty value is a label name (in any case), on at
    least two different labels, among fields the prompt does not read.

    Why so strict: a field taken for gold decides the calibration of every soft label
    exported, so only label *names* count (class indices and other words need
    ``--gold``/``--gold-map``: reading ``1`` as the second label would be a guess), a
    constant field is not gold, and a field the prompt reads is input, not an answer key.
    """
    folded = {label.casefold() for label in labels}
    skip = set(prompt_fields)
    counts: dict[str, int] = {}
    seen: dict[str, set[str]] = {}
    out: set[str] = set()
    for i, data in enumerate(rows):
        if i >= SCAN_ROWS:
            break
        for name, raw in data.items():
            if name in skip or name in out or raw is None or raw == "":
                continue
            value = raw.strip().casefold() if isinstance(raw, str) else None
            if value is None or value not in folded:
                out.add(name)
                continue
            counts[name] = counts.get(name, 0) + 1
            seen.setdefault(name, set()).add(value)
    found = sorted(name for name in counts if name not in out and len(seen[name]) >= 2)
    if len(found) == 1:
        return GoldField(found[0], counts[found[0]])
    return GoldField(None, ambiguous=tuple(found))
