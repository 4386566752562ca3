"""The export, filter, input and teacher options, each declared once, on the field that holds it.

A field of `ExportOptions`, `FilterSpec` or `Job` that a user sets carries a `Declared` in
its metadata: its help, its help group, its CLI flag, whether a refresh config takes it
(and why not, where it does not), the option it needs beside it, and how a typed value
becomes the field's. The field gives the name, the type and the default. The CLI's flags
and help groups, refresh configs' keys and type checks, and the partner check
(labeler/partners.py) are all read from these fields, so a new option is one field and
cannot drift between the ways in. The labeling options have their own table in
labeler/options.py, with the same `Needs` for their partners.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from functools import cache
from typing import Any

# The help groups, in the order `--help` shows them.
GROUPS = ("labeling", "teacher", "input", "filter", "export", "output")


@dataclass(frozen=True)
class Needs:
    """An option read by nothing unless another one is given: `--public` without
    `--push-to-hub` would make nothing public, so it is refused with one line."""

    option: str  # the partner's field name (on `Job`, `ExportOptions` or `FilterSpec`)
    says: str  # how the refusal names the partner: "--push-to-hub REPO"
    because: str = ""  # why, said in brackets after it
    holds: Callable[[Any], bool] | None = None  # when its value is enough (default: given)

    def met(self, value: Any) -> bool:
        return value is not None if self.holds is None else self.holds(value)


@dataclass(frozen=True)
class Declared:
    """What a field says about itself as an option (the field gives name, type, default)."""

    help: str
    group: str
    flag: str | None = None  # the CLI flag when it is not the field name with dashes
    key: str | None = None  # the refresh key when it is not the flag without dashes
    short: str | None = None
    metavar: str | None = None
    choices: Callable[[], Sequence[str]] | None = None  # read late: kinds register on import
    invert: bool = False  # the flag says the opposite of the field (--public: private False)
    cli_only: str = ""  # why a refresh config does not take it
    needs: Needs | None = None
    # a given value to the field values it sets (default: this field, as given)
    convert: Callable[[Any], Mapping[str, Any]] | None = None
    # "file" or "folder": a path, which a refresh config gives relative to itself
    path: str = ""
    keywords: tuple[str, ...] = ()  # values of a path option that are words, not files
    multiple: bool = False  # the flag may be repeated
    also: tuple[type, ...] = ()  # further types a refresh config may give (a list of URLs)

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"group {self.group!r}: expected one of {', '.join(GROUPS)}")


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **declared: Any) -> Any:
    """A dataclass field that is a user option: `kind: str = option("records", help=...)`."""
    meta = {"option": Declared(**declared)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),  # a config's 1 is a fine 1.0
    "bool": (bool,),
    "dict": (dict,),
    "list": (list,),
}


@dataclass(frozen=True)
class Opt:
    """One declared option: the field it lives on and what it says about itself."""

    name: str  # the field's name
    owner: type  # the dataclass holding the field
    decl: Declared
    default: Any
    types: tuple[type, ...]  # what the field's annotation allows, None aside

    @property
    def flag(self) -> str:
        return self.decl.flag or "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """The refresh-config key and the CLI's parameter name: the flag without dashes."""
        return self.decl.key or self.flag.lstrip("-").replace("-", "_")

    @property
    def kind(self) -> type:
        """The type the CLI parses (a float option also takes an integer in a config)."""
        if self.decl.invert or self.types[:1] == (bool,):
            return bool
        return float if float in self.types else self.types[0] if self.types else str

    @property
    def in_refresh(self) -> bool:
        return not self.decl.cli_only

    def config_types(self) -> tuple[type, ...]:
        return (bool,) if self.kind is bool else (*self.types, *self.decl.also)

    def choices(self) -> tuple[str, ...] | None:
        return tuple(self.decl.choices()) if self.decl.choices is not None else None

    def is_set(self, value: Any) -> bool:
        """Whether a CLI or config value says anything: unset, an absent flag or no repeat do not."""
        return value is not None and value != () and value is not False

    def fields(self, value: Any) -> dict[str, Any]:
        """The field values a given value sets."""
        if self.decl.convert is not None:
            return dict(self.decl.convert(value))
        return {self.name: (not value) if self.decl.invert else value}

    def given(self, value: Any) -> bool:
        """Whether the field's value was set by a user (it differs from the default)."""
        return bool(value != self.default)


@cache
def declared(owner: type) -> tuple[Opt, ...]:
    """Every option declared on the fields of `owner`, in field order."""
    out = []
    for f in dataclasses.fields(owner):
        decl = f.metadata.get("option")
        if decl is None:
            continue
        factory: Any = f.default_factory
        default = factory() if f.default is MISSING and factory is not MISSING else f.default
        out.append(Opt(f.name, owner, decl, default, _types_of(str(f.type))))
    return tuple(out)


def _types_of(annotation: str) -> tuple[type, ...]:
    """The plain types in a field's annotation ("str | None" -> str); paths read as text."""
    found: list[type] = []
    for part in annotation.split("|"):
        name = part.strip().split("[", 1)[0]
        for t in _TYPES.get("str" if name == "Path" else name, ()):
            if t not in found:
                found.append(t)
    return tuple(found)


def field_values(owner: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `owner` that `given` (CLI parameters or config keys, by key) sets."""
    out: dict[str, Any] = {}
    for opt in declared(owner):
        value = given.get(opt.key)
        if opt.is_set(value):
            out.update(opt.fields(value))
    return out


__all__ = ["GROUPS", "Declared", "Needs", "Opt", "declared", "field_values", "option"]
