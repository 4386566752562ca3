"""What a labeling run reports: one `Record` per row, one `RunSummary` per run.

Every strategy (the live `Labeler`, the batch runner, a cascade's stages, an ensemble's
members) reports in these terms, so they live apart from any one of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from labeler.completion import Completion
from labeler.errors import is_transient, short
from labeler.inputs import Row
from labeler.redact import redact
from labeler.request import Request


@dataclass(slots=True)
class Record:
    """What happened to one input row."""

    row: Row
    status: str  # "labeled" | "cached" | "failed" | "rejected" | "skipped"
    key: str | None = None
    request: Request | None = None
    completion: Completion | None = None
    reason: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.completion is not None


@dataclass
class RunSummary:
    """Counts for one run; printed by the CLI and written as the cron JSON line."""

    rows: int = 0
    labeled: int = 0
    cached: int = 0
    failed: int = 0
    rejected: int = 0
    skipped: int = 0
    requests: int = 0  # teacher calls (a sampling teacher sends several HTTP requests each)
    retries: int = 0
    http_requests: int = 0  # every HTTP request sent, as the server counts them
    rate_limited: int = 0  # HTTP 429 answers
    overloaded: int = 0  # "overloaded" answers (Anthropic's 529), not rate limits
    http_failures: dict[str, int] = field(default_factory=dict)  # failed HTTP requests by reason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0  # what the priced answers cost
    # Paid answers whose model had no known price: the run's cost is then unknown, never
    # a silent total of the priced ones (to_dict gives cost_usd None beside this count)
    unpriced: int = 0
    elapsed_s: float = 0.0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    # Of `failed`: sent again by a plain rerun (transient) / only with --retry-failed (final).
    failed_transient: int = 0
    failed_final: int = 0
    # In flight allowed, weighted by answers: min/median/max/ceiling and what bound it.
    concurrency: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    budget_stopped: bool = False
    stages: list[dict[str, Any]] = field(default_factory=list)  # a cascade's, one per stage
    # Parameters the teacher refused in this run -> its message; sent without them since
    refused_params: dict[str, str] = field(default_factory=dict)
    # The first message of each failure reason (redacted, one line): the server's own words
    failure_messages: dict[str, str] = field(default_factory=dict)
    # Rows in the export (None: none was written) and, when it holds none, what removed them
    exported: int | None = None
    export_removed: dict[str, int] = field(default_factory=dict)
    verification: dict[str, Any] | None = None  # --verify: pass rates (labeler/verify/)
    # --verify judge:...: each judge's pass (answers, requests, tokens, cost); its cost is
    # in `cost_usd` too
    judges: list[dict[str, Any]] = field(default_factory=list)
    # --soft-labels logprobs:exact: requests that scored labels sharing first tokens
    # (labeler/label_scoring.py), and those that failed (their rows stay approximate)
    scoring_requests: int = 0
    scoring_failed: int = 0

    @property
    def outcome(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.budget_stopped:
            return "budget"
        if self.empty:
            return "empty"
        if self.failed or self.skipped:
            return "partial"
        return "ok"

    @property
    def empty(self) -> bool:
        """Rows came in and nothing came out: every row failed (or was rejected or not
        sent), or the export holds none. Never a success, whatever the cause."""
        if self.rows <= 0:
            return False
        return self.labeled + self.cached == 0 or self.exported == 0

    @property
    def main_failure(self) -> dict[str, Any] | None:
        """The commonest reason rows failed, with how many and the server's message."""
        if self.failures_by_reason:
            reason, n = max(self.failures_by_reason.items(), key=lambda kv: kv[1])
        elif self.rejected:
            reason, n = "rejected", self.rejected
        else:
            return None
        return {"reason": reason, "rows": n, "message": self.failure_messages.get(reason, "")}

    def why_empty(self) -> str:
        """One sentence on why nothing came out of an `empty` run, naming the main failure
        in the server's own words."""
        if self.labeled + self.cached == 0:
            main = self.main_failure
            if main is None:
                return f"nothing labeled: none of {self.rows} rows was sent"
            said = f": {main['message']}" if main["message"] else ""
            return (
                f"nothing labeled: {self.failed} of {self.rows} rows failed, "
                f"{self.rejected} rejected, {self.skipped} not sent; main reason "
                f"{main['reason']} ({main['rows']} rows){said}"
            )
        removed = ", ".join(f"{n} removed by {name}" for name, n in self.export_removed.items())
        return f"the export holds 0 rows of {self.rows}" + (f": {removed}" if removed else "")

    def count_failure(self, reason: str, n: int = 1, message: str = "") -> None:
        """n rows failed for `reason`: counted by reason and by what a rerun needs."""
        self.failed += n
        self.failures_by_reason[reason] = self.failures_by_reason.get(reason, 0) + n
        if message and reason not in self.failure_messages:
            self.failure_messages[reason] = short(redact(message))
        if is_transient(reason):
            self.failed_transient += n
        else:
            self.failed_final += n

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome
        d["main_failure"] = self.main_failure
        d["cost_usd"] = None if self.unpriced else round(self.cost_usd, 6)
        d["priced_cost_usd"] = round(self.cost_usd, 6)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


__all__ = ["Record", "RunSummary"]
