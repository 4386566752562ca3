"""A user's checker function `(row, answer) -> bool | float`, run in a worker process.

A checker is code labeler did not write: it may hang, raise, exit or crash the
interpreter. Run in the labeling process, any of those would cost the run; here it
costs one answer's verdict (``timeout`` or ``error``), the worker is replaced, and the
next answer is checked by a fresh one. The worker is spawned, not forked: the parent
holds threads (the event loop's, SQLite's) that a fork would copy mid-state.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

from labeler.errors import ConfigError

START_TIMEOUT_S = 60.0  # importing the user's module (it may import torch) may be slow


def _serve(conn: Connection, module: str, function: str, cwd: str) -> None:
    """The worker: import the checker, say whether that worked, then answer calls."""
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # a checker module beside the input, as `python -m` finds it
    try:
        import importlib

        fn = getattr(importlib.import_module(module), function)
        if not callable(fn):
            raise TypeError(f"{module}.{function} is not a function")
    except BaseException as exc:  # told to the parent as one line
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            row, answer = conn.recv()
        except EOFError:
            return
        try:
            value = fn(row, answer)
        except BaseException as exc:  # the answer's verdict, not the worker's end
            conn.send(("raised", f"{type(exc).__name__}: {exc}"[:500]))
            continue
        if isinstance(value, bool | int | float):
            conn.send(("ok", value))
        else:
            conn.send(("bad", f"returned {type(value).__name__}, expected bool or float"))


class PythonChecker:
    """One worker process at a time; `call` gives (status, value or message)."""

    def __init__(self, module: str, function: str, timeout_s: float) -> None:
        self.module = module
        self.function = function
        self.timeout_s = timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None

    def start(self) -> None:
        """Start a worker and import the checker in it; an import that fails is the
        user's error (raised as one line), before any answer is checked."""
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_serve,
            daemon=True,
            name="labeler-checker",
            args=(child, self.module, self.function, os.getcwd()),
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        what = "could not be imported"
        if parent.poll(START_TIMEOUT_S):
            try:
                status, message = parent.recv()
            except EOFError:
                status, message = "error", "its process ended while importing it"
            if status == "ready":
                return
        else:
            status, message = "error", f"importing it took over {START_TIMEOUT_S:.0f}s"
        self.close()
        raise ConfigError(f"--verify python:{self.module}:{self.function} {what}: {message}")

    def call(self, row: dict[str, Any], answer: str) -> tuple[str, Any]:
        """("ok", value) | ("raised" | "bad" | "crashed", message) | ("timeout", message)."""
        if self._conn is None:
            self.start()
        assert self._conn is not None
        try:
            self._conn.send((row, answer))
        except (BrokenPipeError, OSError):
            self._replace()
            return "crashed", "the checker's process had ended"
        if not self._conn.poll(self.timeout_s):
            self._replace()
            return "timeout", f"no verdict within {self.timeout_s:g}s"
        try:
            return self._conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            code = self._proc.exitcode if self._proc is not None else None
            self._replace()
            return "crashed", f"the checker's process ended (exit code {code})"

    def _replace(self) -> None:
        """Drop a worker that hangs or died; the next call starts a new one."""
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
