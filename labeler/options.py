"""The labeling options, declared once.

Each option has one name (the refresh-config key; the CLI flag is the same with dashes),
one `Job` field, one type, one default, one allowed range (labeler/bounds.py) and one help
text. The CLI's flags, `Job`'s defaults and checks, and refresh configs' keys, types,
defaults and hand-over to `Job` are all built from this table, so a new option is one line
here and cannot drift between the three ways in.

Exit codes are declared here too: `labeler run`, `labeler refresh` and cron all read them
from `EXIT_CODES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from labeler.bounds import BOUNDS, Bound, check
from labeler.concurrency import DEFAULT_CEILING
from labeler.errors import ConfigError
from labeler.option_fields import Needs

STOP_GRACE_S = 30.0  # after a stop, how long in-flight requests may still land
REQUEST_TIMEOUT_S = 120.0  # one attempt, connect to last byte, on every transport
MAX_ATTEMPTS = 8

# outcome -> process exit code, for the CLI and the cron line alike
EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "failed": 1,
    "partial": 3,
    "locked": 4,
    "budget": 5,
    "pending": 6,
    "empty": 7,
    "interrupted": 130,
}


# The options whose value is one of a fixed set, as types a checker reads (label()'s
# parameters), so `soft_labels="sample"` is caught before a run. tests/test_label_parameters.py
# keeps each equal to the set the runtime accepts (soft_labels' choices are this type's).
SoftLabelSource = Literal["auto", "logprobs", "logprobs:exact", "samples"]
EscalateOn = Literal["max_prob", "margin", "entropy"]  # labeler.cascade.MEASURES
EnsembleCombine = Literal["mean", "product"]  # labeler.ensemble.COMBINE
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]  # reasoning.EFFORTS
# --keep: every verified answer, the best-scored, or at most K of them
KeepAnswers = Literal["all", "best"] | int


HUMAN = "human"  # a cascade's last stage: a person on the review page


def ends_in_human(cascade: str | None) -> bool:
    """Whether a cascade's last stage is a person, so that rows can await one."""
    return cascade is not None and cascade.rsplit(",", 1)[-1].strip() == HUMAN


_CASCADE = Needs("cascade", "--cascade TEACHERS")


def names_a_judge(verify: str | None) -> bool:
    """Whether a `--verify` spec has a judge step (what `--judge-calibration` applies to)."""
    return verify is not None and any(
        piece.strip().lstrip("'\"").startswith("judge:") for piece in verify.split(",")
    )


def exit_code(outcome: str) -> int:
    """The exit code of an outcome; anything unknown is a failure."""
    return EXIT_CODES.get(outcome, EXIT_CODES["failed"])


@dataclass(frozen=True)
class Option:
    """One labeling option: its config key / flag name, its `Job` field, type and default."""

    key: str
    field: str
    kind: type
    default: Any
    help: str
    short: str | None = None
    metavar: str | None = None
    also: tuple[type, ...] = ()  # further types a config may give (a number for a list)
    choices: tuple[str, ...] | None = None  # the only values a text option takes
    needs: Needs | None = None  # the option it goes with (labeler/partners.py)
    config_key: str | None = None  # the refresh key, where `key` means another thing there
    path: bool = False  # a file, which a refresh config gives relative to itself

    @property
    def refresh_key(self) -> str:
        return self.config_key or self.key

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def bound(self) -> Bound | None:
        return BOUNDS.get(self.key)

    def config_types(self) -> tuple[type, ...]:
        """The YAML types a config may give: a float setting takes an integer too."""
        return ((int, float) if self.kind is float else (self.kind,)) + self.also


