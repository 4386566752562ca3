"""Soft labels from samples, for every teacher: N answers per row, asked with `n` where the
server takes it (one request per row) and as N requests where it refuses `n` (learned
once), each soft label naming its source, priced by `estimate`. Real SDKs and labeler's
lean transport over real HTTP against the test server, whose label answers are drawn from
a known per-prompt distribution (`LabelResponder.label_distribution`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import datasets
import pytest
from click.testing import CliRunner

import labeler
from labeler import aio
from labeler.cli import main
from labeler.request import key_identity
from labeler.testing import LabelResponder, ServerConfig, TeacherServer, VerbalizedResponder
from tests.conftest import chat_requests

LABELS = ["negative", "positive"]
TEACHER = "openai-compatible:teacher-test"


def reviews(count: int) -> list[dict[str, str]]:
    return [
        {
            "id": f"r{i}",
            "text": f"Review {i}: the plot {'moved' if i % 3 else 'dragged'} "
            f"and the cast was {'warm' if i % 2 else 'flat'} (copy {i}).",
        }
        for i in range(count)
    ]


def truth(server: TeacherServer) -> dict[str, float]:
    """Each row's P(positive) as the server draws it, by the row's text: read from the
    prompts the server saw (the flattened conversation its distribution is keyed by)."""
    responder = LabelResponder(LABELS, seed=server.config.seed)
    out: dict[str, float] = {}
    for rec in server.log:
        if rec.status == 200 and rec.prompt:
            text = rec.body["messages"][-1]["content"].split("Review: ", 1)[1].split("\n")[0]
            out[text] = responder.label_distribution(rec.prompt)["positive"]
    return out


def label(
    server: TeacherServer, rows: list[dict[str, str]], store: Path, task: str = "sentiment", **options: Any
) -> Any:
    return labeler.label(
        rows,
        task,
        TEACHER,
        base_url=server.url + "/v1",
        store=store,
        concurrency=16,
        progress=False,
        **options,
    )


def within_sampling_error(ds: Any, p_true: dict[str, float], n: int) -> None:
    """Each share of n samples is Binomial(n, p)/n: the sum of the rows' deviations is
    within 4 standard errors, and so is each row's (with a floor of 1/n for p near 0/1)."""
    total, variance = 0.0, 0.0
    for row in ds:
        p = p_true[row["text"]]
        share = row["soft_label"][LABELS.index("positive")]
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(share - p) <= 4 * sigma + 1 / n, (row["id"], share, p)
        total += share - p
        variance += p * (1 - p) / n
    assert abs(total) <= 4 * math.sqrt(variance), (total, math.sqrt(variance))


def test_samples_with_n_are_one_request_per_row_and_match_the_servers_distribution(tmp_path: Path) -> None:
    rows, n = reviews(300), 10
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        ds = label(srv, rows, tmp_path / "s.sqlite", samples=n, soft_labels="samples")
        assert chat_requests(srv) == len(rows)  # n accepted: one request per row
        assert all(
            r.body["n"] == n and "logprobs" not in r.body and r.body["temperature"] > 0
            for r in srv.log
            if r.path.endswith("/chat/completions")
        )
        p_true = truth(srv)
        assert len(ds) == len(rows) and set(ds["soft_label_source"]) == {f"samples:{n}"}
        within_sampling_error(ds, p_true, n)
        for row in ds:  # agreement: the majority's share of the n answers
            assert row["agreement"] == pytest.approx(max(row["soft_label"]))
        label(srv, rows, tmp_path / "s.sqlite", samples=n, soft_labels="samples")
        assert chat_requests(srv) == len(rows)  # the rerun sends nothing


