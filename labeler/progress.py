"""A progress bar with items/s and ETA on a terminal or in a notebook; silent otherwise."""

from __future__ import annotations

import sys
from typing import Any


def in_notebook() -> bool:
    """True under an IPython kernel, whose stderr is no TTY yet is read by a person."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return callable(get) and get() is not None


def interactive() -> bool:
    return sys.stderr.isatty() or in_notebook()


class Progress:
    def __init__(self, total: int | None, enabled: bool | None = None) -> None:
        if enabled is None:
            enabled = interactive()
        self._bar: Any = None
        self._counts = {"labeled": 0, "cached": 0, "failed": 0, "rejected": 0}
        self._n = 0
        if enabled:
            from tqdm import tqdm

            if in_notebook() and _has_widgets():
                from tqdm.auto import tqdm
            self._bar = tqdm(
                total=total,
                unit="item",
                dynamic_ncols=True,
                mininterval=0.25,
                smoothing=0.05,
                file=sys.stderr,
            )

    def update(self, status: str) -> None:
        if self._bar is None:
            return
        self._counts[status] = self._counts.get(status, 0) + 1
        self._n += 1
        self._bar.update(1)
        if self._n % 64 == 0:
            self._bar.set_postfix(self._counts, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(self._counts, refresh=False)
            self._bar.close()


def _has_widgets() -> bool:
    """tqdm's notebook bar needs ipywidgets; without it the text bar is the one that works."""
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None
