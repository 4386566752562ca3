"""No function in `labeler/` longer than a reader can hold in view (80 lines).

A long function is several jobs under one name; past 80 lines (its signature and body) it
is split into functions named after those jobs. The docstring does not count: documenting
each parameter of a public call (`labeler.label` has dozens) is not a second job. Read
with `ast`, so nested functions and methods count on their own as well as inside their
parent.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "labeler"
MAX_LINES = 80


def _long_functions() -> dict[str, list[str]]:
    """file → 'name (lines from line N)' for every function over MAX_LINES."""
    found: dict[str, list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
                if lines > MAX_LINES:
                    found.setdefault(rel, []).append(f"{node.name} ({lines} lines from line {node.lineno})")
    return found


def _docstring_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    if ast.get_docstring(node, clean=False) is None:
        return 0
    first = node.body[0]
    assert first.end_lineno is not None
    return first.end_lineno - first.lineno + 1


def test_no_function_is_over_80_lines() -> None:
    offenders = _long_functions()
    listed = "; ".join(f"{f}: {', '.join(names)}" for f, names in offenders.items())
    assert not offenders, f"functions over {MAX_LINES} lines: {listed}"