@pytest.mark.parametrize("transport", ["lean", "httpx"])
def test_a_server_that_refuses_n_is_sent_n_requests_per_row(tmp_path: Path, transport: str) -> None:
    """Groq-style 400 on `n`: learned from the first request (the others wait for it), then
    every row is N single requests; exactly one request is refused in the whole run."""
    rows, n = reviews(120), 5
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    warnings: list[str] = []
    with TeacherServer(ServerConfig(labels=LABELS, max_n=1)) as srv:
        job = labeler.Job(
            task="sentiment",
            input=data,
            teacher=TEACHER,
            base_url=srv.url + "/v1",
            store=tmp_path / "s.sqlite",
            samples=n,
            soft_labels="samples",
            teacher_options={"transport": transport},
            out=tmp_path / "out",
            progress=False,
        )
        result = aio.run(labeler.run_job(job, on_warning=warnings.append))
        sent = [r for r in srv.log if r.path.endswith("/chat/completions")]
        refused = [r for r in sent if r.status == 400]
        assert len(refused) == 1 and refused[0].body["n"] == n
        assert len(sent) == len(rows) * n + 1
        s = result.summary
        assert (s.labeled, s.failed, s.http_requests) == (len(rows), 0, len(sent))
        assert s.http_failures == {"http_400": 1}
        assert sum("refuses n=5" in w for w in warnings) == 1, warnings
        ds = labeler.label(
            rows,
            "sentiment",
            TEACHER,
            base_url=srv.url + "/v1",
            store=tmp_path / "s.sqlite",
            samples=n,
            soft_labels="samples",
            progress=False,
        )
        assert len(sent) == len([r for r in srv.log if r.path.endswith("/chat/completions")])
        within_sampling_error(ds, truth(srv), n)
        assert set(ds["soft_label_source"]) == {f"samples:{n}"}


def test_each_soft_label_names_its_source(tmp_path: Path) -> None:
    """logprobs by default; samples:N when sampled; one sample is a hard label (`none`, a
    one-hot on its answer), never passed off as a distribution."""
    rows = reviews(12)
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        store = tmp_path / "s.sqlite"
        kinds = {"kind": "classification", "text_field": "text"}
        by_logprobs = label(srv, rows, store, **kinds)
        sampled = label(srv, rows, store, samples=4, soft_labels="samples", **kinds)
        one = label(srv, rows, store, samples=1, soft_labels="samples", **kinds)
        assert set(by_logprobs["soft_label_source"]) == {"logprobs"}
        assert set(sampled["soft_label_source"]) == {"samples:4"}
        assert set(one["soft_label_source"]) == {"none"}
        assert all(sorted(p) == [0.0, 1.0] for p in one["soft_label"])
        singles = [r for r in srv.log if r.path.endswith("/chat/completions")][-len(rows) :]
        assert all("n" not in r.body and "logprobs" not in r.body for r in singles)
        # the sampled and the logprob labels are different answers, each kept
        assert chat_requests(srv) == 3 * len(rows)
        records = label(srv, rows, store, samples=4, soft_labels="samples")
        assert set(records["soft_label_source"]) == {"samples:4"}
        assert chat_requests(srv) == 3 * len(rows)


def test_card_says_where_soft_labels_came_from(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reviews(6)))
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        res = CliRunner().invoke(
            main,
            [
                "run",
                "sentiment",
                str(data),
                "--teacher",
                TEACHER,
                "--base-url",
                srv.url + "/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
                "--out",
                str(tmp_path / "out"),
                "--kind",
                "classification",
                "--samples",
                "3",
                "--soft-labels",
                "samples",
                "--quiet",
            ],
        )
        assert res.exit_code == 0, res.output
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| `samples:3` | 6 | the share of each answer among 3 sampled answers" in card
    meta = json.loads((tmp_path / "out" / "labeler_export.json").read_text())
    assert meta["report"]["soft_label_sources"] == {"samples:3": 6}


@pytest.mark.parametrize("args", [["--samples", "0"], ["--samples", "-2"], ["--soft-labels", "guess"]])
def test_bad_sampling_options_are_one_line_and_send_nothing(tmp_path: Path, args: list[str]) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reviews(3)))
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        res = CliRunner().invoke(
            main,
            [
                "run",
                "sentiment",
                str(data),
                "--teacher",
                TEACHER,
                "--base-url",
                srv.url + "/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
                "--quiet",
                *args,
            ],
        )
        assert chat_requests(srv) == 0
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0] and "Traceback" not in res.output


def test_anthropic_has_no_logprobs_to_choose() -> None:
    with pytest.raises(labeler.ConfigError, match="no logprobs"):
        labeler.make_teacher("anthropic:claude-haiku-4-5", api_key="k", soft_labels="logprobs")
    teacher = labeler.make_teacher("anthropic:claude-haiku-4-5", api_key="k", samples=3)
    assert teacher.identity["samples"] == 3  # the key it always had


