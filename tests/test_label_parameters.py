"""label()'s and alabel()'s keyword parameters are the declared options, typed: an option
declared (labeler/options.py), a `Job` field or an export option added without its
parameter, or a Literal that names other values than the runtime accepts, fails here."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, get_args

import pytest

import labeler.exports.kinds  # noqa: F401  (fills the registry of kinds)
from labeler import ConfigError, Job, in_memory
from labeler.cascade import MEASURES
from labeler.ensemble import COMBINE
from labeler.exports.options import KD_LAYOUTS, KINDS, SFT_SHAPES, ExportOptions
from labeler.options import OPTIONS, EnsembleCombine, EscalateOn, ReasoningEffort, SoftLabelSource
from labeler.reasoning import AUTO, EFFORTS, MODES
from labeler.teachers.sampling import SOFT_LABEL_MODES

# Job fields label() does not take, and why: the call gives them itself.
NOT_FROM_JOB = {
    "task": "positional",
    "input": "positional (data)",
    "teacher": "positional",
    "out": "a folder of its own, read back into memory",
    "export": "built from the export parameters",
    "input_format": "data in memory, or a Hub spec",
    "delimiter": "data in memory",
    "input_split": "a Hub spec names its split",
    "batch": "a batch job outlives a call; `labeler run --batch`",
    "no_wait": "goes with batch",
}
# Export options label() does not take, and why.
NOT_FROM_EXPORT = {
    "format": "always hf: the folder is read back into memory",
    "private": "the `public` parameter, as the CLI's --public",
    "human_labels": "the review page's labels: `labeler export`",
    "include_awaiting_human": "a cascade ending in human: `labeler export`",
    "calibration_mode": "the `calibration` parameter's none|auto|batch, as --calibration",
    "gold_field": "the `gold` parameter, as the CLI's --gold",
    "calibration_note": "filled in by the export",
    "gold_prior": "filled in by the export",
    "force": "the folder is new each call",
}
OWN = {"progress", "on_warning", "return_summary", "public", "gold"}


def keywords(fn: Any) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}


def annotation(name: str) -> Any:
    return eval(keywords(in_memory.label)[name].annotation, vars(in_memory))


def test_label_and_alabel_take_the_same_parameters() -> None:
    def shape(fn: Any) -> list[tuple[str, Any, Any]]:
        return [(n, p.annotation, p.default) for n, p in keywords(fn).items()]

    assert shape(in_memory.label) == shape(in_memory.alabel)
    assert not [p for p in inspect.signature(in_memory.label).parameters.values() if p.kind is p.VAR_KEYWORD]


def test_every_declared_option_is_a_parameter_with_its_default() -> None:
    params = keywords(in_memory.label)
    for opt in OPTIONS:
        assert opt.field in params, f"label() lacks {opt.field}"
        assert params[opt.field].default == opt.default, opt.field
        if opt.choices is not None:
            assert get_args(annotation(opt.field)) == opt.choices, opt.field


def test_every_job_field_is_a_parameter_or_left_out_for_a_reason() -> None:
    params = keywords(in_memory.label)
    fields = {f.name: f for f in dataclasses.fields(Job)}
    assert set(fields) - set(params) == set(NOT_FROM_JOB)
    for name in set(fields) & set(params):
        if fields[name].default is not dataclasses.MISSING and name != "progress":
            assert params[name].default == fields[name].default, name


def test_every_export_option_is_a_parameter_or_left_out_for_a_reason() -> None:
    params = keywords(in_memory.label)
    fields = {f.name: f for f in dataclasses.fields(ExportOptions)}
    assert set(fields) - set(params) == set(NOT_FROM_EXPORT)
    for name in set(fields) & set(params) - {f.name for f in dataclasses.fields(Job)}:
        default = fields[name].default
        if default is dataclasses.MISSING:  # a factory: label() says None for "the default"
            assert params[name].default is None, name
        else:
            assert params[name].default == default, name
    assert params["public"].default is (not ExportOptions().private)
    job_or_export = {f.name for f in dataclasses.fields(Job)} | set(fields)
    assert set(params) - job_or_export == OWN - {"progress"}


def test_the_literals_name_what_the_runtime_accepts() -> None:
    assert get_args(annotation("escalate_on")) == MEASURES
    assert get_args(annotation("ensemble_combine")) == COMBINE
    assert get_args(EnsembleCombine) == COMBINE and get_args(EscalateOn) == MEASURES
    assert get_args(ReasoningEffort) == EFFORTS
    assert set(get_args(SoftLabelSource)) == set(SOFT_LABEL_MODES)
    assert set(get_args(annotation("kind"))) == set(KINDS)
    assert get_args(in_memory.SftShape) == SFT_SHAPES
    assert get_args(in_memory.KdLayout) == KD_LAYOUTS
    assert get_args(in_memory.ReasoningMode) == (AUTO, *MODES)


def test_every_parameter_is_documented() -> None:
    doc = inspect.getdoc(in_memory.label) or ""
    missing = [name for name in keywords(in_memory.label) if name not in doc]
    assert not missing, missing


def test_a_misspelled_option_fails_at_the_call() -> None:
    with pytest.raises(TypeError, match="concurency"):
        in_memory.label([{"text": "x"}], "sentiment", "openai-compatible:m", concurency=4)  # type: ignore[call-arg]


def test_a_bad_value_is_the_cli_flags_one_line_error() -> None:
    with pytest.raises(
        ConfigError, match="soft_labels must be one of auto, logprobs, logprobs:exact, samples"
    ):
        in_memory.label([{"text": "x"}], "sentiment", "openai-compatible:m", soft_labels="sample")  # type: ignore[arg-type]
