"""A teacher that gives no logprobs gets soft labels from samples, whatever the reason.

`labeler run` (the CLI, in process) against the project's teacher server answering as an
OpenAI reasoning model (logprobs refused with HTTP 400) whose label answers are drawn from
a known per-prompt distribution: the refusal is learned once, every request still to go
(the refused one included) is sampled N times, keyed with N, and the soft labels agree
with the server's distribution. Requests are counted at the server, over real HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner, Result

from labeler.cli import main
from labeler.testing import ServerConfig, TeacherServer
from tests.test_sampled_soft_labels import LABELS, reviews, truth, within_sampling_error

N = 5  # --samples by default
HANDFUL = 3
COST = (
    f"sampling {N} answers per row for soft labels: about {N}x the output tokens; "
    "--samples 1 keeps hard labels only"
)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-sampling-fallback")


def write(path: Path, count: int, start: int = 0) -> Path:
    rows = reviews(start + count)[start:]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(
    server: TeacherServer,
    tmp_path: Path,
    data: Path,
    *extra: str,
    out: str = "out",
    teacher: str = "openai:o4-mini",
    task: str = "sentiment",
) -> Result:
    result = CliRunner().invoke(
        main,
        [
            "run",
            task,
            str(data),
            "--teacher",
            teacher,
            "--base-url",
            server.url + "/v1",
            "--store",
            str(tmp_path / "store.sqlite"),
            "--out",
            str(tmp_path / out),
            "--quiet",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return result


def sent(server: TeacherServer) -> list:
    return [r for r in server.log if r.path.endswith("/chat/completions")]


def lines(result: Result, words: str) -> list[str]:
    return [line for line in result.output.splitlines() if words in line]


@pytest.mark.parametrize("max_n", [None, 1], ids=["n-taken", "n-refused"])
def test_a_reasoning_teacher_samples_its_soft_labels(max_n: int | None, tmp_path: Path) -> None:
    rows = 40
    with TeacherServer(ServerConfig(labels=LABELS, refuses="openai-reasoning", max_n=max_n)) as srv:
        first = run(srv, tmp_path, write(tmp_path / "in.jsonl", rows))
        refused = [r for r in sent(srv) if r.status >= 400]
        assert 1 <= len(refused) <= HANDFUL, [(r.status, r.body) for r in refused]
        # n taken: one request per row; refused: N per row (the refused n learned once)
        per_row = 1 if max_n is None else N
        assert len(sent(srv)) == rows * per_row + len(refused)
        said = lines(first, "refuses logprobs")
        assert len(said) == 1 and "openai:o4-mini" in said[0] and COST in said[0], said
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        assert len(ds) == rows and set(ds["soft_label_source"]) == {f"samples:{N}"}
        within_sampling_error(ds, truth(srv), N)

        before = len(sent(srv))
        again = run(srv, tmp_path, tmp_path / "in.jsonl")
        assert len(sent(srv)) == before and not lines(again, "refuses")  # a rerun: nothing

        more = run(srv, tmp_path, write(tmp_path / "more.jsonl", 20, start=rows), out="more")
        new = sent(srv)[before:]
        # the next run starts right: sampled from its first request, nothing refused
        assert all(r.status == 200 and "logprobs" not in r.body for r in new)
        assert len(new) == 20 * per_row and not lines(more, "refuses")
        if max_n is None:
            assert all(r.body["n"] == N for r in new)
        ds = datasets.load_from_disk(str(tmp_path / "more"))
        assert set(ds["soft_label_source"]) == {f"samples:{N}"}


def test_samples_1_keeps_hard_labels_only(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=LABELS, refuses="openai-reasoning")) as srv:
        first = run(srv, tmp_path, write(tmp_path / "in.jsonl", 12), "--samples", "1")
        ok = [r for r in sent(srv) if r.status == 200]
        assert len(ok) == 12 and len(sent(srv)) - 12 <= HANDFUL
        assert all("n" not in r.body and "logprobs" not in r.body for r in ok)
        said = lines(first, "refuses logprobs")
        assert len(said) == 1 and "without soft labels" in said[0] and COST not in said[0]
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        assert set(ds["soft_label_source"]) == {"none"}
        assert all(sorted(p) == [0.0, 1.0] for p in ds["soft_label"])


def test_a_store_of_hard_labels_still_reads_and_new_requests_are_sampled(tmp_path: Path) -> None:
    """A store learned when a refused logprobs meant hard labels (as `--samples 1` still
    does): an export reads every answer without a request; a run samples, from its first
    request, without a refused one, and keeps each answer under its own key."""
    with TeacherServer(ServerConfig(labels=LABELS, refuses="openai-reasoning")) as srv:
        data = write(tmp_path / "in.jsonl", 10)
        run(srv, tmp_path, data, "--samples", "1")
        before = len(sent(srv))
        exported = CliRunner().invoke(
            main,
            [
                "export",
                "sentiment",
                str(data),
                "--teacher",
                "openai:o4-mini",
                "--base-url",
                srv.url + "/v1",
                "--store",
                str(tmp_path / "store.sqlite"),
                "--out",
                str(tmp_path / "old"),
            ],
        )
        assert exported.exit_code == 0 and len(sent(srv)) == before, exported.output
        old = datasets.load_from_disk(str(tmp_path / "old"))
        assert len(old) == 10 and set(old["soft_label_source"]) == {"none"}

        result = run(srv, tmp_path, data, out="sampled")
        new = sent(srv)[before:]
        assert len(new) == 10 and all(r.status == 200 and r.body["n"] == N for r in new)
        assert not lines(result, "refuses")
        ds = datasets.load_from_disk(str(tmp_path / "sampled"))
        assert set(ds["soft_label_source"]) == {f"samples:{N}"}
        run(srv, tmp_path, data, "--samples", "1", out="hard")  # each still under its key
        assert len(sent(srv)) == before + 10
        hard = datasets.load_from_disk(str(tmp_path / "hard"))
        assert set(hard["soft_label_source"]) == {"none"}


def test_a_silent_server_keeps_the_answer_it_paid_for_and_samples_the_row(tmp_path: Path) -> None:
    """A 200 without logprobs: that answer is one answer, kept under the key of a
    single-answer request (not the sampled one), and its row is sampled like the rest."""
    with TeacherServer(ServerConfig(labels=LABELS, refuses="silent")) as srv:
        data = write(tmp_path / "in.jsonl", 8)
        first = run(srv, tmp_path, data, teacher="openai-compatible:m")
        assert len(sent(srv)) == 8 + 1 and all(r.status == 200 for r in sent(srv))
        assert sum("n" not in r.body for r in sent(srv)) == 1
        assert len(lines(first, "refuses logprobs")) == 1
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        assert set(ds["soft_label_source"]) == {f"samples:{N}"}
        run(srv, tmp_path, data, "--samples", "1", teacher="openai-compatible:m", out="hard")
        assert len(sent(srv)) == 9 + 7  # the first row's single answer was kept


def test_free_text_with_samples_asks_n_answers_and_keys_only_those(tmp_path: Path) -> None:
    """`--samples N` on a free-text template asks N answers per row (rejection sampling's
    input), one request with `n` each; only those requests carry the count in their key,
    so a run without it still reads the plain run's answers."""
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{i}", "instruction": f"Say {i}."}) + "\n" for i in range(6)))
    with TeacherServer(ServerConfig()) as srv:
        run(srv, tmp_path, data, teacher="openai-compatible:m", task="instruct")
        assert len(sent(srv)) == 6
        run(
            srv, tmp_path, data, "--samples", "3", teacher="openai-compatible:m", task="instruct", out="again"
        )
        assert len(sent(srv)) == 12 and all(r.body.get("n") == 3 for r in sent(srv)[6:])
        run(srv, tmp_path, data, teacher="openai-compatible:m", task="instruct", out="plain")
        assert len(sent(srv)) == 12


