"""The CLI's flags read from the option declarations, and a `--help` that lists them by group.

Each flag of an export, filter, input or teacher option is made from the field that
declares it (labeler/option_fields.py), the labeling flags from labeler/options.py; both
carry their group, so `--help` shows them as labeling / teacher / input / filter /
export / output sections (click itself lists every option in one block), and each
command ends its help with examples that run as printed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import click

from labeler.option_fields import GROUPS, Opt, declared
from labeler.options import BY_KEY

TITLES = {group: f"{group.capitalize()} options" for group in GROUPS}
OTHER = "Options"


class GroupedOption(click.Option):
    """A click option that knows which help section it belongs in."""

    def __init__(self, *args: Any, group: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


def group_of(param: click.Parameter) -> str | None:
    group = getattr(param, "group", None)
    if group is None and param.name in BY_KEY:
        return "labeling"
    return group


class _Documented:
    """Options in sections by group, then "Examples:" with one command line per line."""

    examples: tuple[str, ...] = ()

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str | None, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                sections.setdefault(group_of(param), []).append(record)
        for group in (*GROUPS, None):
            if group in sections:
                with formatter.section(TITLES[group] if group else OTHER):
                    formatter.write_dl(sections[group])
        if isinstance(self, click.Group):
            self.format_commands(ctx, formatter)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)  # type: ignore[misc]
        if self.examples:
            with formatter.section("Examples"):
                for line in self.examples:  # command lines: never re-wrapped
                    formatter.write(f"{'':>{formatter.current_indent}}{line}\n")


class Command(_Documented, click.Command):
    def __init__(self, *args: Any, examples: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples = tuple(examples)


class Group(_Documented, click.Group):
    command_class = Command

    def __init__(self, *args: Any, examples: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples = tuple(examples)


def grouped(group: str, *names: str, **kwargs: Any) -> Callable[[Any], Any]:
    """A hand-written click option shown in `group`'s help section."""
    return click.option(*names, cls=GroupedOption, group=group, **kwargs)


def output_flags(*, json_help: str, quiet_help: str) -> Callable[[Any], Any]:
    """`--json` (as `as_json`) and `-q/--quiet` in the output section: every command takes
    both (tests/test_cli_json.py walks them), each saying what they mean for it."""

    def decorate(f: Any) -> Any:
        f = grouped("output", "--quiet", "-q", is_flag=True, help=quiet_help)(f)
        return grouped("output", "--json", "as_json", is_flag=True, help=json_help)(f)

    return decorate


def declared_options(
    owners: Sequence[type],
    bounded: Callable[[str, type], Any],
    *,
    groups: Collection[str] = GROUPS,
) -> Callable[[Any], Any]:
    """A decorator adding the flags of the options declared on `owners` (those in
    `groups`); `bounded` makes the click range of an option with a bound."""
    opts = [o for owner in owners for o in declared(owner) if o.decl.group in groups]

    def decorate(f: Any) -> Any:
        for opt in reversed(opts):
            names = [opt.flag, opt.key] + ([opt.decl.short] if opt.decl.short else [])
            f = click.option(*names, cls=GroupedOption, group=opt.decl.group, **_click_kwargs(opt, bounded))(
                f
            )
        return f

    return decorate


def _click_kwargs(opt: Opt, bounded: Callable[[str, type], Any]) -> dict[str, Any]:
    from labeler.bounds import BOUNDS

    kw: dict[str, Any] = {"help": opt.decl.help}
    if opt.kind is bool and not opt.decl.multiple:
        return {**kw, "is_flag": True}
    choices = opt.choices()
    kind: Any = str if opt.decl.multiple else opt.kind
    if choices is not None:
        kind = click.Choice(choices)
    elif opt.key in BOUNDS:
        kind = bounded(opt.key, kind)
    elif opt.decl.path and not opt.decl.keywords:
        kind = click.Path(dir_okay=opt.decl.path == "folder", file_okay=opt.decl.path == "file")
    # a plain default is shown and passed on as given; None leaves the field's own default
    plain = opt.default is not None and not isinstance(opt.default, bool | dict)
    default = () if opt.decl.multiple else opt.default if plain else None
    return {
        **kw,
        "type": kind,
        "multiple": opt.decl.multiple,
        "default": default,
        "show_default": plain,
        "metavar": opt.decl.metavar,
    }


__all__ = [
    "OTHER",
    "TITLES",
    "Command",
    "Group",
    "GroupedOption",
    "declared_options",
    "group_of",
    "grouped",
    "output_flags",
]
