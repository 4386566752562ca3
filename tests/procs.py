"""Real processes for the crash, signal and refresh tests.

A kill -9 or a signal only means something against a separate process, so these tests run
the teacher server (`python -m labeler.testing serve`) and `labeler` itself as children,
exactly as a user or cron would, and read what the server saw over its `/_log` endpoint.
Server and test share the machine's monotonic clock, so the times it logs compare with
the moment a test sent a signal.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ITEM = re.compile(r"item-(\d{5})")
LABELER = [sys.executable, "-m", "labeler.cli"]


class ServerProcess:
    """The teacher server in its own process; `url` is ready once constructed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "labeler.testing", "serve", "--port", "0", "--log-requests", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.proc.kill()
            raise RuntimeError(f"the teacher server did not start (said {self.url!r})")
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def log(self) -> list[dict[str, Any]]:
        """Every generation request so far: prompt, status, received/responded times."""
        return [r for r in self.client.get("/_log").json() if r["path"].endswith("/completions")]

    def answered(self) -> int:
        """How many requests got a 200 so far (cheap enough to poll)."""
        return int(self.client.get("/_stats").json()["by_status"].get("200", 0))

    def configure(self, **changes: Any) -> None:
        self.client.post("/_config", json=changes).raise_for_status()

    def close(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LocalServer:
    """The same interface over an in-process `TeacherServer`: no process to start, for
    tests where only `labeler` itself must be a separate process."""

    def __init__(self, **config: Any) -> None:
        from labeler.testing import ServerConfig, TeacherServer

        self.server = TeacherServer(ServerConfig(**config)).start()
        self.url = self.server.url

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def log(self) -> list[dict[str, Any]]:
        return [
            {
                "received": r.received,
                "responded": r.responded,
                "path": r.path,
                "prompt": r.prompt,
                "attempt": r.attempt,
                "status": r.status,
                "fault": r.fault,
            }
            for r in self.server.log
            if r.path.endswith("/completions")
        ]

    def answered(self) -> int:
        return sum(1 for r in self.server.log if r.status == 200)

    def configure(self, **changes: Any) -> None:
        from labeler.testing.config import patched

        self.server.config = patched(self.server.config, changes)

    def close(self) -> None:
        self.server.stop()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


Server = ServerProcess | LocalServer


def write_items(path: Path, n: int, start: int = 0) -> Path:
    """n JSONL rows whose text carries a unique `item-NNNNN` marker the server log shows."""
    with path.open("w") as f:
        for i in range(start, start + n):
            f.write(
                json.dumps(
                    {
                        "id": f"id{i:05d}",
                        "text": f"item-{i:05d}: the product was "
                        f"{'great' if i % 3 else 'awful'} and arrived on day {i % 7}",
                    }
                )
                + "\n"
            )
    return path


def item_of(prompt: str | None) -> int | None:
    match = ITEM.search(prompt or "")
    return int(match.group(1)) if match else None


def answered_items(log: Iterable[dict[str, Any]], status: int = 200) -> Counter[int]:
    """How many times each item got `status`."""
    return Counter(i for r in log if r["status"] == status and (i := item_of(r["prompt"])) is not None)


def run_args(task: str, data: Path, server: Server, store: Path, *extra: str) -> list[str]:
    return [
        *LABELER,
        "run",
        task,
        str(data),
        "--teacher",
        "openai-compatible:teacher-test",
        "--base-url",
        server.api,
        "--store",
        str(store),
        "--quiet",
        *extra,
    ]


def start(args: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_until(
    check: Callable[[], bool], timeout: float, proc: subprocess.Popen[str] | None = None, every: float = 0.005
) -> bool:
    """Poll `check`; False if `proc` ended first or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(every)
    return False


def stored_keys(store: Path) -> set[str]:
    """Keys with a committed answer, read the way a rerun would (WAL included)."""
    import sqlite3

    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return {k for (k,) in db.execute("SELECT key FROM responses")}
    finally:
        db.close()


def item_keys(task: str, data: Path, base_url: str) -> dict[int, str]:
    """item number -> the store key a run over `data` gives it."""
    from labeler.inputs import Row, read_rows
    from labeler.task import load_task

    t = load_task(task)
    identity = {"provider": "openai-compatible", "model": "teacher-test", "base_url": base_url}
    out = {}
    for row in read_rows(data):
        assert isinstance(row, Row)
        item = item_of(row.data["text"])
        assert item is not None
        out[item] = t.render(row.data).key(identity)
    return out


def dataset_rows(path: Path) -> list[dict[str, Any]]:
    """An exported dataset as plain rows sorted by id, for row-by-row comparison."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    return sorted(ds.to_list(), key=lambda r: r["id"])
