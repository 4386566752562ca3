"""Shared fixtures: an isolated LABELER_HOME and labeler's own local teacher server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labeler.testing import ServerConfig, TeacherServer

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SHARED_DATA = REPO.parent / "shared" / "data"


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
