"""Every command, given a bad flag or a bad file, says so in one line on stderr and exits 1
before anything is sent: no traceback, no silent default, no guard quietly switched off.

One table, one row per (command, bad input): numbers that are not finite or out of range,
field names no row has, flags without the flag they belong with, files that are not what
they claim (a foreign SQLite file as the store, a calibration that is not UTF-8, a
template whose numbers have the wrong type, a YAML alias bomb, a device as few-shot pool),
and secrets where a config or URL must not hold them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from labeler.cli import main
from labeler.testing import ServerConfig, TeacherServer

SECRET = "sk-proj-door0123456789abcdefSECRET"

TEMPLATE = """\
name: picky
version: "1"
user: "Review: {{ text }}"
fields: [text]
output: {kind: label, labels: [negative, positive]}
"""

# Nine levels of ten aliases each: a billion values in a few hundred bytes, under a key
# whose value a template sends with every request.
BOMB_VALUE = (
    "{a: &a [x, x, x, x, x, x, x, x, x, x], "
    + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}], " for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "}"
)
BOMB = TEMPLATE + f"params: {{metadata: {BOMB_VALUE}}}\n"


ROWS = [{"id": f"r{i}", "text": f"review {i}", "gold": "positive"} for i in range(3)]


@pytest.fixture(scope="module")
def server() -> Iterator[TeacherServer]:
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        yield srv


@pytest.fixture(scope="module")
def labeled(server: TeacherServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the answers to ROWS, so that eval, export and review have something
    to work on and a bad flag is the only thing wrong."""
    root = tmp_path_factory.mktemp("labeled")
    data = root / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    store = root / "s.sqlite"
    res = CliRunner().invoke(
        main,
        [
            "run",
            "sentiment",
            str(data),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            server.url + "/v1",
            "--store",
            str(store),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    return store


class Files:
    """The inputs a table row may name, written under one folder."""

    def __init__(self, root: Path, api: str, labeled: Path) -> None:
        self.root = root
        self.api = api
        self.data = self._write("in.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS))
        self.store = root / "s.sqlite"
        shutil.copy(labeled, self.store)
        self.foreign = root / "foreign.sqlite"
        db = sqlite3.connect(self.foreign)
        db.execute("CREATE TABLE users (name TEXT)")
        db.commit()
        db.close()
        self.not_sqlite = self._write("notes.sqlite", "these are my notes, not a database\n" * 20)
        calibration = {
            "format": "labeler-calibration/1",
            "labels": ["negative", "positive"],
            "temperature": float("nan"),
            "method": "temperature",
        }
        self.calib_nan = self._write("nan.json", json.dumps(calibration))
        calibration.update(temperature=1.0, method="bias", bias=[0.0, float("nan")])
        self.calib_bias_nan = self._write("bias.json", json.dumps(calibration))
        self.calib_latin1 = root / "latin1.json"
        self.calib_latin1.write_bytes(b'{"format": "caf\xe9"}')
        self.calib_deep = self._write("deep.json", "[" * 200_000 + "]" * 200_000)
        self.t_ten = self._write("ten.yaml", TEMPLATE + 'params: {max_tokens: "ten"}\n')
        self.t_temp = self._write("temp.yaml", TEMPLATE + "params: {temperature: .nan}\n")
        self.t_bomb = self._write("bomb.yaml", BOMB)
        self.t_loop = self._write(
            "loop.yaml",
            TEMPLATE.replace(
                "Review: {{ text }}",
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ text }}",
            ),
        )
        self.t_mul = self._write(
            "mul.yaml", TEMPLATE.replace("Review: {{ text }}", "{{ 'x' * 100000000 }}{{ text }}")
        )
        self.t_pow = self._write(
            "pow.yaml", TEMPLATE.replace("Review: {{ text }}", "{{ (7 ** 999999999) % 10 }}{{ text }}")
        )
        self.t_stdin = self._write("stdin.yaml", TEMPLATE + "few_shot_pool: /dev/stdin\n")
        self.t_zero = self._write("zero.yaml", TEMPLATE + "few_shot_pool: /dev/zero\n")
        self.key = root / "key"
        self.key.write_text(f"{SECRET}\nsecond line\n")
        self.key.chmod(0o600)
        self.prices_nan = self._write(
            "prices.json", json.dumps({"models": {"teacher-test": {"input": "NaN", "output": 1}}})
        )

    def _write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def refresh(self, **keys: object) -> Path:
        """A refresh config that is good but for `keys`."""
        config = {
            "task": "sentiment",
            "input": str(self.data),
            "out": str(self.root / "ds"),
            "teacher": "openai-compatible:teacher-test",
            "base_url": self.api,
            "store": str(self.store),
            **keys,
        }
        path = self.root / "refresh.yaml"
        path.write_text(yaml.safe_dump(config))
        return path


Row = Callable[[Files], list[str]]


def _teacher(f: Files, *extra: str, store: Path | None = None) -> list[str]:
    return [
        "--teacher",
        "openai-compatible:teacher-test",
        "--base-url",
        f.api,
        "--store",
        str(store or f.store),
        *extra,
    ]


def _run(*extra: str, task: str = "sentiment") -> Row:
    return lambda f: ["run", task, str(f.data), *_teacher(f), "--quiet", "--out", str(f.root / "out"), *extra]


def _run_with(build: Callable[[Files], list[str]], task: str = "sentiment") -> Row:
    return lambda f: [
        "run",
        task,
        str(f.data),
        *_teacher(f),
        "--quiet",
        "--out",
        str(f.root / "out"),
        *build(f),
    ]


def _template(attr: str) -> Row:
    return lambda f: [
        "run",
        str(getattr(f, attr)),
        str(f.data),
        *_teacher(f),
        "--quiet",
        "--out",
        str(f.root / "out"),
    ]


def _cmd(name: str, *extra: str) -> Row:
    return lambda f: [name, "sentiment", str(f.data), *_teacher(f), *extra]


def _refresh(**keys: object) -> Row:
    return lambda f: ["refresh", str(f.refresh(**keys))]


TABLE: dict[str, tuple[Row, str]] = {
    # numbers: finite and in range
    "run --price NaN": (_run("--price", "teacher-test=nan,nan", "--budget", "0.001"), "--price"),
    "run --price negative": (_run("--price", "teacher-test=-1,-1", "--budget", "0.001"), "--price"),
    "run --price inf": (_run("--price", "teacher-test=inf,1"), "--price"),
    "run --prices file with NaN": (_run_with(lambda f: ["--prices", str(f.prices_nan)]), "teacher-test"),
    "run --budget nan": (_run("--budget", "nan"), "budget"),
    "run --budget inf": (_run("--budget", "inf"), "budget"),
    "run --rpm inf": (_run("--rpm", "inf"), "rpm"),
    "run --tpm nan": (_run("--tpm", "nan"), "tpm"),
    "run --request-timeout nan": (_run("--request-timeout", "nan"), "--request-timeout"),
    "run --request-timeout inf": (_run("--request-timeout", "inf"), "--request-timeout"),
    "run --stop-grace inf": (_run("--stop-grace", "inf"), "--stop-grace"),
    "run --max-age-days nan": (_run("--max-age-days", "nan"), "--max-age-days"),
    "run --min-confidence nan": (_run("--min-confidence", "nan"), "--min-confidence"),
    "run --escalate-below nan": (
        _run("--cascade", "openai-compatible:a,openai-compatible:b", "--escalate-below", "nan"),
        "--escalate-below",
    ),
    "estimate --price NaN": (_cmd("estimate", "--price", "teacher-test=nan,1"), "--price"),
    "estimate --escalation-rate nan": (
        _cmd(
            "estimate",
            "--cascade",
            "openai-compatible:a,openai-compatible:b",
            "--escalate-below",
            "0.9",
            "--escalation-rate",
            "nan",
        ),
        "--escalation-rate",
    ),
    "eval --fit-fraction nan": (
        _cmd("eval", "--gold", "gold", "--calibrate", "temperature", "--fit-fraction", "nan"),
        "fit-fraction",
    ),
    "eval --fit-fraction 2": (
        _cmd("eval", "--gold", "gold", "--calibrate", "temperature", "--fit-fraction", "2"),
        "fit-fraction",
    ),
    "eval --target-accuracy nan": (_cmd("eval", "--gold", "gold", "--target-accuracy", "nan"), "target"),
    "review --port 99999": (_cmd("review", "--port", "99999", "--no-browser"), "--port"),
    "review --port -1": (_cmd("review", "--port", "-1", "--no-browser"), "--port"),
    # field names checked against the rows
    "run --text-field misspelt": (_run("--kind", "classification", "--text-field", "txet"), "txet"),
    "run --split-field misspelt": (_run("--split-field", "splt"), "splt"),
    "export --text-field misspelt": (
        lambda f: [
            "export",
            "sentiment",
            str(f.data),
            *_teacher(f),
            "--out",
            str(f.root / "out"),
            "--kind",
            "classification",
            "--text-field",
            "txet",
        ],
        "txet",
    ),
    "eval --gold misspelt": (_cmd("eval", "--gold", "glod"), "glod"),
    # flags without their partner
    "run --public without --push-to-hub": (_run("--public"), "--push-to-hub"),
    "run --escalate-below without --cascade": (_run("--escalate-below", "0.9"), "--cascade"),
    "run --escalate-on without --cascade": (_run("--escalate-on", "margin"), "--cascade"),
    "run --ensemble-combine without --ensemble": (_run("--ensemble-combine", "product"), "--ensemble"),
    "run --sft-shape without --kind sft": (_run("--sft-shape", "messages"), "--kind sft"),
    "run --kd-layout without --kind kd": (_run("--kd-layout", "ids"), "--kind kd"),
    "run --text-field without --kind classification": (_run("--text-field", "text"), "--kind classification"),
    "run --include-awaiting-human without a human stage": (_run("--include-awaiting-human"), "human"),
    "run --delimiter with JSONL input": (_run("--delimiter", ";"), "delimiter"),
    "run --split with JSONL input": (_run("--split", "train"), "split"),
    "eval --fit-fraction without --calibrate": (
        _cmd("eval", "--gold", "gold", "--fit-fraction", "0.5"),
        "--calibrate",
    ),
    "estimate --escalation-rate without --cascade": (
        _cmd("estimate", "--escalation-rate", "0.3"),
        "--cascade",
    ),
    # the store: a labeler store or nothing
    "run --store foreign SQLite": (
        lambda f: ["run", "sentiment", str(f.data), *_teacher(f, store=f.foreign), "--quiet"],
        "not a labeler store",
    ),
    "run --store not SQLite": (
        lambda f: ["run", "sentiment", str(f.data), *_teacher(f, store=f.not_sqlite), "--quiet"],
        "not a SQLite file",
    ),
    "stats --store foreign SQLite": (lambda f: ["stats", "--store", str(f.foreign)], "not a labeler store"),
    "export --store foreign SQLite": (
        lambda f: [
            "export",
            "sentiment",
            str(f.data),
            *_teacher(f, store=f.foreign),
            "--out",
            str(f.root / "out"),
        ],
        "not a labeler store",
    ),
    "merge-stores foreign source": (
        lambda f: ["merge-stores", str(f.root / "m.sqlite"), str(f.foreign)],
        "not a labeler store",
    ),
    "merge-stores foreign dest": (
        lambda f: ["merge-stores", str(f.foreign), str(f.store)],
        "not a labeler store",
    ),
    "batches --store not SQLite": (lambda f: ["batches", "--store", str(f.not_sqlite)], "not a SQLite file"),
    "forget-refusals --store not SQLite": (
        lambda f: ["forget-refusals", "--store", str(f.not_sqlite)],
        "not a SQLite file",
    ),
    "forget-refusals --store missing": (
        lambda f: ["forget-refusals", "--store", str(f.root / "none.sqlite")],
        "none.sqlite",
    ),
    "forget-refusals --teacher without a model": (
        lambda f: ["forget-refusals", "--store", str(f.store), "--teacher", "nocolon"],
        "--teacher",
    ),
    "compare one teacher": (
        lambda f: [
            "compare",
            "sentiment",
            str(f.data),
            "-t",
            f"openai-compatible:teacher-test@{f.api}",
            "--store",
            str(f.store),
        ],
        "two teachers",
    ),
    "compare --store foreign SQLite": (
        lambda f: [
            "compare",
            "sentiment",
            str(f.data),
            "-t",
            f"openai-compatible:a@{f.api}",
            "-t",
            f"openai-compatible:b@{f.api}",
            "--store",
            str(f.foreign),
        ],
        "not a labeler store",
    ),
    # files that are not what they claim
    "run --rejects under a file": (
        _run_with(lambda f: ["--rejects", str(f.data / "r.jsonl")], task="sentiment"),
        "rejects",
    ),
    "run --rejects a folder": (_run_with(lambda f: ["--rejects", str(f.root)]), "--rejects"),
    "run --calibration not UTF-8": (_run_with(lambda f: ["--calibration", str(f.calib_latin1)]), "UTF-8"),
    "run --calibration deeply nested": (
        _run_with(lambda f: ["--calibration", str(f.calib_deep)]),
        "deep.json",
    ),
    "run --calibration NaN": (_run_with(lambda f: ["--calibration", str(f.calib_nan)]), "temperature"),
    "run --calibration bias NaN": (_run_with(lambda f: ["--calibration", str(f.calib_bias_nan)]), "bias"),
    "export --calibration bias NaN": (
        lambda f: [
            "export",
            "sentiment",
            str(f.data),
            *_teacher(f),
            "--out",
            str(f.root / "out"),
            "--calibration",
            str(f.calib_bias_nan),
        ],
        "bias",
    ),
    "eval --calibration NaN": (
        lambda f: [
            "eval",
            "sentiment",
            str(f.data),
            *_teacher(f),
            "--gold",
            "gold",
            "--calibration",
            str(f.calib_nan),
        ],
        "temperature",
    ),
    "template max_tokens 'ten'": (_template("t_ten"), "max_tokens"),
    "template temperature NaN": (_template("t_temp"), "temperature"),
    "template YAML alias bomb": (_template("t_bomb"), "bomb.yaml"),
    "template loops without end": (_template("t_loop"), "loop.yaml"),
    "template multiplies a string huge": (_template("t_mul"), "mul.yaml"),
    "template raises to a huge power": (_template("t_pow"), "pow.yaml"),
    "template pool at /dev/stdin": (_template("t_stdin"), "/dev/stdin"),
    "template pool at /dev/zero": (_template("t_zero"), "/dev/zero"),
    "estimate template max_tokens 'ten'": (
        lambda f: ["estimate", str(f.t_ten), str(f.data), *_teacher(f)],
        "max_tokens",
    ),
    # secrets and URLs
    "run --base-url with user:pass@": (
        lambda f: [
            "run",
            "sentiment",
            str(f.data),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            f.api.replace("http://", f"http://user:{SECRET}@"),
            "--store",
            str(f.store),
            "--quiet",
        ],
        "base URL",
    ),
    "run --api-key-file with two lines": (_run_with(lambda f: ["--api-key-file", str(f.key)]), "key"),
    # refresh configs
    "refresh unknown teacher option": (_refresh(teacher_options={"tiemout": 5}), "tiemout"),
    "refresh negative teacher option": (_refresh(teacher_options={"timeout": -1}), "timeout"),
    "refresh NaN teacher option": (_refresh(teacher_options={"timeout": float("nan")}), "timeout"),
    "refresh key in teacher_options": (_refresh(teacher_options={"api_key": SECRET}), "api_key"),
    "refresh key in a header": (
        _refresh(teacher_options={"extra_headers": {"Authorization": f"Bearer {SECRET}"}}),
        "Authorization",
    ),
    "refresh base_url with user:pass@": (
        lambda f: ["refresh", str(f.refresh(base_url=f.api.replace("http://", f"http://user:{SECRET}@")))],
        "base_url",
    ),
    "refresh budget .nan": (_refresh(budget=float("nan")), "budget"),
    "refresh request_timeout .inf": (_refresh(request_timeout=float("inf")), "request_timeout"),
    "refresh text_field misspelt": (
        _refresh(export={"kind": "classification", "text_field": "txet"}),
        "txet",
    ),
    "refresh calibration NaN": (
        lambda f: ["refresh", str(f.refresh(export={"calibration": str(f.calib_nan)}))],
        "temperature",
    ),
    "refresh template alias bomb": (lambda f: ["refresh", str(f.refresh(task=str(f.t_bomb)))], "bomb.yaml"),
    "refresh config alias bomb": (
        lambda f: [
            "refresh",
            str(f._write("bomb.yaml", f.refresh().read_text() + f"teacher_options: {BOMB_VALUE}\n")),
        ],
        "bomb.yaml",
    ),
}


def _one_line(res: Result) -> str:
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert lines[0].startswith("labeler: error: "), lines[0]
    return lines[0]


class _Hung(Exception):
    pass


def _invoke(argv: list[str], seconds: int = 60) -> Result:
    """The command, stopped with a failure if it has not ended in `seconds` (a review page
    that listens, a template that loops)."""

    def hung(*_: object) -> None:
        raise _Hung(f"still running after {seconds}s: {argv}")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        return CliRunner().invoke(main, argv, input="", catch_exceptions=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("case", list(TABLE))
def test_each_bad_flag_or_file_is_one_line_exit_1_and_nothing_sent(
    case: str, tmp_path: Path, server: TeacherServer, labeled: Path
) -> None:
    files = Files(tmp_path, server.url + "/v1", labeled)
    before = len(server.log)
    row, named = TABLE[case]
    res = _invoke(row(files))
    line = _one_line(res)
    assert len(server.log) == before, f"{case}: sent {len(server.log) - before} requests"
    assert named in line, line
    assert SECRET not in res.output and SECRET[8:] not in res.output, res.output
    if case.startswith("refresh"):  # cron still gets its one JSON line, and it is JSON
        json.loads(res.stdout, parse_constant=_no_constant)
    else:
        assert not res.stdout, res.stdout


def _no_constant(name: str) -> None:
    raise AssertionError(f"not JSON: {name}")


def test_the_foreign_sqlite_file_is_left_as_it_was(
    tmp_path: Path, server: TeacherServer, labeled: Path
) -> None:
    files = Files(tmp_path, server.url + "/v1", labeled)
    before = files.foreign.read_bytes()
    for case in ("run --store foreign SQLite", "stats --store foreign SQLite", "merge-stores foreign dest"):
        res = CliRunner().invoke(main, TABLE[case][0](files))
        assert "not a labeler store" in _one_line(res)
    assert files.foreign.read_bytes() == before
    assert not Path(f"{files.foreign}-wal").exists()


def test_table_covers_every_command() -> None:
    commands = {case.split()[0] for case in TABLE}
    assert set(main.commands) - {"templates"} <= commands


@pytest.mark.parametrize("folder", ["runs#3", "what?mode=rw", "100%25"])
def test_a_store_path_is_a_path_not_a_uri(tmp_path: Path, labeled: Path, folder: str) -> None:
    """`stats` opens a store read-only and `merge-stores` reads its sources so: both
    through a URI, where '#', '?' and '%' mean something else."""
    store = tmp_path / folder / "labels.sqlite"
    store.parent.mkdir()
    shutil.copy(labeled, store)
    res = CliRunner().invoke(main, ["stats", "--store", str(store), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["responses"] == len(ROWS)
    merged = tmp_path / "merged.sqlite"
    res = CliRunner().invoke(main, ["merge-stores", str(merged), str(store)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["stats", "--store", str(merged), "--json"])
    assert json.loads(res.stdout)["responses"] == len(ROWS)


def test_rejects_on_a_full_disk_is_one_line_and_the_answers_stay(
    tmp_path: Path, server: TeacherServer, labeled: Path
) -> None:
    """The rejects file is written while the run goes on: a disk that fills up then stops
    the run with one line, and every answer stored so far stays stored."""
    from test_user_errors import _tmpfs

    files = Files(tmp_path, server.url + "/v1", labeled)
    with files.data.open("a") as f:
        f.write("{not json\n")
    with _tmpfs(tmp_path / "small", "size=64k") as small:
        with contextlib.suppress(OSError), (small / "filler").open("wb") as f:
            f.write(b"x" * (1 << 20))
        res = _invoke(_run_with(lambda f: ["--rejects", str(small / "r.jsonl")])(files))
    line = _one_line(res)
    assert f"{small / 'r.jsonl'}: cannot write the rejects file: No space left" in line


def test_a_named_field_is_checked_in_every_row_the_export_reads() -> None:
    """--text-field must be in each row (the first without it is named); --split-field
    only in some (the others go to train), but not in none."""
    from labeler.errors import ConfigError
    from labeler.inputs import Row
    from labeler.row_fields import require_fields

    rows = [
        Row("in.jsonl", 1, "a", {"text": "x", "split": "test"}),
        Row("in.jsonl", 2, "b", {"text": "y"}),
        Row("in.jsonl", 3, "c", {"txt": "z"}),
    ]
    assert len(list(require_fields(iter(rows[:2]), {"--split-field": "split"}))) == 2
    with pytest.raises(ConfigError, match=r"^--text-field 'text': in.jsonl:3 has no field"):
        list(require_fields(iter(rows), {"--text-field": "text"}))
    with pytest.raises(ConfigError, match=r"^--split-field 'part': no row of in.jsonl has"):
        list(require_fields(iter(rows), {"--split-field": "part"}))
