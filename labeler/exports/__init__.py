"""Exports: labeled rows as a Hugging Face dataset, one kind of row per training recipe.

The package's public surface. `options` (what an export is asked for, what it reports,
the registry of kinds) sits at the bottom; `kinds` (one class per `--kind`) builds on
it with `rows`; `card` and `build` read both. docs/architecture.md draws the rest.
"""

from labeler.exports.build import export_dataset, merge_card
from labeler.exports.kinds import ExportKind, export_kind
from labeler.exports.options import (
    FORMATS,
    KD_LAYOUTS,
    KINDS,
    SFT_SHAPES,
    ExportOptions,
    ExportReport,
    register,
)

__all__ = [
    "FORMATS",
    "KD_LAYOUTS",
    "KINDS",
    "SFT_SHAPES",
    "ExportKind",
    "ExportOptions",
    "ExportReport",
    "export_dataset",
    "export_kind",
    "merge_card",
    "register",
]
