"""labeler.ray and `labeler run --engine ray` on a real local Ray runtime.

One Ray runtime (2 CPUs, no dashboard) serves the module; the teacher is labeler's test
server over real HTTP, and its request log is the record of what was paid for. The driver
is a `labeler` child process killed with SIGKILL; an actor killed mid-run is tested on the
two-node cluster (test_ray_cluster.py), with exact accounting from the server's log.
"""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from ray_helpers import (
    LABELS,
    TEACHER,
    answers_per_prompt,
    items,
    run_cli,
    same_export,
    stored_keys,
    wait_for,
    write_jsonl,
)

from labeler.cli import main
from labeler.testing import ServerConfig, TeacherServer

from conftest import chat_requests

ray = pytest.importorskip("ray", reason="labeler.ray needs the ray extra: pip install 'labeler-distill[ray]'")
import labeler.ray as labeler_ray  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # a Ray runtime takes seconds to start on a small machine
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),  # Ray's own, internal
    pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors:UserWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def ray_runtime() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def cpus_free() -> None:
    """Each test starts with the runtime's CPUs free. A Ray Data stage that failed keeps
    its actors while anything refers to its run (the error's traceback does, and the log
    capture holds that until the test's teardown ends, after which only the collector
    frees the cycle); an actor left holding its CPU share starved the next test's read
    tasks, which then waited for a CPU that never came instead of failing."""
    gc.collect()
    total = ray.cluster_resources().get("CPU", 0)
    assert wait_for(lambda: ray.available_resources().get("CPU", 0) >= total, 30), (
        f"an earlier test left actors holding {total - ray.available_resources().get('CPU', 0):g} CPU"
    )


def test_the_stage_yields_the_records_columns_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    import labeler

    rows = items(120)
    store = tmp_path / "s.sqlite"
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        ds = labeler_ray.label(
            ray.data.from_items(rows),
            "sentiment",
            TEACHER,
            base_url=srv.url + "/v1",
            api_key="k",
            store=store,
            batch_size=32,
        )
        out = sorted(ds.take_all(), key=lambda r: int(r["id"]))
        assert chat_requests(srv) == 120
        # The single-process path reads the same store: nothing is sent, same answers.
        local = labeler.label(rows, "sentiment", TEACHER, base_url=srv.url + "/v1", api_key="k", store=store)
        assert chat_requests(srv) == 120
        # A rerun through Ray: every row cached.
        again = labeler_ray.label(
            ray.data.from_items(rows),
            "sentiment",
            TEACHER,
            base_url=srv.url + "/v1",
            api_key="k",
            store=store,
        ).take_all()
        assert chat_requests(srv) == 120
    assert len(out) == len(again) == 120
    names = local.features["label"].names
    by_id = {r["id"]: r for r in local.to_list()}
    assert set(out[0]) == set(local.column_names)
    for row in out:
        mine = by_id[row["id"]]
        assert row["label"] == names[mine["label"]]
        assert row["soft_label"] == mine["soft_label"]
        assert row["response"] == mine["response"]
        assert row["logprobs"] == mine["logprobs"]
        assert row["max_prob"] == mine["max_prob"] and row["text"] == mine["text"]


def test_an_endpoint_pool_spreads_the_fleet_over_its_servers(tmp_path: Path) -> None:
    """`base_url` with several servers of one model (`--base-url` repeated): every actor
    spreads its requests over all of them, as one process does."""
    with TeacherServer(ServerConfig(labels=LABELS)) as one, TeacherServer(ServerConfig(labels=LABELS)) as two:
        ds = labeler_ray.label(
            ray.data.from_items(items(80)),
            "sentiment",
            TEACHER,
            base_url=f"{one.url}/v1,{two.url}/v1",
            api_key="k",
            store=tmp_path / "s.sqlite",
            batch_size=20,
        )
        assert len(ds.take_all()) == 80
        sent = (chat_requests(one), chat_requests(two))
    assert sum(sent) == 80 and min(sent) >= 20, sent


