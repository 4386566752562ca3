"""Verification of generated answers over real HTTP: each verifier kind, checkers that
hang or raise, verdicts stored and re-checked without the teacher, `--keep`, pass@k, and
the `sft`, `preference` and `records` exports of verified answers.

The teacher is the test server's `ArithmeticResponder`: each answer is right with a known
probability, drawn per (question, sample), so every verdict can be held to the truth.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import pytest
from arithmetic_tasks import solve_template

from labeler import Job, run_job
from labeler.exports import ExportOptions
from labeler.filters import FilterSpec
from labeler.testing import ArithmeticResponder, ServerConfig, TeacherServer
from labeler.verify import pass_at_k

TEMPLATE = solve_template("arith", soft_targets=True)
ROWS = 12
SAMPLES = 4
ANTHROPIC = "anthropic:claude-haiku-4-5"


def _write_input(tmp_path: Path, rows: int = ROWS) -> Path:
    path = tmp_path / "problems.jsonl"
    with path.open("w") as f:
        for i in range(rows):
            a, b = 17 + 7 * i, 5 + 3 * i
            f.write(
                json.dumps(
                    {"id": f"p{i}", "question": f"What is {a} + {b}?", "answer": a + b, "gold": f"{a + b}"}
                )
                + "\n"
            )
    return path


@pytest.fixture
def arith(tmp_path: Path) -> Path:
    path = tmp_path / "arith.yaml"
    path.write_text(TEMPLATE)
    return path


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    return _write_input(tmp_path)


@pytest.fixture
def server() -> TeacherServer:
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv:
        yield srv


def _stated(answer: str) -> int:
    return int(re.findall(r"Answer: (-?\d+)", answer)[-1])


def _job(arith: Path, problems: Path, srv: TeacherServer, tmp_path: Path, **kw) -> Job:
    out = kw.pop("out", tmp_path / "out")
    options = kw.pop("teacher_options", {"samples": SAMPLES})
    return Job(
        task=arith,
        input=problems,
        teacher=ANTHROPIC,
        base_url=srv.url,
        api_key="k",
        teacher_options=options,
        store=tmp_path / "s.sqlite",
        out=out,
        progress=False,
        **kw,
    )


def _messages(srv: TeacherServer) -> int:
    return sum(1 for r in srv.log if r.path.endswith("/messages"))


def _verdicts(store: Path) -> list[tuple]:
    with sqlite3.connect(store) as db:
        return db.execute(
            "SELECT key, sample, verifier, status, score, detail FROM verdicts ORDER BY key, sample"
        ).fetchall()


def test_numeric_verdicts_match_the_truth_and_records_carry_every_sample(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path
) -> None:
    result = asyncio.run(run_job(_job(arith, problems, server, tmp_path, verify="numeric:answer")))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    gold = {json.loads(line)["id"]: json.loads(line)["answer"] for line in problems.open()}
    assert len(ds) == ROWS and _messages(server) == ROWS * SAMPLES
    total = passed = 0
    for row in ds:
        assert len(row["verdicts"]) == SAMPLES
        for v in row["verdicts"]:
            right = _stated(v["text"]) == gold[row["id"]]
            assert v["status"] == ("pass" if right else "fail"), v
            total += 1
            passed += right
        assert row["passed"] == sum(v["status"] == "pass" for v in row["verdicts"])
    v = result.summary.verification
    assert v["answers"] == total == ROWS * SAMPLES and v["passed"] == passed
    assert 0.2 < passed / total < 0.8  # the server's rate is 0.5 per answer
    rows = [(len(r["verdicts"]), r["passed"]) for r in ds]
    assert v["pass@1"] == pytest.approx(sum(c / n for n, c in rows) / ROWS)
    assert v["pass@N"] == pytest.approx(sum(c > 0 for _, c in rows) / ROWS)
    assert v["samples"] == SAMPLES and v["checked"] == total and v["cached"] == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Verification" in card and f"pass@{SAMPLES}" in card


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    from math import comb

    for n, c, k in [(4, 1, 1), (4, 1, 2), (10, 3, 5), (8, 0, 3), (5, 5, 2), (20, 7, 20)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_a_changed_verifier_rechecks_stored_answers_without_the_teacher(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path
) -> None:
    asyncio.run(run_job(_job(arith, problems, server, tmp_path, verify="numeric:answer")))
    sent = _messages(server)
    first = _verdicts(tmp_path / "s.sqlite")
    assert len(first) == ROWS * SAMPLES
    again = asyncio.run(run_job(_job(arith, problems, server, tmp_path, verify="numeric:answer")))
    assert _messages(server) == sent
    assert again.summary.verification["checked"] == 0
    assert again.summary.verification["cached"] == ROWS * SAMPLES
    changed = asyncio.run(
        run_job(_job(arith, problems, server, tmp_path, verify="regex:'Answer: (.*)',exact:gold"))
    )
    assert _messages(server) == sent  # nothing asked of the teacher
    assert changed.summary.verification["checked"] == ROWS * SAMPLES
    both = _verdicts(tmp_path / "s.sqlite")
    assert len(both) == 2 * ROWS * SAMPLES
    by_verifier: dict[str, dict] = {}
    for key, sample, verifier, status, *_ in both:
        by_verifier.setdefault(verifier.split(":")[1][:8], {})[(key, sample)] = status
    first_v, second_v = by_verifier.values()
    assert first_v == second_v  # the same answers judged the same way by both specs


def test_an_edited_gold_value_rechecks_only_its_row(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path
) -> None:
    asyncio.run(run_job(_job(arith, problems, server, tmp_path, verify="exact:gold")))
    lines = problems.read_text().splitlines()
    row = json.loads(lines[0])
    row["gold"] = "0"
    lines[0] = json.dumps(row)
    problems.write_text("\n".join(lines) + "\n")
    again = asyncio.run(run_job(_job(arith, problems, server, tmp_path, verify="exact:gold")))
    assert again.summary.verification["checked"] == SAMPLES  # the edited row's answers
    assert again.summary.verification["cached"] == (ROWS - 1) * SAMPLES


def test_keep_best_and_k_choose_verified_answers_for_sft(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path
) -> None:
    spec = "numeric:answer"
    asyncio.run(
        run_job(_job(arith, problems, server, tmp_path, verify=spec, export=ExportOptions(kind="sft")))
    )
    all_kept = datasets.load_from_disk(str(tmp_path / "out"))
    gold = {json.loads(line)["id"]: json.loads(line)["answer"] for line in problems.open()}
    for row in all_kept:
        assert _stated(row["completion"][0]["content"]) == gold[row["id"]]
        assert row["prompt"][-1]["role"] == "user"
    per_row: dict[str, int] = {}
    for row in all_kept:
        per_row[row["id"]] = per_row.get(row["id"], 0) + 1
    assert max(per_row.values()) > 1  # several verified answers of one row
    asyncio.run(
        run_job(
            _job(
                arith,
                problems,
                server,
                tmp_path,
                verify=spec,
                keep="best",
                out=tmp_path / "best",
                export=ExportOptions(kind="sft"),
            )
        )
    )
    best = datasets.load_from_disk(str(tmp_path / "best"))
    assert sorted(best["id"]) == sorted(per_row)  # one per row that has a verified answer
    asyncio.run(
        run_job(
            _job(
                arith,
                problems,
                server,
                tmp_path,
                verify=spec,
                keep=2,
                out=tmp_path / "two",
                export=ExportOptions(kind="sft"),
            )
        )
    )
    two = datasets.load_from_disk(str(tmp_path / "two"))
    assert len(two) == sum(min(n, 2) for n in per_row.values())


def test_preference_pairs_a_verified_answer_with_a_failed_one(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path
) -> None:
    result = asyncio.run(
        run_job(
            _job(
                arith,
                problems,
                server,
                tmp_path,
                verify="numeric:answer",
                export=ExportOptions(kind="preference"),
            )
        )
    )
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    gold = {json.loads(line)["id"]: json.loads(line)["answer"] for line in problems.open()}
    assert len(ds) > 0
    for row in ds:
        assert [m["role"] for m in row["chosen"]] == ["assistant"]
        assert _stated(row["chosen"][0]["content"]) == gold[row["id"]]
        assert _stated(row["rejected"][0]["content"]) != gold[row["id"]]
        assert row["prompt"][-1]["content"].startswith("What is")
    paired = set(ds["id"])
    assert result.export.unpaired == ROWS - len(paired) > 0 or len(paired) == ROWS
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"| rows left out (no verified or no failed answer to pair) | {result.export.unpaired} |" in card


def test_json_schema_verifies_against_the_templates_schema(tmp_path: Path) -> None:
    template = tmp_path / "people.yaml"
    template.write_text(
        textwrap.dedent("""\
        name: people
        version: "1"
        mode: chat
        system: Reply with JSON.
        user: "{{ text }}"
        fields: [text]
        output:
          kind: json
          schema:
            type: object
            required: [name, age]
            properties:
              name: {type: string}
              age: {type: integer}
        params: {temperature: 0, max_tokens: 64}
        """)
    )
    data = tmp_path / "in.jsonl"
    data.write_text(
        '{"id": "good", "text": "Ann is 31"}\n{"id": "bad", "text": "Bob"}\n'
        '{"id": "junk", "text": "nothing"}\n'
    )
    from labeler.testing import Reply, ScriptedResponder

    responder = ScriptedResponder(
        [
            ("Ann", Reply('{"name": "Ann", "age": 31}')),
            ("Bob", Reply('{"name": "Bob", "age": "unknown"}')),
            ("nothing", Reply("no JSON here")),
        ]
    )
    with TeacherServer(ServerConfig(responder=responder)) as srv:
        result = asyncio.run(
            run_job(
                Job(
                    task=template,
                    input=data,
                    teacher="openai-compatible:m",
                    base_url=srv.url + "/v1",
                    store=tmp_path / "s.sqlite",
                    out=tmp_path / "out",
                    progress=False,
                    verify="json-schema",
                    export=ExportOptions(filters=FilterSpec(drop_invalid=False)),
                )
            )
        )
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    status = {r["id"]: r["verdicts"][0]["status"] for r in ds}
    detail = {r["id"]: r["verdicts"][0]["detail"] for r in ds}
    assert status == {"good": "pass", "bad": "fail", "junk": "fail"}
    assert "age" in detail["bad"] and "not JSON" in detail["junk"]
    assert result.summary.verification["answers"] == 3  # one answer per row (no samples)


CHECKERS = """\
import time


