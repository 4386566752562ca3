"""The allowed range of every numeric setting, written once for the CLI, `Job` and refresh.

A negative concurrency ends in a traceback, a negative rpm waits forever for a token that
never comes, zero attempts sends nothing and calls it failure: each is a typo that should
stop the run before it starts, with one line naming the setting. The CLI turns these
bounds into click ranges; `Job` and refresh configs check the same bounds, so a script or
a config file gets the same answer as a flag.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from labeler.errors import ConfigError


@dataclass(frozen=True)
class Bound:
    """low ≤ value (or low < value when `low_open`), and likewise for `high`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> str | None:
        """Why `value` is out of range, or None when it is fine."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):  # NaN compares false with every bound: it would pass
            return f"must be a finite number, got {value}"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            return f"must be {self.describe()}, got {value:g}"
        return None

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)


# Keys are the refresh-config names (the CLI flags without dashes).
BOUNDS: dict[str, Bound] = {
    "concurrency": Bound(1),
    "rpm": Bound(0, low_open=True),
    "tpm": Bound(0, low_open=True),
    "max_attempts": Bound(1),
    "retry_initial_wait": Bound(0),
    "stop_grace": Bound(0),
    "request_timeout": Bound(0, low_open=True),
    "budget": Bound(0),
    "max_age_days": Bound(0),
    "thinking_budget": Bound(1024),  # Anthropic's smallest budget_tokens
    "samples": Bound(1),
    "local_context": Bound(1),
    "verify_timeout": Bound(0, low_open=True),
    "limit": Bound(0),
    "min_confidence": Bound(0, 1),
    "min_margin": Bound(0, 1),
    "max_entropy": Bound(0),
    "validation_size": Bound(0, 1, high_open=True),
    "target_accuracy": Bound(0, 1, low_open=True),
    "fit_fraction": Bound(0, 1, low_open=True, high_open=True),
    "escalation_rate": Bound(0, 1),
    "port": Bound(0, 65535),
    "price": Bound(0),
}


def check(values: Iterable[tuple[str, float | None]], where: str = "") -> None:
    """Raise ConfigError for the first (name, value) outside its bound; None is unset."""
    for name, value in values:
        if value is None:
            continue
        why = BOUNDS[name].problem(value)
        if why is not None:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}{name} {why}")


__all__ = ["BOUNDS", "Bound", "check"]
