"""What an export is asked for and what it reports, and the rules each kind sets on both.

A module of its own at the bottom of labeler/exports/: the kinds, the card and the builder
all read `ExportOptions` and `ExportReport`, and this module imports none of them, so the
package has no import circle. The options check reads the registry of kinds (`KINDS`),
which each kind joins with `register` (labeler/exports/kinds.py) together with the rules it
sets: whether it takes `--verify` or needs it, whether its rows hold an assistant turn for
`--reasoning inline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from labeler.errors import ConfigError
from labeler.filters import FilterSpec
from labeler.option_fields import Needs, declared, option
from labeler.options import ends_in_human
from labeler.reasoning import AUTO, MODES
from labeler.verify import DEFAULT_TIMEOUT_S, parse_keep

if TYPE_CHECKING:
    from labeler.calibration import Calibration

FORMATS = ("hf", "parquet", "jsonl")
# The same names for a type checker, so `kind="clasification"` is caught before a run;
# tests/test_export_literals.py keeps them equal to FORMATS and the registry of kinds.
ExportFormat = Literal["hf", "parquet", "jsonl"]
ExportKindName = Literal["records", "classification", "sft", "kd", "preference"]
SFT_SHAPES = ("prompt-completion", "messages")
KD_LAYOUTS = ("tokens", "ids")
CALIBRATION_MODES = ("auto", "none", "batch")


class KindRules:
    """What a kind of export asks of the options, read by the options check; the rest of a
    kind (its columns, its rows, its card) is `labeler.exports.kinds.ExportKind`."""

    name: ClassVar[str]
    # --verify: "takes" (records, sft), "needs" (preference) or "refuses" (a row with no
    # answer text to keep or drop)
    verify: ClassVar[Literal["takes", "needs", "refuses"]] = "takes"
    needs_verify_because: ClassVar[str] = ""  # the reason a "needs" kind says
    # whether its rows hold the teacher's answer as an assistant turn (--reasoning inline
    # writes the trace before it there)
    assistant_turn: ClassVar[bool] = True
    # the export options only this kind's rows use (ExportOptions field names): given to
    # another kind, the partner check refuses them (labeler/partners.py)
    reads: ClassVar[tuple[str, ...]] = ()

    def check(self, opts: ExportOptions) -> None:
        """Refuse, when the options are made, what this kind cannot do with them."""
        if opts.verify is not None and self.verify == "refuses":
            takers = [k for k, rules in KINDS.items() if rules.verify != "refuses"]
            raise ConfigError(
                f"--verify goes with --kind {_either(takers)} (a "
                f"--kind {self.name} row has no answer text to keep or drop)"
            )
        if opts.reasoning == "inline" and not self.assistant_turn:
            raise ConfigError(
                f"--reasoning inline puts the trace before the answer in an "
                f"assistant message, which --kind {self.name} rows do not have: "
                "use --reasoning separate (a `reasoning` column) or drop"
            )

    def check_needs(self, opts: ExportOptions) -> None:
        """Refuse options that lack what this kind needs. Apart from `check`: a job fills in
        `verify` after the options are made (labeler/job.py)."""
        if self.verify == "needs" and opts.verify is None:
            raise ConfigError(f"--kind {self.name} needs --verify SPEC ({self.needs_verify_because})")


# Every kind by name, in the order the CLI lists them.
KINDS: dict[str, KindRules] = {}
_Kind = TypeVar("_Kind", bound=type[KindRules])


def register(kind: _Kind) -> _Kind:
    """Add a kind to the registry the CLI's choice, the options check and the card read."""
    KINDS[kind.name] = kind()
    return kind


