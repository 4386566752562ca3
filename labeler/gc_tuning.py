"""The garbage collector's settings for the `labeler` command's process, and only there.

Labeling keeps hundreds of requests in flight and each keeps dozens of objects alive; an
export makes dozens of short-lived objects per row. With the default settings the
collector re-scans all of them, and every imported module, every 700 allocations, which
`python -m benchmarks` shows as a large share of labeler's CPU per request. So the CLI
freezes what is alive when a command starts (modules, the template, the teacher) out of
the scans and runs young collections every 50,000 allocations, as long-running asyncio
services do. Cycles are still collected, and the settings are restored when the command
returns.

The collector is process-wide state: the library never changes it under a program that
imports labeler (that program may have tuned it for itself). Only the CLI's entry point,
and the benchmarks that measure the CLI's process, enter `gc_tuned`.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

YOUNG_THRESHOLD = 50_000

_tuned = 0  # gc_tuned blocks entered and not yet left
_tuned_lock = threading.Lock()


@contextlib.contextmanager
def gc_tuned() -> Iterator[None]:
    """The collector tuned as described above for the block; nested blocks leave it to the
    outermost, which restores the settings."""
    global _tuned
    with _tuned_lock:
        _tuned += 1
        outermost = _tuned == 1
        if outermost:
            before = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(before[0], YOUNG_THRESHOLD), max(before[1], 20), max(before[2], 100))
    try:
        yield
    finally:
        with _tuned_lock:
            _tuned -= 1
            if outermost:
                gc.set_threshold(*before)
                gc.unfreeze()


def freeze_setup() -> None:
    """Inside a tuned block, freeze what has been built since it began (the modules a
    command imported late, its job, template and teacher), so that the collector's scans
    during the long part that follows skip them too; the block's end unfreezes them."""
    if _tuned:
        gc.freeze()


__all__ = ["YOUNG_THRESHOLD", "freeze_setup", "gc_tuned"]
