"""The layering of `labeler/` as a checked contract, so it cannot drift silently.

Every import in every module (top-level and inside functions; `if TYPE_CHECKING:` blocks
aside, since they never run) is read from the source with `ast`, and the graph must hold:
no import circle, the library never imports the CLI, production code never imports
`labeler.testing`, the core never imports a provider module by name (it goes through the
teacher registry), and no module reaches into another package's private names. Circles
are also looked for with the `if TYPE_CHECKING:` imports counted: two modules that name
each other's types are one concept in two files, whether or not the runtime sees it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "labeler"

# Provider modules: only the registry (labeler.teachers, labeler.batch.clients), the
# providers themselves and the test server may import these.
PROVIDER_MODULES = {
    "labeler.teachers.openai_sdk",
    "labeler.teachers.openai_lean",
    "labeler.teachers.openai_answers",
    "labeler.teachers.openai_protocol",
    "labeler.teachers.anthropic",
    "labeler.teachers.anthropic_wire",
    "labeler.teachers.local",
    "labeler.teachers.local_models",
    "labeler.batch.openai",
    "labeler.batch.anthropic",
}
# Where provider names may appear: the registries and the provider packages.
PROVIDER_HOMES = ("labeler.teachers", "labeler.batch", "labeler.testing")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, *, typed: bool = False) -> list[tuple[str, list[str], int]]:
    """(imported labeler module, names taken from it, line) for every import that runs;
    `typed`: also those only a type checker reads (`if TYPE_CHECKING:`)."""
    tree = ast.parse(MODULES[module].read_text("utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not typed:
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("labeler"):
                        out.append((alias.name, [], child.lineno))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if not base.startswith("labeler"):
                    continue
                names = [a.name for a in child.names]
                # `from labeler.teachers import openai_answers` imports a module.
                subs = [n for n in names if f"{base}.{n}" in MODULES]
                if subs:
                    out.extend((f"{base}.{n}", [], child.lineno) for n in subs)
                rest = [n for n in names if n not in subs]
                if rest or not subs:
                    out.append((base, rest, child.lineno))
            visit(child)

    visit(tree)
    return [(m, names, line) for m, names, line in out if m in MODULES]


GRAPH = {m: _imports(m) for m in MODULES}
TYPED_GRAPH = {m: _imports(m, typed=True) for m in MODULES}


def _production(module: str) -> bool:
    return not module.startswith("labeler.testing")


def test_library_never_imports_the_cli() -> None:
    bad = [
        f"{m}:{line}"
        for m, edges in GRAPH.items()
        if m not in ("labeler.cli", "labeler.__main__")
        for target, _, line in edges
        if target == "labeler.cli"
    ]
    assert not bad, f"the library imports the CLI: {bad}"


def test_production_never_imports_the_test_server() -> None:
    bad = [
        f"{m}:{line} -> {target}"
        for m, edges in GRAPH.items()
        if _production(m)
        for target, _, line in edges
        if target.startswith("labeler.testing")
    ]
    assert not bad, f"production code imports labeler.testing: {bad}"


def test_core_never_imports_a_provider_module() -> None:
    bad = [
        f"{m}:{line} -> {target}"
        for m, edges in GRAPH.items()
        if not m.startswith(PROVIDER_HOMES)
        for target, _, line in edges
        if target in PROVIDER_MODULES
    ]
    assert not bad, f"core modules import a provider by name: {bad}"


def test_no_private_name_crosses_a_package() -> None:
    def package(m: str) -> str:
        return m if MODULES[m].name == "__init__.py" else m.rpartition(".")[0]

    bad = [
        f"{m}:{line} takes {n} from {target}"
        for m, edges in GRAPH.items()
        for target, names, line in edges
        for n in names
        if n.startswith("_") and not n.startswith("__") and package(target) != package(m)
    ]
    assert not bad, f"private names imported across packages: {bad}"


def _cycles(graph: dict[str, list[tuple[str, list[str], int]]] = GRAPH) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _, _ in graph[v]:
            if w == v or _is_package_of(w, v):
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return found


def _is_package_of(package: str, module: str) -> bool:
    """A module importing the package it lives in (its `__init__`, for a shared name) is
    not an upward arrow when that `__init__` only re-exports; keep it out of the cycles."""
    return module.startswith(package + ".") and MODULES[package].name == "__init__.py"


def test_no_import_circle() -> None:
    assert not _cycles(), f"import circles in labeler/: {_cycles()}"


def test_no_import_circle_through_type_hints() -> None:
    """The card once read `ExportOptions` from the export module under `TYPE_CHECKING`
    while the export module imported the card: a circle the runtime graph does not show.
    Production code only (the test server's app and its batch API name each other's
    types)."""
    production = {
        m: [e for e in edges if _production(e[0])] for m, edges in TYPED_GRAPH.items() if _production(m)
    }
    found = _cycles(production)
    assert not found, f"import circles in labeler/, type hints counted: {found}"


@pytest.mark.parametrize("spec", ["openai:gpt-4o-mini", "openai-compatible:m"])
def test_sdks_are_not_imported_unless_their_transport_is_used(spec: str) -> None:
    """The lean transport needs no SDK: importing the library and making an OpenAI teacher
    on the default transport (as `labeler export` and `labeler run` do) must not pay for
    the openai or anthropic package (about a second each on these machines)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, labeler, labeler.job; from labeler.teachers import make_teacher; "
        f"make_teacher({spec!r}, base_url='http://127.0.0.1:9/v1', api_key='k'); "
        "print(' '.join(m for m in ('openai', 'anthropic') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "LABELER_TRANSPORT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "", f"a lean {spec} teacher imports {out.stdout.strip()}"


def _imports_ray(path: Path) -> list[int]:
    """Lines of `path` that import Ray (outside `if TYPE_CHECKING:`)."""
    lines: list[int] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                lines.extend(child.lineno for a in child.names if a.name.split(".")[0] == "ray")
            elif (
                isinstance(child, ast.ImportFrom)
                and not child.level
                and (child.module or "").split(".")[0] == "ray"
            ):
                lines.append(child.lineno)
            visit(child)

    visit(ast.parse(path.read_text("utf-8")))
    return lines


def test_only_labeler_ray_imports_ray() -> None:
    """Ray is an extra (`labeler-distill[ray]`): the core, the CLI included, never imports it, so
    a venv without it runs everything else; only labeler/ray/ does."""
    bad = [
        f"{m}:{line}"
        for m, path in MODULES.items()
        if not m.startswith("labeler.ray")
        for line in _imports_ray(path)
    ]
    assert not bad, f"modules outside labeler/ray import ray: {bad}"
    assert "labeler.ray" in MODULES and _imports_ray(MODULES["labeler.ray"]), (
        "the check must see labeler/ray/__init__.py importing ray"
    )


def test_core_never_imports_labeler_ray() -> None:
    bad = [
        f"{m}:{line}"
        for m, edges in GRAPH.items()
        if not m.startswith("labeler.ray") and m not in ("labeler.cli", "labeler.__main__")
        for target, _, line in edges
        if target.startswith("labeler.ray")
    ]
    assert not bad, f"the core imports labeler.ray: {bad}"
