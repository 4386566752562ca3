"""Options that only mean something next to another one.

`--public` without `--push-to-hub`, `--escalate-below` without `--cascade`, `--kd-layout
ids` on a classification export: each is read by nothing, so a user who gave it believes
it did something. Each is refused here with one line naming both options, from `Job`, so
a flag, a refresh key and a script get the same answer. What goes with what is declared
with the options (`needs` in labeler/options.py and labeler/option_fields.py) and with the
export kinds (`reads`: the options only a kind's rows use); nothing here names either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from labeler.errors import ConfigError
from labeler.exports.options import KINDS, ExportOptions
from labeler.filters import FilterSpec
from labeler.option_fields import Needs, declared
from labeler.options import OPTIONS


class Job(Protocol):
    """What of a `labeler.job.Job` the check reads: named by shape, so that the job module
    can call it without the two importing each other."""

    @property
    def export(self) -> ExportOptions: ...
    @property
    def no_wait(self) -> bool: ...
    @property
    def batch(self) -> bool: ...


def check_partners(job: Job) -> None:
    """Raise ConfigError for the first option given without the option it belongs with."""
    for problem in _problems(job):
        raise ConfigError(problem)


def _problems(job: Job) -> Iterator[str]:
    for flag, given, needs in _declared(job):
        if given and not needs.met(_value(job, needs.option)):
            yield f"{flag} goes with {needs.says}" + (f" ({needs.because})" if needs.because else "")
    yield from _kind_problems(job.export)
    if job.no_wait and not job.batch:
        yield "--no-wait goes with --batch (a live run has nothing to wait for)"


def _declared(job: Job) -> Iterator[tuple[str, bool, Needs]]:
    """(flag, given, what it needs) of every option that needs a partner."""
    for o in OPTIONS:
        if o.needs is not None:
            yield o.flag, getattr(job, o.field) != o.default, o.needs
    for owner, holder in ((ExportOptions, job.export), (FilterSpec, job.export.filters)):
        for opt in declared(owner):
            if opt.decl.needs is not None:
                yield opt.flag, opt.given(getattr(holder, opt.name)), opt.decl.needs


def _kind_problems(ex: ExportOptions) -> Iterator[str]:
    """An option only some kinds read, given to an export of another kind."""
    for opt in declared(ExportOptions):
        readers = [name for name, rules in KINDS.items() if opt.name in rules.reads]
        if readers and ex.kind not in readers and opt.given(getattr(ex, opt.name)):
            kinds = " or ".join(f"--kind {name}" for name in readers)
            yield f"{opt.flag} goes with {kinds} (this export is --kind {ex.kind})"


def _value(job: Job, name: str) -> Any:
    """A field of the job, of its export options or of their filters, by name."""
    for holder in (job, job.export, job.export.filters):
        if hasattr(holder, name):
            return getattr(holder, name)
    raise AttributeError(name)


__all__ = ["check_partners"]
