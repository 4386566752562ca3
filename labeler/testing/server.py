"""Running the teacher: in a background thread for tests, or in the foreground for benchmarks.

In-process, the server gets its own event loop in a daemon thread, so synchronous and
asynchronous tests alike can drive it with real HTTP clients while inspecting its log
directly. Handlers are cancelled when their client goes away, so a hung answer never
outlives the test that timed out on it, and shutdown waits only briefly for stragglers.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from labeler.testing.app import TeacherApp
from labeler.testing.config import ServerConfig, validate
from labeler.testing.records import RequestLog

_STOP_TIMEOUT_S = 10.0
_MAX_BODY = 32 * 1024 * 1024  # Anthropic's documented request size limit


async def start_site(
    app: TeacherApp, host: str, port: int, shutdown_timeout: float = 0.5
) -> tuple[web.ServerRunner, int]:
    """Listen on (host, port); port 0 picks a free one, returned with the runner."""
    loop = asyncio.get_running_loop()

    def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=_MAX_BODY)

    server = web.Server(app.handle, request_factory=make_request, handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048)
    await site.start()
    return runner, int(runner.addresses[0][1])


class TeacherServer:
    """A local OpenAI- and Anthropic-compatible teacher with scriptable answers and faults.

    Use as `with TeacherServer(ServerConfig(...)) as srv:` (or `async with`); point the
    OpenAI SDK at `srv.url + "/v1"` and the Anthropic SDK at `srv.url`. `srv.config` may
    be changed while it runs; `srv.log` records every request; `srv.reset()` forgets
    them, together with attempt counters, rate-limit windows and caches.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 0.5,
    ) -> None:
        self._app = TeacherApp(config if config is not None else ServerConfig())
        self.host = host
        self.port = port
        self._shutdown_timeout = shutdown_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def url(self) -> str:
        """`http://HOST:PORT`, without a path: add "/v1" for the OpenAI SDK."""
        if self._thread is None:
            raise RuntimeError("the teacher server is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def config(self) -> ServerConfig:
        return self._app.config

    @config.setter
    def config(self, value: ServerConfig) -> None:
        validate(value)
        self._app.config = value

    @property
    def log(self) -> RequestLog:
        return self._app.log

    def stats(self) -> dict[str, Any]:
        """Counts by status, path and fault, as `GET /_stats` returns them."""
        return self._app.stats.snapshot()

    def reset(self) -> None:
        self._app.reset()

    def start(self) -> TeacherServer:
        if self._thread is not None:
            raise RuntimeError("the teacher server is already running")
        self._ready.clear()
        self._startup_error = None
        thread = threading.Thread(target=self._run, name="teacher-server", daemon=True)
        self._thread = thread
        thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            thread.join()
            self._thread = None
            raise self._startup_error
        return self

    def stop(self) -> None:
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None:
            return
        try:
            if runner is not None:
                done = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
                done.result(timeout=_STOP_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_STOP_TIMEOUT_S)
            self._thread = self._loop = self._runner = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._runner, self.port = loop.run_until_complete(
                start_site(self._app, self.host, self.port, self._shutdown_timeout)
            )
        except BaseException as exc:
            self._startup_error = exc
            loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> TeacherServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._thread is not None else "stopped"
        return f"TeacherServer({where})"


async def serve(
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the foreground until SIGINT or SIGTERM; `on_ready` gets the URL."""
    app = TeacherApp(config)
    runner, bound = await start_site(app, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(f"http://{host}:{bound}")
        await stop.wait()
    finally:
        await runner.cleanup()
