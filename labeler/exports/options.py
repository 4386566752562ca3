"""What an export is asked for and what it reports, and the rules each kind sets on both.

A module of its own at the bottom of labeler/exports/: the kinds, the card and the builder
all read `ExportOptions` and `ExportReport`, and this module imports none of them, so the
package has no import circle. The options check reads the registry of kinds (`KINDS`),
which each kind joins with `register` (labeler/exports/kinds.py) together with the rules it
sets: whether it takes `--verify` or needs it, whether its rows hold an assistant turn for
`--reasoning inline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from labeler.errors import ConfigError
from labeler.filters import FilterSpec
from labeler.reasoning import AUTO, check_mode
from labeler.verify import DEFAULT_TIMEOUT_S, parse_keep

if TYPE_CHECKING:
    from collections.abc import Mapping

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


@dataclass(frozen=True)
class ExportOptions:
    kind: str = "records"
    format: str = "hf"
    filters: FilterSpec = field(default_factory=FilterSpec)
    validation_size: float = 0.0
    seed: int = 0
    split_field: str | None = None
    text_field: str | None = None
    push_to_hub: str | None = None
    private: bool = True
    human_labels: bool = True  # a label given on the review page wins over the teacher's
    # a cascade ending in `human`: export the rows still awaiting a person (with the last
    # teacher's label and `awaiting_human: true`) instead of holding them out
    include_awaiting_human: bool = False
    sft_shape: str = "prompt-completion"
    kd_layout: str = "tokens"  # "ids": also DistillKit's raw top-k columns
    card_license: str | None = None  # the card's `license` (a Hub licence id)
    card_endpoint: bool = False  # name the teacher's endpoint URL in the card
    calibration: Calibration | None = None  # read answers through it; the store is untouched
    # "auto": calibrate from the gold field when there is one, else raw; "none": raw;
    # "batch": the teacher's mean over the exported rows divided out, no gold
    # (labeler/gold_calibration.py resolves it into `calibration` and `calibration_note`)
    calibration_mode: str = "auto"
    gold_field: str | None = None  # input field holding gold labels (--gold)
    gold_map: Mapping[str, str] | None = None
    calibration_note: str | None = None  # what was applied and why, for the card and summary
    gold_prior: tuple[float, ...] | None = None  # the gold rows' label shares (prior check)
    # where a reasoning trace goes: separate | inline | drop; "auto": separate when the
    # store holds any trace, else nothing (the export resolves it)
    reasoning: str = AUTO
    # replace a previous export of another kind or format at `out` (labeler/exports/out_folder.py)
    force: bool = False
    # --verify SPEC (labeler/verify/): every answer checked, verdicts stored; `records`
    # carry them, `sft` keeps the verified answers (`keep`: all, best or K per row) and
    # `preference` pairs a verified answer with a failed one of the same row
    verify: str | None = None
    keep: str | int = "all"
    verify_timeout: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"--kind '{self.kind}': expected one of {', '.join(KINDS)}")
        KINDS[self.kind].check(self)
        if self.kd_layout not in KD_LAYOUTS:
            raise ConfigError(f"--kd-layout '{self.kd_layout}': expected one of {', '.join(KD_LAYOUTS)}")
        if self.sft_shape not in SFT_SHAPES:
            raise ConfigError(f"--sft-shape '{self.sft_shape}': expected one of {', '.join(SFT_SHAPES)}")
        if self.calibration_mode not in CALIBRATION_MODES:
            raise ConfigError(
                f"--calibration '{self.calibration_mode}': expected none, auto, batch or a calibration file"
            )
        if self.format not in FORMATS:
            raise ConfigError(f"--format '{self.format}': expected one of {', '.join(FORMATS)}")
        if not 0.0 <= self.validation_size < 1.0:
            raise ConfigError("--validation-size must be in [0, 1)")
        check_mode(self.reasoning)
        parse_keep(self.keep)


def teacher_tokenizer(identity: Mapping[str, Any]) -> str:
    """Names the vocabulary a teacher's token ids index: its model, and for a local GGUF
    the weights file's fingerprint (the tokenizer ships inside it; load it with
    transformers' `AutoTokenizer.from_pretrained(repo, gguf_file=...)`)."""
    name = f"{identity.get('provider')}:{identity.get('model')}"
    gguf = identity.get("gguf")
    return f"{name} (GGUF {gguf})" if gguf else name