def test_estimate_prices_n_samples(tmp_path: Path) -> None:
    """N x the output; the prompt once where `n` is taken (OpenAI), N times where it is not
    (Anthropic) or not known before the run (any other server: the dearer case, said)."""
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reviews(8)))

    def estimate(teacher: str, *extra: str) -> dict[str, Any]:
        res = CliRunner().invoke(
            main, ["estimate", "sentiment", str(data), "--teacher", teacher, "--json", *extra]
        )
        assert res.exit_code == 0, res.output
        return json.loads(res.output.strip().splitlines()[-1])

    plain = estimate("openai:gpt-4o-mini")
    with_n = estimate("openai:gpt-4o-mini", "--soft-labels", "samples", "--samples", "4")
    assert (with_n["http_requests"], with_n["prompt_tokens"]) == (8, plain["prompt_tokens"])
    assert with_n["output_tokens"] == 4 * plain["output_tokens"]
    assert with_n["cost_usd"] > plain["cost_usd"]
    auto = estimate("openai:gpt-4o-mini", "--samples", "4")  # logprobs: nothing sampled
    assert auto["http_requests"] == 8 and auto["output_tokens"] == plain["output_tokens"]
    other = estimate(
        "openai-compatible:m", "--base-url", "http://x/v1", "--soft-labels", "samples", "--samples", "4"
    )
    assert other["http_requests"] == 32 and other["prompt_tokens"] == 4 * plain["prompt_tokens"]
    assert any("4 requests" in note for note in other["notes"])
    claude = estimate("anthropic:claude-haiku-4-5", "--samples", "3")
    assert claude["http_requests"] == 24 and claude["output_tokens"] == 3 * plain["output_tokens"]


def test_verbalized_confidence_is_the_soft_label_and_calibration_fits_it(tmp_path: Path) -> None:
    """A teacher that states its confidence as JSON (prompts/sentiment-verbalized.yaml): the
    stated label gets p and the other the rest, marked `verbalized`; it is overconfident,
    and `labeler eval` fits a temperature above 1 on gold drawn from the true distribution."""
    import random

    responder = VerbalizedResponder(LABELS, overconfidence=0.6)
    rows = reviews(240)
    with TeacherServer(ServerConfig(responder=responder)) as srv:
        ds = label(
            srv,
            rows,
            tmp_path / "s.sqlite",
            task="sentiment-verbalized",
            kind="classification",
            text_field="text",
        )
        assert chat_requests(srv) == len(rows)
        assert all("logprobs" not in r.body and "n" not in r.body for r in srv.log)
        prompts = {
            r.body["messages"][-1]["content"].split("Review: ", 1)[1].strip(): r.prompt for r in srv.log
        }
        assert set(ds["soft_label_source"]) == {"verbalized"}
        for row in ds:
            stated, p = responder.stated(prompts[row["text"]])
            assert LABELS[row["label"]] == stated
            assert row["soft_label"][LABELS.index(stated)] == pytest.approx(p)
            assert sum(row["soft_label"]) == pytest.approx(1.0)
        rng = random.Random(7)  # gold drawn from the distribution the statements exaggerate
        truth_of = LabelResponder(LABELS)
        gold = tmp_path / "gold.jsonl"
        gold.write_text(
            "".join(
                json.dumps(
                    {
                        **r,
                        "gold": rng.choices(
                            LABELS,
                            weights=[truth_of.label_distribution(prompts[r["text"]])[x] for x in LABELS],
                        )[0],
                    }
                )
                + "\n"
                for r in rows
            )
        )
        res = CliRunner().invoke(
            main,
            [
                "eval",
                "sentiment-verbalized",
                str(gold),
                "--gold",
                "gold",
                "--teacher",
                TEACHER,
                "--base-url",
                srv.url + "/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
                "--json",
                "--calibrate",
                "temperature",
                "--save-calibration",
                str(tmp_path / "cal.json"),
            ],
        )
        assert res.exit_code == 0, res.output
        assert chat_requests(srv) == len(rows)  # eval reads the store
    fitted = json.loads((tmp_path / "cal.json").read_text())
    assert fitted["temperature"] > 1.2, fitted  # the stated confidence was too high
    report = json.loads(res.output.splitlines()[0])
    (cal,) = report["calibration"]
    assert cal["after"]["ece"] < cal["before"]["ece"]


def test_a_server_that_ignores_n_is_learned_from_its_first_answer(tmp_path: Path) -> None:
    """One choice back for n=4: that answer is kept, the row's other 3 samples are asked
    singly, and every later row is 4 single requests; nothing is refused or lost."""
    rows, n = reviews(30), 4
    with TeacherServer(ServerConfig(labels=LABELS, ignore_n=True)) as srv:
        ds = label(srv, rows, tmp_path / "s.sqlite", samples=n, soft_labels="samples")
        sent = [r for r in srv.log if r.path.endswith("/chat/completions")]
        assert len(sent) == len(rows) * n and all(r.status == 200 for r in sent)
        assert sum(r.body.get("n") == n for r in sent) == 1  # only the first asked with n
        assert set(ds["soft_label_source"]) == {f"samples:{n}"}


