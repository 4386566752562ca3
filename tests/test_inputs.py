"""Input readers: every format streams Rows, every bad record is a Reject with file:line."""

from __future__ import annotations

import gzip
import io
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from labeler.errors import ConfigError, InputError
from labeler.inputs import (
    Reject,
    RejectsWriter,
    Row,
    count_rows,
    detect_format,
    read_rows,
)


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def rows_of(items: list[Row | Reject]) -> list[Row]:
    return [r for r in items if isinstance(r, Row)]


def rejects_of(items: list[Row | Reject]) -> list[Reject]:
    return [r for r in items if isinstance(r, Reject)]


def only_reject(path: Path, **kw: Any) -> Reject:
    items = list(read_rows(path, **kw))
    rejects = rejects_of(items)
    assert len(rejects) == 1, items
    return rejects[0]


def save_parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=1000)
    return path


# --------------------------------------------------------------------------- formats


def test_jsonl_rows_keep_json_types(tmp_path: Path) -> None:
    record = {"text": "hi", "n": 3, "x": 1.5, "ok": True, "none": None, "tags": ["a"], "m": {"k": 1}}
    path = write(tmp_path / "in.jsonl", orjson.dumps(record) + b"\n")
    (row,) = read_rows(path)
    assert row == Row(str(path), 1, "1", record)


def test_source_is_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "in.jsonl", '{"a": 1}\n')
    monkeypatch.chdir(tmp_path)
    (row,) = read_rows("in.jsonl")
    assert row.source == "in.jsonl"


@pytest.mark.parametrize("name", ["in.json", "in.ndjson", "in.jsonl.gz"])
def test_other_json_lines_names_read_as_jsonl(tmp_path: Path, name: str) -> None:
    data = b'{"text": "a"}\n{"text": "b"}\n'
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert [r.data["text"] for r in read_rows(path)] == ["a", "b"]


def test_csv_values_are_strings_keyed_by_header(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", 'text,label\n"hello, world",1\nbye,\n')
    rows = list(read_rows(path))
    assert [(r.line, r.id, r.data) for r in rows] == [
        (2, "2", {"text": "hello, world", "label": "1"}),
        (3, "3", {"text": "bye", "label": ""}),
    ]


def test_tsv_splits_on_tabs(tmp_path: Path) -> None:
    path = write(tmp_path / "in.tsv", "text\tlabel\na, b\tpos\n")
    (row,) = read_rows(path)
    assert row.data == {"text": "a, b", "label": "pos"}


def test_explicit_delimiter_reads_any_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "in.txt", "text;label\nhello;1\n")
    (row,) = read_rows(path, delimiter=";")
    assert row.data == {"text": "hello", "label": "1"}


def test_gzipped_csv_is_read_transparently(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv.gz", gzip.compress(b"text\nhello\n"))
    (row,) = read_rows(path)
    assert (row.line, row.data) == (2, {"text": "hello"})


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "in.csv", b"\xef\xbb\xbftext\nhi\n")
    jsonl_path = write(tmp_path / "in.jsonl", b'\xef\xbb\xbf{"text": "hi"}\n')
    assert [r.data for r in read_rows(csv_path)] == [{"text": "hi"}]
    assert [r.data for r in read_rows(jsonl_path)] == [{"text": "hi"}]


def test_parquet_rows_number_from_one_across_batches(tmp_path: Path) -> None:
    records = [{"text": f"t{i}", "n": i} for i in range(5000)]
    path = save_parquet(tmp_path / "in.parquet", records)
    rows = list(read_rows(path))
    assert [r.data for r in rows] == records
    assert [r.line for r in rows] == list(range(1, 5001))


def test_hf_dataset_folder_is_read_in_order(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]}).save_to_disk(tmp_path / "ds")
    rows = list(read_rows(tmp_path / "ds"))
    assert [(r.line, r.data) for r in rows] == [
        (1, {"text": "a", "label": 0}),
        (2, {"text": "b", "label": 1}),
        (3, {"text": "c", "label": 0}),
    ]


@pytest.fixture
def dataset_dict(tmp_path: Path) -> Path:
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a", "b"]}),
            "test": datasets.Dataset.from_dict({"text": ["z"]}),
        }
    ).save_to_disk(folder)
    return folder


