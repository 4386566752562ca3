"""Where labeler starts an event loop (on uvloop when it is installed) and takes its signals.

Labeling is thousands of small concurrent requests, and against a fast teacher the
event loop's own cost per request (callbacks, futures, socket readiness) is a large
share of labeler's. uvloop runs the same asyncio code on libuv at a fraction of that
cost; ``python -m benchmarks`` measures both loops side by side. ``LABELER_LOOP=asyncio``
falls back to the standard loop (where uvloop is missing, as on Windows, that is the
only choice). The library never starts a loop of its own: a program that imports
labeler runs it on whatever loop it chose. Nor does it touch the garbage collector's
settings, which belong to the process (the CLI tunes them: labeler/gc_tuning.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

from labeler.errors import ConfigError

T = TypeVar("T")
LOOPS = ("uvloop", "asyncio")


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what `run` will use."""
    wanted = os.environ.get("LABELER_LOOP", "").strip().lower() or "uvloop"
    if wanted not in LOOPS:
        raise ConfigError(f"LABELER_LOOP={wanted!r}: expected one of {', '.join(LOOPS)}")
    if wanted == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
    return wanted


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the chosen loop (same cancellation and cleanup semantics)."""
    try:
        factory = loop_factory()
    except BaseException:
        main.close()  # never started: no "coroutine was never awaited" on the way out
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


class Stoppable(Protocol):
    def stop(self) -> None: ...


@contextlib.contextmanager
def stop_on_signals(target: Stoppable, *, enabled: bool) -> Iterator[None]:
    """SIGINT/SIGTERM ask `target` to stop gracefully (it finishes what is under way and
    returns); a second signal raises KeyboardInterrupt, for whoever will not wait. Must be
    entered inside the running loop; the handlers are removed on exit."""
    if not enabled:
        yield
        return
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def handler(signum: int) -> None:
        received.append(signum)
        target.stop()
        if len(received) > 1:
            raise KeyboardInterrupt
        # Said at once: the wait for requests in flight can last the whole stop grace, and
        # a silent terminal reads as a hang that invites a kill -9.
        notice = getattr(target, "stop_notice", None)
        waits = notice() if callable(notice) else "finishing the requests in flight"
        sys.stderr.write(f"stopping: {waits}; answers so far are kept; press Ctrl-C again to stop now\n")
        sys.stderr.flush()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
