"""What a command imports is part of its cost: an export, an eval or `stats` never sends a
request, so it must not pay for an HTTP client (aiohttp, ~0.3 s) or for numpy
(calibration) when none is used. Each check runs in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from labeler.testing import TeacherServer

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
WATCHED = ("aiohttp", "numpy", "openai", "anthropic")


def imported_after(code: str) -> list[str]:
    """The watched modules that `code`, run in a fresh interpreter, left imported."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {WATCHED!r} if m in sys.modules))"
    env = {k: v for k, v in os.environ.items() if k != "LABELER_TRANSPORT"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_a_lean_teacher_imports_its_http_client_only_when_it_sends(teacher_server: TeacherServer) -> None:
    """`make_teacher` runs for every export (the teacher identity keys the store)."""
    made = (
        "import labeler, labeler.job\n"
        "from labeler.teachers import make_teacher\n"
        f"t = make_teacher('openai-compatible:teacher-test', "
        f"base_url={teacher_server.url + '/v1'!r}, api_key='k')\n"
        "assert t.identity['model'] == 'teacher-test'\n"
    )
    assert imported_after(made) == []
    sent = made + (
        "import asyncio\n"
        "from labeler.task import load_task\n"
        "req = load_task('sentiment').render({'text': 'fine'})\n"
        "async def go():\n"
        "    try:\n"
        "        return await t.complete(req)\n"
        "    finally:\n"
        "        await t.aclose()\n"
        "assert asyncio.run(go()).text\n"
    )
    assert imported_after(sent) == ["aiohttp"]


def test_an_export_imports_no_http_client_or_sdk(teacher_server: TeacherServer, tmp_path: Path) -> None:
    """The whole `labeler export` command, on a store that a run filled."""
    common = [
        "sentiment",
        str(SAMPLES / "reviews.jsonl"),
        "--teacher",
        "openai-compatible:teacher-test",
        "--base-url",
        teacher_server.url + "/v1",
        "--store",
        str(tmp_path / "s.sqlite"),
    ]
    code = (
        "from click.testing import CliRunner\n"
        "from labeler.cli import main\n"
        "def cli(*args):\n"
        "    res = CliRunner().invoke(main, list(args))\n"
        "    assert res.exit_code == 0, res.output\n"
    )
    run = f"cli('run', *{common!r}, '--quiet')\n"
    export = f"cli('export', *{common!r}, '--out', {str(tmp_path / 'out')!r}, '--kind', 'classification')\n"
    subprocess.run([sys.executable, "-c", code + run], check=True, capture_output=True)
    # datasets brings numpy along to write the files: only the client and SDKs are absent
    assert [m for m in imported_after(code + export) if m != "numpy"] == []
    assert (tmp_path / "out" / "dataset_info.json").exists()


def test_a_run_imports_numpy_only_for_a_calibration(teacher_server: TeacherServer, tmp_path: Path) -> None:
    """`labeler run` parses its flags before anything is sent: without --calibration,
    building the job must not import numpy (~0.15 s of every run's start-up)."""
    code = (
        "import sys\n"
        "from labeler.cli import main\n"
        f"sys.argv = ['labeler', 'run', 'sentiment', {str(SAMPLES / 'reviews.jsonl')!r}, "
        f"'--teacher', 'openai-compatible:teacher-test', "
        f"'--base-url', {teacher_server.url + '/v1'!r}, "
        f"'--store', {str(tmp_path / 's.sqlite')!r}, '--quiet']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
    )
    assert imported_after(code) == ["aiohttp"]


def test_a_command_leaves_its_objects_to_the_exit() -> None:
    """The interpreter's last collections walk every object a command left behind (about
    0.25 s after a 20,000-row run); a `labeler` process freezes them as it exits instead.
    An exit hook registered before the command runs after the command's own."""
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen' if gc.get_freeze_count() else 'not frozen'))\n"
        "from labeler.cli import main\n"
        "sys.argv = ['labeler', '--version']\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "frozen"
