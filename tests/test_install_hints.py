"""Every place that tells a user what to install names the distribution, `labeler-distill`.

`labeler` on PyPI is an unrelated project: `pip install 'labeler[verify]'` installs it and
not this package's extra. The hints live in error messages, docstrings, the docs, the
README, the examples, the benchmarks, the prompts and the packaging files, so all of them
are scanned, and every extra a hint names must exist in pyproject.toml.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLACES = ("labeler", "docs", "examples", "benchmarks", "prompts", "packaging", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".yaml", ".yml", ".toml", ".json", ".jinja", ".j2", ".sh", ".cfg", ""}
# `labeler[...]` not preceded by a name character or `-`: `labeler-distill[ray]` is fine.
WRONG = re.compile(r"(?<![\w.-])labeler\[[a-z]")
EXTRA = re.compile(r"labeler-distill\[([a-z,]+)\]")


def _files() -> list[Path]:
    """The text files under every scanned place (`.git`-free: the places are in the tree)."""
    found: list[Path] = []
    for place in PLACES:
        root = REPO / place
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        found += [p for p in paths if p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return found


def _hits(pattern: re.Pattern[str]) -> list[tuple[str, int, re.Match[str]]]:
    hits = []
    for path in _files():
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            hits += [(str(path.relative_to(REPO)), number, m) for m in pattern.finditer(line)]
    return hits


def test_the_scan_covers_every_place() -> None:
    """A renamed folder would silently shrink the scan: each place holds files."""
    for place in PLACES:
        root = REPO / place
        assert root.exists(), place
        assert root.is_file() or any(root in p.parents for p in _files()), place


def test_no_install_hint_names_the_unrelated_labeler_distribution() -> None:
    wrong = [f"{path}:{line}: {m.string.strip()}" for path, line, m in _hits(WRONG)]
    assert wrong == [], "use labeler-distill[...]:\n" + "\n".join(wrong)


def test_every_extra_named_in_a_hint_exists() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    extras = set(project["project"]["optional-dependencies"])
    named = {extra for _, _, m in _hits(EXTRA) for extra in m.group(1).split(",")}
    assert named, "no hint found: the scan is broken"
    assert named <= extras, f"hints name extras pyproject does not define: {sorted(named - extras)}"
