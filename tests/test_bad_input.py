"""Bad input never stops a run: each bad row is named as `file:line: reason`, kept in the
rejects file and counted, and every good row is still labeled.

Covers malformed JSONL, a CSV row missing a column, a CSV without a column the template
needs, bytes that are not UTF-8, empty text, a row far beyond the teacher's context (the
teacher's 400 becomes a stored failure with reason context_length), a repeated id, a
template that renders some rows to nothing, and a hypothesis fuzz of the renderer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeler.cli import main
from labeler.errors import TemplateError
from labeler.store import Store
from labeler.task import PROMPTS_DIR, load_task, task_from_dict
from labeler.testing import ServerConfig, TeacherServer

PICKY = """\
name: picky
version: "1"
system: Label the sentiment of the review.
user: "{% if lang == 'en' %}Review: {{ text }}{% endif %}"
fields: [text]
output: {kind: label, labels: [negative, positive]}
params: {temperature: 0, max_tokens: 2}
"""

LONG = " ".join(["endless"] * 3000)  # ~3,000 tokens; the teacher below takes 1,000


def _lines(*rows: bytes) -> bytes:
    return b"".join(r + b"\n" for r in rows)


def _run(server: TeacherServer, template: Path | str, data: Path, tmp_path: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        main,
        [
            "run",
            str(template),
            str(data),
            "--teacher",
            "openai-compatible:teacher-test",
            "--base-url",
            server.url + "/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--max-attempts",
            "2",
            *extra,
        ],
    )


def test_each_bad_row_is_named_kept_and_counted_and_the_rest_goes_on(tmp_path: Path) -> None:
    template = tmp_path / "picky.yaml"
    template.write_text(PICKY)
    data = tmp_path / "in.jsonl"
    data.write_bytes(
        _lines(
            b'{"id": "a1", "text": "lovely", "lang": "en"}',  # 1 good
            b'{"id": "a2", "text": "broken json", "lang": "en"',  # 2 malformed JSON
            b'{"id": "a3", "text": "caf\xe9", "lang": "en"}',  # 3 not UTF-8 (latin-1)
            b'{"id": "a4", "text": "  ", "lang": "en"}',  # 4 empty text
            json.dumps({"id": "a5", "text": LONG, "lang": "en"}).encode(),  # 5 too long
            b'{"id": "a1", "text": "same id again", "lang": "en"}',  # 6 duplicate id
            b'{"id": "a7", "text": "bonjour", "lang": "fr"}',  # 7 renders empty
            b'{"id": "a8", "text": "no language"}',  # 8 template field missing
            b'{"id": "a9", "text": "terrible", "lang": "en"}',  # 9 good
        )
    )
    with TeacherServer(ServerConfig(labels=["negative", "positive"], context_tokens=1000)) as srv:
        res = _run(srv, template, data, tmp_path, "--id-field", "id")
        sent = [r for r in srv.log if r.path.endswith("/chat/completions")]
    assert res.exit_code == 3, res.output  # partial: one row failed at the teacher
    err = res.stderr
    src = str(data)
    for line, reason in [
        (2, "invalid JSON"),
        (3, "not valid UTF-8 (byte 0xe9"),
        (4, "empty text in field 'text'"),
        (5, "failed (context_length)"),
        (6, "duplicate id 'a1' (first seen at line 1)"),
        (7, "renders to an empty prompt"),
        (8, "'lang' is undefined"),
    ]:
        assert any(
            ln.split("labeler: warning: ")[-1].startswith(f"{src}:{line}: ") and reason in ln
            for ln in err.splitlines()
        ), f"no '{src}:{line}: ...{reason}' in:\n{err}"
    assert "9 rows, 2 labeled, 0 cached, 1 failed, 6 rejected" in err
    assert "failed 1 × context_length (prompt too long for the server's context)" in err

    rejects = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [2, 3, 4, 5, 6, 7, 8]
    long_row = next(r for r in rejects if r["line"] == 5)
    assert long_row["reason"].startswith("context_length: ") and json.loads(long_row["raw"])["id"] == "a5"
    # The too-long row was sent once (a final error is not retried) and stored as failed.
    assert len(sent) == 3 and sum(1 for r in sent if r.status == 400) == 1
    with Store(tmp_path / "s.sqlite") as st:
        assert st.stats()["failures_by_reason"] == {"context_length": 1}
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert sorted(ds["id"]) == ["a1", "a9"]


def test_csv_rows_missing_a_column_are_rejected_with_their_line(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text('id,text\n1,"fine, really"\n2\n3,"also fine"\n4,"x",extra\n')
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        res = _run(srv, "sentiment", data, tmp_path)
    assert res.exit_code == 0, res.output
    assert f"{data}:3: too few fields: expected 2, got 1" in res.stderr
    assert f"{data}:5: too many fields: expected 2, got 3" in res.stderr
    assert "4 rows, 2 labeled, 0 cached, 0 failed, 2 rejected" in res.stderr
    assert [r["line"] for r in map(json.loads, (tmp_path / "out.rejects.jsonl").open())] == [3, 5]


def test_csv_without_the_column_the_template_needs(tmp_path: Path) -> None:
    """No row has the template's field: a template bug (or the wrong input), not bad rows."""
    data = tmp_path / "in.csv"
    data.write_text("id,body\n1,hello\n2,world\n")
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        res = _run(srv, "sentiment", data, tmp_path)
        assert not [r for r in srv.log if r.path.endswith("/chat/completions")]
    assert res.exit_code == 1
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"labeler: error: {load_task('sentiment').path}: field 'text': ")
    assert "template bug, not bad data" in line


