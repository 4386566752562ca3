"""Every option is declared once, and the CLI and refresh configs both read the declaration.

An option that is a flag but not a refresh key (or the other way round) is a difference a
user trips over in cron; here it must say why (`cli_only`, `REFRESH_ONLY`), or it fails.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import click
import pytest
import yaml

from labeler.cli import main
from labeler.errors import ConfigError
from labeler.exports.options import KINDS, ExportOptions
from labeler.filters import FilterSpec
from labeler.job import Job
from labeler.option_fields import declared
from labeler.options import OPTIONS
from labeler.partners import check_partners
from labeler.refresh import _OPTIONAL, _REQUIRED, REFRESH_ONLY, SECTIONS, RefreshConfig

TOP = (Job,)  # declared options whose refresh keys sit at the top of a config
DECLARED = [o for owner in (*TOP, *SECTIONS.values()) for o in declared(owner)]


def _flags(command: str) -> set[str]:
    cmd = main.commands[command]
    return {name for p in cmd.params if isinstance(p, click.Option) for name in p.opts}


def _refresh_keys() -> set[str]:
    keys = set(_OPTIONAL) | set(_REQUIRED)
    for section, owner in SECTIONS.items():
        keys |= {f"{section}.{o.key}" for o in declared(owner) if o.in_refresh}
    return keys


def _refresh_key(opt: object) -> str:
    section = {v: k for k, v in SECTIONS.items()}.get(opt.owner)  # type: ignore[attr-defined]
    return f"{section}.{opt.key}" if section else opt.key  # type: ignore[attr-defined]


@pytest.mark.parametrize("opt", DECLARED, ids=lambda o: o.key)
def test_each_declared_option_is_a_run_flag_and_a_refresh_key_or_says_why_not(opt: object) -> None:
    assert opt.flag in _flags("run")  # type: ignore[attr-defined]
    if opt.decl.cli_only:  # type: ignore[attr-defined]
        assert len(opt.decl.cli_only) > 20  # type: ignore[attr-defined]  # a reason, not a tick
        key = _refresh_key(opt)  # a key of that name is a refresh config's own (out, api_key_file)
        assert key not in _refresh_keys() or key in REFRESH_ONLY or key in _REQUIRED
    else:
        assert _refresh_key(opt) in _refresh_keys()


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.key)
def test_each_labeling_option_is_a_run_flag_and_a_refresh_key(opt: object) -> None:
    assert opt.flag in _flags("run")  # type: ignore[attr-defined]
    assert opt.refresh_key in _OPTIONAL  # type: ignore[attr-defined]


def test_every_refresh_key_is_a_declared_option_or_says_why_it_is_refresh_only() -> None:
    declared_keys = {o.key for o in declared(Job) if o.in_refresh} | {o.refresh_key for o in OPTIONS}
    for key in _OPTIONAL:
        if key in REFRESH_ONLY:
            assert len(REFRESH_ONLY[key][1]) > 20, key
        else:
            assert key in declared_keys or key in SECTIONS, key


def test_no_refresh_key_means_two_options() -> None:
    """A top-level key read by two options sets both: `keep` was the versions kept and,
    silently, the answers a verified export keeps per row."""
    top = [
        *REFRESH_ONLY,
        *(o.key for o in declared(Job) if o.in_refresh),
        *(o.refresh_key for o in OPTIONS),
        *_REQUIRED,
    ]
    assert [k for k, n in Counter(top).items() if n > 1] == []
    flags = [o.flag for o in DECLARED] + [o.flag for o in OPTIONS]
    assert [k for k, n in Counter(flags).items() if n > 1] == []


def test_a_refresh_keep_is_the_versions_kept_not_the_verified_answers_kept(tmp_path: Path) -> None:
    config = tmp_path / "r.yaml"
    base = {"task": "sentiment", "input": "in.jsonl", "out": "ds", "teacher": "openai-compatible:m"}
    config.write_text(yaml.safe_dump({**base, "keep": 3, "verify": "exact:gold"}))
    job = RefreshConfig.load(config).job(tmp_path / "v")
    assert job.export.keep == "all"
    config.write_text(yaml.safe_dump({**base, "keep": 3, "verify": "exact:gold", "verify_keep": "best"}))
    assert RefreshConfig.load(config).job(tmp_path / "v").export.keep == "best"


def test_a_refresh_config_takes_the_export_options_the_cli_has(tmp_path: Path) -> None:
    """Keys derived from the declarations, not listed by hand: --gold, --teacher-labels."""
    config = tmp_path / "r.yaml"
    export = {"gold": "label", "gold_map": "0=negative,1=positive", "teacher_labels": True}
    config.write_text(
        yaml.safe_dump(
            {"task": "sentiment", "input": "in.jsonl", "out": "ds", "teacher": "m:x", "export": export}
        )
    )
    ex = RefreshConfig.load(config).export
    assert (ex.gold_field, dict(ex.gold_map or {}), ex.human_labels) == (
        "label",
        {"0": "negative", "1": "positive"},
        False,
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_option_only_another_kind_reads_is_refused_naming_the_kinds_that_read_it(kind: str) -> None:
    """The partner check reads the kinds' `reads`, so a new kind's own option needs no
    edit there."""
    verify = "exact:gold" if KINDS[kind].verify == "needs" else None
    for opt in declared(ExportOptions):
        readers = [k for k, rules in KINDS.items() if opt.name in rules.reads]
        if not readers or kind in readers:
            continue
        other = {"sft_shape": "messages", "kd_layout": "ids", "text_field": "text"}[opt.name]
        job = Job(task="sentiment", input="in.jsonl", teacher="m:x")
        export = replace(ExportOptions(kind=kind, verify=verify), **{opt.name: other})
        with pytest.raises(ConfigError, match=rf"^{opt.flag} goes with --kind {readers[0]}"):
            check_partners(replace(job, export=export))


def test_filter_and_export_defaults_come_from_their_fields() -> None:
    """The CLI passes a flag's default only where the field has it; unset is the field's."""
    run = main.commands["run"]
    defaults = {p.name: p.default for p in run.params}
    assert defaults["kind"] == ExportOptions().kind
    assert defaults["min_confidence"] is None and FilterSpec().min_confidence is None