def test_a_bad_option_is_one_line_before_any_actor_starts(tmp_path: Path) -> None:
    from labeler.errors import ConfigError, TeacherUnreachable

    ds = ray.data.from_items(items(3))
    with pytest.raises(ConfigError, match="unknown option 'concurency'"):
        labeler_ray.label(ds, "sentiment", TEACHER, concurency=4)
    with pytest.raises(ConfigError, match="--budget is not supported"):
        labeler_ray.label(ds, "sentiment", TEACHER, budget_usd=1.0)
    # An error in an actor, when the stage runs: raised as itself.
    stage = labeler_ray.label(
        ds,
        "sentiment",
        TEACHER,
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        store=tmp_path / "s.sqlite",
        retry_initial_wait=0.01,
    )
    with pytest.raises(TeacherUnreachable, match=r"cannot reach the teacher at http://127\.0\.0\.1:9/v1"):
        stage.take_all()


def test_engine_ray_and_the_local_engine_export_identical_datasets(tmp_path: Path) -> None:
    """JSONL, CSV, Parquet and a saved HF dataset read by Ray Data's readers give the rows
    labeler's own readers give (same keys: 0 requests after the first), and the export of
    each is the same as the single-process run's from the same store."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = items(150)
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    with open(jsonl, "a") as f:
        f.write("not json\n")
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("id,text,n\n" + "".join(f'{r["id"]},"{r["text"]}",{r["n"]}\n' for r in rows))
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    hf = tmp_path / "in-hf"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(hf))
    store = tmp_path / "s.sqlite"
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        common = ["-t", TEACHER, "--base-url", srv.url + "/v1", "--store", str(store), "-q"]
        for n, data in enumerate((jsonl, csv_path, parquet, f"{hf}:train")):
            via_ray, local = tmp_path / f"ray-{n}", tmp_path / f"local-{n}"
            run_cli(
                "run",
                "sentiment",
                str(data),
                *common,
                "--engine",
                "ray",
                "--workers",
                "2",
                "--out",
                str(via_ray),
                "--kind",
                "classification" if n == 1 else "records",
            )
            assert chat_requests(srv) == 150, f"{data}: a row was keyed differently"
            run_cli(
                "run",
                "sentiment",
                str(data),
                *common,
                "--out",
                str(local),
                "--kind",
                "classification" if n == 1 else "records",
            )
            assert chat_requests(srv) == 150
            same_export(via_ray, local)
        bad = [json.loads(line) for line in (tmp_path / "ray-0.rejects.jsonl").read_text().splitlines()]
        assert bad == [
            json.loads(line) for line in (tmp_path / "local-0.rejects.jsonl").read_text().splitlines()
        ]
        assert bad[0]["line"] == 151 and bad[0]["source"] == str(jsonl)


def test_a_teacher_that_cannot_be_reached_is_one_line_from_the_actors(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", items(20))
    result = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(data),
            "-t",
            TEACHER,
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "-q",
            "--engine",
            "ray",
            "--retry-initial-wait",
            "0.01",
        ],
    )
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("labeler: error")]
    assert len(errors) == 1 and "cannot reach the teacher at http://127.0.0.1:9/v1" in errors[0], (
        result.output[-2000:]
    )


def test_the_fleet_keeps_one_rpm_limit_without_429s(tmp_path: Path) -> None:
    """50 requests per 2 s window (1500 RPM) for two actors together; each alone would
    pace to the whole limit and overrun it twice over."""
    limit, window, n = 50, 2.0, 300
    store = tmp_path / "s.sqlite"
    with TeacherServer(ServerConfig(labels=LABELS, rpm=limit, rate_window_s=window)) as srv:
        ds = labeler_ray.label(
            ray.data.from_items(items(n)),
            "sentiment",
            TEACHER,
            base_url=srv.url + "/v1",
            api_key="k",
            store=store,
            rpm=limit * 60 / window,
            concurrency=32,
            batch_size=50,
        )
        assert len(ds.take_all()) == n
        log = [r for r in srv.log if r.path.endswith("/chat/completions")]
    ok = sorted(r.received for r in log if r.status == 200)
    limited = sum(1 for r in log if r.status == 429)
    achieved = (len(ok) - 1) / (ok[-1] - ok[0]) / (limit / window)
    print(f"fleet rpm: {achieved:.1%} of the limit, {limited} x 429 in {len(log)} requests")
    # ≥ 95% is measured by benchmarks/ray_stage.py over a longer run; a few seconds on a
    # busy 2-core machine (actors starting, other tests' processes) only show it is not
    # grossly off. Overrunning is what a per-actor limit would do: 429s.
    assert achieved >= 0.85, f"{achieved:.1%} of the limit"
    assert limited / len(log) < 0.01, f"{limited} x 429 in {len(log)}"


def test_the_fleet_keeps_a_limit_learned_from_headers(tmp_path: Path) -> None:
    """No flag: the server announces 900 RPM in its headers; the two actors together stay
    under it (each alone would send 900 a minute)."""
    limit, n = 900, 200
    store = tmp_path / "s.sqlite"
    with TeacherServer(ServerConfig(labels=LABELS, rpm=limit)) as srv:
        ds = labeler_ray.label(
            ray.data.from_items(items(n)),
            "sentiment",
            TEACHER,
            base_url=srv.url + "/v1",
            api_key="k",
            store=store,
            concurrency=4,
            batch_size=25,
        )
        assert len(ds.take_all()) == n
        log = [r for r in srv.log if r.path.endswith("/chat/completions")]
    ok = sorted(r.received for r in log if r.status == 200)
    # Until the first answers bring the headers, each actor sends its first requests at once.
    steady = [t for t in ok if t >= ok[0] + 2.0]
    achieved = (len(steady) - 1) / (steady[-1] - steady[0]) / (limit / 60)
    print(f"learned rpm: {achieved:.1%} of the announced limit")
    assert 0.85 <= achieved <= 1.03, f"{achieved:.1%} of the limit"
    assert not any(r.status == 429 for r in log)


ROWS = 400
CONCURRENCY = 8


def check_paid_once(srv: TeacherServer, store: Path, in_flight: int) -> None:
    """Every row answered and stored; a prompt answered twice only if its first answer was
    in flight at a kill (at most `in_flight` of them), never three times."""
    per_prompt = answers_per_prompt(srv)
    assert len(per_prompt) == ROWS and stored_keys(store) == ROWS
    twice = [p for p, n in per_prompt.items() if n > 1]
    print(f"{len(twice)} prompts answered twice ({in_flight} could be in flight at a kill)")
    assert max(per_prompt.values()) <= 2
    assert len(twice) <= in_flight, f"{len(twice)} prompts paid twice (in flight: {in_flight})"


def test_the_driver_killed_with_sigkill_loses_at_most_what_was_in_flight(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", items(ROWS))
    store = tmp_path / "s.sqlite"
    address = ray.get_runtime_context().gcs_address
    config = ServerConfig(labels=LABELS, latency_s=0.03, latency_jitter_s=0.03)
    with TeacherServer(config) as srv:
        args = [
            sys.executable,
            "-m",
            "labeler.cli",
            "run",
            "sentiment",
            str(data),
            "-t",
            TEACHER,
            "--base-url",
            srv.url + "/v1",
            "--store",
            str(store),
            "-q",
            "--engine",
            "ray",
            "--ray-address",
            address,
            "--workers",
            "2",
            "-c",
            str(CONCURRENCY),
        ]
        driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: len(answers_per_prompt(srv)) >= 100 or driver.poll() is not None, 120), (
                "the run never got going"
            )
            assert driver.poll() is None, driver.communicate()[1].decode()[-2000:]
            driver.send_signal(signal.SIGKILL)
            driver.wait(30)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        stored = stored_keys(store)
        print(f"{stored} answers stored when the driver was killed")
        assert stored < ROWS
        rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        check_paid_once(srv, store, 2 * CONCURRENCY)


def test_the_stage_reads_answers_as_the_export_does(tmp_path: Path) -> None:
    """A calibration, a confidence filter and a reviewer's decision: `labeler.ray.label`
    yields the rows `labeler export` writes with the same options, from the same store."""
    import datasets

    from labeler.calibration import Calibration
    from labeler.filters import FilterSpec
    from labeler.human import record_label
    from labeler.job import Job
    from labeler.plan import Planner
    from labeler.store import Store

    rows = items(40)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    store = tmp_path / "s.sqlite"
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        base_url = srv.url + "/v1"
        job = Job(task="sentiment", input=data, teacher=TEACHER, base_url=base_url, api_key="k")
        task = job.load_task()
        calibration = Calibration(labels=tuple(task.labels), temperature=3.0).save(tmp_path / "cal.json")
        common = [
            "sentiment",
            str(data),
            "-t",
            TEACHER,
            "--base-url",
            base_url,
            "--store",
            str(store),
            "--calibration",
            str(calibration),
        ]
        run_cli("run", *common, "-q", "--out", str(tmp_path / "all"))
        confidences = sorted(r["max_prob"] for r in datasets.load_from_disk(str(tmp_path / "all")).to_list())
        cut = confidences[len(confidences) // 2]  # about half the rows pass
        # A reviewer overrules the teacher on the first row.
        first = Planner(task, job.make_teacher().identity).plan(rows[:1])[0]
        with Store(store) as db:
            teacher_label = db.get(first.key)
        assert teacher_label is not None
        with Store(store) as db:
            record_label(
                db, first.key, "negative" if "positive" in teacher_label.text else "positive", reviewer="ann"
            )
        run_cli("export", *common, "--min-confidence", str(cut), "--out", str(tmp_path / "exp"))
        exported = datasets.load_from_disk(str(tmp_path / "exp"))
        got = labeler_ray.label(
            ray.data.from_items(rows),
            "sentiment",
            TEACHER,
            base_url=base_url,
            api_key="k",
            store=store,
            calibration=str(calibration),
            filters=FilterSpec(min_confidence=cut),
        ).take_all()
        assert chat_requests(srv) == 40
    names = exported.features["label"].names
    want = {
        str(r["id"]): (names[r["label"]], r["soft_label"], r["max_prob"], r["label_source"])
        for r in exported.to_list()
    }
    mine = {str(r["id"]): (r["label"], r["soft_label"], r["max_prob"], r["label_source"]) for r in got}
    assert 0 < len(want) < 40
    assert mine == want
    assert mine["0"][3] == "human"  # the reviewed row: kept whatever the teacher's doubt


GENERATION = """\
name: solve
version: "1"
mode: chat
system: 'Solve the problem. End with a line "Answer: N".'
user: "{{ question }}"
fields: [question]
output:
  kind: text
