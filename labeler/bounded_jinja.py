"""A Jinja sandbox with limits on time and size.

Jinja's sandbox stops a template from reaching Python's internals, but not from looping
or allocating without end: `{% for i in range(10**5) %}{% for j in range(10**5) %}` runs
for hours, and `{{ 'x' * 10**10 }}` or `{{ 9 ** 9 ** 9 }}` asks for gigabytes. A prompt
template runs once per row of a large input, so such a template is a bug to report at once,
with its name, not a run that hangs or a machine that swaps. Every call, attribute or item
lookup and arithmetic operator the template evaluates passes through this environment,
which checks the clock and the sizes of what it makes; the rendered text is counted as it
is produced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.sandbox

MAX_RENDER_SECONDS = 5.0  # a row renders in microseconds; this is a loop, not a slow row
MAX_RENDER_CHARS = 8_000_000  # past every context window (~1M tokens) several times over
MAX_POWER_BITS = 1 << 16  # `**` results beyond ~20,000 digits


class RenderLimit(Exception):
    """A template went past a rendering limit; the message says which."""


class _Clock(threading.local):
    deadline = float("inf")


_clock = _Clock()


class BoundedEnvironment(jinja2.sandbox.SandboxedEnvironment):
    """The sandbox, with every operation it intercepts checked against the limits."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if (
            operator == "**"
            and _is_int(left)
            and _is_int(right)
            and right > 0
            and abs(left) > 1
            and abs(left).bit_length() * right > MAX_POWER_BITS
        ):
            raise RenderLimit(f"{left} ** {right} is too large a number")
        if operator == "*":
            seq, times = (left, right) if _is_int(right) else (right, left)
            if _is_int(times) and isinstance(seq, str | list | tuple) and len(seq) * times > MAX_RENDER_CHARS:
                raise RenderLimit(
                    f"a sequence of {len(seq)} repeated {times} times is longer than {MAX_RENDER_CHARS:,}"
                )
        if (
            operator == "+"
            and isinstance(left, str | list | tuple)
            and isinstance(right, str | list | tuple)
            and len(left) + len(right) > MAX_RENDER_CHARS
        ):
            raise RenderLimit(f"a concatenation longer than {MAX_RENDER_CHARS:,}")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return _sized(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return _sized(super().getitem(obj, argument))


def render_bounded(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """`template` rendered with `context`; RenderLimit past the time or size limit."""
    _clock.deadline = time.monotonic() + MAX_RENDER_SECONDS
    try:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_RENDER_CHARS:
                raise RenderLimit(f"renders to more than {MAX_RENDER_CHARS:,} characters")
            _tick()
            parts.append(chunk)
        return "".join(parts)
    finally:
        _clock.deadline = float("inf")


def _tick() -> None:
    if time.monotonic() > _clock.deadline:
        raise RenderLimit(f"takes longer than {MAX_RENDER_SECONDS:g} s to render one row")


def _sized(value: Any) -> Any:
    """A value a call or lookup made, refused when it is a string beyond the size limit
    (a string doubled in a loop grows past it in a few steps)."""
    if isinstance(value, str) and len(value) > MAX_RENDER_CHARS:
        raise RenderLimit(f"makes a string of {len(value):,} characters")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["MAX_RENDER_CHARS", "MAX_RENDER_SECONDS", "BoundedEnvironment", "RenderLimit", "render_bounded"]
