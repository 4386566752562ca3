"""`--json` and `-q` across commands: every command that exports says in its JSON how many
rows it exported, what each filter removed and the kind; `-q` leaves stderr quiet."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml
from click.testing import CliRunner, Result

from labeler.cli import main
from labeler.testing import TeacherServer

from conftest import SAMPLES

DATA = str(SAMPLES / "reviews.jsonl")
TEACHER = "openai-compatible:teacher-test"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def teacher(server: TeacherServer, tmp_path: Path) -> list[str]:
    return ["-t", TEACHER, "--base-url", server.url + "/v1", "--store", str(tmp_path / "s.sqlite")]


def last_json(res: Result) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_run_and_export_json_carry_exported_filter_losses_and_kind(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    run = last_json(
        cli(
            "run",
            "sentiment",
            DATA,
            *teacher(teacher_server, tmp_path),
            "-q",
            "--json",
            "--out",
            str(tmp_path / "a"),
            "--kind",
            "classification",
            "--min-confidence",
            "0.9",
            # raw confidences: the sample's `label` field would calibrate them
            "--calibration",
            "none",
        )
    )
    assert run["kind"] == "classification" and run["path"] == str(tmp_path / "a")
    assert run["filtered"]["confidence"] > 0
    assert run["exported"] + sum(run["filtered"].values()) + run["missing"] == 24
    export = last_json(
        cli(
            "export",
            "sentiment",
            DATA,
            *teacher(teacher_server, tmp_path),
            "--json",
            "--out",
            str(tmp_path / "b"),
            "--kind",
            "classification",
            "--min-confidence",
            "0.9",
            "--calibration",
            "none",
        )
    )
    assert (export["exported"], export["filtered"], export["kind"]) == (
        run["exported"],
        run["filtered"],
        "classification",
    )
    # without --out a run exports nothing, and says so
    bare = last_json(cli("run", "sentiment", DATA, *teacher(teacher_server, tmp_path), "-q", "--json"))
    assert bare["exported"] is None and bare["kind"] is None


def test_export_quiet_prints_only_the_path(teacher_server: TeacherServer, tmp_path: Path) -> None:
    assert cli("run", "sentiment", DATA, *teacher(teacher_server, tmp_path), "-q").exit_code == 0
    res = cli(
        "export", "sentiment", DATA, *teacher(teacher_server, tmp_path), "-q", "--out", str(tmp_path / "q")
    )
    assert res.exit_code == 0 and res.stderr == "" and res.stdout.strip() == str(tmp_path / "q")


def test_a_refresh_json_line_carries_filter_losses_and_kind(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    config = tmp_path / "r.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "sentiment",
                "input": DATA,
                "teacher": TEACHER,
                "base_url": teacher_server.url + "/v1",
                "out": "pub",
                "store": "s.sqlite",
                "export": {"kind": "sft", "calibration": "none"},  # raw, as above
                "filters": {"min_confidence": 0.9},
            }
        )
    )
    res = cli("refresh", str(config), "-q")
    line = last_json(res)
    assert res.stderr == ""
    assert line["kind"] == "sft" and line["filtered"]["confidence"] > 0
    assert line["exported"] + sum(line["filtered"].values()) == 24


def test_templates_json_lists_each_template(tmp_path: Path) -> None:
    res = cli("templates", "--json")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    sentiment = next(r for r in rows if r["name"] == "sentiment")
    assert sentiment["labels"] == ["negative", "positive"] and sentiment["fields"] == ["text"]


def test_quiet_estimate_eval_and_merge_say_nothing_on_stderr(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    res = cli("estimate", "sentiment", DATA, "-t", "openai:gpt-4o-mini", "-q")
    assert res.exit_code == 0 and res.stderr == "", res.output
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "".join(
            json.dumps({**json.loads(line), "gold": "positive"}) + "\n"
            for line in Path(DATA).read_text().splitlines()
            if line
        )
    )
    assert cli("run", "sentiment", str(gold), *teacher(teacher_server, tmp_path), "-q").exit_code == 0
    res = cli("eval", "sentiment", str(gold), *teacher(teacher_server, tmp_path), "--gold", "gold", "-q")
    assert res.exit_code == 0 and res.stderr == "" and "accuracy" in res.stdout, res.output
    res = cli("merge-stores", str(tmp_path / "merged.sqlite"), str(tmp_path / "s.sqlite"), "--json")
    merged = last_json(res)
    assert merged["sources"][str(tmp_path / "s.sqlite")]["answers"] == 24
    res = cli("merge-stores", str(tmp_path / "m2.sqlite"), str(tmp_path / "s.sqlite"), "-q")
    assert res.exit_code == 0 and res.stderr == ""


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every command of the CLI, subcommands (`batches cancel`) included."""
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found += _commands(command, prefix + name + " ")
    return found


def test_every_command_takes_json_and_quiet() -> None:
    """The issue's promise: `--json` and `-q` on every command, a new one included."""
    lacking = []
    for name, command in _commands(main):
        flags = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}
        lacking += [f"{name} {flag}" for flag in ("--json", "-q", "--quiet") if flag not in flags]
    assert len(_commands(main)) >= 13
    assert lacking == []


def test_quiet_stats_and_templates(teacher_server: TeacherServer, tmp_path: Path) -> None:
    """`stats -q` is a check (nothing printed, the exit says whether the store reads);
    `templates -q` lists the names alone."""
    assert cli("run", "sentiment", DATA, *teacher(teacher_server, tmp_path), "-q").exit_code == 0
    res = cli("stats", "--store", str(tmp_path / "s.sqlite"), "-q")
    assert (res.exit_code, res.stdout, res.stderr) == (0, "", "")
    res = cli("stats", "--store", str(tmp_path / "missing.sqlite"), "-q")
    assert res.exit_code == 1 and res.stdout == "" and "no such store" in res.stderr
    names = cli("templates", "-q")
    assert names.exit_code == 0 and names.stderr == ""
    assert "sentiment" in names.stdout.splitlines()
    assert names.stdout.splitlines() == [
        json.loads(line)["name"] for line in cli("templates", "--json").stdout.splitlines()
    ]


def test_refresh_json_is_the_line_alone_and_the_default_keeps_it(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    """A schedule logs the JSON line without any flag (docs/refresh.md's cron line and
    unit); `--json` is that line and nothing else, the summary line on stderr dropped."""
    config = tmp_path / "r.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "sentiment",
                "input": DATA,
                "teacher": TEACHER,
                "base_url": teacher_server.url + "/v1",
                "out": "pub",
                "store": "s.sqlite",
            }
        )
    )
    plain = cli("refresh", str(config))
    assert last_json(plain)["outcome"] == "ok" and "refresh ok" in plain.stderr
    res = cli("refresh", str(config), "--json")
    assert res.stderr == "" and len(res.stdout.splitlines()) == 1
    assert (last_json(res)["outcome"], last_json(res)["cached"]) == ("ok", 24)
