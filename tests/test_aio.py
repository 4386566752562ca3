"""The CLI's event loop: uvloop where installed, the standard loop on request."""

from __future__ import annotations

import asyncio

import pytest

from labeler import aio
from labeler.errors import ConfigError


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


def test_the_collector_is_tuned_for_the_run_and_restored_after() -> None:
    import gc

    before = gc.get_threshold()

    async def inside() -> tuple[tuple[int, ...], int]:
        return gc.get_threshold(), gc.get_freeze_count()

    threshold, frozen = aio.run(inside())
    assert threshold[0] >= aio.YOUNG_THRESHOLD and frozen > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_gc_tuning_nests_and_the_outermost_restores() -> None:
    """An export inside a run's loop tunes nothing twice and restores nothing early."""
    import gc

    before = gc.get_threshold()
    with aio.gc_tuned():
        tuned = gc.get_threshold()
        assert tuned[0] >= aio.YOUNG_THRESHOLD and gc.get_freeze_count() > 0
        with aio.gc_tuned():
            assert gc.get_threshold() == tuned
        assert gc.get_threshold() == tuned and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
