"""Teacher setups as objects (labeler/setups.py) and the labeling settings as one value.

A setup built in code labels exactly as the flags that describe it; every place that
names or reads back a job's teachers asks the setup; the settings are frozen, and a
labeling pass is never configured after it is made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest

from labeler import Job, Labeler, load_task, make_teacher, run_job
from labeler.errors import ConfigError
from labeler.job import export_job
from labeler.limits import Limiter
from labeler.review import teacher_name
from labeler.settings import LabelSettings
from labeler.setups import Cascade, Ensemble, Single, setup_for
from labeler.testing import ScriptedResponder, ServerConfig, TeacherServer

from conftest import chat_requests, sentiment_reply

TEXTS = [f"firm-{i}" for i in range(5)] + [f"unsure-{i}" for i in range(4)]


@pytest.fixture
def servers() -> Iterator[tuple[TeacherServer, TeacherServer]]:
    small = ServerConfig(
        model="small",
        responder=ScriptedResponder([("firm-", sentiment_reply(0.97)), ("unsure-", sentiment_reply(0.6))]),
    )
    big = ServerConfig(model="big", responder=ScriptedResponder([], default=lambda v: sentiment_reply(0.01)))
    with TeacherServer(small) as a, TeacherServer(big) as b:
        yield a, b


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": t, "text": t}) + "\n" for t in TEXTS))
    return path


def _exported(out: Path) -> dict[str, tuple[int, str, list[float]]]:
    ds = datasets.load_from_disk(str(out))
    return {r["id"]: (r["cascade_stage"], r["teacher"], r["soft_label"]) for r in ds}


def test_a_cascade_built_in_code_labels_as_its_flags_do(
    servers: tuple[TeacherServer, TeacherServer],
    tmp_path: Path,
) -> None:
    a, b = servers
    small, big = f"openai-compatible:small@{a.url}/v1", f"openai-compatible:big@{b.url}/v1"
    common = dict(
        task="sentiment", input=_input(tmp_path), teacher="unused:x", progress=False, max_attempts=1
    )
    built = Job(
        **common,
        setup=Cascade(small, big, escalate_below=0.9),  # type: ignore[arg-type]
        store=tmp_path / "built.sqlite",
        out=tmp_path / "built",
    )
    flags = Job(
        **common,
        cascade=f"{small},{big}",
        escalate_below="0.9",  # type: ignore[arg-type]
        store=tmp_path / "flags.sqlite",
        out=tmp_path / "flags",
    )

    s = asyncio.run(run_job(built)).summary
    assert [(st["stage"], st["rows"], st["escalated"]) for st in s.stages] == [(1, 9, 4), (2, 4, 0)]
    assert chat_requests(a) == 9 and chat_requests(b) == 4  # stage 2: the unsure rows only
    asyncio.run(run_job(flags))
    rows = _exported(tmp_path / "built")
    assert rows == _exported(tmp_path / "flags")
    assert {r[:2] for r in rows.values()} == {(1, "openai-compatible:small"), (2, "openai-compatible:big")}

    # Reading back asks the same setup: an export from the store sends nothing, and the
    # review page names the cascade as the summary does.
    before = chat_requests(a) + chat_requests(b)
    export_job(dataclasses.replace(built, out=tmp_path / "again"))
    assert _exported(tmp_path / "again") == rows
    assert chat_requests(a) + chat_requests(b) == before
    assert (
        teacher_name(built)
        == teacher_name(flags)
        == ("cascade: openai-compatible:small → openai-compatible:big")
    )


def test_setup_for_reads_the_flags_and_a_job_takes_one_setup() -> None:
    single = setup_for(Job(task="sentiment", input="in.jsonl", teacher="openai:gpt-4o-mini"))
    assert isinstance(single, Single) and single.name == "openai:gpt-4o-mini"
    cascade = setup_for(
        Job(
            task="sentiment",
            input="in.jsonl",
            teacher="unused:x",
            cascade=["openai:a", "openai:b", "human"],
            escalate_below="0.9",
        )
    )
    assert isinstance(cascade, Cascade)
    assert cascade.name == "cascade: openai:a → openai:b → human"
    assert [st.teacher for st in cascade.teachers] == ["openai:a", "openai:b"]
    ensemble = setup_for(
        Job(
            task="sentiment", input="in.jsonl", teacher="unused:x", ensemble="openai:a@http://h/v1=2,openai:b"
        )
    )
    assert isinstance(ensemble, Ensemble) and ensemble.name == "ensemble: openai:a, openai:b"
    assert ensemble.spec.weights == (2.0, 1.0)
    assert ensemble.teachers[0].base_url == "http://h/v1"
    with pytest.raises(ConfigError, match="give one"):
        Job(
            task="sentiment",
            input="in.jsonl",
            teacher="unused:x",
            ensemble="openai:a,openai:b",
            setup=Single("openai:c"),
        )
    with pytest.raises(ConfigError, match="at least two teachers"):
        Cascade("openai:a", escalate_below=0.9)
    with pytest.raises(ConfigError, match="needs a teacher"):
        Job(task="sentiment", input="in.jsonl")


def test_an_ensemble_setup_refuses_the_batch_api_before_anything_is_sent(
    teacher_server: TeacherServer,
    tmp_path: Path,
) -> None:
    url = f"{teacher_server.url}/v1"
    job = Job(
        task="sentiment",
        input=_input(tmp_path),
        teacher="unused:x",
        batch=True,
        setup=Ensemble(f"openai-compatible:a@{url}", f"openai-compatible:b@{url}"),
        store=tmp_path / "s.sqlite",
        progress=False,
    )
    with pytest.raises(ConfigError, match="--ensemble labels live"):
        asyncio.run(run_job(job))
    assert chat_requests(teacher_server) == 0


def test_the_settings_are_one_frozen_value_and_a_pass_takes_them_at_construction(
    teacher_server: TeacherServer,
    tmp_path: Path,
) -> None:
    settings = LabelSettings(concurrency=2, progress=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.concurrency = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="concurrency"):
        LabelSettings(concurrency=-1)
    with pytest.raises(ConfigError, match="request timeout"):
        LabelSettings(request_timeout_s=0)

    teacher = make_teacher("openai-compatible:teacher-test", base_url=teacher_server.url + "/v1")
    shared = Limiter(2)
    task = load_task("sentiment")

    async def go() -> list[Labeler]:
        passes = [
            Labeler(
                task,
                teacher,
                store=tmp_path / f"{n}.sqlite",
                settings=settings,
                limiter=shared,
                close_teacher=False,
                concurrency=1,
            )
            for n in range(2)
        ]
        for n, lb in enumerate(passes):
            await lb.run([{"id": f"{n}-{i}", "text": f"row {n} {i}"} for i in range(3)])
            await lb.aclose()
        await teacher.aclose()
        return passes

    passes = asyncio.run(go())
    assert all(lb.limiter is shared for lb in passes)  # one set of limits, as a fleet's
    assert [lb.settings.concurrency for lb in passes] == [1, 1]  # a named field overrides
    assert settings.concurrency == 2  # ... on a copy
    assert [lb.summary.labeled for lb in passes] == [3, 3]
    assert chat_requests(teacher_server) == 6