def right(row, answer):
    return answer.rstrip().endswith(str(row["answer"]))


def closeness(row, answer):
    got = int(answer.rsplit(" ", 1)[-1])
    return 1.0 / (1 + abs(got - row["answer"]))


def hangs(row, answer):
    if row["id"] in ("p1", "p3"):
        time.sleep(60)
    return True


def slow(row, answer):
    time.sleep(0.1)
    return answer.rstrip().endswith(str(row["answer"]))


def raises(row, answer):
    if row["id"] == "p2":
        raise ValueError("checker bug on " + row["id"])
    return True
"""


@pytest.fixture
def checkers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "my_checks.py").write_text(CHECKERS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_python_checker_judges_and_scores(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path, checkers: Path
) -> None:
    asyncio.run(run_job(_job(arith, problems, server, tmp_path, verify="python:my_checks:right")))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    gold = {json.loads(line)["id"]: json.loads(line)["answer"] for line in problems.open()}
    for row in ds:
        for v in row["verdicts"]:
            assert (v["status"] == "pass") == (_stated(v["text"]) == gold[row["id"]])
    asyncio.run(
        run_job(
            _job(
                arith,
                problems,
                server,
                tmp_path,
                keep="best",
                verify="python:my_checks:closeness",
                out=tmp_path / "best",
                export=ExportOptions(kind="sft"),
            )
        )
    )
    best = datasets.load_from_disk(str(tmp_path / "best"))
    # every answer scores above 0, so each row keeps one: its closest answer (the first
    # of equals)
    assert len(best) == ROWS
    texts = {r["id"]: [v["text"] for v in r["verdicts"]] for r in ds}
    for row in best:
        distances = [abs(_stated(t) - gold[row["id"]]) for t in texts[row["id"]]]
        assert row["sample"] == distances.index(min(distances))
        assert row["completion"][0]["content"] == texts[row["id"]][row["sample"]]
    assert all(v["score"] is not None for r in ds for v in r["verdicts"])


def test_a_hanging_or_raising_checker_costs_its_answers_never_the_run(
    arith: Path, tmp_path: Path, checkers: Path
) -> None:
    problems = _write_input(tmp_path, rows=5)
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=1.0))) as srv:
        hung = asyncio.run(
            run_job(
                _job(
                    arith,
                    problems,
                    srv,
                    tmp_path,
                    verify_timeout=0.5,
                    verify="python:my_checks:hangs",
                    teacher_options={"samples": 1},
                )
            )
        )
        raised = asyncio.run(
            run_job(
                _job(
                    arith,
                    problems,
                    srv,
                    tmp_path,
                    verify="python:my_checks:raises",
                    out=tmp_path / "raised",
                    teacher_options={"samples": 1},
                )
            )
        )
    assert hung.summary.verification["verdicts"] == {"pass": 3, "timeout": 2}
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    timed = {r["id"] for r in ds if r["verdicts"][0]["status"] == "timeout"}
    assert timed == {"p1", "p3"}
    assert raised.summary.verification["verdicts"] == {"error": 1, "pass": 4}
    ds = datasets.load_from_disk(str(tmp_path / "raised"))
    [broken] = [r for r in ds if r["verdicts"][0]["status"] == "error"]
    assert broken["id"] == "p2"
    assert "ValueError: checker bug on p2" in broken["verdicts"][0]["detail"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labeler.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_bad_verify_input_is_one_line_and_pays_nothing(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path, checkers: Path
) -> None:
    base = [
        "run",
        str(arith),
        str(problems),
        "--teacher",
        ANTHROPIC,
        "--base-url",
        server.url,
        "--store",
        str(tmp_path / "s.sqlite"),
        "--out",
        str(tmp_path / "o"),
    ]
    env_key = {"ANTHROPIC_API_KEY": "k"}
    import os

    os.environ.update(env_key)
    try:
        cases = {
            "exact:nosuchfield": (f"{problems}:1 (row 'p0') has no field 'nosuchfield'",),
            "python:no_such_module:check": ("no module named 'no_such_module'",),
            "python:my_checks:missing": ("could not be imported", "AttributeError"),
            "numeric:answer:wide": ("tolerance 'wide' is not a number",),
            "regex:(": ("not a regular expression",),
            "bogus:x": ("unknown kind 'bogus'",),
            "json-schema": ("needs a template with output.schema",),
            "regex:'unclosed": ("unclosed quote",),
        }
        for spec, needles in cases.items():
            done = _cli(*base, "--verify", spec, cwd=tmp_path)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 1 and len(lines) == 1, (spec, done.stderr)
            assert all(n in lines[0] for n in needles), (spec, lines)
        from_stdin = [a if a != str(problems) else "-" for a in base]
        done = subprocess.run(
            [sys.executable, "-m", "labeler.cli", *from_stdin, "--verify", "exact:nosuch"],
            cwd=tmp_path,
            input=problems.read_text(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1 and done.stderr.strip().splitlines() == [
            "labeler: error: --verify exact:nosuch: <stdin>:1 (row 'p0') has no field "
            "'nosuch' (it has: id, question, answer, gold)"
        ], done.stderr
        done = _cli(*base, "--kind", "preference", cwd=tmp_path)
        assert done.returncode == 1 and done.stderr.strip().splitlines() == [
            "labeler: error: --kind preference needs --verify SPEC (a pair is a verified "
            "answer and a failed one of the same row)"
        ]
        done = _cli(*base, "--keep", "none", "--verify", "exact:gold", cwd=tmp_path)
        assert done.returncode == 1 and "--keep 'none'" in done.stderr
    finally:
        os.environ.pop("ANTHROPIC_API_KEY", None)
    assert len(server.log) == 0


def test_export_rechecks_with_another_verifier_from_the_store(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path
) -> None:
    asyncio.run(run_job(_job(arith, problems, server, tmp_path, out=None)))
    sent = len(server.log)
    import os

    os.environ["ANTHROPIC_API_KEY"] = "k"
    try:
        done = _cli(
            "export",
            str(arith),
            str(problems),
            "--teacher",
            ANTHROPIC,
            "--base-url",
            server.url,
            "--samples",
            str(SAMPLES),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--out",
            str(tmp_path / "pref"),
            "--kind",
            "preference",
            "--verify",
            "regex:Answer: (\\d+),numeric:answer",
            cwd=tmp_path,
        )
    finally:
        os.environ.pop("ANTHROPIC_API_KEY", None)
    assert done.returncode == 0, done.stderr
    assert len(server.log) == sent
    assert "pass@4" in done.stderr and f"of {ROWS} rows" in done.stderr
    ds = datasets.load_from_disk(str(tmp_path / "pref"))
    assert set(ds.column_names) == {"id", "prompt", "chosen", "rejected", "chosen_sample", "rejected_sample"}


def test_one_answer_per_row_is_verified_from_the_text(arith: Path, problems: Path, tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv:
        result = asyncio.run(
            run_job(
                Job(
                    task=arith,
                    input=problems,
                    teacher="openai-compatible:m",
                    base_url=srv.url + "/v1",
                    store=tmp_path / "s.sqlite",
                    out=tmp_path / "out",
                    progress=False,
                    verify="numeric:answer",
                    export=ExportOptions(kind="sft"),
                )
            )
        )
    v = result.summary.verification
    assert v["answers"] == ROWS and v["samples"] == 1
    assert v["pass@1"] == v["pass@N"] == v["pass_rate"]
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(ds) == v["passed"] and set(ds["sample"]) <= {0}


@pytest.mark.slow
def test_kill_9_while_checking_resumes_without_the_teacher_or_checking_twice(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path, checkers: Path
) -> None:
    import os
    import signal
    import time

    store = tmp_path / "s.sqlite"
    args = [
        sys.executable,
        "-m",
        "labeler.cli",
        "run",
        str(arith),
        str(problems),
        "--teacher",
        ANTHROPIC,
        "--base-url",
        server.url,
        "--samples",
        str(SAMPLES),
        "--store",
        str(store),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--json",
        "--verify",
        "python:my_checks:slow",
    ]
    env = {**os.environ, "ANTHROPIC_API_KEY": "k"}
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def stored_verdicts() -> int:
        if not store.exists():
            return 0
        try:
            with sqlite3.connect(store) as db:
                return db.execute("SELECT count(*) FROM verdicts").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0

    deadline = time.monotonic() + 60
    while stored_verdicts() < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    before = stored_verdicts()
    assert 8 <= before < ROWS * SAMPLES
    sent = _messages(server)
    assert sent == ROWS * SAMPLES  # every answer was paid and stored before checking
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _messages(server) == sent
    v = json.loads(done.stdout.splitlines()[-1])["verification"]
    assert v["cached"] == before and v["checked"] == ROWS * SAMPLES - before
    assert stored_verdicts() == ROWS * SAMPLES
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == ROWS


def test_input_from_stdin_is_verified_and_labeled(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path
) -> None:
    import os

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "labeler.cli",
            "run",
            str(arith),
            "-",
            "--teacher",
            ANTHROPIC,
            "--base-url",
            server.url,
            "--samples",
            "2",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--json",
            "--quiet",
            "--verify",
            "exact:gold",
        ],
        cwd=tmp_path,
        input=problems.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ANTHROPIC_API_KEY": "k"},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["labeled"] == ROWS and summary["verification"]["answers"] == 2 * ROWS


def test_a_regex_alone_checks_that_it_matches_and_a_tolerance_widens_numeric(
    arith: Path, problems: Path, server: TeacherServer, tmp_path: Path
) -> None:
    from labeler.job import export_job

    asyncio.run(run_job(_job(arith, problems, server, tmp_path, out=None)))
    sent = _messages(server)
    for spec, passing in [
        (r"regex:Answer: (\d+)$", ROWS * SAMPLES),
        ("regex:Answer: none", 0),
        ("numeric:answer:9", ROWS * SAMPLES),  # wrong ones are off by 1-9
        ("numeric:answer:0.5", None),
    ]:
        out = tmp_path / f"out-{len(spec)}"
        report = export_job(_job(arith, problems, server, tmp_path, out=out, verify=spec))
        assert report.verification["answers"] == ROWS * SAMPLES
        ds = datasets.load_from_disk(str(out))
        verdicts = [v for r in ds for v in r["verdicts"]]
        if passing is not None:
            assert report.verification["passed"] == passing, spec
        else:  # within half a unit is exact for whole numbers
            assert all(
                (v["status"] == "pass") == (_stated(v["text"]) == gold)
                for r in ds
                for v in r["verdicts"]
                for gold in [
                    next(json.loads(x)["answer"] for x in problems.open() if json.loads(x)["id"] == r["id"])
                ]
            )
        if spec.startswith("regex:Answer: (\\d+)"):
            assert all(v["detail"] == str(_stated(v["text"])) for v in verdicts)
    assert _messages(server) == sent