OPTIONS: tuple[Option, ...] = (
    Option(
        "concurrency",
        "concurrency",
        int,
        DEFAULT_CEILING,
        "Ceiling of requests in flight; below it the number adapts to the rate limit and latency.",
        short="-c",
    ),
    Option("rpm", "rpm", float, None, "Requests per minute cap (default: learned from headers)."),
    Option("tpm", "tpm", float, None, "Tokens per minute cap (default: learned from headers)."),
    Option(
        "max_attempts", "max_attempts", int, MAX_ATTEMPTS, "Tries per item before it is recorded as failed."
    ),
    Option(
        "retry_failed",
        "retry_failed",
        bool,
        False,
        "Send again items whose failure is stored, final ones too (a plain rerun resends "
        "only transient failures).",
    ),
    Option(
        "retry_initial_wait",
        "retry_initial_wait",
        float,
        None,
        "Advanced: first backoff step between attempts (doubles each time; default 0.5). "
        "A server's retry-after is honoured regardless.",
        metavar="SECONDS",
    ),
    Option(
        "stop_grace",
        "stop_grace_s",
        float,
        STOP_GRACE_S,
        "After SIGINT/SIGTERM, seconds that requests in flight get to land.",
        metavar="SECONDS",
    ),
    Option(
        "request_timeout",
        "request_timeout",
        float,
        REQUEST_TIMEOUT_S,
        "Longest one attempt may take, connect to last byte; then it is retried as a timeout.",
        metavar="SECONDS",
    ),
    Option(
        "budget", "budget_usd", float, None, "Stop sending new requests past this spend (USD).", metavar="USD"
    ),
    Option(
        "max_age_days",
        "max_age_days",
        float,
        None,
        "Relabel (and overwrite) answers older than this many days.",
        metavar="DAYS",
    ),
    Option(
        "cascade",
        "cascade",
        str,
        None,
        "Teachers asked in turn, cheapest first: PROVIDER:MODEL[@URL],...; a row goes on "
        "to the next while its answer is unsure, invalid or failed (replaces --teacher).",
        metavar="TEACHERS",
        also=(list,),
    ),
    Option(
        "escalate_below",
        "escalate_below",
        str,
        None,
        "With --cascade: the confidence below which a row goes to the next teacher; one "
        "value, or one per stage but the last (0.9,0.8).",
        metavar="CONF",
        also=(int, float, list),
        needs=_CASCADE,
    ),
    Option(
        "escalate_on",
        "escalate_on",
        str,
        "max_prob",
        "With --cascade: the confidence measure: max_prob, margin, or entropy (nats; "
        "escalates above the threshold).",
        metavar="MEASURE",
        needs=_CASCADE,
    ),
    Option(
        "ensemble",
        "ensemble",
        str,
        None,
        "Teachers that all answer every row, at once: PROVIDER:MODEL[@URL][=WEIGHT],...; "
        "the soft label combines theirs (replaces --teacher).",
        metavar="TEACHERS",
        also=(list,),
    ),
    Option(
        "ensemble_combine",
        "ensemble_combine",
        str,
        "mean",
        "With --ensemble: mean (weighted mixture of the members' distributions) or "
        "product (product of experts).",
        metavar="HOW",
        needs=Needs("ensemble", "--ensemble TEACHERS"),
    ),
    Option(
        "reasoning_effort",
        "reasoning_effort",
        str,
        None,
        "OpenAI-style reasoning teachers: how hard they think (none, minimal, low, "
        "medium, high, xhigh), sent as reasoning_effort; overrides the template's "
        "params (part of the cache key).",
        metavar="EFFORT",
    ),
    Option(
        "thinking_budget",
        "thinking_budget",
        int,
        None,
        "Anthropic: extended thinking with this many tokens (at least 1024), sent with "
        "temperature 1 and max_tokens above the budget; overrides the template's params "
        "(part of the cache key).",
        metavar="TOKENS",
    ),
    Option(
        "samples",
        "samples",
        int,
        None,
        "Answers asked per row where the soft label comes from samples (a teacher without "
        "logprobs, one that refuses them included, or --soft-labels samples): the soft "
        "label is the share of each answer. One request with `n` where the server takes "
        "it (the prompt paid once), else N requests. Default 5; 1 keeps hard labels only. "
        "Part of the cache key of sampled requests.",
        metavar="N",
    ),
    Option(
        "soft_labels",
        "soft_labels",
        str,
        "auto",
        "Where soft labels come from: auto (logprobs where the teacher gives them, else "
        "--samples answers), logprobs, logprobs:exact (completion templates: labels "
        "that share first tokens scored to their whole probability by extra one-token "
        "requests, cached), or samples (sample even a teacher with logprobs, to compare "
        "the two).",
        metavar="SOURCE",
        choices=get_args(SoftLabelSource),
    ),
)
LOCAL_OPTIONS: tuple[Option, ...] = (
    Option(
        "local_context",
        "local_context",
        int,
        None,
        "local:… teachers: tokens each request may use, prompt and answer (default "
        "1024: llama.cpp's server divides its 4096 among 4 slots); raise it for long "
        "prompts (a long label list, few-shot examples) that fail as too long for the "
        "server's context.",
        metavar="TOKENS",
    ),
)
VERIFY_OPTIONS: tuple[Option, ...] = (
    Option(
        "verify",
        "verify",
        str,
        None,
        "Check every answer (each sample) and store the verdict: exact:FIELD, "
        "numeric:FIELD[:TOL], regex:PATTERN (extracts its first group for the next "
        "step), json-schema, python:MODULE:FUNCTION, judge:PROVIDER:MODEL[:TEMPLATE] (a "
        "second teacher labels each answer); steps joined by commas, e.g. "
        "regex:'Answer: (.*)',exact:gold. Exports keep verified answers.",
        metavar="SPEC",
    ),
    Option(
        "keep",
        "keep",
        str,
        "all",
        "With --verify: the answers an sft or preference export keeps per row: all "
        "verified ones, the best-scored, or at most K.",
        metavar="all|best|K",
        also=(int,),
        config_key="verify_keep",  # a refresh config's `keep` is how many versions stay
    ),
    Option(
        "verify_timeout",
        "verify_timeout",
        float,
        10.0,
        "With --verify python:...: seconds a checker may take per answer before that "
        "answer is marked timeout.",
        metavar="SECONDS",
    ),
    Option(
        "judge_calibration",
        "judge_calibration",
        str,
        None,
        "With --verify judge:...: read each judge's soft label through this calibration "
        "(labeler eval --judge-gold SPEC --save-judge-calibration FILE) before it becomes "
        "the answer's score; stored answers are checked again, nothing is asked.",
        metavar="FILE",
        needs=Needs("verify", "--verify judge:...", "it calibrates a judge", holds=names_a_judge),
        path=True,
    ),
)
OPTIONS = OPTIONS + LOCAL_OPTIONS + VERIFY_OPTIONS
BY_FIELD: dict[str, Option] = {o.field: o for o in OPTIONS}
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}


