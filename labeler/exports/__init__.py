"""Exports: labeled rows as a Hugging Face dataset, one kind of row per training recipe.

The package's public surface; docs/architecture.md draws how its modules sit.
"""

from labeler.exports.build import ExportOptions, ExportReport, export_dataset, merge_card

__all__ = ["ExportOptions", "ExportReport", "export_dataset", "merge_card"]
