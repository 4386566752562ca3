"""The Literal types a type checker reads name exactly the kinds and formats the runtime
accepts: a kind registered (or a format added) without its Literal fails here."""

from __future__ import annotations

from typing import get_args

import labeler.exports.kinds  # noqa: F401  (fills the registry)
from labeler.exports.options import FORMATS, KINDS, ExportFormat, ExportKindName


def test_the_literals_match_the_registry() -> None:
    assert list(get_args(ExportKindName)) == list(KINDS)
    assert get_args(ExportFormat) == FORMATS
