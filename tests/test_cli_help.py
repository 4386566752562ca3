"""Every command's `--help` lists its options by group and ends with examples that parse.

The groups come from the option declarations (labeler/option_fields.py, labeler/options.py),
so a new option lands in its section without an edit to the help.
"""

from __future__ import annotations

import shlex

import click
import pytest
from click.testing import CliRunner

from labeler.cli import main
from labeler.cli_options import OTHER, TITLES, group_of


def _commands() -> list[tuple[list[str], click.Command]]:
    out: list[tuple[list[str], click.Command]] = [([], main)]
    for name, cmd in main.commands.items():
        out.append(([name], cmd))
        if isinstance(cmd, click.Group):
            out += [([name, sub], c) for sub, c in cmd.commands.items()]
    return out


COMMANDS = _commands()


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_each_commands_help_shows_its_option_groups_and_examples(path: list[str], cmd: click.Command) -> None:
    res = CliRunner().invoke(main, [*path, "--help"])
    assert res.exit_code == 0, res.output
    groups = {group_of(p) for p in cmd.params if isinstance(p, click.Option) and not p.hidden}
    for group in groups:
        assert f"\n{TITLES[group] if group else OTHER}:\n" in res.output, (group, res.output)
    assert "\nExamples:\n" in res.output
    examples = res.output.split("\nExamples:\n", 1)[1].strip().splitlines()
    assert 2 <= len(examples) <= 3, examples
    for line in examples:
        assert line.strip().startswith(" ".join(["labeler", *path])), line


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_each_example_parses_as_that_command(path: list[str], cmd: click.Command) -> None:
    """An example with a flag the command lacks, or a missing argument, fails here."""
    for line in getattr(cmd, "examples", ()):
        args = shlex.split(line)[1 + len(path) :]
        if args == ["--help"] or (not path and args[:1] and args[0] in main.commands):
            continue  # the group's own examples name subcommands, tested as theirs
        cmd.make_context(" ".join(["labeler", *path]), args, resilient_parsing=False)


def test_run_help_puts_declared_options_in_their_sections() -> None:
    out = CliRunner().invoke(main, ["run", "--help"]).output
    sections = {title: out.find(f"\n{title}:\n") for title in TITLES.values()}
    assert all(at >= 0 for at in sections.values()), sections
    order = sorted(sections, key=sections.__getitem__)
    assert order == list(TITLES.values())  # labeling, teacher, input, filter, export, output

    def section_of(flag: str) -> str:
        at = out.find(f" {flag} ")
        return max((t for t, start in sections.items() if start < at), key=sections.__getitem__)

    assert section_of("--min-confidence") == "Filter options"
    assert section_of("--kind") == "Export options"
    assert section_of("--map") == "Input options"
    assert section_of("--base-url") == "Teacher options"
    assert section_of("--push-to-hub") == "Output options"
    assert section_of("--cascade") == "Labeling options"