def default(field: str) -> Any:
    """The default of the option behind `Job.<field>` (for the dataclass fields)."""
    return BY_FIELD[field].default


def check_values(values: Mapping[str, Any], where: str = "") -> None:
    """Check option values by key: type (a bool is no number) and range. None is unset."""
    prefix = f"{where}: " if where else ""
    for key, value in values.items():
        opt = BY_KEY[key]
        if value is None:
            continue
        kinds = opt.config_types()
        if (isinstance(value, bool) and opt.kind is not bool) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{prefix}{key} must be {names}, got {value!r}")
        if opt.bound is not None:
            check([(key, cast(float, value))], where)  # a bound is on a number option
        if opt.choices is not None and value not in opt.choices:
            raise ConfigError(f"{prefix}{key} must be one of {', '.join(opt.choices)}, got {value!r}")


def from_fields(obj: Any) -> dict[str, Any]:
    """Every option's value on an object with the `Job` field names, by field."""
    return {o.field: getattr(obj, o.field) for o in OPTIONS}


CASCADE_KEYS = ("cascade", "escalate_below", "escalate_on", "ensemble", "ensemble_combine")
# Options that change what is asked, hence every cache key: each command that reads
# stored answers (export, eval, estimate, review) takes them too, to find the same keys.
REQUEST_KEYS = ("reasoning_effort", "thinking_budget", "samples", "soft_labels")
# Options that decide which stored answers an export keeps: `export` takes them too.
VERIFY_KEYS = tuple(o.key for o in VERIFY_OPTIONS)


def click_options(
    bounded: Callable[[str, type], Any], *, flags: bool = True, only: tuple[str, ...] | None = None
) -> Callable[[Any], Any]:
    """A decorator adding every option (or those named in `only`) as a CLI flag
    (`bounded` makes a range type)."""
    import click

    def decorate(f: Any) -> Any:
        for opt in reversed(OPTIONS):
            if only is not None and opt.key not in only:
                continue
            names = [opt.flag, opt.key] + ([opt.short] if opt.short else [])
            if opt.kind is bool:
                f = click.option(*names, is_flag=True, help=opt.help)(f)
                continue
            kind = bounded(opt.key, opt.kind) if opt.bound is not None else opt.kind
            if opt.choices is not None:
                kind = click.Choice(opt.choices)
            f = click.option(
                *names,
                type=kind,
                default=opt.default,
                show_default=opt.default is not None,
                metavar=opt.metavar,
                help=opt.help,
            )(f)
        return f

    return decorate


__all__ = [
    "BY_FIELD",
    "BY_KEY",
    "CASCADE_KEYS",
    "EXIT_CODES",
    "HUMAN",
    "MAX_ATTEMPTS",
    "OPTIONS",
    "REQUEST_KEYS",
    "REQUEST_TIMEOUT_S",
    "STOP_GRACE_S",
    "VERIFY_KEYS",
    "EnsembleCombine",
    "EscalateOn",
    "KeepAnswers",
    "Option",
    "ReasoningEffort",
    "SoftLabelSource",
    "check_values",
    "click_options",
    "default",
    "ends_in_human",
    "exit_code",
    "from_fields",
]