def test_samples_that_do_nothing_are_said_once(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        data = write(tmp_path / "in.jsonl", 6)
        result = run(srv, tmp_path, data, "--samples", "8", teacher="openai-compatible:m")
        said = lines(result, "--samples 8 has no effect")
        assert len(said) == 1, result.output
        assert "soft labels come from logprobs" in said[0]
        assert "--soft-labels samples forces sampling" in said[0]
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        assert set(ds["soft_label_source"]) == {"logprobs"}
        assert all("n" not in r.body and r.body.get("logprobs") for r in sent(srv))
        plain = run(srv, tmp_path, data, teacher="openai-compatible:m", out="plain")
        forced = run(
            srv,
            tmp_path,
            data,
            "--samples",
            "8",
            "--soft-labels",
            "samples",
            teacher="openai-compatible:m",
            out="forced",
        )
        assert not lines(plain, "has no effect") and not lines(forced, "has no effect")


def test_the_summary_counts_every_request_the_server_saw(tmp_path: Path) -> None:
    """Before the refusal, one request per call; after it, each sample a request of its
    own (n refused): the run's count is the server's, refused requests included."""
    import labeler
    from labeler import aio

    warnings: list[str] = []
    with TeacherServer(ServerConfig(labels=LABELS, refuses="openai-reasoning", max_n=1)) as srv:
        job = labeler.Job(
            task="sentiment",
            input=write(tmp_path / "in.jsonl", 12),
            teacher="openai:o4-mini",
            base_url=srv.url + "/v1",
            store=tmp_path / "s.sqlite",
            out=tmp_path / "out",
            progress=False,
        )
        s = aio.run(labeler.run_job(job, on_warning=warnings.append)).summary
        seen = sent(srv)
    assert (s.labeled, s.failed) == (12, 0)
    assert s.http_requests == len(seen) == 12 * N + 2
    assert s.http_failures == {"http_400": 2}
    assert sum("refuses logprobs" in w for w in warnings) == 1
    assert sum(f"refuses n={N}" in w for w in warnings) == 1, warnings