def check_needs(opts: ExportOptions) -> None:
    """Whether the options hold what their kind needs (a preference export: --verify)."""
    KINDS[opts.kind].check_needs(opts)


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass
class ExportReport:
    """What went into an export: counts per split, per filter, per label."""

    path: str
    kind: str
    format: str
    rows_in: int = 0
    exported: int = 0
    missing: int = 0  # rows with no stored answer (failed or not labeled yet)
    rejected: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    # exported rows by where their soft label came from (logprobs, samples:N, verbalized…)
    soft_label_sources: dict[str, int] = field(default_factory=dict)
    human_labeled: int = 0  # rows whose label a person gave (labeler review)
    # the calibration applied (or why none was), and where the exported labels' shares
    # depart from the gold rows' or the calibrated distribution's (labeler/label_prior.py)
    calibration: str | None = None
    prior_warnings: list[str] = field(default_factory=list)
    # a cascade ending in `human`: rows queued for a person that none has decided yet,
    # and how many of them were held out of the export
    awaiting_human: int = 0
    held_for_human: int = 0
    # a cascade: rows each stage labeled; an ensemble: rows each member answered
    stages: dict[str, int] = field(default_factory=dict)
    # a cascade's stages or an ensemble's members: rows answered, tokens, time, cost
    teachers: list[dict[str, Any]] = field(default_factory=list)
    # kd: the vocabulary the token ids index (None when the teacher sent no ids)
    teacher_tokenizer: str | None = None
    # --verify: pass rates over the rows with answers (labeler/verify/passk.py), and for
    # a preference export the rows left out for want of a verified or a failed answer
    verification: dict[str, Any] | None = None
    unpaired: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("calibration", "prior_warnings"):  # said only where there is something
            if not out[key]:
                del out[key]
        return out

    def outcome(self) -> dict[str, Any]:
        """What every command that exports puts in its JSON: rows written, rows each
        filter removed, rows with no stored answer, and the kind, format and path."""
        return {
            "exported": self.exported,
            "filtered": dict(self.filtered),
            "missing": self.missing,
            "kind": self.kind,
            "format": self.format,
            "path": self.path,
        }


NO_EXPORT: dict[str, Any] = {
    "exported": None,
    "filtered": {},
    "missing": None,
    "kind": None,
    "format": None,
    "path": None,
}


def calibration_fields(value: str) -> dict[str, Any]:
    """`--calibration none|auto|batch|FILE`: a mode, or a saved calibration read now (it brings
    numpy, imported only then: an export without one never waits for it)."""
    if value in CALIBRATION_MODES:
        return {"calibration_mode": value}
    from labeler.calibration import load_calibration

    return {"calibration": load_calibration(value), "calibration_mode": "auto"}


def _gold_map_fields(value: str | Mapping[str, str]) -> dict[str, Any]:
    from labeler.gold import parse_gold_map

    if isinstance(value, str):
        value = parse_gold_map(value)
    return {"gold_map": dict(value) or None}