def test_dataset_dict_split_is_chosen_by_argument(dataset_dict: Path) -> None:
    assert [r.data["text"] for r in read_rows(dataset_dict, split="test")] == ["z"]


def test_dataset_dict_split_is_chosen_by_path_suffix(dataset_dict: Path) -> None:
    rows = list(read_rows(f"{dataset_dict}:test"))
    assert [r.data["text"] for r in rows] == ["z"]
    assert rows[0].source == f"{dataset_dict}:test"


def test_dataset_dict_without_split_names_the_splits(dataset_dict: Path) -> None:
    with pytest.raises(InputError, match=r"split=.*train, test|split=.*test, train") as err:
        read_rows(dataset_dict)
    assert err.value.source == str(dataset_dict)


def test_dataset_dict_unknown_split_names_the_splits(dataset_dict: Path) -> None:
    with pytest.raises(InputError, match=r"no split 'dev'; available: .*train"):
        read_rows(dataset_dict, split="dev")


# --------------------------------------------------------------------------- line numbers


def test_jsonl_line_numbers_are_physical_across_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '\n{"a": 1}\n\n  \n{"a": 2}\r\n')
    assert [(r.line, r.id) for r in read_rows(path)] == [(2, "2"), (5, "5")]


def test_multiline_csv_record_reports_its_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", 'text,label\n"one\ntwo\nthree",a\nnext,b\n')
    rows = list(read_rows(path))
    assert [(r.line, r.data["text"]) for r in rows] == [(2, "one\ntwo\nthree"), (5, "next")]


def test_reject_after_multiline_record_has_the_right_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", 'text,label\n"a\nb",1\nonly-one-field\n')
    assert only_reject(path).message() == f"{path}:4: too few fields: expected 2, got 1"


def test_blank_lines_are_skipped_not_rejected(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "in.jsonl", '\n\n{"a": 1}\n \t \n')
    csv_path = write(tmp_path / "in.csv", "\ntext\n\nhi\n   \n")
    assert [type(r) for r in read_rows(jsonl)] == [Row]
    assert [(type(r), r.line) for r in read_rows(csv_path)] == [(Row, 4)]


# --------------------------------------------------------------------------- rejects


def test_invalid_json_is_rejected_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"a": 1}\n{"a": 1 "b": 2}\n{"a": 3}\n')
    items = list(read_rows(path))
    (bad,) = rejects_of(items)
    assert bad.message() == f"{path}:2: invalid JSON: unexpected character, expected ',' or '}}' (col 9)"
    assert bad.raw == '{"a": 1 "b": 2}'
    assert [r.line for r in rows_of(items)] == [1, 3]


def test_json_line_that_is_not_an_object_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", "[1, 2]\n")
    assert only_reject(path).message() == f"{path}:1: not a JSON object (got array)"


def test_bad_utf8_in_jsonl_poisons_only_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", b'{"a": "\xff"}\n{"a": "\xc3\xa9"}\n')
    items = list(read_rows(path))
    assert items[0] == Reject(
        str(path), 1, "not valid UTF-8 (byte 0xff at col 8)", '{"a": "\N{REPLACEMENT CHARACTER}"}'
    )
    assert items[1].data == {"a": "é"}  # type: ignore[union-attr]


def test_bad_utf8_in_csv_poisons_only_its_record(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b"text\nab\xfe\nok\n")
    items = list(read_rows(path))
    assert [(type(r), r.line) for r in items] == [(Reject, 2), (Row, 3)]
    assert items[0].message() == f"{path}:2: not valid UTF-8 (byte 0xfe at col 3)"


def test_bad_utf8_inside_a_multiline_record_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b'text\n"first\nsec\xffond"\n')
    assert only_reject(path).reason == "not valid UTF-8 (byte 0xff at line 3 col 4)"


def test_csv_row_with_too_many_fields_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", "a,b\n1,2,3\n")
    reject = only_reject(path)
    assert (reject.message(), reject.raw) == (f"{path}:2: too many fields: expected 2, got 3", "1,2,3")


