"""A small W3C WebDriver client for Debian's chromium + chromedriver, over stdlib HTTP.

Tests and benchmarks drive the review page (labeler/review/) in a real headless browser
with it, and make the README's screenshot; `browser_missing()` says why they must skip
when the packages are absent (``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

KEYS = {"Enter": "\ue007", "Up": "\ue013", "Down": "\ue015", "Left": "\ue012", "Right": "\ue014"}
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


def browser_missing() -> str | None:
    """None when a headless browser can run here, else the reason to skip."""
    if chromium_binary() is None:
        return "no chromium here (apt-get install chromium chromium-driver)"
    if shutil.which("chromedriver") is None:
        return "no chromedriver here (apt-get install chromium-driver)"
    return None


class Browser:
    """One headless chromium session driven through chromedriver."""

    def __init__(self, width: int = 1100, height: int = 900) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._driver = subprocess.Popen(
            ["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self._driver.kill()
                    raise
                time.sleep(0.05)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium_binary(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            f"--window-size={width},{height}",
                            "--no-first-run",
                            "--disable-extensions",
                        ],
                    },
                }
            }
        }
        try:
            self._session = self._call("POST", "/session", caps)["sessionId"]
        except BaseException:
            self._driver.kill()
            raise

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self._base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"webdriver {method} {path}: {exc.read()[:500]!r}") from exc

    def _s(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self._session}{path}", body)

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, timeout: float = 10.0) -> Any:
        """Poll a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(f"return ({script});")
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for: {script}")
            time.sleep(0.02)

    def keys(self, *keys: str) -> None:
        """Type keys into the focused element (names from KEYS, or plain characters)."""
        actions = []
        for k in keys:
            code = KEYS.get(k, k)
            actions += [{"type": "keyDown", "value": code}, {"type": "keyUp", "value": code}]
        self._s("POST", "/actions", {"actions": [{"type": "key", "id": "kb", "actions": actions}]})

    def click(self, css: str) -> None:
        el = self._s("POST", "/element", {"using": "css selector", "value": css})
        self._s("POST", f"/element/{next(iter(el.values()))}/click", {})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self._s("DELETE", "")
        self._driver.terminate()
        try:
            self._driver.wait(10)
        except subprocess.TimeoutExpired:
            self._driver.kill()
            self._driver.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
