"""A gold value of an input row, read as one of the task's labels.

Gold columns come as label names, in another case, as class indices in the template's
label order, or in the words of their source (AG News' 1-based classes) mapped with
``--gold-map``; eval, calibration and the label-prior check all read them the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labeler.errors import ConfigError

__all__ = ["gold_label", "parse_gold_map"]


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
