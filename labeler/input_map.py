"""`--map FIELD=COLUMN`: feed a template field from an input column of another name.

Public datasets rarely name their text the way a template does (SST-2's `sentence`, a
template's `text`); renaming a column by hand means a copy of the data. The map is applied
to each row as it is read: the template field gets the column's value (the column stays,
so `--gold`, `--split-field` and the export still find it). The rendered request of a
mapped row is exactly that of a row whose column already had the field's name, so its
cache key is too: answers stored before the map are found with it, and the reverse.

A mapped column no row has is a typo in the map, not bad data: when the first rows all
lack it, the run stops before it sends anything, naming the column and the first row
without it (labeler/template_check.py does the same for a template's own fields).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from labeler.errors import ConfigError
from labeler.inputs import Reject, Row

InputMap = Mapping[str, str]


def parse_input_map(spec: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    """``{"text": "sentence"}`` or ``["text=sentence"]`` as one checked mapping of template
    field to input column; a malformed or repeated field is one line naming it."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        spec = [spec]
    pairs: list[tuple[Any, Any]] = []
    if isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        for item in spec:
            field, sep, column = str(item).partition("=")
            if not sep:
                raise ConfigError(f"--map {item!r}: expected FIELD=COLUMN, e.g. text=sentence")
            pairs.append((field.strip(), column.strip()))
    out: dict[str, str] = {}
    for field, column in pairs:
        if not isinstance(field, str) or not isinstance(column, str) or not field or not column:
            raise ConfigError(
                f"--map {field}={column}: expected FIELD=COLUMN, both names, e.g. text=sentence"
            )
        if field in out:
            raise ConfigError(f"--map {field}=...: field '{field}' is mapped twice")
        out[field] = column
    return out


def check_fields(input_map: InputMap, fields: Iterable[str], template: str) -> None:
    """Every mapped field must be one the template uses, or the map does nothing."""
    known = tuple(fields)
    for field, column in input_map.items():
        if field not in known:
            raise ConfigError(
                f"--map {field}={column}: template {template} has no field "
                f"'{field}' (its fields: {', '.join(known) or 'none'})"
            )


def required_columns(fields: Iterable[str], input_map: InputMap) -> tuple[str, ...]:
    """The input columns the template's fields come from."""
    return tuple(input_map.get(f, f) for f in fields)


def mapped(rows: Iterator[Row | Reject], input_map: InputMap) -> Iterator[Row | Reject]:
    """`rows` with each template field set from its column (rejects pass untouched)."""
    pairs = tuple(input_map.items())
    for item in rows:
        if isinstance(item, Row):
            data = dict(item.data)
            for field, column in pairs:
                data[field] = data.get(column)
            item = Row(item.source, item.line, item.id, data)
        yield item


def column_field(input_map: InputMap, column: str) -> str | None:
    """The template field a column feeds, if the map names it."""
    for field, mapped_column in input_map.items():
        if mapped_column == column:
            return field
    return None


__all__ = ["InputMap", "check_fields", "column_field", "mapped", "parse_input_map", "required_columns"]