def test_budgets_price_samples_as_requests_until_n_is_known(tmp_path: Path) -> None:
    """Before the server has taken `n`, a sampled row is priced as N requests (the prompt
    paid N times, the dearer case); once it has, as one request of N answers."""
    task = labeler.load_task("sentiment")
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        teacher = labeler.make_teacher(TEACHER, base_url=srv.url + "/v1", samples=6, soft_labels="samples")
        request = task.render({"text": "fine"})
        assert teacher.request_shape(request) == (6, 1)

        async def once() -> Any:
            try:
                return await teacher.complete(request)
            finally:
                await teacher.aclose()

        answer = aio.run(once())
        assert len(answer.samples) == 6 and teacher.request_shape(request) == (1, 6)
        plain = labeler.make_teacher(TEACHER, base_url=srv.url + "/v1", samples=6)
        assert plain.request_shape(request) == (1, 1)  # logprobs: nothing sampled
        # the sampling options key no answer: a sampled request carries its `n`
        assert key_identity(plain.identity) == key_identity(teacher.identity)


def test_filters_cascades_and_the_review_page_read_sampled_soft_labels(tmp_path: Path) -> None:
    """A sampled soft label is read like any other: --min-confidence keeps the rows whose
    share is high enough, a cascade escalates the rows whose first teacher's samples
    disagree, and the review page puts disagreement first."""
    from labeler.review.index import build_index
    from labeler.store import Store

    rows, n = reviews(60), 5
    store = tmp_path / "s.sqlite"
    with (
        TeacherServer(ServerConfig(labels=LABELS)) as first,
        TeacherServer(ServerConfig(labels=LABELS, seed=1)) as second,
    ):
        every = label(
            first, rows, store, samples=n, soft_labels="samples", kind="classification", text_field="text"
        )
        sure = {r["id"] for r in every if max(r["soft_label"]) >= 0.8}
        assert 0 < len(sure) < len(rows)
        kept = label(
            first,
            rows,
            store,
            samples=n,
            soft_labels="samples",
            kind="classification",
            text_field="text",
            filters=labeler.FilterSpec(min_confidence=0.8),
        )
        assert set(kept["id"]) == sure
        cascade = f"{TEACHER}@{first.url}/v1,{TEACHER}@{second.url}/v1"
        job = labeler.Job(
            task="sentiment",
            input=_write(tmp_path, rows),
            teacher=TEACHER,
            cascade=cascade,
            escalate_below="0.8",
            store=store,
            samples=n,
            soft_labels="samples",
            out=tmp_path / "out",
            progress=False,
        )
        assert aio.run(labeler.run_job(job)).summary.failed == 0
        assert chat_requests(second) == len(rows) - len(sure)  # only the unsure went on
        ds = datasets.load_from_disk(str(tmp_path / "out"))
        assert set(ds["soft_label_source"]) == {f"samples:{n}"}
        teacher = labeler.make_teacher(TEACHER, base_url=first.url + "/v1", samples=n, soft_labels="samples")
        with Store(store) as opened:
            index = build_index(
                labeler.load_task("sentiment"),
                teacher.identity,
                labeler.read_rows(_write(tmp_path, rows)),
                opened,
            )
        order = [it.certainty for it in index.items]
        assert len(order) == len(rows) and min(order) < 0.8
        assert all(abs(c * n - round(c * n)) < 1e-9 for c in order)  # shares of n answers


