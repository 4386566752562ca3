"""API keys never land anywhere a run writes: store, WAL, rejects, export, card, logs.

Each test runs with a recognisable fake key against a server that demands it, then reads
every byte the run left behind. Templates render in a Jinja2 sandbox (tests/test_task.py).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from procs import LABELER, LocalServer, write_items

from labeler.cli import main
from labeler.store import Store


def _fake_key(tag: str) -> str:
    return f"sk-labeler-{tag}-{secrets.token_hex(12)}"


def _leaks(root: Path, key: str, skip: set[Path]) -> list[str]:
    """Every file under `root` (hidden ones, WAL and lock files included) holding `key`."""
    needle = key.encode()
    found = []
    for path in sorted(root.rglob("*")):
        if path in skip or not path.is_file():
            continue
        data = path.read_bytes()
        if needle in data or key.encode("utf-16-le") in data:
            found.append(str(path))
    return found


def _key_file(path: Path, key: str) -> Path:
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def test_key_from_a_file_or_the_environment_is_written_nowhere(tmp_path: Path) -> None:
    key, wrong = _fake_key("LEAKCHECK"), _fake_key("WRONGKEY")
    key_file = _key_file(tmp_path / "secret.key", key)
    wrong_file = _key_file(tmp_path / "wrong.key", wrong)
    data = write_items(tmp_path / "in.jsonl", 30)
    data.write_text(data.read_text() + "{broken json\n")  # something for the rejects file
    store = tmp_path / "s.sqlite"
    Store(store).close()
    # A reader holding the store open keeps the WAL and its index on disk after the run.
    reader = sqlite3.connect(store)
    reader.execute("SELECT count(*) FROM responses").fetchone()
    outputs = []
    runner = CliRunner()
    with LocalServer(labels=["negative", "positive"], api_key=key) as srv:
        base = [
            "run",
            "sentiment",
            str(data),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            srv.api,
            "--store",
            str(store),
            "--quiet",
        ]
        # A wrong key first: the 401s are stored as failures, with the server's message.
        bad = runner.invoke(
            main, [*base, "--api-key-file", str(wrong_file), "--max-attempts", "1", "--limit", "3"]
        )
        assert bad.exit_code == 7, bad.output  # every row failed: nothing labeled
        outputs.append(bad.output)
        # The right key, in a process of its own so that all it prints is seen.
        good = subprocess.run(
            [
                *LABELER,
                *base,
                "--api-key-file",
                str(key_file),
                "--retry-failed",
                "--out",
                str(tmp_path / "out"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert good.returncode == 0, good.stderr
        assert json.loads(good.stdout)["labeled"] == 30
        outputs += [good.stdout, good.stderr]
        # The key from the environment, into another export kind and format.
        env_run = runner.invoke(
            main,
            [*base, "--out", str(tmp_path / "out2"), "--kind", "sft", "--format", "jsonl"],
            env={"OPENAI_API_KEY": key},
        )
        assert env_run.exit_code == 0, env_run.output
        outputs.append(env_run.output)
        assert srv.server.stats()["by_status"].get("401") == 3  # the wrong key was really sent
    assert Path(f"{store}-wal").exists() and (tmp_path / "out.rejects.jsonl").exists()
    assert (tmp_path / "out" / "README.md").exists()
    skip = {key_file, wrong_file}
    for secret in (key, wrong):
        assert _leaks(tmp_path, secret, skip) == []
        assert not [o for o in outputs if secret in o]
    reader.close()
    with Store(store) as st:
        assert st.stats()["responses"] == 30  # the runs really wrote what was searched


def test_refresh_with_api_key_file_writes_the_key_nowhere(tmp_path: Path) -> None:
    key = _fake_key("REFRESHLEAK")
    _key_file(tmp_path / "openai.key", key)
    write_items(tmp_path / "in.jsonl", 10)
    with LocalServer(labels=["negative", "positive"], api_key=key) as srv:
        config = tmp_path / "refresh.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "task": "sentiment",
                    "input": "in.jsonl",
                    "teacher": "openai-compatible:teacher-test",
                    "base_url": srv.api,
                    "api_key_file": "openai.key",
                    "store": "s.sqlite",
                    "out": "ds",
                }
            )
        )
        res = CliRunner().invoke(main, ["refresh", str(config)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["labeled"] == 10
    assert _leaks(tmp_path, key, {tmp_path / "openai.key"}) == []
    assert key not in res.output


def test_a_readable_key_file_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    key = _fake_key("OPEN")
    key_file = tmp_path / "k"
    key_file.write_text(key)
    key_file.chmod(0o640)
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(write_items(tmp_path / "in.jsonl", 1)),
            "--teacher",
            "openai-compatible:m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--api-key-file",
            str(key_file),
        ],
    )
    assert res.exit_code == 1
    assert "must not be readable by others (chmod 600" in res.output and key not in res.output


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ],
)
def test_templates_cannot_reach_python(tmp_path: Path, source: str) -> None:
    from labeler.errors import TemplateError
    from labeler.task import task_from_dict

    task = task_from_dict({"name": "evil", "user": source + " {{ text }}"}, "evil.yaml")
    with pytest.raises(TemplateError, match=r"evil\.yaml"):
        task.render({"text": "x"}, row_id="1")


ECHOING_TEACHERS = [
    ("openai-compatible:teacher-test", "lean"),
    ("openai-compatible:teacher-test", "aiohttp"),
    ("anthropic:claude-haiku-4-5", None),
]


@pytest.mark.parametrize(("teacher", "transport"), ECHOING_TEACHERS)
def test_a_server_that_quotes_the_key_back_leaks_it_nowhere(
    tmp_path: Path, teacher: str, transport: str | None
) -> None:
    """Some gateways answer 401 with "Incorrect API key provided: Bearer sk-...": the
    message is kept (it says what is wrong), the key in it is not."""
    right, wrong = _fake_key("RIGHT"), _fake_key("QUOTED")
    wrong_file = _key_file(tmp_path / "wrong.key", wrong)
    data, store = write_items(tmp_path / "in.jsonl", 3), tmp_path / "s.sqlite"
    runner = CliRunner()
    env = {"LABELER_TRANSPORT": transport} if transport else {}
    with LocalServer(labels=["negative", "positive"], api_key=right, echo_key=True) as srv:
        base_url = srv.url if teacher.startswith("anthropic:") else srv.api
        args = [
            "run",
            "sentiment",
            str(data),
            "--teacher",
            teacher,
            "--base-url",
            base_url,
            "--store",
            str(store),
            "--quiet",
            "--max-attempts",
            "1",
            "--api-key-file",
            str(wrong_file),
            "--out",
            str(tmp_path / "out"),
        ]
        text = runner.invoke(main, args, env=env)
        as_json = runner.invoke(main, [*args, "--json", "--retry-failed"], env=env)
        assert srv.server.stats()["by_status"].get("401", 0) >= 6  # the server did quote it
    stats = runner.invoke(main, ["stats", "--store", str(store), "--json"])
    # every row failed: nothing labeled, exit 7
    assert text.exit_code == 7 and as_json.exit_code == 7, text.output + as_json.output
    assert "Incorrect API key provided: " in text.output  # the reason survives...
    assert "[redacted]" in text.output  # ...with the key masked
    assert json.loads(stats.stdout)["failures_by_reason"] == {"http_401": 3}
    for output in (text.output, as_json.output, stats.output):
        assert wrong not in output and right not in output
    assert _leaks(tmp_path, wrong, {wrong_file}) == []
    with sqlite3.connect(store) as db:
        messages = [m for (m,) in db.execute("SELECT message FROM failures")]
    assert len(messages) == 3 and all("[redacted]" in m for m in messages)


def test_a_batch_submission_refused_with_the_key_quoted_leaks_it_nowhere(tmp_path: Path) -> None:
    right, wrong = _fake_key("RIGHT"), _fake_key("BATCHQUOTED")
    wrong_file = _key_file(tmp_path / "wrong.key", wrong)
    data, store = write_items(tmp_path / "in.jsonl", 3), tmp_path / "s.sqlite"
    with LocalServer(labels=["negative", "positive"], api_key=right, echo_key=True) as srv:
        res = CliRunner().invoke(
            main,
            [
                "run",
                "sentiment",
                str(data),
                "--teacher",
                "anthropic:claude-haiku-4-5",
                "--base-url",
                srv.url,
                "--store",
                str(store),
                "--quiet",
                "--batch",
                "--api-key-file",
                str(wrong_file),
                "--out",
                str(tmp_path / "out"),
            ],
        )
        assert srv.server.stats()["by_status"].get("401", 0) >= 1
    assert res.exit_code != 0
    assert "Incorrect API key provided" in res.output and wrong not in res.output, res.output
    assert _leaks(tmp_path, wrong, {wrong_file}) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Incorrect API key provided: Bearer abc.def-123", "Incorrect API key provided: Bearer [redacted]"),
        ("Incorrect API key provided: sk-proj-AbC123xyz789", "Incorrect API key provided: [redacted]"),
        ("invalid x-api-key: sk-ant-api03-Zz_9-qq", "invalid x-api-key: [redacted]"),
        ("x-api-key: opaque-token-42", "x-api-key: [redacted]"),
        ("x-api-key header is required", "x-api-key header is required"),
        (
            "api_key: a key does not belong in a config file",
            "api_key: a key does not belong in a config file",
        ),
    ],
)
def test_credential_shapes_are_masked_and_nothing_else(text: str, expected: str) -> None:
    from labeler.redact import redact

    assert redact(text) == expected
    assert redact(expected) == expected


def test_a_configured_key_of_any_shape_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from labeler.errors import FinalError
    from labeler.redact import remember

    remember("plain-gateway-token-7f3a")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "another-opaque-token-19")
    err = FinalError("http_401", "token plain-gateway-token-7f3a / another-opaque-token-19 refused")
    assert err.message == "token [redacted] / [redacted] refused"
    assert "gateway-token" not in str(err)


def test_a_key_quoted_in_a_200_answer_is_neither_stored_nor_exported(tmp_path: Path) -> None:
    """Some gateways put the request's credential into the answer itself; labeler masks
    the configured key in the answer text before it is committed, so neither the store nor
    the export holds it."""
    from labeler.testing import Reply, ScriptedResponder

    key = _fake_key("INANSWER")
    key_file = _key_file(tmp_path / "secret.key", key)
    data = write_items(tmp_path / "in.jsonl", 5)
    template = tmp_path / "summary.yaml"
    template.write_text(
        'name: summary\nuser: "Summarise: {{ text }}"\noutput: {kind: text}\nparams: {max_tokens: 200}\n'
    )
    quoting = ScriptedResponder(
        [], default=lambda view: Reply(text=f"positive (authorized as Bearer {key}; key={key})")
    )
    with LocalServer(api_key=key, responder=quoting) as srv:
        res = CliRunner().invoke(
            main,
            [
                "run",
                str(template),
                str(data),
                "--teacher",
                "openai-compatible:teacher-test",
                "--base-url",
                srv.api,
                "--store",
                str(tmp_path / "s.sqlite"),
                "--quiet",
                "--api-key-file",
                str(key_file),
                "--out",
                str(tmp_path / "out"),
                "--format",
                "jsonl",
                "--kind",
                "sft",
            ],
        )
    assert res.exit_code == 0, res.output
    assert _leaks(tmp_path, key, {key_file}) == []
    exported = "".join(f.read_text() for f in (tmp_path / "out").rglob("*.jsonl"))
    assert exported.count("[redacted]") >= 5, exported[:500]
    with Store(tmp_path / "s.sqlite") as st:
        texts = st.execute_read(lambda db: [r[0] for r in db.execute("SELECT text FROM responses")])
    assert len(texts) == 5 and all("[redacted]" in t and "positive" in t for t in texts)


def test_a_batch_of_answers_reads_the_configured_keys_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The configured keys are masked in every stored answer, but read (the environment
    looked up) once per committed batch: read per answer, the look-up cost more than the
    masking of a short label answer, on every row of a run."""
    from labeler import redact
    from labeler.completion import Completion

    key = _fake_key("BATCHED")
    redact.remember(key)
    reads: list[int] = []
    real = redact._secrets

    def counted() -> list[str]:
        reads.append(1)
        return real()

    monkeypatch.setattr(redact, "_secrets", counted)
    answers = [(f"k{i}", Completion(text="positive"), None) for i in range(50)]
    answers.append(("quoting", Completion(text=f"positive, key={key}", samples=[key, "no"]), None))
    with Store(tmp_path / "s.sqlite") as st:
        st.put_many(answers)
        stored = dict(st.execute_read(lambda db: list(db.execute("SELECT key, text FROM responses"))))
        quoting = st.get("quoting")
    assert len(reads) == 1
    assert stored["quoting"] == "positive, key=[redacted]" and stored["k7"] == "positive"
    assert quoting is not None and quoting.samples == ["[redacted]", "no"]


def test_a_key_with_a_trailing_newline_is_used_without_it(tmp_path: Path) -> None:
    """`export OPENAI_API_KEY=$(cat key)` keeps no newline, but a key pasted with one (or
    a file written by echo) does: the blanks around a key are not part of it. A key with a
    line break inside is two things pasted together: refused, without printing it."""
    key = _fake_key("NEWLINE")
    data = write_items(tmp_path / "in.jsonl", 3)
    with LocalServer(labels=["negative", "positive"], api_key=key) as srv:
        base = [
            "run",
            "sentiment",
            str(data),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            srv.api,
            "--store",
            str(tmp_path / "s.sqlite"),
            "--quiet",
        ]
        ok = CliRunner().invoke(main, base, env={"OPENAI_API_KEY": key + "\n"})
        assert ok.exit_code == 0, ok.output
        two = CliRunner().invoke(
            main,
            [*base, "--retry-failed", "--max-age-days", "0"],
            env={"OPENAI_API_KEY": f"{key}\nexport OTHER=1"},
        )
    assert two.exit_code == 1 and "Traceback" not in two.output
    assert two.stderr.splitlines() == [two.stderr.strip()]
    assert "OPENAI_API_KEY" in two.stderr and key not in two.output
