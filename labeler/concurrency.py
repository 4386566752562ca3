"""How many requests to keep in flight: Little's law where a rate is known, AIMD where not.

Throughput is `in flight / latency`. A fixed in-flight count is right for one latency and
one rate limit only: too few and a high tier's limit is never reached, too many and a low
tier is only held back by 429s. So the operating point is computed, and the user's
`--concurrency` is only the ceiling it may not pass.

- A known rate (given as `--rpm`/`--tpm` or learned from the provider's headers):
  in flight = rate × latency × `HEADROOM`, the latency a high percentile (`QUANTILE`) of
  recent answers, recomputed as answers arrive. The head-room keeps the rate buckets fed
  (what waits there is not sent early: the buckets still pace), so the limit, not the
  in-flight count, is what binds.
- No known rate (self-hosted servers announce none): start at `START` and grow while
  latency and errors stay flat, doubling each round trip at first, then by a tenth;
  a round whose median latency clearly exceeds the fastest seen stops the growth, one
  far above it cuts back. TCP does the same with its window.
- 429s, 5xx answers and timeouts shrink it multiplicatively, once per congestion event;
  answers restore it.

The controller only counts; the limiter (`labeler.limits`) holds the in-flight places.
"""

from __future__ import annotations

import resource
from collections import Counter
from typing import Any

DEFAULT_CEILING = 512  # enough for top API tiers (tens of thousands RPM at ~1 s)
START = 16  # before anything is known
HEADROOM = 1.5
QUANTILE = 0.9
SAMPLES = 128  # latencies kept for the percentile
RESORT_EVERY = 8  # answers between two percentile computations
MIN_ROUND = 8  # answers a growth round needs at least
SLOW_START_GROWTH = 2.0
GROWTH = 0.1
LATENCY_FLAT = 1.5  # a round's median up to this × the fastest seen counts as flat…
# …or up to this much slower. Against a fast server the client's own event loop is what
# a deeper queue slows, and there more in flight costs nothing and saves CPU per item;
# a server that queues shows it in seconds, not in tenths.
LATENCY_SLACK_S = 0.25
LATENCY_HIGH = 2.0  # above this × the fastest, or twice the slack above it: cut back
LATENCY_CUT = 0.9
DECREASE = 0.7  # on a 429 (no known rate), a 5xx or a timeout
RECOVER = 0.02  # share of the failure back-off restored per answer (paced mode)
FD_RESERVE = 64  # descriptors kept for the store, logs and the rest of the process

REASONS = ("limit", "latency", "errors", "ceiling")


