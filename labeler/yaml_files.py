"""YAML files (templates, refresh configs) read with a bound on what they expand to.

YAML aliases let a few hundred bytes name a billion values (`b: [*a, *a, ...]`, nine
levels deep): the parser shares them, but the first code that copies, hashes or sends the
value (a template's params go into every request key) expands them all and exhausts the
machine. So a document is measured after parsing, counting each alias as the values it
stands for, and refused past a size no template or config comes near.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_VALUES = 100_000  # the largest shipped template holds a few hundred


class YamlTooLarge(ValueError):
    """A document that expands (through aliases, or nesting) past what a file may hold."""


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, refusing a document that expands past MAX_VALUES values or
    nests too deeply to parse; yaml.YAMLError as usual for a document that is not YAML."""
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise YamlTooLarge("nested too deeply") from None
    count = 0
    stack = [data]
    while stack:
        value = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise YamlTooLarge(f"expands to more than {MAX_VALUES:,} values (aliases repeating aliases?)")
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return data


__all__ = ["MAX_VALUES", "YamlTooLarge", "load_yaml"]