def test_csv_row_with_a_missing_column_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "in.tsv", "a\tb\tc\n1\t2\n")
    assert only_reject(path).message() == f"{path}:2: too few fields: expected 3, got 2"


def test_malformed_csv_line_is_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", "a\nx\ry\nok\n")
    items = list(read_rows(path))
    assert [(type(r), r.line) for r in items] == [(Reject, 2), (Row, 3)]
    assert items[0].reason == "malformed CSV: carriage return (\\r) inside an unquoted field"


def test_duplicate_header_column_rejects_every_row_without_raising(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", "a,a\n1,2\n3,4\n")
    items = list(read_rows(path))
    assert [r.message() for r in items] == [
        f"{path}:1: unusable header: duplicate column 'a'",
        f"{path}:2: no usable header (line 1: duplicate column 'a')",
        f"{path}:3: no usable header (line 1: duplicate column 'a')",
    ]


def test_missing_required_field_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"label": 1}\n')
    assert only_reject(path, required_fields=["text"]).message() == f"{path}:1: missing field 'text'"


def test_null_required_field_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"text": null}\n')
    assert only_reject(path, required_fields=["text"]).reason == "field 'text' is null"


@pytest.mark.parametrize("text", ["", "  \t\n "])
def test_empty_required_text_is_rejected(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "in.jsonl", orjson.dumps({"text": text}) + b"\n")
    assert only_reject(path, required_fields=["text"]).reason == "empty text in field 'text'"


def test_required_field_missing_from_csv_header_rejects_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", "body\nhello\n")
    assert only_reject(path, required_fields=["text"]).message() == f"{path}:2: missing field 'text'"


def test_required_non_text_values_pass(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"n": 0, "ok": false, "xs": []}\n')
    assert rows_of(list(read_rows(path, required_fields=["n", "ok", "xs"])))


# --------------------------------------------------------------------------- ids


def test_id_field_value_becomes_the_row_id(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"id": "a1"}\n{"id": 7}\n{"id": 8.0}\n')
    assert [r.id for r in read_rows(path, id_field="id")] == ["a1", "7", "8"]


def test_duplicate_id_is_rejected_naming_the_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"id": "a17"}\n\n\n{"id": "a17", "v": 2}\n')
    reject = only_reject(path, id_field="id")
    assert reject.message() == f"{path}:4: duplicate id 'a17' (first seen at line 1)"
    assert reject.raw == '{"id": "a17", "v": 2}'


def test_duplicates_are_found_among_many_ids(tmp_path: Path) -> None:
    lines = [orjson.dumps({"id": f"id-{i}"}) for i in range(20_000)]
    lines.append(orjson.dumps({"id": "id-12345"}))
    path = write(tmp_path / "in.jsonl", b"\n".join(lines) + b"\n")
    items = list(read_rows(path, id_field="id"))
    assert len(rows_of(items)) == 20_000
    assert only_reject(path, id_field="id").reason == "duplicate id 'id-12345' (first seen at line 12346)"


def test_duplicate_id_in_parquet_names_the_row(tmp_path: Path) -> None:
    path = save_parquet(tmp_path / "in.parquet", [{"id": 1}, {"id": 2}, {"id": 1}])
    assert only_reject(path, id_field="id").message() == f"{path}:3: duplicate id '1' (first seen at row 1)"


def test_ids_are_only_checked_when_an_id_field_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"id": 1}\n{"id": 1}\n')
    assert len(rows_of(list(read_rows(path)))) == 2


def test_rejected_row_does_not_claim_its_id(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"id": "x"}\n{"id": "x", "text": "hi"}\n')
    items = list(read_rows(path, id_field="id", required_fields=["text"]))
    assert [(type(r), r.line) for r in items] == [(Reject, 1), (Row, 2)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"text": "t"}', "missing field 'id'"),
        ('{"id": null}', "field 'id' is null"),
        ('{"id": " "}', "empty id in field 'id'"),
        ('{"id": [1]}', "id field 'id' must be a string or integer, got array"),
        ('{"id": 1.5}', "id field 'id' must be a string or integer, got number"),
    ],
)
def test_unusable_id_is_rejected(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path / "in.jsonl", line + "\n")
    assert only_reject(path, id_field="id").reason == reason


