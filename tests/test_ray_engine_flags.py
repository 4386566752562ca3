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


def test_the_ray_engine_refuses_a_hub_input_map_and_budget_in_one_line(tmp_path: Path) -> None:
    import pytest

    pytest.importorskip("ray")
    for given, flags, told in (
        ("hf://datasets/acme/reviews:train", [], "--engine ray reads a file or folder, not a Hub"),
        (REVIEWS, ["--map", "text=sentence"], "--engine ray does not take --map yet"),
        (REVIEWS, ["--budget", "1", "--price", "m=1,1"], "--budget is not supported with --engine ray"),
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


GENERATION = """\
name: solve
version: "1"
mode: chat
user: "{{ question }}"
fields: [question]
output:
  kind: text
params:
  max_tokens: 32
"""


def test_a_verifier_the_rows_cannot_serve_is_one_line_before_ray_starts(tmp_path: Path) -> None:
    """`--engine ray --verify` is checked as the default engine checks it: a field the
    rows lack is named, in one line, before any actor starts or anything is sent."""
    import pytest

    pytest.importorskip("ray")
    from labeler.testing import TeacherServer

    template = tmp_path / "solve.yaml"
    template.write_text(GENERATION)
    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"question": "2 + 2?", "answer": 4}\n')
    with TeacherServer() as srv:
        res = CliRunner().invoke(
            main,
            [
                "run",
                str(template),
                str(problems),
                "-t",
                "openai-compatible:m",
                "--base-url",
                srv.url + "/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
                "--samples",
                "3",
                "--verify",
                "exact:nosuchfield",
                "--engine",
                "ray",
            ],
        )
        assert len(srv.log) == 0  # nothing was sent
    assert res.exit_code == 1, res.output
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(f"labeler: error: --verify exact:nosuchfield: {problems}:1 ")
    assert "has no field 'nosuchfield'" in line


def test_labeler_ray_label_refuses_a_judge_and_a_bad_checker_before_any_actor_starts(tmp_path: Path) -> None:
    """A judge labels every answer after the teacher's: `labeler run --engine ray` runs
    it in the driver, `labeler.ray.label` refuses it in one line; a checker that does not
    import is told in the driver too."""
    import pytest

    pytest.importorskip("ray")
    import labeler.ray
    from labeler.errors import ConfigError

    store = str(tmp_path / "s.sqlite")
    spec = "judge:openai-compatible:j@http://127.0.0.1:9/v1"
    with pytest.raises(
        ConfigError, match=r"^labeler.ray.label: verify '.*' asks a judge.*--engine ray"
    ) as err:
        labeler.ray.stage_job("sentiment", "openai-compatible:m", {"verify": spec, "store": store})
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(ConfigError, match=r"^--verify python:no_such_module_x:f: no module named"):
        labeler.ray.stage_job(
            "sentiment", "openai-compatible:m", {"verify": "python:no_such_module_x:f", "store": store}
        )
