"""Field names given by flags, checked against the rows they name.

An export reads `--text-field` and `--split-field` with `row.get(name)`: a misspelt name
reads None in every row, and the export is a dataset of empty texts (or one split) with
exit 0. So a named field must be in every row the export reads, and the first row without
it stops the export with one line naming the flag, the field and that row. The first row
is checked before anything is sent, so a typo costs no request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from labeler.errors import ConfigError
from labeler.inputs import Reject, Row


def require_fields(rows: Iterator[Row | Reject], fields: Mapping[str, str]
                   ) -> Iterator[Row | Reject]:
    """`rows`, raising ConfigError at the first row that lacks one of `fields` ({flag:
    field name}); rejects pass through (they are told as rejects already)."""
    if not fields:
        yield from rows
        return
    for item in rows:
        if isinstance(item, Row):
            _check(item, fields)
        yield item


def check_first_row(rows: Iterator[Row | Reject], fields: Mapping[str, str]) -> None:
    """The check of `require_fields` on the first row only: what a run can afford before it
    sends anything (the export checks every row)."""
    if not fields:
        return
    for item in rows:
        if isinstance(item, Row):
            _check(item, fields)
            return


def _check(row: Row, fields: Mapping[str, str]) -> None:
    for flag, name in fields.items():
        if name not in row.data:
            have = ", ".join(list(map(str, row.data))[:12])
            raise ConfigError(f"{flag} '{name}': {row.source}:{row.line} has no field "
                              f"'{name}' (its fields: {have})")


__all__ = ["check_first_row", "require_fields"]
