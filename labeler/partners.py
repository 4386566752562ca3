"""Options that only mean something next to another one.

`--public` without `--push-to-hub`, `--escalate-below` without `--cascade`, `--kd-layout
ids` on a classification export: each is read by nothing, so a user who gave it believes
it did something. Each is refused here with one line naming both options, from `Job`, so
a flag, a refresh key and a script get the same answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from labeler.cascade import HUMAN
from labeler.errors import ConfigError
from labeler.exports.options import ExportOptions
from labeler.options import default


class Job(Protocol):
    """What of a `labeler.job.Job` the check reads: named by shape, so that the job module
    can call it without the two importing each other."""

    @property
    def export(self) -> ExportOptions: ...
    @property
    def cascade(self) -> str | None: ...
    @property
    def ensemble(self) -> str | None: ...
    @property
    def escalate_below(self) -> str | None: ...
    @property
    def escalate_on(self) -> str: ...
    @property
    def ensemble_combine(self) -> str: ...
    @property
    def no_wait(self) -> bool: ...
    @property
    def batch(self) -> bool: ...


def check_partners(job: Job) -> None:
    """Raise ConfigError for the first option given without the option it belongs with."""
    for problem in _problems(job):
        raise ConfigError(problem)


def _problems(job: Job) -> Iterator[str]:
    ex = job.export
    if not ex.private and not ex.push_to_hub:
        yield "--public goes with --push-to-hub REPO (it makes that repository public)"
    if job.cascade is None:
        if job.escalate_below is not None:
            yield "--escalate-below goes with --cascade TEACHERS"
        if job.escalate_on != default("escalate_on"):
            yield "--escalate-on goes with --cascade TEACHERS"
    if job.ensemble is None and job.ensemble_combine != default("ensemble_combine"):
        yield "--ensemble-combine goes with --ensemble TEACHERS"
    if ex.sft_shape != "prompt-completion" and ex.kind != "sft":
        yield f"--sft-shape goes with --kind sft (this export is --kind {ex.kind})"
    if ex.kd_layout != "tokens" and ex.kind != "kd":
        yield f"--kd-layout goes with --kind kd (this export is --kind {ex.kind})"
    if ex.text_field is not None and ex.kind != "classification":
        yield (f"--text-field goes with --kind classification (a {ex.kind} export has no `text` column)")
    if ex.include_awaiting_human and not _ends_in_human(job.cascade):
        yield "--include-awaiting-human goes with --cascade ...,human (no row awaits a person)"
    if job.no_wait and not job.batch:
        yield "--no-wait goes with --batch (a live run has nothing to wait for)"


def _ends_in_human(cascade: str | None) -> bool:
    return cascade is not None and cascade.rsplit(",", 1)[-1].strip() == HUMAN


__all__ = ["check_partners"]
