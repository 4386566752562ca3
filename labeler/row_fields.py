"""Field names given by flags, checked against the rows they name.

An export reads `--text-field` and `--split-field` with `row.get(name)`: a misspelt name
reads None in every row, and the export is a dataset of empty texts (or of one split) with
exit 0. So a text field must be in every row the export reads: the first row without it
stops the export with one line naming the flag, the field and that row. A split field may
be missing from some rows (they go to `train`), but not from all of them. The first rows
are checked before anything is sent, so a typo costs no request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice

from labeler.errors import ConfigError
from labeler.inputs import Reject, Row

FIRST_ROWS = 20  # rows that must all lack a split field for it to be a typo at the door
EVERY_ROW = ("--text-field",)  # flags whose field each row must have


def require_fields(
    rows: Iterator[Row | Reject], fields: Mapping[str, str], *, first: int | None = None
) -> Iterator[Row | Reject]:
    """`rows`, raising ConfigError at the first row that lacks a field every row must
    have, or at the end when no row had one of the others; rejects pass through (they
    are told as rejects already)."""
    if not fields:
        yield from rows
        return
    every = {flag: name for flag, name in fields.items() if flag in EVERY_ROW}
    unseen = {flag: name for flag, name in fields.items() if flag not in EVERY_ROW}
    last: Row | None = None
    read = 0
    for item in rows if first is None else islice(rows, first):
        read += 1
        if isinstance(item, Row):
            last = item
            _check(item, every)
            for flag in [f for f, name in unseen.items() if name in item.data]:
                del unseen[flag]
        yield item
    if last is not None and unseen:
        flag, name = next(iter(unseen.items()))
        which = "no row" if first is None or read < first else f"none of the first {read} rows"
        raise ConfigError(f"{flag} '{name}': {which} of {last.source} has that field")


def check_first_rows(rows: Iterator[Row | Reject], fields: Mapping[str, str]) -> None:
    """The same check on the first rows only: what a run can afford before it sends
    anything (the export checks every row)."""
    if fields:
        for _ in require_fields(rows, fields, first=FIRST_ROWS):
            pass


def _check(row: Row, fields: Mapping[str, str]) -> None:
    for flag, name in fields.items():
        if name not in row.data:
            have = ", ".join(list(map(str, row.data))[:12])
            raise ConfigError(
                f"{flag} '{name}': {row.source}:{row.line} has no field '{name}' (its fields: {have})"
            )


__all__ = ["check_first_rows", "require_fields"]
