"""`labeler run --engine ray` flags, without a Ray runtime (fast; no `[ray]` extra needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from labeler.cli import main

from conftest import SAMPLES

REVIEWS = str(SAMPLES / "reviews.jsonl")


def test_ray_flags_without_the_ray_engine_are_one_line(tmp_path: Path) -> None:
    for flags in (["--workers", "3"], ["--ray-address", "127.0.0.1:6379"]):
        res = CliRunner().invoke(
            main,
            [
                "run",
                "sentiment",
                REVIEWS,
                "-t",
                "openai-compatible:m",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
                *flags,
            ],
        )
        assert res.exit_code == 1
        assert res.output.strip() == ("labeler: error: --ray-address and --workers go with --engine ray")


def test_the_ray_engine_without_ray_installed_says_which_extra(tmp_path: Path) -> None:
    """A venv without the extra: `import ray` fails (here: blocked in a real process)."""
    code = (
        "import sys; sys.modules['ray'] = None; sys.argv = ['labeler'] + sys.argv[1:]; "
        "from labeler.cli import main; main()"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "run",
            "sentiment",
            REVIEWS,
            "-t",
            "openai-compatible:m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--engine",
            "ray",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--engine ray needs Ray: pip install 'labeler-distill[ray]'" in lines[0]


def test_the_ray_engine_refuses_a_hub_input_and_map_in_one_line(tmp_path: Path) -> None:
    import pytest

    pytest.importorskip("ray")
    for given, flags, told in (
        ("hf://datasets/acme/reviews:train", [], "--engine ray reads a file or folder, not a Hub"),
        (REVIEWS, ["--map", "text=sentence"], "--engine ray does not take --map yet"),
    ):
        res = CliRunner().invoke(
            main,
            [
                "run",
                "sentiment",
                given,
                "-t",
                "openai-compatible:m",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--engine",
                "ray",
                "--store",
                str(tmp_path / "s.sqlite"),
                *flags,
            ],
        )
        assert res.exit_code == 1, res.output
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"labeler: error: {told}"), res.stderr