def test_rows_missing_a_template_field_among_good_ones_name_the_template(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "fine"}\n{"body": "no text"}\n{"text": "also fine"}\n')
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        res = _run(srv, "sentiment", data, tmp_path)
    assert res.exit_code == 0, res.output
    template = load_task("sentiment").path
    assert f"{data}:2: missing field 'text' that template {template} uses" in res.stderr


def test_a_flood_of_bad_rows_is_summarised_not_printed_line_by_line(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(_lines(*[b"{not json" for _ in range(500)], b'{"text": "fine"}'))
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        res = _run(srv, "sentiment", data, tmp_path)
    assert res.exit_code == 0
    assert res.stderr.count("invalid JSON") == 20
    assert "480 more rows were rejected or failed" in res.stderr
    assert sum(1 for _ in (tmp_path / "out.rejects.jsonl").open()) == 500


# -- the renderer under fuzz ---------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Templates that index, loop, filter and do arithmetic: each can meet a value it cannot
# handle, which must surface as a TemplateError naming the row.
CUSTOM = [
    "Review: {{ text }}",
    "{{ text | upper }} / {{ text[:20] }} / {{ text | length }}",
    "{% for t in tags %}- {{ t }}\n{% endfor %}{{ text }}",
    "{{ n + 1 }} {{ text ~ '!' }} {{ meta.source }}",
    "{{ text | int }} {{ score | round(2) }} {{ text.split(',') | join('|') }}",
    "{% if text %}{{ text }}{% endif %}",
    "{{ text.__class__ }} {{ ''.__class__.__mro__ }}",  # the sandbox refuses these
]
TASKS = [load_task(p) for p in sorted(PROMPTS_DIR.glob("*.yaml"))] + [
    task_from_dict({"name": f"custom{i}", "user": src, "output": {"kind": "text"}}, f"custom{i}")
    for i, src in enumerate(CUSTOM)
]
FIELDS = sorted({f for t in TASKS for f in t.fields} | {"text", "tags", "n", "meta", "score"})
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1),  # lone surrogates
    st.binary(max_size=8),
    st.sampled_from(["", " ", "\x00", "{{ text }}", "{% raw %}", "\u202e"]),
)
values = st.one_of(
    scalars,
    scalars,
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
# Mostly the fields templates use (so values reach the renderer), plus stray keys.
rows = st.builds(
    lambda used, stray: {**stray, **used},
    st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, values)),
    st.dictionaries(st.text(max_size=6), values, max_size=2),
)


@FUZZ
@given(task=st.sampled_from(TASKS), row=rows)
def test_rendering_any_row_raises_nothing_but_template_error(task: Any, row: dict[str, Any]) -> None:
    identity = {"provider": "openai", "model": "m", "base_url": "u"}
    try:
        request = task.render(row, row_id="fuzz:1")
    except TemplateError as exc:
        assert "fuzz:1" in str(exc) or task.path in str(exc)
        return
    text = request.prompt if request.prompt is not None else request.messages[-1]["content"]
    assert text.strip()
    assert request.key(identity).startswith("b2:")  # the cache key exists for it too


def test_fuzzed_templates_render_good_rows_and_refuse_bad_ones() -> None:
    """The fuzz above is only worth something if its templates can both render and fail."""
    task = next(t for t in TASKS if t.user_source == CUSTOM[3])
    assert task.render({"n": 1, "text": "a", "meta": {"source": "s"}}).messages
    with pytest.raises(TemplateError, match="row 7"):
        task.render({"n": "x", "text": "a", "meta": {}}, row_id="7")
