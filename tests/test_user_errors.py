"""Errors a user can act on: one line on stderr naming what to fix, a non-zero exit, no
traceback, and nothing paid for lost.

Bad numeric flags (and the same values in a `Job` or a refresh config), a template field
no row has, an export folder that cannot be written, a store damaged in the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from procs import LocalServer, write_items

from labeler import Job, run_job
from labeler.cli import main
from labeler.errors import ConfigError
from labeler.refresh import RefreshConfig
from labeler.store import Store


def _sent(srv: LocalServer) -> int:
    return sum(1 for r in srv.server.log if r.path.endswith("/chat/completions"))


def _run(
    srv: LocalServer,
    data: Path,
    tmp_path: Path,
    *extra: str,
    task: str = "sentiment",
    store: Path | None = None,
) -> Result:
    return CliRunner().invoke(
        main,
        [
            "run",
            task,
            str(data),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            srv.api,
            "--store",
            str(store or tmp_path / "s.sqlite"),
            "--quiet",
            *extra,
        ],
    )


def _one_error_line(res: Result) -> str:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("labeler: error: ")
    return lines[0]


# -- numeric options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("-c", "-5", "--concurrency"),
        ("--concurrency", "0", "--concurrency"),
        ("--rpm", "-1", "--rpm"),
        ("--rpm", "0", "--rpm"),
        ("--tpm", "-100", "--tpm"),
        ("--max-attempts", "0", "--max-attempts"),
        ("--retry-initial-wait", "-1", "--retry-initial-wait"),
        ("--stop-grace", "-3", "--stop-grace"),
        ("--budget", "-0.5", "--budget"),
        ("--limit", "-1", "--limit"),
        ("--min-confidence", "1.5", "--min-confidence"),
        ("--validation-size", "1", "--validation-size"),
        ("--samples", "0", "--samples"),
    ],
)
def test_a_numeric_flag_out_of_range_is_one_line_and_sends_nothing(
    tmp_path: Path, flag: str, value: str, named: str
) -> None:
    data = write_items(tmp_path / "in.jsonl", 3)
    with LocalServer(labels=["negative", "positive"]) as srv:
        res = _run(srv, data, tmp_path, flag, value)
        assert _sent(srv) == 0
    line = _one_error_line(res)
    assert named in line and value in line


def test_a_bad_flag_value_of_another_command_is_one_line_too(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["refresh", str(tmp_path / "r.yaml"), "--max-age", "-1"])
    assert "--max-age" in _one_error_line(res)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("concurrency", -5),
        ("rpm", -1.0),
        ("tpm", 0.0),
        ("max_attempts", 0),
        ("retry_initial_wait", -0.1),
        ("stop_grace_s", -1.0),
        ("budget_usd", -2.0),
        ("limit", -3),
        ("rpm", float("nan")),
    ],
)
def test_a_job_checks_the_same_ranges_as_the_flags(field: str, value: float) -> None:
    name = field.removesuffix("_s").removesuffix("_usd")
    with pytest.raises(ConfigError, match=rf"^{name} must be"):
        Job(task="sentiment", input="in.jsonl", teacher="openai-compatible:m", **{field: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [("concurrency", -5), ("rpm", -1), ("max_attempts", 0), ("stop_grace", -1), ("max_age_days", -2)],
)
def test_a_refresh_config_checks_the_same_ranges(tmp_path: Path, key: str, value: float) -> None:
    config = tmp_path / "r.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "sentiment",
                "input": "in.jsonl",
                "out": "ds",
                "teacher": "openai-compatible:m",
                key: value,
            }
        )
    )
    with pytest.raises(ConfigError, match=rf"^{config}: {key} must be"):
        RefreshConfig.load(config)
    res = CliRunner().invoke(main, ["refresh", str(config)])
    assert res.exit_code == 1 and json.loads(res.stdout)["error"].startswith(f"{config}: {key}")


# -- a template field that no row has --------------------------------------------------------


def test_a_template_field_no_row_has_stops_the_run_as_a_template_bug(tmp_path: Path) -> None:
    template = tmp_path / "typo.yaml"
    template.write_text(
        "name: typo\nuser: 'Review: {{ txt }}'\noutput: {kind: label, labels: [negative, positive]}\n"
    )
    data = write_items(tmp_path / "in.jsonl", 30)
    with LocalServer(labels=["negative", "positive"]) as srv:
        res = _run(srv, data, tmp_path, "--out", str(tmp_path / "out"), task=str(template))
        assert _sent(srv) == 0
    line = _one_error_line(res)
    assert f"{template}: field 'txt': no input row has it" in line
    assert "template bug, not bad data" in line and "(the rows have: id, text)" in line
    assert not (tmp_path / "out").exists()


def test_rows_that_all_fail_to_render_the_same_way_stop_the_run(tmp_path: Path) -> None:
    """`fields` lists `text`, the prompt also uses `lang`, which no row has."""
    template = tmp_path / "lang.yaml"
    template.write_text(
        "name: lang\nuser: '{{ lang }}: {{ text }}'\nfields: [text]\n"
        "output: {kind: label, labels: [negative, positive]}\n"
    )
    data = write_items(tmp_path / "in.jsonl", 30)
    with LocalServer(labels=["negative", "positive"]) as srv:
        res = _run(srv, data, tmp_path, task=str(template))
        assert _sent(srv) == 0
    assert res.exit_code == 1 and "Traceback" not in res.output
    last = res.stderr.splitlines()[-1]
    assert last.startswith(f"labeler: error: {template}: field 'lang': ")
    assert "in each of the first 20 rows: a template bug, not bad data" in last


# -- an export folder that cannot be written ---------------------------------------------------


def test_out_under_a_regular_file_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", 3)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with LocalServer(labels=["negative", "positive"]) as srv:
        res = _run(srv, data, tmp_path, "--out", str(blocker / "out"))
        assert _sent(srv) == 0
    line = _one_error_line(res)
    assert f"{blocker / 'out'}: cannot write the export there: {blocker} is a file" in line
    assert "nothing was sent" in line


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real small or read-only file system (needs root; skipped where mounting is not
    allowed)."""
    path.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot mount a tmpfs here")
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def test_out_on_a_read_only_file_system_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", 3)
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro, LocalServer(labels=["negative", "positive"]) as srv:
        res = _run(srv, data, tmp_path, "--out", str(ro / "out"))
        assert _sent(srv) == 0
    line = _one_error_line(res)
    assert f"{ro / 'out'}: cannot write the export there: {ro} is not writable" in line