# --------------------------------------------------------------------------- fatal errors


def test_missing_file_raises_at_call_time_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(InputError) as err:
        read_rows(path)  # not iterated: the failure must come before a run starts
    assert (err.value.source, err.value.reason) == (str(path), "no such file or directory")


def test_plain_directory_is_not_an_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a saved Hugging Face dataset"):
        read_rows(tmp_path)


def test_corrupt_parquet_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "in.parquet", b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"in\.parquet: not a readable Parquet file"):
        read_rows(path)


def test_truncated_gzip_raises_after_the_good_rows(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(orjson.dumps({"i": i}) + b"\n" for i in range(200_000)))
    path = write(tmp_path / "in.jsonl.gz", data[: len(data) // 2])
    seen = []
    with pytest.raises(InputError, match="read failed") as err:
        seen.extend(read_rows(path))
    assert seen and err.value.source == str(path)


def test_unknown_extension_asks_for_a_format(tmp_path: Path) -> None:
    path = write(tmp_path / "in.txt", "x\n")
    with pytest.raises(InputError, match="pass format="):
        detect_format(path)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.JSON", "jsonl"),
        ("a.ndjson.gz", "jsonl"),
        ("a.csv", "csv"),
        ("a.tsv", "tsv"),
        ("a.parquet", "parquet"),
    ],
)
def test_detect_format_from_extension(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


def test_unknown_format_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown input format 'xml'"):
        read_rows(tmp_path / "a.xml", format="xml")


def test_delimiter_with_jsonl_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="delimiter"):
        read_rows(tmp_path / "a.jsonl", format="jsonl", delimiter=";")


# --------------------------------------------------------------------------- stdin


def test_stdin_jsonl_is_sniffed_from_first_byte() -> None:
    stdin = io.BytesIO(b'\n  {"text": "a"}\n{"text": "b"}\n')
    rows = list(read_rows("-", stdin=stdin))
    assert [(r.source, r.line, r.data["text"]) for r in rows] == [("<stdin>", 2, "a"), ("<stdin>", 3, "b")]


def test_stdin_csv_is_sniffed_from_first_byte() -> None:
    rows = list(read_rows("-", stdin=io.BytesIO(b"text,label\nhi,1\n")))
    assert [(r.line, r.data) for r in rows] == [(2, {"text": "hi", "label": "1"})]


def test_stdin_format_can_be_given() -> None:
    (row,) = read_rows("-", format="tsv", stdin=io.BytesIO(b"text\tlabel\n{x}\t1\n"))
    assert row.data == {"text": "{x}", "label": "1"}


def test_stdin_rejects_are_named_stdin() -> None:
    (reject,) = read_rows("-", stdin=io.BytesIO(b'{"a": }\n'))
    assert isinstance(reject, Reject)
    assert reject.message().startswith("<stdin>:1: invalid JSON")


def test_stdin_cannot_be_parquet() -> None:
    with pytest.raises(ConfigError, match="stdin"):
        read_rows("-", format="parquet", stdin=io.BytesIO(b""))


# --------------------------------------------------------------------------- count_rows


def test_count_rows_counts_jsonl_lines_with_or_without_final_newline(tmp_path: Path) -> None:
    assert count_rows(write(tmp_path / "a.jsonl", "{}\n{}\n{}\n")) == 3
    assert count_rows(write(tmp_path / "b.jsonl", "{}\n{}\n{}")) == 3
    assert count_rows(write(tmp_path / "c.jsonl", "")) == 0


def test_count_rows_leaves_out_the_csv_header(tmp_path: Path) -> None:
    assert count_rows(write(tmp_path / "a.csv", "text\na\nb\n")) == 2


def test_count_rows_reads_gzip(tmp_path: Path) -> None:
    assert count_rows(write(tmp_path / "a.jsonl.gz", gzip.compress(b"{}\n" * 7))) == 7


def test_count_rows_reads_parquet_metadata(tmp_path: Path) -> None:
    path = save_parquet(tmp_path / "a.parquet", [{"a": i} for i in range(1234)])
    assert count_rows(path) == 1234


