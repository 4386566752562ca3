"""How a labeling pass behaves, as one frozen value shared by every strategy.

The live engine (`Labeler`) and the batch runner (`BatchRunner`) read the same settings,
and a cascade or an ensemble derives each stage's from the job's with
`dataclasses.replace`, so a setting is declared once and never copied argument by argument
from one constructor to the next. Frozen, so nothing is changed under a running pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labeler import bounds
from labeler.concurrency import DEFAULT_CEILING
from labeler.errors import ConfigError
from labeler.options import REQUEST_TIMEOUT_S, STOP_GRACE_S
from labeler.pricing import PriceTable
from labeler.retry import RetryPolicy


@dataclass(frozen=True)
class LabelSettings:
    """The limits, retries, budget and reporting of one labeling pass.

    `concurrency`, `rpm`, `tpm`, `stop_grace_s` and `request_timeout_s` shape live
    requests; `no_wait` only the batch API; the rest both. `retry.max_attempts` is also
    how often a batch run sends a transiently failed row again.
    """

    concurrency: int = DEFAULT_CEILING  # a ceiling: the in-flight target adapts below it
    rpm: float | None = None
    tpm: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retry_failed: bool = False
    progress: bool | None = None
    prices: PriceTable | None = None
    budget_usd: float | None = None
    max_age_s: float | None = None
    stop_grace_s: float = STOP_GRACE_S
    request_timeout_s: float | None = REQUEST_TIMEOUT_S
    no_wait: bool = False

    def __post_init__(self) -> None:
        # A negative rate waits forever for a token, a negative concurrency fails deep in
        # asyncio: the same ranges as the CLI's flags, checked before anything starts.
        bounds.check(
            [
                ("concurrency", self.concurrency),
                ("rpm", self.rpm),
                ("tpm", self.tpm),
                ("budget", self.budget_usd),
                ("stop_grace", self.stop_grace_s),
            ]
        )
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise ConfigError(f"request timeout must be positive, got {self.request_timeout_s:g}s")

    @property
    def price_table(self) -> PriceTable:
        return self.prices or PriceTable.default()


__all__ = ["LabelSettings"]