def test_out_on_a_full_disk_says_where_and_that_the_answers_are_stored(tmp_path: Path) -> None:
    data, store = write_items(tmp_path / "in.jsonl", 40), tmp_path / "s.sqlite"
    with _tmpfs(tmp_path / "small", "size=2m") as small, LocalServer(labels=["negative", "positive"]) as srv:
        filler = small / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            f.write(b"x" * (4 << 20))  # fills the disk to the last byte
        res = _run(srv, data, tmp_path, "--out", str(small / "out"))
        line = _one_error_line(res)
        assert f"{small / 'out'}: cannot write the export: No space left on device" in line
        assert f"every answer is safe in the store {store}" in line
        with Store(store) as st:
            assert st.stats()["responses"] == 40
        # Space freed, the same command exports without asking the teacher again.
        sent = _sent(srv)
        filler.unlink()
        again = _run(srv, data, tmp_path, "--out", str(small / "out"))
        assert again.exit_code == 0, again.output
        assert _sent(srv) == sent


def test_a_refresh_on_a_full_disk_names_the_path(tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 20)
    with _tmpfs(tmp_path / "small", "size=64k") as small, LocalServer(labels=["negative", "positive"]) as srv:
        config = tmp_path / "r.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "task": "sentiment",
                    "input": "in.jsonl",
                    "teacher": "openai-compatible:teacher-test",
                    "base_url": srv.api,
                    "store": "s.sqlite",
                    "out": str(small / "ds"),
                }
            )
        )
        (small / "ds").mkdir()
        with contextlib.suppress(OSError), (small / "filler").open("wb") as f:
            f.write(b"x" * (1 << 20))
        res = CliRunner().invoke(main, ["refresh", str(config)])
    assert res.exit_code == 1
    error = json.loads(res.stdout)["error"]
    assert str(small / "ds") in error and "No space left on device" in error
    assert not error.startswith(":")