def test_count_rows_of_a_dataset_dict_needs_a_split(dataset_dict: Path) -> None:
    assert count_rows(dataset_dict, split="train") == 2
    assert count_rows(f"{dataset_dict}:test") == 1
    assert count_rows(dataset_dict) is None


def test_count_rows_of_stdin_is_unknown() -> None:
    assert count_rows("-") is None


# --------------------------------------------------------------------------- RejectsWriter


def reject(n: int) -> Reject:
    return Reject("in.jsonl", n, "invalid JSON: boom (col 1)", '{"a": ')


def test_rejects_file_is_created_only_by_a_reject(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "rejects.jsonl"
    with RejectsWriter(path) as writer:
        assert not path.exists()
        writer.write(reject(3))
        assert path.exists()
    assert writer.count == 1


def test_rejects_file_holds_one_json_object_per_reject(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    with RejectsWriter(path) as writer:
        writer.write(reject(3))
        writer.write(Reject("x.parquet", None, "missing field 'text'", None))
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines == [
        {"source": "in.jsonl", "line": 3, "reason": "invalid JSON: boom (col 1)", "raw": '{"a": '},
        {"source": "x.parquet", "line": None, "reason": "missing field 'text'", "raw": None},
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to kill a writer mid-run")
def test_rejects_survive_a_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        writer = RejectsWriter(path)
        for n in range(3):
            writer.write(reject(n))
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert [orjson.loads(line)["line"] for line in path.read_bytes().splitlines()] == [0, 1, 2]


def test_rejects_writer_keeps_a_rejected_record_that_was_not_utf8(tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", b'{"a": "\xff"}\n')
    out = tmp_path / "rejects.jsonl"
    with RejectsWriter(out) as writer:
        for item in read_rows(source):
            assert isinstance(item, Reject)
            writer.write(item)
    assert orjson.loads(out.read_bytes())["raw"] == '{"a": "\N{REPLACEMENT CHARACTER}"}'


# --------------------------------------------------------------------------- memory


def test_reading_streams_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as f:
        for i in range(200_000):
            f.write(b'{"id": "r%d", "text": "a short review of something"}\n' % i)
    tracemalloc.start()
    try:
        n = sum(1 for _ in read_rows(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 200_000
    assert peak < 2_000_000, f"peak {peak} bytes: rows are being held somewhere"


def test_python_stdin_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(b'{"a": 1}\n'))
    monkeypatch.setattr(sys, "stdin", fake)
    (row,) = read_rows("-")
    assert row.data == {"a": 1}


def test_a_job_names_rows_by_a_column_named_id_as_text_unchecked(tmp_path: Path) -> None:
    """Without --id-field, a column named `id` names each row that has a value there (as
    `str` of it: no type check, repeats allowed); the others keep their line. A file, the
    same records in memory and the rows' rejects all agree."""
    from labeler.in_memory import InMemoryRows
    from labeler.job import Job
    from labeler.task import load_task

    records: list[dict[str, Any]] = [
        {"id": 5, "text": "a"},
        {"id": None, "text": "b"},
        {"text": "c"},
        {"id": 17.0, "text": "d"},
        {"id": "x", "text": "e"},
        {"id": "x", "text": "f"},
        {"id": "", "text": "g"},
        {"id": 9, "text": ""},
        {"id": [1], "text": "h"},
    ]
    source = write(tmp_path / "in.jsonl", "".join(orjson.dumps(r).decode() + "\n" for r in records))
    task = load_task("sentiment")
    want = [(1, "5"), (2, "2"), (3, "3"), (4, "17.0"), (5, "x"), (6, "x"), (7, ""), (9, "[1]")]
    for given in (str(source), InMemoryRows(records)):
        items = list(Job(task="sentiment", input=given, teacher="openai:m").rows(task))
        assert [(r.line, r.id) for r in rows_of(items)] == want
        assert [(r.line, r.reason) for r in rejects_of(items)] == [(8, "empty text in field 'text'")]
    named = list(
        Job(task="sentiment", input=str(source), teacher="openai:m", id_field="id", limit=2).rows(task)
    )
    assert [(r.line, r.id) for r in rows_of(named)] == [(1, "5")]
    assert rejects_of(named)[0].message() == f"{source}:2: field 'id' is null"