params:
  temperature: 1.0
  max_tokens: 64
"""


def test_engine_ray_asks_for_every_sample_of_a_generation_template(tmp_path: Path) -> None:
    """`--samples N` on a free-text template: the actors store N answers per row (one
    request with `n`), which a local run then verifies and exports without asking again."""
    import datasets

    from labeler.testing import ArithmeticResponder

    template = tmp_path / "solve.yaml"
    template.write_text(GENERATION)
    rows = [
        {"id": f"p{i}", "question": f"What is {40 + i} + {3 * i}?", "answer": 40 + 4 * i} for i in range(12)
    ]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv:
        common = [str(template), str(data), "-t", TEACHER, "--base-url", srv.url + "/v1"]
        common += ["--store", str(tmp_path / "s.sqlite"), "--samples", "3", "-q"]
        run_cli("run", *common, "--engine", "ray", "--workers", "2")
        sent = [r for r in srv.log if r.path.endswith("/chat/completions")]
        assert len(sent) == 12 and {r.body.get("n") for r in sent} == {3}
        out = tmp_path / "records"
        run_cli("run", *common, "--verify", "numeric:answer", "--out", str(out), "--kind", "records")
        assert chat_requests(srv) == 12  # every sample was stored by the actors
    records = datasets.load_from_disk(str(out))
    assert len(records) == 12
    for record in records:
        assert [v["sample"] for v in record["verdicts"]] == [0, 1, 2]
        assert {v["status"] for v in record["verdicts"]} <= {"pass", "fail"}


def _problems(tmp_path: Path, n: int) -> tuple[Path, Path, list[dict[str, object]]]:
    template = tmp_path / "solve.yaml"
    template.write_text(GENERATION)
    rows: list[dict[str, object]] = [
        {"id": f"p{i}", "question": f"What is {40 + i} + {3 * i}?", "answer": 40 + 4 * i} for i in range(n)
    ]
    return template, write_jsonl(tmp_path / "in.jsonl", rows), rows


def _summary(result: object) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[attr-defined]


def test_engine_ray_verifies_and_keeps_the_best_as_the_local_engine_does(tmp_path: Path) -> None:
    """`--engine ray --samples 4 --verify numeric:answer --keep best`: the actors label,
    the driver checks every answer and keeps the best; the local engine then exports the
    same dataset from the same store, sending nothing, with the same pass rates."""
    from labeler.testing import ArithmeticResponder

    template, data, _ = _problems(tmp_path, 40)
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.3))) as srv:
        common = [str(template), str(data), "-t", TEACHER, "--base-url", srv.url + "/v1"]
        common += ["--store", str(tmp_path / "s.sqlite"), "--samples", "4", "--verify", "numeric:answer"]
        common += ["--keep", "best", "--kind", "sft", "-q", "--json"]
        via_ray = _summary(run_cli("run", *common, "--engine", "ray", "--out", str(tmp_path / "ray")))
        sent = [r for r in srv.log if r.path.endswith("/chat/completions")]
        assert len(sent) == 40 and {r.body.get("n") for r in sent} == {4}
        local = _summary(run_cli("run", *common, "--out", str(tmp_path / "local")))
        assert chat_requests(srv) == 40  # 0 requests on the second run
    same_export(tmp_path / "ray", tmp_path / "local")
    checked, cached = via_ray["verification"], local["verification"]
    assert checked["checked"] == 160 and checked["cached"] == 0 and cached["cached"] == 160
    assert 0 < checked["rows_with_a_pass"] < 40
    for k in ("rows", "answers", "passed", "pass_rate", "pass@1", "pass@N", "rows_with_a_pass", "verdicts"):
        assert checked[k] == cached[k], k
    # --keep best: one row per input row with a verified answer
    assert via_ray["exported"] == local["exported"] == checked["rows_with_a_pass"]


def test_engine_ray_judges_in_the_driver_once(tmp_path: Path) -> None:
    """`--verify judge:...` with `--engine ray`: the judge labels every stored answer
    after the actors, in the driver; a rerun sends nothing to the teacher or the judge."""
    from labeler.testing import ArithmeticJudge, ArithmeticResponder

    template, data, _ = _problems(tmp_path, 30)
    with (
        TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv,
        TeacherServer(ServerConfig(responder=ArithmeticJudge(p_sure=0.9))) as judge,
    ):
        args = ["run", str(template), str(data), "-t", TEACHER, "--base-url", srv.url + "/v1"]
        args += ["--store", str(tmp_path / "s.sqlite"), "--samples", "4", "--engine", "ray"]
        args += ["--verify", f"judge:openai-compatible:judge-m@{judge.url}/v1", "-q", "--json"]
        first = _summary(run_cli(*args))
        judged = chat_requests(judge)
        [j] = first["judges"]
        assert 0 < judged <= 120 and j["requests"] == judged and j["answers"] == 120 and j["failed"] == 0
        assert first["verification"]["checked"] == 120 and first["verification"]["answers"] == 120
        assert set(first["verification"]["verdicts"]) <= {"pass", "fail"}
        again = _summary(run_cli(*args))
        assert chat_requests(srv) == 30 and chat_requests(judge) == judged  # 0 judge requests
    [j] = again["judges"]
    assert j["requests"] == 0 and j["cached"] == 120
    assert again["verification"]["cached"] == 120
    assert again["verification"]["passed"] == first["verification"]["passed"]


def test_label_verifies_in_the_actors_as_the_export_does(tmp_path: Path) -> None:
    """`labeler.ray.label(..., verify=, keep=)`: the actors check every answer and the
    rows carry the verified `records` export's columns; `labeler export` then reads the
    verdicts they stored (none checked again) and writes the same rows. A reviewer's
    pick of an answer wins in both."""
    import re

    import datasets

    from labeler.human import record_label
    from labeler.job import Job
    from labeler.plan import Planner
    from labeler.store import Store
    from labeler.testing import ArithmeticResponder

    template, data, rows = _problems(tmp_path, 30)
    store = tmp_path / "s.sqlite"
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv:
        base_url = srv.url + "/v1"
        options = {"samples": 4, "verify": "numeric:answer", "keep": "best"}

        def label() -> dict[str, dict]:
            ds = labeler_ray.label(
                ray.data.from_items(rows),
                template,
                TEACHER,
                base_url=base_url,
                store=store,
                batch_size=8,
                **options,
            )
            return {r["id"]: r for r in ds.take_all()}

        got = label()
        assert chat_requests(srv) == 30
        gold = {r["id"]: r["answer"] for r in rows}
        for rid, record in got.items():
            for v in record["verdicts"]:
                right = int(re.findall(r"-?\d+", v["text"])[-1]) == gold[rid]
                assert v["status"] == ("pass" if right else "fail")
            kept = [v for v in record["verdicts"] if v["kept"]]
            assert len(kept) == (1 if record["passed"] else 0)
            assert record["pass_at_1"] == record["passed"] / 4
        # a reviewer picks a failed answer of a row: it is that row's one kept answer
        rid, record = next((k, r) for k, r in sorted(got.items()) if 0 < r["passed"] < 4)
        failed = next(v for v in record["verdicts"] if v["status"] == "fail")
        job = Job(task=template, input=data, teacher=TEACHER, base_url=base_url, samples=4)
        with Store(store) as db:  # the store holds what the teacher refuses: part of the key
            [item] = Planner(job.load_task(), job.make_teacher().identity, db).plan(
                [r for r in rows if r["id"] == rid]
            )
            assert item.key is not None
            record_label(db, item.key, failed["text"], reviewer="ann")
        again = label()
        assert [v["kept"] for v in again[rid]["verdicts"]] == [v is failed for v in record["verdicts"]]
        out = tmp_path / "records"
        common = [str(template), str(data), "-t", TEACHER, "--base-url", base_url, "--store", str(store)]
        exported = run_cli(
            "export",
            *common,
            "--samples",
            "4",
            "--verify",
            "numeric:answer",
            "--keep",
            "best",
            "--out",
            str(out),
        )
        assert chat_requests(srv) == 30
    assert "(0 checked, 120 stored verdicts)" in exported.output, exported.output
    want = {r["id"]: r for r in datasets.load_from_disk(str(out)).to_list()}
    assert set(want) == set(again)
    for rid, record in want.items():
        for col in ("verdicts", "passed", "pass_at_1", "response", "messages"):
            assert again[rid][col] == record[col], (rid, col)


def test_label_names_a_row_without_the_field_verify_reads(tmp_path: Path) -> None:
    """The dataset's rows are the actors' to read: a row without the field a check
    compares with stops the run with a ConfigError naming it, before its batch is sent."""
    from labeler.errors import ConfigError

    template, _, _ = _problems(tmp_path, 1)
    with TeacherServer() as srv:
        ds = labeler_ray.label(
            ray.data.from_items([{"id": "q1", "question": "What is 1 + 1?"}]),
            template,
            TEACHER,
            base_url=srv.url + "/v1",
            store=tmp_path / "s.sqlite",
            verify="numeric:answer",
        )
        with pytest.raises(
            ConfigError, match=r"--verify numeric:answer: <ray batch>:1 \(row 'q1'\) has no field 'answer'"
        ):
            ds.take_all()
        assert chat_requests(srv) == 0


def test_engine_ray_scores_labels_sharing_first_tokens_as_one_process_does(tmp_path: Path) -> None:
    """`--soft-labels logprobs:exact` after a Ray labeling: the driver asks the scoring
    requests once the fleet is done, so the Ray export's soft labels are the exact ones a
    single-process run exports from the same store, which then asks nothing."""
    from procs import LocalServer
    from test_exact_label_scores import LABELS as INTENTS
    from test_exact_label_scores import ROWS, SHARED_NODES, _rows, _sent, _template

    template = _template(tmp_path / "intents.json", 1)
    data = _rows(tmp_path / "in.jsonl")
    with LocalServer(shared_prefix_labels=INTENTS) as srv:
        common = [
            *("--teacher", "openai-compatible:teacher-test", "--base-url", srv.api),
            *("--store", str(tmp_path / "s.sqlite"), "--kind", "classification", "--format", "jsonl"),
            *("--calibration", "none", "--soft-labels", "logprobs:exact", "-q"),
        ]
        ray_out, local_out = tmp_path / "ray", tmp_path / "local"
        run_cli("run", str(template), str(data), *common, "--engine", "ray", "--out", str(ray_out))
        assert _sent(srv) == ROWS + ROWS * SHARED_NODES  # every shared prefix scored once
        run_cli("run", str(template), str(data), *common, "--out", str(local_out))
        assert _sent(srv) == ROWS + ROWS * SHARED_NODES
    exported = [
        sorted((json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()), key=str)
        for out in (ray_out, local_out)
    ]
    assert exported[0] == exported[1]
    assert {row["soft_label_source"] for row in exported[0]} == {"logprobs:exact"}