# -- a store damaged in the middle ------------------------------------------------------------


def test_a_store_damaged_in_the_middle_is_one_line_naming_it(tmp_path: Path) -> None:
    data, store = write_items(tmp_path / "in.jsonl", 300), tmp_path / "s.sqlite"
    with LocalServer(labels=["negative", "positive"]) as srv:
        first = _run(srv, data, tmp_path, "-c", "32")
        assert first.exit_code == 0, first.output
        size = store.stat().st_size
        assert not Path(f"{store}-wal").exists() or Path(f"{store}-wal").stat().st_size == 0
        with store.open("r+b") as f:  # the header stays intact: only pages in the middle
            f.seek(size // 4)
            f.write(os.urandom(size // 2))
        res = _run(srv, data, tmp_path)
        stats = CliRunner().invoke(main, ["stats", "--store", str(store)])
    line = _one_error_line(res)
    assert line.startswith(f"labeler: error: {store}: ")
    assert "the file is damaged" in line and ".recover" in line
    assert "Traceback" not in stats.output and stats.exit_code == 1
    assert f"{store}:" in stats.stderr


# -- the summary counts HTTP requests as the server saw them -----------------------------------


def test_the_summary_counts_each_sampled_http_request_and_529_as_overloaded(tmp_path: Path) -> None:
    with LocalServer(labels=["negative", "positive"], overloaded_rate=0.3, seed=3) as srv:
        job = Job(
            task="sentiment",
            input=write_items(tmp_path / "in.jsonl", 12),
            teacher="anthropic:claude-haiku-4-5",
            base_url=srv.url,
            api_key="k",
            teacher_options={"samples": 4},
            store=tmp_path / "s.sqlite",
            progress=False,
            retry_initial_wait=0.01,
            max_attempts=20,
        )
        s = asyncio.run(run_job(job)).summary
        seen = [r.status for r in srv.server.log if r.path == "/v1/messages"]
    assert s.labeled == 12
    assert s.http_requests == len(seen) > 12 * 4
    assert s.overloaded == seen.count(529) > 0
    assert s.rate_limited == seen.count(429) == 0
    assert s.http_failures == {"overloaded": seen.count(529)}


def test_cli_summary_names_overloaded_answers(tmp_path: Path) -> None:
    data = write_items(tmp_path / "in.jsonl", 6)
    with LocalServer(labels=["negative", "positive"], overloaded_rate=0.4, seed=5) as srv:
        res = CliRunner().invoke(
            main,
            [
                "run",
                "sentiment",
                str(data),
                "--teacher",
                "anthropic:claude-haiku-4-5",
                "--base-url",
                srv.url,
                "--store",
                str(tmp_path / "s.sqlite"),
                "--quiet",
                "--samples",
                "3",
                "--retry-initial-wait",
                "0.01",
                "--max-attempts",
                "30",
            ],
            env={"ANTHROPIC_API_KEY": "test-key-123456"},
        )
        seen = [r.status for r in srv.server.log if r.path == "/v1/messages"]
    assert res.exit_code == 0, res.output
    assert (
        f"labeler: {len(seen)} HTTP requests sent; answered {seen.count(529)} overloaded (529)"
    ) in res.stderr
    assert "rate-limited" not in res.stderr


@pytest.mark.parametrize(("option", "value"), [("concurrency", -5), ("rpm", -1.0), ("tpm", 0.0)])
def test_the_library_labeler_checks_the_same_ranges(option: str, value: float) -> None:
    from labeler import Labeler
    from labeler.task import load_task
    from labeler.teachers import make_teacher

    teacher = make_teacher("openai-compatible:m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match=rf"^{option} must be"):
        Labeler(load_task("sentiment"), teacher, store=":memory:", **{option: value})
