"""Tell a template bug from bad data: a field the template needs that no row has.

A typo in a template's field name (``{{ txt }}`` for ``text``) makes every row a reject.
Left alone that is a run that "succeeds" with nothing labeled and a rejects file full of
``missing field 'txt'``. So a reject for a field the template needs names the template,
and when the first rows of the input all lack the same template field, the run stops
before it starts (exit 1): the template is wrong, not the data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from itertools import chain, islice

import orjson

from labeler.errors import ConfigError, TemplateError
from labeler.input_map import InputMap, column_field
from labeler.inputs import Reject, Row
from labeler.task import Task

FIRST_ROWS = 20  # rows that must all lack a template field for it to be a template bug
_MISSING = re.compile(r"^missing field '(?P<field>[^']*)'$")


def check_template_fields(
    task: Task, rows: Iterator[Row | Reject], input_map: InputMap | None = None
) -> Iterator[Row | Reject]:
    """`rows`, with rejects for a template's field naming the template; raises TemplateError
    when the first FIRST_ROWS rows (or all, if fewer) lack the same template field, and
    ConfigError when they all lack the same column `input_map` (``--map``) names."""
    input_map = input_map or {}
    head = list(islice(rows, FIRST_ROWS))
    missing = {_template_field(task, item, input_map) for item in head}
    if head and len(missing) == 1 and None not in missing:
        field = missing.pop()
        assert field is not None
        have = _fields_seen(head)
        mapped_to = column_field(input_map, field)
        if mapped_to is not None:
            first = head[0]
            assert isinstance(first, Reject)
            raise ConfigError(
                f"--map {mapped_to}={field}: no input row has column '{field}' (the first "
                f"without it: {first.source}:{first.line}"
                + (f"; the rows have: {', '.join(have)})" if have else ")")
            )
        raise TemplateError(
            task.path,
            f"no input row has it (the first {len(head)} all lack it): a template bug, not "
            "bad data; check the field name in the template against the input's fields"
            + (f" (the rows have: {', '.join(have)})" if have else ""),
            field=field,
        )
    return _named_all(task, chain(head, rows), input_map)


class RenderStreak:
    """The same check for errors found while rendering (a variable the template uses that
    its `fields` do not list, a bad filter): when the first rows all fail to render with
    the same error, that error is the template's."""

    def __init__(self, rows: int = FIRST_ROWS) -> None:
        self.rows = rows
        self.count = 0
        self.rendered = False
        self.first: TemplateError | None = None
        self.mixed = False

    def ok(self) -> None:
        self.rendered = True

    def failed(self, exc: TemplateError) -> TemplateError | None:
        """Count a row that did not render; the template's error once the streak is long."""
        if self.rendered or self.mixed:
            return None
        if self.first is None:
            self.first = exc
        elif (exc.field, exc.reason) != (self.first.field, self.first.reason):
            self.mixed = True
            return None
        self.count += 1
        return self.bug() if self.count >= self.rows else None

    def finished(self) -> TemplateError | None:
        """At the end of a short input: every row failed the same way."""
        if self.rendered or self.mixed or self.first is None or self.count >= self.rows:
            return None
        return self.bug()

    def bug(self) -> TemplateError:
        assert self.first is not None
        return TemplateError(
            self.first.template,
            f"{self.first.reason} in each of the first {self.count} rows: a template bug, not bad data",
            field=self.first.field,
        )


def _template_field(task: Task, item: Row | Reject, input_map: InputMap) -> str | None:
    """The template field (or the column `input_map` feeds one from) this item lacks, or
    None (a good row, or another problem)."""
    if not isinstance(item, Reject):
        return None
    m = _MISSING.match(item.reason)
    if m is None:
        return None
    name = m["field"]
    if column_field(input_map, name) is not None:
        return name
    if name not in task.fields or name in input_map:
        return None
    return name


def _named_all(task: Task, items: Iterator[Row | Reject], input_map: InputMap) -> Iterator[Row | Reject]:
    for item in items:
        if isinstance(item, Reject):  # a row (nearly every item) passes untouched
            item = _named(task, item, input_map)
        yield item


def _named(task: Task, item: Reject, input_map: InputMap) -> Reject:
    name = _template_field(task, item, input_map)
    if name is None:
        return item
    field = column_field(input_map, name)
    if field is not None:
        return replace(
            item, reason=f"missing column '{name}' that --map {field}={name} feeds to template {task.path}"
        )
    return replace(item, reason=f"missing field '{name}' that template {task.path} uses")


def _fields_seen(items: list[Row | Reject]) -> list[str]:
    """The field names of the rejected JSON rows, to show next to the one not found."""
    seen: dict[str, None] = {}
    for item in items:
        if isinstance(item, Reject) and item.raw:
            try:
                data = orjson.loads(item.raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                seen.update(dict.fromkeys(str(k) for k in data))
    return list(seen)[:12]


__all__ = ["FIRST_ROWS", "RenderStreak", "check_template_fields"]