def test_a_teacher_ensemble_mixes_its_members_sampled_soft_labels(tmp_path: Path) -> None:
    """Two teachers without logprobs, each sampled N times a row (one request with n), as an
    ensemble: the row's soft label is the mean of the members' sample shares, its label
    their argmax, its agreement the share of members naming it; a rerun asks nothing, and
    the sft export answers with the ensemble's label."""
    rows, n = reviews(30), 5
    store = tmp_path / "s.sqlite"
    with (
        TeacherServer(ServerConfig(labels=LABELS)) as first,
        TeacherServer(ServerConfig(labels=LABELS, seed=1)) as second,
    ):

        def run(kind: str) -> Any:
            job = labeler.Job(
                task="sentiment",
                input=_write(tmp_path, rows),
                teacher=TEACHER,
                ensemble=f"{TEACHER}@{first.url}/v1,{TEACHER}@{second.url}/v1",
                store=store,
                samples=n,
                soft_labels="samples",
                out=tmp_path / kind,
                progress=False,
                export=labeler.ExportOptions(kind=kind),
            )
            assert aio.run(labeler.run_job(job)).summary.failed == 0
            return datasets.load_from_disk(str(tmp_path / kind))

        records = run("records")
        assert (chat_requests(first), chat_requests(second)) == (len(rows), len(rows))
        sft = run("sft")
        assert (chat_requests(first), chat_requests(second)) == (len(rows), len(rows))
    disagree = 0
    for row in records:
        members = [m["soft_label"] for m in row["ensemble"]]
        assert all(abs(p * n - round(p * n)) < 1e-9 for m in members for p in m)  # shares of n
        mean = [sum(col) / len(members) for col in zip(*members, strict=True)]
        assert row["soft_label"] == pytest.approx(mean)
        assert row["label"] == max(range(len(LABELS)), key=lambda i: mean[i])
        named = [m["label"] for m in row["ensemble"]]
        assert row["agreement"] == pytest.approx(named.count(LABELS[row["label"]]) / len(named))
        disagree += len(set(named)) > 1
    assert disagree > 0  # the members' draws differ on some rows: the mix is not one member's
    by_id = {r["id"]: LABELS[r["label"]] for r in records}
    assert {p["id"]: c[0]["content"] for p, c in zip(sft, sft["completion"], strict=True)} == by_id


def _write(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_pool_of_endpoints_counts_every_sample_request(tmp_path: Path) -> None:
    """Two endpoints that refuse `n`: each learns it once, and the run's count of HTTP
    requests is what the servers saw."""
    rows, n = reviews(20), 3
    with (
        TeacherServer(ServerConfig(labels=LABELS, max_n=1)) as a,
        TeacherServer(ServerConfig(labels=LABELS, max_n=1)) as b,
    ):
        job = labeler.Job(
            task="sentiment",
            input=_write(tmp_path, rows),
            teacher=TEACHER,
            base_url=f"{a.url}/v1,{b.url}/v1",
            store=tmp_path / "s.sqlite",
            samples=n,
            soft_labels="samples",
            out=tmp_path / "out",
            progress=False,
        )
        s = aio.run(labeler.run_job(job, on_warning=lambda _: None)).summary
        seen = chat_requests(a) + chat_requests(b)
        refused = sum(r.status == 400 for srv in (a, b) for r in srv.log)
        assert s.labeled == len(rows) and s.http_requests == seen
        assert 1 <= refused <= 2 and seen == len(rows) * n + refused


def test_a_refresh_config_takes_the_sampling_keys(tmp_path: Path) -> None:
    from labeler.refresh import RefreshConfig

    config = tmp_path / "refresh.yaml"
    base = f"task: sentiment\ninput: {tmp_path}/in.jsonl\nteacher: {TEACHER}\nout: {tmp_path}/o\n"
    config.write_text(base + "samples: 3\nsoft_labels: samples\n")
    job = RefreshConfig.load(config).job(tmp_path / "v")
    assert (job.samples, job.soft_labels) == (3, "samples")
    config.write_text(base + "soft_labels: guess\n")
    with pytest.raises(labeler.ConfigError, match=r"refresh.yaml: soft_labels must be one of"):
        RefreshConfig.load(config)
    config.write_text(base + "samples: 0\n")
    with pytest.raises(labeler.ConfigError, match=r"refresh.yaml: samples must be >= 1"):
        RefreshConfig.load(config)


@pytest.mark.parametrize(
    ("status", "message", "refused"),
    [
        (400, "'n' : number must be at most 1", True),  # Groq
        (400, "Only one completion choice is allowed", True),  # llama.cpp's server
        (
            400,
            "Invalid 'n': integer above maximum value. Expected a value <= 128, but got 200 instead.",
            True,
        ),  # OpenAI
        (400, "n must be 1 when using greedy sampling, got 5.", True),  # vLLM
        (400, "`logprobs` is not supported with this model", False),
        (400, "Unsupported parameter: 'logprobs' is not supported with this model.", False),
        (400, "This model's maximum context length is 8192 tokens.", False),
        (500, "'n' : number must be at most 1", False),  # a server error is retried, not learned
    ],
)
def test_a_refused_n_is_told_from_other_refusals(status: int, message: str, refused: bool) -> None:
    from labeler.errors import FinalError, RetryableError
    from labeler.teachers.sampling import refuses_n

    error = (FinalError if status < 500 else RetryableError)(f"http_{status}", message, status=status)
    assert refuses_n(error) is refused
