"""`labeler review`: a local page where a person checks the rows the teacher is unsure of.

The rows of one (task, teacher, input) come from the store, most uncertain first; each
decision is committed to the store's human labels at once (labeler/human.py), which
exports and `labeler eval --gold human` then use. No account, no network, no CDN: the
page's files ship in this package.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable

from labeler import aio, bounds
from labeler.errors import StoreError
from labeler.job import Job
from labeler.review.index import ReviewIndex, ReviewItem, ReviewQuery, build_index
from labeler.review.server import ReviewState, check_host, make_app, start
from labeler.setups import setup_for
from labeler.store import Store
from labeler.verify import VerifyStage

__all__ = [
    "ReviewIndex",
    "ReviewItem",
    "ReviewQuery",
    "ReviewState",
    "build_index",
    "check_host",
    "load_index",
    "make_app",
    "review_job",
    "start",
    "teacher_name",
]


def load_index(job: Job, store: Store) -> ReviewIndex:
    """The review queue of a job's rows, from its store (no request is sent). For a
    cascade, each row shows its last answering stage's answer, and the rows the cascade
    queued for a person (`--cascade ...,human`) come first. For an ensemble, each row
    shows the members' combined answer, as the export has it. Either way each row shows
    every answering teacher's label, and rows where they differ come next. For a
    generation template run with --samples or --verify, each row shows every answer with
    its verdict, and a person picks the row's answer."""
    task = job.load_task()
    setup = setup_for(job)
    teachers = setup.make_teachers(job.teacher_for)
    answers = task.output_kind != "label" and (job.export.verify is not None or bool(job.samples))
    checker = (
        VerifyStage(job.verifier(task), store, job.export.keep)
        if answers and job.export.verify is not None
        else None
    )
    return build_index(
        task,
        teachers[-1].identity,
        job.rows(task),
        store,
        planner=setup.planner(task, teachers, store),
        answers=answers,
        checker=checker,
    )


def teacher_name(job: Job) -> str:
    """Who answered, as the page's header names it."""
    return setup_for(job).name


class _Until:
    """Stops the page on SIGINT/SIGTERM (see aio.stop_on_signals)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def stop(self) -> None:
        self.event.set()


async def review_job(
    job: Job,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_remote: bool = False,
    reviewer: str | None = None,
    on_ready: Callable[[str, ReviewIndex], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    handle_signals: bool = False,
) -> None:
    """Serve the review page until a signal (or cancellation); `on_ready` gets the URL."""
    bounds.check([("port", port)])  # a port past 65535 would wrap to another one
    warning = check_host(host, allow_remote=allow_remote)
    if warning and on_warning:
        on_warning(warning)
    if not job.store_path().exists():  # a typo must not review a new, empty store
        raise StoreError(
            f"{job.store_path()}: no such store; label the input with "
            "`labeler run` first (same task, input, teacher and --store)"
        )
    store = Store(job.store_path())
    try:
        index = await asyncio.to_thread(load_index, job, store)
        state = ReviewState(index, store, reviewer or _user(), teacher_name(job))
        runner, url = await start(state, host, port)
        until = _Until()
        try:
            with aio.stop_on_signals(until, enabled=handle_signals):
                if on_ready:
                    on_ready(url, index)
                await until.event.wait()
        finally:
            await runner.cleanup()
    finally:
        store.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"
