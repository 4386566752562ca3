"""Any bytes at all, read as JSONL/CSV/TSV: only Rows and Rejects come out, no line is lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeler.inputs import Reject, Row, read_rows

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Lines that are often valid, so good rows, blank lines and every reject kind all turn up.
json_objects = st.dictionaries(
    st.sampled_from(["text", "id", "label", "x"]),
    st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=6), st.sampled_from(["", " "])),
    max_size=4,
).map(orjson.dumps)
line_parts = st.one_of(
    json_objects,
    st.binary(max_size=24),
    st.sampled_from([b"", b"  ", b"\r", b"\xef\xbb\xbf", b"[1]", b"\xff", b'"', b",", b"\t"]),
)
jsonl_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(line_parts, max_size=12).map(b"\n".join),
)
csv_cells = st.one_of(
    st.text(max_size=5).map(str.encode),
    st.binary(max_size=6),
    st.sampled_from([b"", b'"', b'""', b'"a\nb"', b"\r", b"\xff"]),
)
delimited_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.lists(csv_cells, max_size=4), max_size=10).map(
        lambda rows: b"\n".join(b",".join(cells) for cells in rows)
    ),
)
options = st.fixed_dictionaries(
    {
        "id_field": st.sampled_from([None, "id", "text"]),
        "required_fields": st.sampled_from([(), ("text",), ("text", "label")]),
    }
)


def split_like_a_file(data: bytes) -> list[bytes]:
    """Lines as iterating a binary file yields them (split on b"\\n" only)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def is_blank(line: bytes, first: bool) -> bool:
    return not (line.removeprefix(b"\xef\xbb\xbf") if first else line).strip()


def read_all(path: Path, **kw: object) -> list[Row | Reject]:
    items: list[Row | Reject] = []
    stream: Iterator[Row | Reject] = read_rows(path, **kw)  # type: ignore[arg-type]
    for item in stream:
        assert type(item) in (Row, Reject), item
        assert isinstance(item.line, int)
        items.append(item)
    return items


@FUZZ
@given(data=jsonl_bytes, kw=options)
def test_any_bytes_as_jsonl_account_for_every_line(tmp_path: Path, data: bytes, kw: dict) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    items = read_all(path, **kw)
    lines = split_like_a_file(data)
    blank = {n for n, line in enumerate(lines, 1) if is_blank(line, n == 1)}
    reported = [item.line for item in items]
    assert len(reported) == len(set(reported)), "a line was reported twice"
    assert set(reported) | blank == set(range(1, len(lines) + 1))
    assert not set(reported) & blank, "a blank line was reported"
    for item in items:
        if isinstance(item, Reject):
            expected = lines[item.line - 1]  # type: ignore[operator]
            if item.line == 1:
                expected = expected.removeprefix(b"\xef\xbb\xbf")
            assert item.raw == expected.decode("utf-8", "replace").removesuffix("\r")
            assert item.message().startswith(f"{path}:{item.line}: ")
        else:
            assert isinstance(item.data, dict)
            orjson.dumps(item.data)  # whatever is accepted can be written back out


@FUZZ
@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
@given(data=delimited_bytes, kw=options)
def test_any_bytes_as_delimited_text_never_raise(tmp_path: Path, suffix: str, data: bytes, kw: dict) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    items = read_all(path, **kw)
    lines = split_like_a_file(data)
    starts = [item.line for item in items]
    assert starts == sorted(set(starts)), "records out of order or reported twice"
    assert all(1 <= n <= len(lines) for n in starts)  # type: ignore[operator]
    for item in items:
        if isinstance(item, Row):
            for value in item.data.values():
                value.encode("utf-8")  # no smuggled surrogates from undecodable bytes


unquoted_cells = st.one_of(
    st.text(st.characters(exclude_characters='"\n', exclude_categories=["Cs"]), max_size=5).map(str.encode),
    st.binary(max_size=6).filter(lambda b: b'"' not in b and b"\n" not in b),
)


@FUZZ
@given(
    rows=st.lists(st.lists(unquoted_cells, max_size=4), max_size=12),
    kw=options,
)
def test_unquoted_csv_accounts_for_every_line(tmp_path: Path, rows: list[list[bytes]], kw: dict) -> None:
    """Without quotes no record spans lines, so rows + rejects + blanks + header == lines."""
    data = b"\n".join(b",".join(cells) for cells in rows)
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    items = read_all(path, **kw)
    lines = split_like_a_file(data)
    blank = {n for n, line in enumerate(lines, 1) if is_blank(line, n == 1)}
    reported = {item.line for item in items}
    assert len(reported) == len(items)
    assert not reported & blank
    unreported = set(range(1, len(lines) + 1)) - reported - blank
    # Only a good header is consumed without a trace, and it is the first non-blank line.
    assert len(unreported) <= 1
    if unreported:
        (header_line,) = unreported
        assert header_line == min(set(range(1, len(lines) + 1)) - blank)
