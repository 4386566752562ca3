"""The CLI's flags read from the option declarations.

Each flag of an export, filter, input or teacher option is made from the field that
declares it (labeler/option_fields.py), as the labeling flags are from labeler/options.py,
and carries the group it is declared in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import click

from labeler.option_fields import GROUPS, Opt, declared


class GroupedOption(click.Option):
    """A click option that knows which help section it belongs in."""

    def __init__(self, *args: Any, group: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


def grouped(group: str, *names: str, **kwargs: Any) -> Callable[[Any], Any]:
    """A hand-written click option shown in `group`'s help section."""
    return click.option(*names, cls=GroupedOption, group=group, **kwargs)


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


__all__ = ["GroupedOption", "declared_options", "grouped"]
