"""What the server saw: one record per request, and counts by status, path and fault.

Tests assert on these (how many attempts a prompt took, which fault each got, how
requests were spaced in time), reading them from the test thread while the server
thread appends, hence the lock. Records hold the parsed JSON body, never headers, so an
API key cannot end up in them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload


@dataclass(slots=True)
class RequestRecord:
    """One request: times are `time.monotonic()`; `status` is None if no answer was sent."""

    received: float
    method: str
    path: str
    provider: str | None = None
    body: Any = None
    prompt: str | None = None
    attempt: int | None = None
    status: int | None = None
    fault: str | None = None
    responded: float | None = None
    headers: dict[str, str] | None = None  # as received, names lower-cased

    @property
    def latency(self) -> float | None:
        return None if self.responded is None else self.responded - self.received


class RequestLog(Sequence[RequestRecord]):
    """A list of records that is safe to read while the server appends to it."""

    def __init__(self) -> None:
        self._items: list[RequestRecord] = []
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._items.append(record)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._items)

    def where(
        self,
        *,
        path: str | None = None,
        status: int | None = None,
        fault: str | None = None,
        prompt_contains: str | None = None,
    ) -> list[RequestRecord]:
        """Records matching every given criterion."""
        return [
            r
            for r in self.snapshot()
            if (path is None or r.path == path)
            and (status is None or r.status == status)
            and (fault is None or r.fault == fault)
            and (prompt_contains is None or (r.prompt is not None and prompt_contains in r.prompt))
        ]

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> RequestRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[RequestRecord]: ...

    def __getitem__(self, index: int | slice) -> RequestRecord | list[RequestRecord]:
        with self._lock:
            return self._items[index]

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.snapshot())

    def __repr__(self) -> str:
        return f"RequestLog({len(self)} records)"


class Stats:
    """Counters kept even when per-request records are off (benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.by_status: dict[str, int] = {}
        self.by_path: dict[str, int] = {}
        self.by_fault: dict[str, int] = {}
        # Wall-clock (epoch) times of the first and last answer: a benchmark that spawns a
        # client process can tell its start-up from its requests by them.
        self.first_at: float | None = None
        self.last_at: float | None = None

    def count(self, path: str, status: int | str | None, fault: str | None) -> None:
        key = "dropped" if status is None else str(status)
        now = time.time()
        with self._lock:
            self.requests += 1
            if self.first_at is None:
                self.first_at = now
            self.last_at = now
            self.by_status[key] = self.by_status.get(key, 0) + 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            if fault is not None:
                self.by_fault[fault] = self.by_fault.get(fault, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "by_path": dict(self.by_path),
                "by_fault": dict(self.by_fault),
                "first_at": self.first_at,
                "last_at": self.last_at,
            }
