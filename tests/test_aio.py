"""The CLI's event loop: uvloop where installed, the standard loop on request; and the
collector's settings, tuned by the CLI for its command and never by the library."""

from __future__ import annotations

import asyncio

import pytest

from labeler import aio
from labeler.errors import ConfigError
from labeler.gc_tuning import YOUNG_THRESHOLD, gc_tuned


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELER_LOOP", "asyncio")
    assert aio.loop_name() == "asyncio"
    assert aio.run(loop_module()).startswith("asyncio")


def test_uvloop_by_default_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("LABELER_LOOP", raising=False)
    assert aio.loop_name() == "uvloop"
    assert aio.run(loop_module()).startswith(uvloop.__name__)


def test_an_unknown_loop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELER_LOOP", "twisted")
    with pytest.raises(ConfigError, match="LABELER_LOOP='twisted'"):
        aio.run(loop_module())


def test_the_library_leaves_the_collector_as_the_program_set_it() -> None:
    import gc

    before = gc.get_threshold()

    async def inside() -> tuple[tuple[int, ...], int]:
        return gc.get_threshold(), gc.get_freeze_count()

    assert aio.run(inside()) == (before, 0)


def test_the_cli_tunes_the_collector_for_its_command_and_restores_it_after() -> None:
    import gc

    import click
    from click.testing import CliRunner

    from labeler.cli import main

    seen: list[tuple[tuple[int, ...], int]] = []

    @main.command("gc-probe", hidden=True)
    def probe() -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))

    before = gc.get_threshold()
    try:
        result = CliRunner().invoke(main, ["gc-probe"])
    finally:
        assert isinstance(main, click.Group)
        main.commands.pop("gc-probe")
    assert result.exit_code == 0, result.output
    ((threshold, frozen),) = seen
    assert threshold[0] >= YOUNG_THRESHOLD and frozen > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_gc_tuning_nests_and_the_outermost_restores() -> None:
    """A tuned block inside another tunes nothing twice and restores nothing early."""
    import gc

    before = gc.get_threshold()
    with gc_tuned():
        tuned = gc.get_threshold()
        assert tuned[0] >= YOUNG_THRESHOLD and gc.get_freeze_count() > 0
        with gc_tuned():
            assert gc.get_threshold() == tuned
        assert gc.get_threshold() == tuned and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
