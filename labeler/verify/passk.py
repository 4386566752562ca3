"""Pass rates of sampled answers: pass@1 and pass@N, per row and over the input.

pass@k is the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models
Trained on Code"): of n answers of which c pass, the chance that k drawn without
replacement hold at least one that passes, 1 - C(n-c, k) / C(n, k), computed as a
product so that large n does not overflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one row with n answers, c of them passing (k <= n)."""
    if n <= 0:
        return 0.0
    k = min(k, n)
    if n - c < k:
        return 1.0
    prob_none = 1.0
    for i in range(n - c + 1, n + 1):
        prob_none *= 1.0 - k / i
    return 1.0 - prob_none


@dataclass
class PassRates:
    """Per-row (n, c) counts gathered while checking, and what they sum to."""

    rows: list[tuple[int, int]] = field(default_factory=list)
    checked: int = 0  # verdicts computed now
    cached: int = 0  # verdicts read from the store
    statuses: dict[str, int] = field(default_factory=dict)

    def add_row(self, statuses: list[str]) -> None:
        self.rows.append((len(statuses), sum(s == "pass" for s in statuses)))
        for s in statuses:
            self.statuses[s] = self.statuses.get(s, 0) + 1

    @property
    def samples(self) -> int:
        """N: the most answers a row has."""
        return max((n for n, _ in self.rows), default=0)

    def to_dict(self) -> dict[str, Any]:
        answers = sum(n for n, _ in self.rows)
        passed = sum(c for _, c in self.rows)
        k = self.samples
        rows = len(self.rows)
        return {
            "rows": rows,
            "answers": answers,
            "passed": passed,
            "pass_rate": passed / answers if answers else None,
            "pass@1": (sum(pass_at_k(n, c, 1) for n, c in self.rows) / rows) if rows else None,
            "samples": k,
            "pass@N": (sum(pass_at_k(n, c, k) for n, c in self.rows) / rows) if rows else None,
            "rows_with_a_pass": sum(1 for _, c in self.rows if c),
            "verdicts": dict(sorted(self.statuses.items())),
            "checked": self.checked,
            "cached": self.cached,
        }
