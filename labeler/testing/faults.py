"""Which fault, if any, an attempt gets.

Scheduled faults come first and are exact (`status_for` by substring, then `fail_first`
attempts per prompt), so retry and final-error tests can count on them. Random faults are
one uniform draw per (seed, prompt, attempt) compared against the rates in the order
`ServerConfig` lists them: reproducible across runs and concurrency, and independent
between the attempts of one prompt, so a retried request can succeed.
"""

from __future__ import annotations

from labeler.testing.config import ServerConfig
from labeler.testing.hashing import unit

ERROR = "error"
OVERLOADED = "overloaded"
RATE_LIMIT = "rate_limit"
GARBAGE = "garbage"
DROP = "drop"
HANG = "hang"
CONTENT_FILTER = "content_filter"
HOSTILE = "hostile"
STATUS_FOR = "status_for"
FAIL_FIRST = "fail_first"
OVER_LIMIT = "over_limit"
REFUSED = "refused"  # a parameter the teacher turns down (labeler/testing/refusals.py)

_BANDS = (
    (ERROR, "error_rate"),
    (OVERLOADED, "overloaded_rate"),
    (RATE_LIMIT, "rate_limit_rate"),
    (GARBAGE, "garbage_rate"),
    (DROP, "drop_rate"),
    (HANG, "hang_rate"),
    (CONTENT_FILTER, "content_filter_rate"),
    (HOSTILE, "hostile_rate"),
)


def scheduled_status(config: ServerConfig, prompt: str) -> int | None:
    """The status `status_for` pins for a prompt, if any substring matches."""
    for needle, status in config.status_for:
        if needle in prompt:
            return status
    return None


def draw(config: ServerConfig, prompt_hash: int, attempt: int) -> str | None:
    """The random fault for this attempt, or None for a normal answer."""
    u = unit(config.seed, prompt_hash, attempt, 0xFA17)
    edge = 0.0
    for fault, name in _BANDS:
        rate = getattr(config, name)
        if rate:
            edge += rate
            if u < edge:
                return fault
    return None


def latency(config: ServerConfig, prompt_hash: int, attempt: int) -> float:
    """Base latency plus a reproducible uniform share of the jitter."""
    delay = config.latency_s
    if config.latency_jitter_s:
        delay += config.latency_jitter_s * unit(config.seed, prompt_hash, attempt, 0x1A7)
    return delay
