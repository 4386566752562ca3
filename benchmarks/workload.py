"""What the speed benchmarks send and to whom: the teacher process, the rows, the teachers.

The teacher server always runs as its own process (`python -m labeler.testing serve`), so
it never shares a GIL with the client being measured; it is reconfigured between phases
through its control endpoints instead of being restarted, which keeps its URL, and with
it every cache key, stable for the whole run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from labeler.inputs import Row
from labeler.teachers.base import Teacher
from labeler.teachers.openai_lean import openai_teacher

REPO = Path(__file__).resolve().parent.parent
TASK = "sentiment"  # shipped chat template: two labels, top-20 logprobs, max_tokens 2
LABELS = ("negative", "positive")
MODEL = "teacher-test"
PROVIDER = "openai-compatible"
TRANSPORTS = ("sdk", "lean")  # the openai SDK on aiohttp, and labeler's default lean teacher

_WORDS = [
    "quiet",
    "warm",
    "clumsy",
    "bright",
    "tedious",
    "gentle",
    "sharp",
    "hollow",
    "vivid",
    "brittle",
    "patient",
    "loud",
    "tender",
    "awkward",
    "lucid",
    "stale",
    "crisp",
    "murky",
    "honest",
    "frantic",
]
_NOUNS = ["plot", "cast", "score", "pacing", "ending", "script", "camera", "dialogue", "finale", "premise"]


def review(i: int, salt: str = "") -> str:
    """A short, unique, review-like text (60-90 characters): row `i` of every input."""
    w = _WORDS
    return (
        f"{salt}review {i}: the {_NOUNS[i % 10]} was {w[i % 20]} and {w[(i // 20) % 20]}, "
        f"the {_NOUNS[(i // 7) % 10]} {w[(i // 400) % 20]} ({i * 7919 % 100003})"
    )


def rows(n: int, salt: str = "") -> Iterator[Row]:
    """`n` input rows as `Row`s, for runs that do not read a file."""
    for i in range(n):
        yield Row("<bench>", i + 1, str(i), {"id": i, "text": review(i, salt)})


def write_jsonl(path: Path, n: int) -> Path:
    """`n` rows as JSONL ({"id", "text"}); rows 0..k of every size are the same rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb", buffering=1 << 20) as f:
        for start in range(0, n, 10_000):
            f.write(
                b"".join(
                    orjson.dumps({"id": i, "text": review(i)}) + b"\n"
                    for i in range(start, min(n, start + 10_000))
                )
            )
    return path


def make_teacher(transport: str, base_url: str, **options: Any) -> Teacher:
    """The OpenAI-compatible teacher labeler would build, over the SDK or the lean transport."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    return openai_teacher(  # type: ignore[return-value]
        MODEL,
        provider=PROVIDER,
        base_url=base_url,
        transport="lean" if transport == "lean" else "aiohttp",
        **options,
    )


class TeacherProcess:
    """`python -m labeler.testing serve` in a child process, controlled over HTTP."""

    def __init__(self, *flags: str) -> None:
        self.flags = flags
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> TeacherProcess:
        cmd = [
            sys.executable,
            "-m",
            "labeler.testing",
            "serve",
            "--port",
            "0",
            "--labels",
            ",".join(LABELS),
            *self.flags,
        ]
        env = {**os.environ, "PYTHONPATH": _pythonpath()}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.close()
            raise RuntimeError(f"the teacher server did not start ({' '.join(cmd)})")
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (what `--base-url` would be)."""
        return self.url + "/v1"

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change server behaviour (latency_s, rpm, rate_window_s…) between phases."""
        return self._call("POST", "/_config", changes)

    def reset(self) -> None:
        """Forget counters, rate windows and attempt numbers."""
        self._call("POST", "/_reset", {})

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_stats", None)

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system), from /proc."""
        assert self.proc is not None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")  # not Linux: the figure is left out
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        data = None if body is None else orjson.dumps(body)
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            out: dict[str, Any] = orjson.loads(resp.read())
        return out

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _pythonpath() -> str:
    """Children import `benchmarks` and `labeler` from this checkout."""
    parts = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


# Measured processes start the way an installed labeler does: from cached bytecode (pip
# compiles a package when it installs it). A checkout under PYTHONDONTWRITEBYTECODE would
# compile every module of labeler again at each start (0.2 CPU-s here), a cost no user
# pays; the cache lives outside the checkout.
PYCACHE = Path(os.environ.get("LABELER_BENCH_PYCACHE", "/tmp/labeler-bench-pycache"))


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": _pythonpath(), "PYTHONPYCACHEPREFIX": str(PYCACHE)}


def warm_bytecode() -> None:
    """Compile what a measured child imports once, before anything is timed."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import labeler.cli, labeler.exports.build, labeler.job, "
            "labeler.exports.hf_folder, benchmarks.child, aiohttp, pyarrow",
        ],
        env=child_env(),
        check=True,
        cwd=REPO,
    )


class Clock:
    """Wall time of a phase, with the machine's load average around it (the table notes
    it: these machines are shared, and a busy neighbour lowers every rate), and the CPU
    time this process (the client, its store thread included) and, given one, the
    server process spent in it."""

    def __init__(self, server: TeacherProcess | None = None) -> None:
        self.server = server
        self.start = self.cpu_start = self.server_start = 0.0
        self.seconds = self.cpu = self.server_cpu = 0.0
        self.load = 0.0

    def __enter__(self) -> Clock:
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.server_start = self.server.cpu_seconds() if self.server else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu = time.process_time() - self.cpu_start
        if self.server is not None:
            self.server_cpu = self.server.cpu_seconds() - self.server_start
        self.load = os.getloadavg()[0]
