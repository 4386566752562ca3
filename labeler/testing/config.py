"""Everything a test can turn on the teacher server, in one mutable dataclass.

The server reads its config afresh for every request, so a test may change fields (or
assign a new config) between phases while the server runs; a subprocess server takes
the same fields as flags and as JSON on `POST /_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from labeler.testing import hostile
from labeler.testing.refusals import MODES as REFUSAL_MODES
from labeler.testing.responders import Responder

COMPLETIONS_SHAPES = ("openai", "llama")
REASONING_FIELDS = (None, "reasoning_content", "reasoning")
BATCH_FAULTS = (None, "fail", "expire")
FAULT_RATES = (
    "error_rate",
    "overloaded_rate",
    "rate_limit_rate",
    "garbage_rate",
    "drop_rate",
    "hang_rate",
    "content_filter_rate",
    "hostile_rate",
)


@dataclass(slots=True)
class ServerConfig:
    """Teacher behaviour, faults and limits.

    A request meets, in this order: the API key check, validation (400), `status_for`
    (a prompt containing the substring always gets that status), the `rpm`/`tpm`
    windows (429), the context window (400), `fail_first` (the first k attempts of each
    distinct prompt get `fail_status`), then one random draw against the fault rates.
    Draws depend on (seed, prompt, attempt) only, so a run is reproducible whatever the
    concurrency and a retried prompt gets a fresh draw. Rates are probabilities of
    mutually exclusive outcomes and may add up to at most 1. `responder` overrides the
    default answers (labels if `labels` is set, else free text).
    """

    model: str = field(default="teacher-test", metadata={"help": "model id served and listed"})
    seed: int = field(default=0, metadata={"help": "seed for labels, logprobs and faults"})
    labels: list[str] | None = field(
        default=None, metadata={"help": "answer with these labels (comma-separated)"}
    )
    shared_prefix_labels: list[str] | None = field(
        default=None,
        metadata={
            "help": "answer completion prompts ending in 'Answer:' with these multi-token "
            "labels (comma-separated; they may share first words) from a known "
            "token-level distribution, scoring continuations past the cue too"
        },
    )
    responder: Responder | None = field(default=None, repr=False, compare=False)
    default_temperature: float = field(
        default=1.0, metadata={"help": "temperature of requests that set none (providers: 1.0)"}
    )
    context_tokens: int = field(default=8192, metadata={"help": "context window in tokens"})
    completions_shape: str = field(
        default="openai", metadata={"help": "logprobs shape of /v1/completions: openai|llama"}
    )
    context_error_shape: str = field(
        default="openai",
        metadata={
            "help": "a prompt over context_tokens is refused as: openai (400 "
            "context_length_exceeded, as OpenAI and vLLM word it) or llama "
            "(400 exceed_context_size_error, llama.cpp's server)"
        },
    )
    token_ids: bool = field(
        default=False,
        metadata={
            "help": "chat logprobs carry each token's vocabulary id, as llama.cpp's "
            "server sends them (always so with completions_shape=llama)"
        },
    )
    reasoning_field: str | None = field(
        default=None,
        metadata={
            "help": "a reasoning model: chat answers carry a per-row trace in this "
            "message field, reasoning_content (DeepSeek's API, llama.cpp) or "
            "reasoning (vLLM since 0.11), counted in reasoning_tokens"
        },
    )
    redacted_thinking: bool = field(
        default=False,
        metadata={
            "help": "Anthropic answers to a `thinking` request add a redacted_thinking "
            "block after the thinking block, as when a safety system "
            "encrypted part of the thinking"
        },
    )
    chat_only: bool = field(
        default=False,
        metadata={
            "help": "a chat-only server: /v1/completions answers 404 as OpenAI's API does for a chat model"
        },
    )
    latency_s: float = field(default=0.0, metadata={"help": "seconds before each answer"})
    latency_jitter_s: float = field(default=0.0, metadata={"help": "extra uniform latency"})
    capacity: int | None = field(
        default=None,
        metadata={"help": "answers generated at once (a GPU server's batch); more queue"},
    )
    error_rate: float = field(default=0.0, metadata={"help": "share of HTTP 500 answers"})
    overloaded_rate: float = field(
        default=0.0, metadata={"help": "share of overloaded answers (529 Anthropic, 503 OpenAI)"}
    )
    rate_limit_rate: float = field(default=0.0, metadata={"help": "share of random 429s"})
    retry_after_s: float = field(default=1.0, metadata={"help": "retry-after of injected 429s"})
    garbage_rate: float = field(default=0.0, metadata={"help": "share of 200s with a bad body"})
    garbage_content_type: str = field(
        default="application/json", metadata={"help": "content-type of the bad 200 body"}
    )
    drop_rate: float = field(default=0.0, metadata={"help": "share of connections dropped"})
    hang_rate: float = field(default=0.0, metadata={"help": "share of answers delayed hang_s"})
    hang_s: float = field(default=30.0, metadata={"help": "delay of a hung answer"})
    trickle_s: float = field(
        default=0.0,
        metadata={
            "help": "send an answer's headers at once, then its body one byte every "
            "this many seconds (0: the whole body at once)"
        },
    )
    content_filter_rate: float = field(default=0.0, metadata={"help": "share of content-filtered answers"})
    hostile_rate: float = field(
        default=0.0, metadata={"help": "share of 200s whose body breaks one field (testing/hostile.py)"}
    )
    hostile: list[str] | None = field(
        default=None,
        metadata={"help": "the hostile modes to use (comma-separated; default: every light one)"},
    )
    refuses: str | None = field(
        default=None,
        metadata={
            "help": "answer as a teacher that refuses parameters: openai-reasoning, "
            "openai-403, gemini, groq, silent (a 200 without logprobs), or "
            "anthropic-thinking (temperature must be 1)"
        },
    )
    fail_first: int = field(default=0, metadata={"help": "the first k attempts of every prompt fail"})
    fail_status: int = field(default=500, metadata={"help": "status of those failures"})
    status_for: list[tuple[str, int]] = field(default_factory=list)
    ignore_n: bool = field(
        default=False,
        metadata={"help": "answer one choice whatever `n` asks, as some servers and gateways do"},
    )
    max_n: int | None = field(
        default=None,
        metadata={
            "help": "most choices (`n`) an OpenAI-style request may ask; more get a 400 "
            "as Groq answers it (llama.cpp's server takes 1)"
        },
    )
    rpm: int | None = field(default=None, metadata={"help": "requests allowed per window"})
    tpm: int | None = field(default=None, metadata={"help": "tokens allowed per window"})
    rate_window_s: float = field(default=60.0, metadata={"help": "rate-limit window seconds"})
    api_key: str | None = field(
        default=None,
        repr=False,
        metadata={"help": "key clients must send (or set LABELER_TEACHER_API_KEY)"},
    )
    echo_key: bool = field(
        default=False,
        metadata={"help": "401 answers quote the credential sent, as some gateways do"},
    )
    cache_min_tokens: int = field(
        default=0, metadata={"help": "smallest prefix Anthropic-style caching stores"}
    )
    openai_cache_min_tokens: int = field(
        default=1024, metadata={"help": "prompt size from which OpenAI-style caching applies"}
    )
    log_requests: bool = field(default=True, metadata={"help": "keep a record of each request"})
    batch_speed_s: float = field(
        default=1.0, metadata={"help": "seconds a batch (a '24h' job at the providers) takes"}
    )
    batch_fault: str | None = field(
        default=None,
        metadata={
            "help": "batches created while set: 'fail' (validation fails) or 'expire' "
            "(ends with half its requests answered)"
        },
    )
    batch_error_rate: float = field(
        default=0.0, metadata={"help": "share of batch requests answered with an HTTP 500 error"}
    )

    def __post_init__(self) -> None:
        validate(self)


def validate(config: ServerConfig) -> None:
    """Reject settings that would silently do something other than what was meant."""
    total = 0.0
    for name in FAULT_RATES:
        rate = getattr(config, name)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {rate}")
        total += rate
    if total > 1.0 + 1e-9:
        raise ValueError(f"fault rates add up to {total:.3f}, more than 1")
    if config.reasoning_field not in REASONING_FIELDS:
        raise ValueError(f"reasoning_field must be one of {REASONING_FIELDS}")
    if config.context_error_shape not in COMPLETIONS_SHAPES:
        raise ValueError(f"context_error_shape must be one of {COMPLETIONS_SHAPES}")
    if config.completions_shape not in COMPLETIONS_SHAPES:
        raise ValueError(f"completions_shape must be one of {COMPLETIONS_SHAPES}")
    if config.trickle_s < 0:
        raise ValueError("trickle_s must not be negative")
    if config.rate_window_s <= 0:
        raise ValueError("rate_window_s must be positive")
    if config.batch_fault not in BATCH_FAULTS:
        raise ValueError(f"batch_fault must be one of {BATCH_FAULTS}")
    if not 0.0 <= config.batch_error_rate <= 1.0:
        raise ValueError(f"batch_error_rate must be within [0, 1], got {config.batch_error_rate}")
    if config.batch_speed_s < 0:
        raise ValueError("batch_speed_s must not be negative")
    unknown = [name for name in config.hostile or () if name not in hostile.SHAPES]
    if unknown:
        raise ValueError(f"unknown hostile modes {unknown}: expected some of {sorted(hostile.SHAPES)}")
    if config.max_n is not None and config.max_n < 1:
        raise ValueError("max_n must be at least 1")
    if config.refuses not in REFUSAL_MODES:
        raise ValueError(f"refuses must be one of {REFUSAL_MODES}")
    if config.labels is not None and not config.labels:
        raise ValueError("labels, when given, must not be empty")


def public_view(config: ServerConfig) -> dict[str, Any]:
    """The config as JSON-ready data, without the API key or the responder object."""
    out: dict[str, Any] = {}
    for f in fields(config):
        if f.name in ("responder", "api_key"):
            continue
        value = getattr(config, f.name)
        out[f.name] = [list(x) for x in value] if f.name == "status_for" else value
    out["api_key_set"] = config.api_key is not None
    out["responder"] = type(config.responder).__name__ if config.responder else None
    return out


def patched(config: ServerConfig, changes: Mapping[str, Any]) -> ServerConfig:
    """A copy of `config` with JSON-typed `changes` applied and validated."""
    known = {f.name: f for f in fields(config) if f.name != "responder"}
    updates: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in known:
            raise ValueError(f"unknown config field {name!r}")
        if name == "status_for":
            value = [(str(sub), int(status)) for sub, status in value]
        elif name in ("labels", "hostile") and isinstance(value, str):
            value = [x for x in value.split(",") if x]
        elif value is not None:
            default = known[name].default
            kind = type(default) if default is not MISSING and default is not None else None
            if kind in (int, float) and not isinstance(value, bool):
                value = kind(value)
        updates[name] = value
    return replace(config, **updates)
