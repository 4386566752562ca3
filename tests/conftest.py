"""Shared fixtures: an isolated LABELER_HOME and labeler's own local teacher server."""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from labeler.testing import Reply, ServerConfig, TeacherServer

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
# Public gold sets (SST-2, AG News, ...): where the benchmarks read them; tests that need
# them skip, naming the file, where they are absent.
SHARED_DATA = Path(os.environ.get("LABELER_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True)
def labeler_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tests never touch a user's store, keys or cache."""
    home = tmp_path / "labeler-home"
    monkeypatch.setenv("LABELER_HOME", str(home))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return home


@pytest.fixture
def teacher_server() -> Iterator[TeacherServer]:
    """A deterministic OpenAI/Anthropic-compatible teacher answering sentiment labels."""
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        yield srv


def chat_requests(server: TeacherServer) -> int:
    return sum(1 for r in server.log if r.path.endswith("/chat/completions"))


def review_api(base: str, token: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """One call to a `labeler review` server's JSON API with its token: (status, body)."""
    headers = {"X-Labeler-Token": token}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    req = urllib.request.Request(
        base + path, data=data, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def sentiment_reply(p_positive: float) -> Reply:
    """A one-token sentiment answer whose top-2 logprobs put `p_positive` on "positive":
    the teacher a test scripts to be exactly as sure as it needs."""
    word = "positive" if p_positive >= 0.5 else "negative"
    return Reply(
        word,
        tokens=[word],
        top_logprobs=[[("positive", math.log(p_positive)), ("negative", math.log(1 - p_positive))]],
    )