@dataclass(frozen=True)
class ExportOptions:
    """What an export writes; each option a user sets is declared on its field
    (labeler/option_fields.py), where the CLI flags and refresh keys come from."""

    kind: str = option(
        "records",
        group="export",
        choices=lambda: list(KINDS),
        help="Shape of the exported rows (preference: pairs of a verified and a failed "
        "answer, with --verify).",
    )
    format: str = option(
        "hf",
        group="output",
        choices=lambda: FORMATS,
        help="hf (a datasets folder), parquet or jsonl files, one per split.",
    )
    filters: FilterSpec = field(default_factory=FilterSpec)
    validation_size: float = option(
        0.0, group="export", help="Share of rows in a validation split (stable per row id)."
    )
    seed: int = option(0, group="export", help="Seed of the validation split.")
    split_field: str | None = option(None, group="export", help="Input field that names each row's split.")
    text_field: str | None = option(
        None, group="export", help="Input field used as `text` in classification exports."
    )
    push_to_hub: str | None = option(
        None, group="output", metavar="REPO", help="Also upload the export to this Hugging Face dataset repo."
    )
    private: bool = option(
        True,
        group="output",
        flag="--public",
        invert=True,
        needs=Needs("push_to_hub", "--push-to-hub REPO", "it makes that repository public"),
        help="Make a --push-to-hub repo public.",
    )
    # a label given on the review page wins over the teacher's
    human_labels: bool = option(
        True,
        group="export",
        flag="--teacher-labels",
        invert=True,
        help="Export the teacher's labels even where `labeler review` has a human one.",
    )
    # a cascade ending in `human`: export the rows still awaiting a person (with the last
    # teacher's label and `awaiting_human: true`) instead of holding them out
    include_awaiting_human: bool = option(
        False,
        group="export",
        needs=Needs("cascade", "--cascade ...,human", "no row awaits a person", holds=ends_in_human),
        help="With --cascade ...,human: export the rows still awaiting a person with the "
        "last teacher's label (marked awaiting_human) instead of holding them out.",
    )
    sft_shape: str = option(
        "prompt-completion",
        group="export",
        choices=lambda: SFT_SHAPES,
        help="Chat-mode `sft` rows: prompt/completion (only the teacher's answer is "
        "trained) or one `messages` list (few-shot answers included).",
    )
    kd_layout: str = option(
        "tokens",
        group="export",
        choices=lambda: KD_LAYOUTS,
        help="`kd` rows: per-token text/bytes/ids/logprobs, or `ids`: also DistillKit's raw "
        "top-k columns (needs a teacher that sends ids).",
    )
    card_license: str | None = option(
        None,
        group="output",
        metavar="ID",
        help="Licence of the exported data for the card (a Hub id: mit, cc-by-4.0…).",
    )
    card_endpoint: bool = option(
        False,
        group="output",
        help="Name the teacher's endpoint URL in the card (off: it may be private).",
    )
    calibration: Calibration | None = None  # read answers through it; the store is untouched
    # "auto": calibrate from the gold field (named, or found) when there is one, else raw;
    # "none": raw;
    # "batch": the teacher's mean over the exported rows divided out, no gold
    # (labeler/gold_calibration.py resolves it into `calibration` and `calibration_note`)
    calibration_mode: str = option(
        "auto",
        group="export",
        flag="--calibration",
        metavar="none|auto|batch|FILE",
        path="file",
        keywords=CALIBRATION_MODES,
        convert=calibration_fields,
        help="Soft labels, labels, confidence and filters read through: `auto` a "
        "calibration fitted on the gold rows (the --gold field, else the one input field "
        "of label names; raw without gold), `batch` the "
        "teacher's mean over the exported rows divided out (no gold; for rows whose "
        "labels are about evenly spread), `none` the raw teacher, or a file of "
        "labeler eval --save-calibration.",
    )
    gold_field: str | None = option(
        None,
        group="export",
        flag="--gold",
        metavar="FIELD",
        help="Input field with gold labels on some rows (default: the one field whose values "
        "are all label names, if there is one): the calibration is fitted on them "
        "(at least 20, and 5 per label) and the label-prior check reads them.",
    )
    gold_map: Mapping[str, str] | None = option(
        None,
        group="export",
        metavar="GOLD=LABEL,...",
        convert=_gold_map_fields,
        also=(str, dict),  # a config may write it as a mapping
        help="Gold values in other words than the labels (e.g. 0=negative,1=positive).",
    )
    calibration_note: str | None = None  # what was applied and why, for the card and summary
    gold_prior: tuple[float, ...] | None = None  # the gold rows' label shares (prior check)
    # where a reasoning trace goes: separate | inline | drop; "auto": separate when the
    # store holds any trace, else nothing (the export resolves it)
    reasoning: str = option(
        AUTO,
        group="export",
        choices=lambda: (*MODES, AUTO),
        help="A reasoning teacher's thinking: `separate` (sft: the assistant turn's "
        "reasoning_content; records/classification: a reasoning column), `inline` "
        "(<think>...</think> before the answer) or `drop`. auto: separate when the store "
        "holds any trace.",
    )
    # replace a previous export of another kind or format at `out` (labeler/exports/out_folder.py)
    force: bool = option(
        False,
        group="output",
        cli_only="a refresh writes each version to a folder of its own",
        help="Replace a previous export at --out of another kind or format (never a folder "
        "that is not an export).",
    )
    # --verify SPEC (labeler/verify/): every answer checked, verdicts stored; `records`
    # carry them, `sft` keeps the verified answers (`keep`: all, best or K per row) and
    # `preference` pairs a verified answer with a failed one of the same row. Labeling
    # options (labeler/options.py): a job hands them over.
    verify: str | None = None
    keep: str | int = "all"
    verify_timeout: float = DEFAULT_TIMEOUT_S
    judge_calibration: str | None = None  # a judge's saved calibration (labeler/verify/judge.py)

    def __post_init__(self) -> None:
        for opt in declared(ExportOptions):
            choices = opt.choices()
            value = getattr(self, opt.name)
            if choices is not None and value not in choices:
                names = [c for c in choices if c != AUTO]
                raise ConfigError(f"{opt.flag} '{value}': expected one of {', '.join(names)}")
        KINDS[self.kind].check(self)
        if self.calibration_mode not in CALIBRATION_MODES:
            raise ConfigError(
                f"--calibration '{self.calibration_mode}': expected none, auto, batch or a calibration file"
            )
        if not 0.0 <= self.validation_size < 1.0:
            raise ConfigError("--validation-size must be in [0, 1)")
        parse_keep(self.keep)


def teacher_tokenizer(identity: Mapping[str, Any]) -> str:
    """Names the vocabulary a teacher's token ids index: its model, and for a local GGUF
    the weights file's fingerprint (the tokenizer ships inside it; load it with
    transformers' `AutoTokenizer.from_pretrained(repo, gguf_file=...)`)."""
    name = f"{identity.get('provider')}:{identity.get('model')}"
    gguf = identity.get("gguf")
    return f"{name} (GGUF {gguf})" if gguf else name
