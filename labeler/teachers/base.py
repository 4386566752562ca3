"""The one seam between labeler's core and any provider.

A teacher turns a provider-neutral `Request` into a `Completion` or raises a classified
`TeacherError`. Everything else (cache, retries, rate limits, budget) lives outside it, in
the orchestrator, so adding a provider is one module and one registry line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from labeler.completion import Completion
from labeler.request import Request

HeaderObserver = Callable[[Mapping[str, str]], None]


@runtime_checkable
class Teacher(Protocol):
    """What the orchestrator needs from a provider."""

    provider: str
    model: str

    @property
    def identity(self) -> dict[str, Any]:
        """What makes two answers comparable; part of every cache key. Never a secret."""
        ...

    async def complete(self, request: Request) -> Completion:
        """One request; raises RetryableError or FinalError, never a provider exception."""
        ...

    def observe_headers(self, observer: HeaderObserver | None) -> None:
        """Send each response's headers to the rate limiter (x-ratelimit-*, retry-after)."""
        ...

    def request_shape(self, request: Request) -> tuple[int, int]:
        """(HTTP requests, answers per request) that one `complete` call sends."""
        ...

    async def start(self) -> None:
        """Get ready to answer (a local teacher starts its server); idempotent."""
        ...

    async def aclose(self) -> None: ...


class BaseTeacher:
    """The optional capabilities' defaults, so the core calls them on every teacher rather
    than asking which provider it holds.

    A teacher that fans one request out (Anthropic sampling n answers) overrides
    `request_shape`; one that runs a server (local) overrides `start`.
    """

    provider: str
    model: str

    def request_shape(self, request: Request) -> tuple[int, int]:
        """One HTTP request asking for the template's ``n`` answers."""
        return 1, max(1, int(request.params.get("n") or 1))

    async def start(self) -> None:
        return None


def request_shape(teacher: Teacher, request: Request) -> tuple[int, int]:
    """(HTTP requests, answers per request) that one `complete` call sends, at least 1 each:
    rate limits and budgets charge per HTTP request."""
    calls, answers = teacher.request_shape(request)
    return max(1, int(calls)), max(1, int(answers))


def http_outcomes(teacher: Teacher) -> Counter[str] | None:
    """The teacher's own count of HTTP requests by outcome ("ok" or a failure's reason), or
    None. Only a teacher that fans one `complete` out into several HTTP requests keeps one
    (Anthropic sampling); for any other, the orchestrator's count per call is exact."""
    return getattr(teacher, "http_outcomes", None)


def notices(teacher: Teacher) -> list[str]:
    """What a teacher learned about its server during the run and says once (a server that
    refuses ``n``: each sample is then a request of its own); [] for most teachers."""
    return getattr(teacher, "notices", None) or []


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
