"""`--samples N` on a generation template (free text, no soft targets): N answers per row
from any teacher, as rejection sampling needs, without the template having to ask for a
distribution. One request with `n` where the server takes it, so the prompt is paid once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import datasets
from arithmetic_tasks import solve_template

from labeler.job import Job, run_job
from labeler.testing import ArithmeticResponder, ServerConfig, TeacherServer

TEMPLATE = solve_template()
ROWS, SAMPLES = 6, 4


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    template = tmp_path / "solve.yaml"
    template.write_text(TEMPLATE)
    problems = tmp_path / "problems.jsonl"
    rows = [
        {"id": f"p{i}", "question": f"What is {10 + i} + {3 * i}?", "answer": 10 + 4 * i} for i in range(ROWS)
    ]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return template, problems


def _job(tmp_path: Path, srv: TeacherServer, teacher: str, **kw: object) -> Job:
    template, problems = _inputs(tmp_path)
    return Job(
        task=template,
        input=problems,
        teacher=teacher,
        base_url=srv.url + ("/v1" if teacher.startswith("openai") else ""),
        api_key="k",
        teacher_options=kw.pop("teacher_options", {"samples": SAMPLES}),
        verify="regex:Answer: (\\d+),numeric:answer",
        store=tmp_path / "s.sqlite",
        out=tmp_path / "out",
        progress=False,
        **kw,  # type: ignore[arg-type]
    )


def _chat(srv: TeacherServer) -> list[dict]:
    return [r.body for r in srv.log if r.path.endswith("/chat/completions") and r.status == 200]


def test_an_openai_compatible_teacher_gives_n_answers_per_row_in_one_request(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv:
        result = asyncio.run(run_job(_job(tmp_path, srv, "openai-compatible:teacher-test")))
        bodies = _chat(srv)
        assert len(bodies) == ROWS and all(b.get("n") == SAMPLES for b in bodies)
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        assert len(ds) == ROWS and all(len(r["verdicts"]) == SAMPLES for r in ds)
        assert result.summary.verification["samples"] == SAMPLES
        sent = len(srv.log)
        asyncio.run(run_job(_job(tmp_path, srv, "openai-compatible:teacher-test")))
        assert len(srv.log) == sent  # a rerun pays nothing


def test_a_server_that_refuses_n_gets_n_requests_per_row(tmp_path: Path) -> None:
    config = ServerConfig(responder=ArithmeticResponder(p_correct=0.5), max_n=1)
    with TeacherServer(config) as srv:
        asyncio.run(run_job(_job(tmp_path, srv, "openai-compatible:teacher-test")))
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        assert len(ds) == ROWS and all(len(r["verdicts"]) == SAMPLES for r in ds)
        # the first answer teaches that n is refused: then N requests of one answer per row
        assert len(_chat(srv)) <= ROWS * SAMPLES + SAMPLES


def test_without_samples_a_generation_template_asks_once_per_row(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv:
        asyncio.run(run_job(_job(tmp_path, srv, "openai-compatible:teacher-test", teacher_options={})))
        bodies = _chat(srv)
        assert len(bodies) == ROWS and all(b.get("n", 1) == 1 for b in bodies)