def fd_ceiling(requested: int) -> int:
    """`requested`, or fewer if the process may not open that many sockets.

    Each request in flight holds a connection; the soft descriptor limit (often 1024) is
    raised towards the hard one when needed, and the ceiling lowered only if that fails.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - not a POSIX system
        return requested
    need = requested + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(hard, need)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
        return max(1, min(requested, soft - FD_RESERVE))
    return requested


class InFlightTarget:
    """The number of requests that may be in flight now, and a record of it for the summary."""

    def __init__(self, ceiling: int, start: int = START) -> None:
        if ceiling < 1:
            raise ValueError("concurrency must be at least 1")
        self.ceiling = ceiling
        self._target = float(min(ceiling, start))
        self.limit = int(self._target)
        self.reason = "ceiling" if self.limit >= ceiling else "latency"
        self.epoch = 0  # counts changes of the limit
        self._latencies: list[float] = []
        self._next = 0  # ring position
        self._since_sort = 0
        self.high_latency: float | None = None  # the QUANTILE of recent answers
        self._fastest: float | None = None  # lowest round median seen
        self._round: list[float] = []
        self._round_failed = False
        self._slow_start = True
        self._backoff = 1.0  # paced mode: what failures took off the target
        self._rate: float | None = None  # the pace the target was last computed from
        self._answers = 0  # answers since the limit or its reason last changed
        self._used: Counter[int] = Counter()
        self._why: Counter[str] = Counter()

    # -- signals ---------------------------------------------------------------------------

    def on_answer(self, latency_s: float, rate_per_s: float | None, epoch: int | None = None) -> None:
        """One answer took `latency_s`; `rate_per_s` is the pace the known limits allow
        (None when no limit is known); `epoch` is `self.epoch` when it was sent. A
        growth round judges only requests sent at the current limit: those sent before
        a change did not meet the queue it made."""
        # Called once per answer, so kept to a few operations: the percentile is
        # recomputed every few answers and the target only when an input changed.
        self._answers += 1
        fresh = self._sample(latency_s)
        if rate_per_s:
            if self._backoff < 1.0:
                self._backoff = min(1.0, self._backoff + RECOVER)
                fresh = True
            if fresh or rate_per_s != self._rate:
                self.on_rate(rate_per_s)
        elif epoch is None or epoch == self.epoch:
            self._round.append(latency_s)
            if len(self._round) >= max(MIN_ROUND, self._round_size()):
                self._end_round()

    def on_rate(self, rate_per_s: float) -> None:
        """Little's law: the known pace times the latency, with head-room."""
        self._rate = rate_per_s
        latency = self.high_latency
        if latency is None:
            return  # nothing answered yet: keep the start value
        self._set(
            rate_per_s * latency * HEADROOM * self._backoff + 1.0,
            "limit" if self._backoff >= 1.0 else "errors",
        )

    def on_failure(self, paced: bool) -> None:
        """A congestion event (a 429 burst, a 5xx, a timeout): cut once. The caller
        decides what is one event; in paced mode 429s lower the rate instead."""
        self._slow_start = False
        self._round, self._round_failed = [], True
        if paced:
            self._backoff = max(0.1, self._backoff * DECREASE)
        self._set(self._target * DECREASE, "errors")

    # -- the report ------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """In flight allowed over the run, weighted by answers: min, median, max, the
        ceiling, and what bound it most of the time (limit, latency, errors or ceiling)."""
        used, why = self._used.copy(), self._why.copy()
        if self._answers or not used:
            used[self.limit] += self._answers
            why[self.reason] += self._answers
        values = sorted(used)
        half, seen, median = sum(used.values()) / 2, 0, values[-1]
        for v in values:
            seen += used[v]
            if seen >= half:
                median = v
                break
        return {
            "min": values[0],
            "median": median,
            "max": values[-1],
            "ceiling": self.ceiling,
            "bound": why.most_common(1)[0][0],
        }

    # -- inside ----------------------------------------------------------------------------

    def _set(self, target: float, reason: str) -> None:
        if target >= self.ceiling:
            target, reason = float(self.ceiling), "ceiling"
        self._target = max(1.0, target)
        limit = int(self._target)
        if limit != self.limit or reason != self.reason:
            self._record()
            if limit != self.limit:
                self.epoch += 1
                self._round = []
            self.limit, self.reason = limit, reason

    def _record(self) -> None:
        """Credit the answers since the last change to the limit and reason they had."""
        if self._answers:
            self._used[self.limit] += self._answers
            self._why[self.reason] += self._answers
            self._answers = 0

    def _sample(self, latency_s: float) -> bool:
        """Keep one latency; True when the percentile was recomputed."""
        lat = self._latencies
        if len(lat) < SAMPLES:
            lat.append(latency_s)
        else:
            lat[self._next] = latency_s
            self._next = (self._next + 1) % SAMPLES
        self._since_sort += 1
        # Every answer while few are known (the first ones decide the opening target),
        # then every few: the percentile of 128 moves slowly anyway.
        if len(lat) < SAMPLES // 4 or self._since_sort >= RESORT_EVERY:
            self._since_sort = 0
            ordered = sorted(lat)
            self.high_latency = ordered[min(len(ordered) - 1, int(QUANTILE * len(ordered)))]
            return True
        return False

    def _round_size(self) -> int:
        """Answers a growth round judges. In slow start the limit has just doubled, and the
        first half of the requests sent at it went out at once, each meeting the full new
        queue: their latencies already say what it costs, one round trip after the change
        instead of the two that waiting for a whole window of answers takes."""
        return self.limit // 2 if self._slow_start else self.limit

    def _end_round(self) -> None:
        """A round trip's worth of answers: grow if latency held and nothing failed."""
        ordered = sorted(self._round)
        median = ordered[len(ordered) // 2]
        failed, self._round, self._round_failed = self._round_failed, [], False
        fastest = self._fastest = median if self._fastest is None else min(self._fastest, median)
        if median > max(fastest * LATENCY_HIGH, fastest + 2 * LATENCY_SLACK_S):
            self._slow_start = False
            self._set(self._target * LATENCY_CUT, "latency")
        elif median > max(fastest * LATENCY_FLAT, fastest + LATENCY_SLACK_S):
            self._slow_start = False
            self._set(self._target, "latency")  # hold
        elif not failed:
            grow = SLOW_START_GROWTH if self._slow_start else 1.0 + GROWTH
            self._set(max(self._target * grow, self._target + 1.0), "latency")
