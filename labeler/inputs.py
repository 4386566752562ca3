"""Input readers: every supported source becomes one stream of `Row` or `Reject`.

A labeling run over a million rows must not die on row 812,344 because one line holds a
stray byte, so a bad record becomes a `Reject` (with ``file:line``, a one-line reason and the
original text, for the rejects file) and reading goes on. Only a source that cannot be
opened at all is fatal, raised as `InputError` when `read_rows` is called rather than
halfway through a run.

Everything streams with flat memory. Text is read as binary lines and decoded one line at a
time, so one undecodable line cannot poison the rest and line numbers stay physical; Parquet
and saved Hugging Face datasets are read in Arrow batches (the latter memory-mapped); a
Hub dataset (``hf://datasets/NAME[:CONFIG][:SPLIT]``, labeler/hub_input.py) is streamed.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from labeler.errors import ConfigError, ExportError, InputError, LabelerError
from labeler.hub_input import is_hub, open_split

__all__ = [
    "FORMATS",
    "STDIN",
    "Reject",
    "RejectsWriter",
    "Row",
    "count_rows",
    "detect_format",
    "prepare_rejects",
    "read_rows",
]

FORMATS = ("jsonl", "csv", "tsv", "parquet", "hf")
STDIN = "<stdin>"

_ALIASES = {"json": "jsonl", "ndjson": "jsonl"}
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_HF_MARKERS = ("dataset_dict.json", "state.json")
_BOM = b"\xef\xbb\xbf"
# Arrow batch size: big enough that per-batch costs vanish, small enough to stay flat.
_BATCH = 2048
# csv's default 128 KiB field cap rejects long documents, which are normal input here;
# 16 MiB still bounds what one stray opening quote can swallow before it is rejected.
_CSV_FIELD_LIMIT = 16 * 1024 * 1024
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Row:
    """One good input record.

    `line` is the physical line the record starts on (JSONL/CSV/TSV) or its row index + 1
    (Parquet, HF datasets), so a user can jump straight to it. `id` is the `id_field` value
    as a string when one was named, else ``str(line)``, which is stable for an unchanged file.
    """

    source: str
    line: int
    id: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that could not become a `Row`, kept so the user can see and fix it.

    `raw` is the record's original text (undecodable bytes replaced) when the format has
    text, so the rejects file alone is enough to repair and re-feed it; None for Arrow
    sources and for failures that have no record (a header that could not be read).
    """

    source: str
    line: int | None
    reason: str
    raw: str | None = None

    def message(self) -> str:
        """The ``file:line: reason`` form editors and terminals can jump to."""
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.reason}"


def _row(source: str, line: int, id: str, data: dict[str, Any]) -> Row:
    return Row(source, line, id, data)


class RejectsWriter:
    """Appends each `Reject` as one JSON line, flushed at once.

    Flushing per line means a crash (or kill -9) mid-run loses no earlier reject. The file is
    created only when the first reject arrives, so a clean run leaves no empty file behind
    to be mistaken for a report.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.count = 0
        self._file: BinaryIO | None = None

    def write(self, reject: Reject) -> None:
        """Record one reject; durable (as far as the OS) before this returns."""
        record = {
            "source": reject.source,
            "line": reject.line,
            "reason": reject.reason,
            "raw": reject.raw,
        }
        try:
            line = orjson.dumps(record)
        except orjson.JSONEncodeError:
            # Only possible with lone surrogates smuggled in by a caller-made Reject.
            line = orjson.dumps({k: _printable(v) for k, v in record.items()})
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab")  # noqa: SIM115 - lives as long as the writer
            self._file.write(line + b"\n")
            self._file.flush()
        except OSError as exc:  # a full disk, a file system gone read-only under the run
            raise ExportError(
                f"{self.path}: cannot write the rejects file: "
                f"{exc.strerror or exc}; every answer so far is in the store: "
                "free space (or pass another --rejects) and rerun"
            ) from exc
        self.count += 1

    def close(self) -> None:
        """Close the file if one was opened; safe to call twice."""
        if self._file is not None:
            with contextlib.suppress(OSError):  # its write already said what went wrong
                self._file.close()
            self._file = None

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_rejects(path: Path) -> None:
    """Make ready for a run's rejects: refuse a path that cannot hold them before anything
    is sent (a folder, a device, a folder that is a file or read-only), and remove the last
    run's file (rejects describe this run's input, not history)."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"--rejects {path}: not a regular file; name a file for the rejected rows")
    parent = path.parent
    for above in (parent, *parent.parents):
        if above.exists():
            if not above.is_dir():
                raise ConfigError(f"--rejects {path}: {above} is a file, not a folder")
            if not os.access(above, os.W_OK | os.X_OK):
                raise ConfigError(f"--rejects {path}: {above} is not writable")
            break
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"--rejects {path}: cannot replace the last run's rejects: {exc.strerror}") from exc


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


# --------------------------------------------------------------------------- formats


def detect_format(source: str | os.PathLike[str]) -> str:
    """Pick the reader from the path alone, so a run fails before any work on a bad name.

    A directory is a saved HF dataset only if it holds the files `save_to_disk` writes;
    ``folder:split`` names a split of one. ``.gz`` is looked through (``x.jsonl.gz``).
    """
    path = os.fspath(source)
    if path == "-":
        raise InputError(STDIN, None, "the format of stdin cannot be told from a name; pass format=")
    if is_hub(path):
        return "hf"
    folder, _ = _split_spec(path)
    if os.path.isdir(folder):
        if _is_hf_dir(folder):
            return "hf"
        raise InputError(
            path,
            None,
            "is a directory but not a saved Hugging Face dataset (no dataset_dict.json or state.json in it)",
        )
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    fmt = _EXTENSIONS.get(os.path.splitext(name)[1])
    if fmt is not None:
        return fmt
    if not os.path.exists(path):
        raise InputError(path, None, "no such file or directory")
    known = ", ".join(sorted(_EXTENSIONS))
    raise InputError(
        path,
        None,
        f"cannot tell the format from the name (known: {known}, optionally .gz, or a "
        "saved HF dataset folder); pass format= (jsonl, csv, tsv, parquet, hf) or a "
        "delimiter for delimited text",
    )


def _named_format(given: str) -> str | None:
    """The format a path's name says, or None when it says none we read."""
    try:
        return detect_format(given)
    except LabelerError:
        return None


def _normalize_format(format: str | None, delimiter: str | None) -> str | None:
    fmt = None if format is None else _ALIASES.get(format.lower(), format.lower())
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"unknown input format {format!r}; expected one of {', '.join(FORMATS)}")
    if delimiter is not None:
        if len(delimiter) != 1 or delimiter in '\r\n"':
            raise ConfigError(
                f"delimiter must be one character other than a quote or newline, got {delimiter!r}"
            )
        if fmt is None:
            return "csv"
        if fmt not in ("csv", "tsv"):
            raise ConfigError(f"delimiter applies to delimited text, not to format {fmt!r}")
    return fmt


def _split_spec(path: str) -> tuple[str, str | None]:
    """Separate ``folder:split``; a path that exists as written is never split."""
    if os.path.exists(path):
        return path, None
    head, sep, tail = path.rpartition(":")
    if sep and head and tail and "/" not in tail and "\\" not in tail and os.path.isdir(head):
        return head, tail
    return path, None


def _is_hf_dir(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, m)) for m in _HF_MARKERS)


# --------------------------------------------------------------------------- public API


def read_rows(
    source: str | os.PathLike[str],
    *,
    format: str | None = None,
    id_field: str | None = None,
    id_column: str | None = None,
    required_fields: Sequence[str] = (),
    delimiter: str | None = None,
    split: str | None = None,
    stdin: BinaryIO | None = None,
) -> Iterator[Row | Reject]:
    """Stream one source as `Row`s and `Reject`s, in file order.

    The source is opened here, not on first iteration, so a missing or unreadable file
    raises `InputError` before the caller starts a run; every later problem with a record
    is a `Reject` and reading goes on. ``"-"`` reads `stdin` (default: the process's
    binary stdin), sniffing JSONL vs CSV from the first non-blank byte unless `format` says.

    `required_fields` must be present, non-null and (for text) not blank; `id_field`, when
    given, names the row id and makes a repeated id a reject (the first one wins). Without
    it, `id_column` names each row that has a value there by that value as text, unchecked
    (a job's column named ``id``), and the others by their line.
    """
    fmt = _normalize_format(format, delimiter)
    given = os.fspath(source)
    required = tuple(required_fields)
    if given == "-":
        if split is not None:
            raise ConfigError("split applies to Hugging Face datasets, not to stdin")
        if fmt in ("parquet", "hf"):
            raise ConfigError(f"format {fmt!r} cannot be read from stdin; pass a path")
        stream = stdin if stdin is not None else sys.stdin.buffer
        return _read_stdin(stream, fmt, id_field, id_column, required, delimiter)

    if is_hub(given):
        if fmt not in (None, "hf"):
            raise ConfigError(f"{given} is a Hugging Face dataset; format {fmt!r} does not apply")
        hub = open_split(given, split)
        return _read_arrow(
            hub.batches(), hub.source, _make_check(hub.source, id_field, id_column, required, "row")
        )
    if fmt is None:
        fmt = detect_format(given)
    elif format is None and delimiter is not None:  # the delimiter chose CSV: the name may not
        named = _named_format(given)
        if named in ("jsonl", "parquet", "hf"):
            raise ConfigError(f"delimiter applies to delimited text (CSV, TSV), and {given} is {named}")
    if fmt == "hf":
        dataset = _open_hf(given, split)
        return _read_arrow(
            _hf_batches(dataset), given, _make_check(given, id_field, id_column, required, "row")
        )
    if split is not None:
        raise ConfigError(f"split applies to Hugging Face datasets, not to {fmt} input")
    if fmt == "parquet":
        parquet = _open_parquet(given)
        return _read_arrow(
            _parquet_batches(parquet, given),
            given,
            _make_check(given, id_field, id_column, required, "row"),
        )
    handle = _open_text(given)
    return _read_text(handle, handle, given, fmt, id_field, id_column, required, delimiter)


def read_records(
    records: Iterable[Any],
    source: str,
    *,
    id_field: str | None = None,
    id_column: str | None = None,
    required_fields: Sequence[str] = (),
) -> Iterator[Row | Reject]:
    """Rows from records already in memory (a Dataset, a DataFrame, a list of dicts),
    with the same checks, naming and rejects as a file (`read_rows`); `source` names them
    in messages (``<DataFrame>``) and a record's position, from 1, is its line."""
    check = _make_check(source, id_field, id_column, tuple(required_fields), "row")
    for line, data in enumerate(records, 1):
        if not isinstance(data, dict):
            if not isinstance(data, Mapping):
                yield Reject(source, line, f"expected a dict of fields, got {_type_name(data)}")
                continue
            data = dict(data)
        if check is None:
            yield _row(source, line, str(line), data)
            continue
        result = check(data, line)
        yield Reject(source, line, result, _raw_record(data)) if isinstance(result, str) else result


def _raw_record(data: dict[str, Any]) -> str | None:
    """A rejected in-memory record as one JSON line, so the rejects file can be fixed and fed."""
    try:
        return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return None


def count_rows(
    source: str | os.PathLike[str],
    *,
    format: str | None = None,
    split: str | None = None,
    delimiter: str | None = None,
) -> int | None:
    """A cheap total for a progress bar, not an exact count of good rows.

    Text files count physical lines (minus the header for delimited text) with a fast
    binary scan, so blank lines and multi-line CSV records make it an upper bound; Parquet
    and HF datasets read it from metadata. None where no total exists without consuming
    the input (stdin) or no single split was chosen.
    """
    fmt = _normalize_format(format, delimiter)
    given = os.fspath(source)
    if given == "-":
        return None
    if is_hub(given):
        return open_split(given, split).num_rows()
    if fmt is None:
        fmt = detect_format(given)
    elif format is None and delimiter is not None:  # the delimiter chose CSV: the name may not
        named = _named_format(given)
        if named in ("jsonl", "parquet", "hf"):
            raise ConfigError(f"delimiter applies to delimited text (CSV, TSV), and {given} is {named}")
    if fmt == "hf":
        loaded, chosen = _load_hf(given, split)
        if chosen is None and _is_dataset_dict(loaded):
            return None
        return int(_pick_split(given, loaded, chosen).num_rows)
    if fmt == "parquet":
        parquet = _open_parquet(given)
        try:
            return int(parquet.metadata.num_rows)
        finally:
            parquet.close()
    handle = _open_text(given)
    lines = 0
    last = b"\n"
    try:
        with handle:
            while chunk := handle.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(given, None, f"read failed: {exc}") from exc
    if last != b"\n":
        lines += 1
    if fmt in ("csv", "tsv"):
        lines = max(lines - 1, 0)
    return lines


# --------------------------------------------------------------------------- opening


def _open_text(path: str) -> BinaryIO:
    try:
        if path.lower().endswith(".gz"):
            with open(path, "rb") as probe:
                if probe.read(2) != b"\x1f\x8b":
                    raise InputError(path, None, "named .gz but is not gzip data")
            # A BufferedReader over the gzip stream gives C-speed line splitting.
            return io.BufferedReader(gzip.GzipFile(path, "rb"), 1 << 16)
        return open(path, "rb")
    except IsADirectoryError as exc:
        raise InputError(path, None, "is a directory, not a file") from exc
    except FileNotFoundError as exc:
        raise InputError(path, None, "no such file or directory") from exc
    except OSError as exc:
        raise InputError(path, None, f"cannot open: {exc.strerror or exc}") from exc


def _open_parquet(path: str) -> Any:
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise InputError(path, None, "no such file or directory")
    if os.path.isdir(path):
        raise InputError(path, None, "is a directory, not a Parquet file")
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own types and OSError alike
        raise InputError(path, None, f"not a readable Parquet file: {exc}") from exc


def _load_hf(given: str, split: str | None) -> tuple[Any, str | None]:
    """Load a saved dataset (memory-mapped, so cheap) and settle which split was asked for."""
    folder, path_split = _split_spec(given)
    if path_split is not None:
        if split is not None and split != path_split:
            raise ConfigError(f"{given}: split {path_split!r} in the path but split={split!r}")
        split = path_split
    if not os.path.isdir(folder):
        raise InputError(given, None, "no such directory (expected a saved HF dataset)")
    if not _is_hf_dir(folder):
        raise InputError(given, None, "not a saved Hugging Face dataset (no dataset_dict.json or state.json)")
    import datasets

    try:
        return datasets.load_from_disk(folder), split
    except Exception as exc:  # datasets raises a mix of its own, OS and JSON errors
        raise InputError(given, None, f"cannot load the saved dataset: {exc}") from exc


def _is_dataset_dict(loaded: Any) -> bool:
    import datasets

    return isinstance(loaded, datasets.DatasetDict)


def _open_hf(given: str, split: str | None) -> Any:
    loaded, split = _load_hf(given, split)
    return _pick_split(given, loaded, split)


def _pick_split(given: str, loaded: Any, split: str | None) -> Any:
    if _is_dataset_dict(loaded):
        names = ", ".join(loaded) or "none"
        if split is None:
            folder = _split_spec(given)[0]
            raise InputError(
                given, None, f"is a DatasetDict; pass split= (or {folder}:SPLIT), one of: {names}"
            )
        if split not in loaded:
            raise InputError(given, None, f"no split {split!r}; available: {names}")
        return loaded[split]
    if split is not None:
        raise InputError(given, None, f"is a single Dataset with no splits; drop split={split!r}")
    return loaded


def _without_bom(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Line iterator without a leading UTF-8 BOM, which Excel and Notepad love to add.

    Called from inside the reading generators, so the first read (which blocks on stdin
    and can hit a corrupt gzip) happens on iteration, not when `read_rows` is called.
    """
    it = iter(lines)
    first = next(it, None)
    if first is None:
        return it
    return chain((first.removeprefix(_BOM),), it)


def _read_stdin(
    stream: BinaryIO,
    fmt: str | None,
    id_field: str | None,
    id_column: str | None,
    required: tuple[str, ...],
    delimiter: str | None,
) -> Iterator[Row | Reject]:
    """Read stdin, telling JSONL from CSV by the first non-blank byte unless told."""
    lines: Iterator[bytes] = iter(stream)
    if fmt is None:
        seen: list[bytes] = []
        fmt = "csv"
        for raw in lines:
            seen.append(raw)
            stripped = raw.removeprefix(_BOM).lstrip()
            if stripped:
                fmt = "jsonl" if stripped.startswith(b"{") else "csv"
                break
        lines = chain(seen, lines)
    yield from _read_text(lines, None, STDIN, fmt, id_field, id_column, required, delimiter)


# --------------------------------------------------------------------------- checks


def _blake_digest(key: str) -> int:
    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


# str hashes are keyed 64-bit SipHash on 64-bit builds: as collision-free as an 8-byte
# blake2b digest for in-process use, and cached on the string, so nothing is hashed twice.
_digest: Callable[[str], int] = hash if sys.hash_info.width >= 64 else _blake_digest


class _SeenIds:
    """Ids already accepted, with the line each was first seen on.

    Kept by the id's 64-bit digest rather than the id itself, so a million long ids do not
    stay alive for the whole read. Two ids sharing a digest (odds about n^2 / 2^65, 3e-8
    at a million) would misreport one row as a duplicate, which is an acceptable price.
    """

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, key: str, line: int) -> int | None:
        """Remember `key`; return the line it was first seen on if it was already here."""
        digest = _digest(key)
        first = self._lines.get(digest)
        if first is None:
            self._lines[digest] = line
        return first


def _id_text(value: Any) -> str | None:
    """The id as text, or None when the value cannot be one.

    Integral floats are ids too (17.0 -> "17"): JSON written by pandas turns an int
    column with gaps into floats, and those rows must still match their cached labels.
    """
    kind = type(value)
    if kind is str:
        return value if value and not value.isspace() else None
    if kind is int:
        return str(value)
    if kind is float and value.is_integer():
        return str(int(value))
    return None


def _id_problem(value: Any, field: str) -> str:
    if value is _MISSING:
        return f"missing field '{field}'"
    if value is None:
        return f"field '{field}' is null"
    if isinstance(value, str):
        return f"empty id in field '{field}'"
    return f"id field '{field}' must be a string or integer, got {_type_name(value)}"


def _required_problem(data: dict[str, Any], required: tuple[str, ...]) -> str | None:
    for name in required:
        value = data.get(name, _MISSING)
        if value is _MISSING:
            return f"missing field '{name}'"
        if value is None:
            return f"field '{name}' is null"
        if type(value) is str and (not value or value.isspace()):
            return f"empty text in field '{name}'"
    return None


def _make_check(
    source: str, id_field: str | None, id_column: str | None, required: tuple[str, ...], unit: str
) -> Callable[[dict[str, Any], int], Row | str] | None:
    """The per-record validation, or None when there is nothing to check (the fast path).

    Returns a `Row` or the reject reason, so each reader attaches its own raw text.
    Only accepted rows claim their id: a broken row must not shadow a later good one.
    """
    if id_field is None:
        if id_column is not None:
            column = id_column

            def check_named(data: dict[str, Any], line: int) -> Row | str:
                if required:
                    problem = _required_problem(data, required)
                    if problem is not None:
                        return problem
                rid = data.get(column)
                return _row(source, line, str(line) if rid is None else str(rid), data)

            return check_named
        if not required:
            return None

        def check_fields(data: dict[str, Any], line: int) -> Row | str:
            problem = _required_problem(data, required)
            if problem is not None:
                return problem
            return _row(source, line, str(line), data)

        return check_fields

    field = id_field
    remember = _SeenIds().add

    def check_with_id(data: dict[str, Any], line: int) -> Row | str:
        if required:
            problem = _required_problem(data, required)
            if problem is not None:
                return problem
        value = data.get(field, _MISSING)
        key = value if type(value) is str and value and not value.isspace() else _id_text(value)
        if key is None:
            return _id_problem(value, field)
        first = remember(key, line)
        if first is not None:
            return f"duplicate id {_quote(key)} (first seen at {unit} {first})"
        return _row(source, line, key, data)

    return check_with_id


# --------------------------------------------------------------------------- text readers


def _read_text(
    lines: Iterable[bytes],
    handle: BinaryIO | None,
    source: str,
    fmt: str,
    id_field: str | None,
    id_column: str | None,
    required: tuple[str, ...],
    delimiter: str | None,
) -> Iterator[Row | Reject]:
    check = _make_check(source, id_field, id_column, required, "line")
    if fmt == "jsonl":
        records = _read_jsonl(lines, source, check)
    else:
        if delimiter is None:
            delimiter = "\t" if fmt == "tsv" else ","
        records = _read_delimited(lines, source, check, delimiter)
    if handle is None:
        return records
    return _closing(records, handle)


def _closing(records: Iterator[Row | Reject], handle: BinaryIO) -> Iterator[Row | Reject]:
    with handle:
        yield from records


def _read_jsonl(
    lines: Iterable[bytes],
    source: str,
    check: Callable[[dict[str, Any], int], Row | str] | None,
) -> Iterator[Row | Reject]:
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    line = 0
    try:
        for line, raw in enumerate(_without_bom(lines), 1):
            try:
                data = loads(raw)
            except decode_error as exc:
                if not raw.strip():
                    continue
                yield Reject(source, line, _json_reason(raw, exc), _raw_text((raw,)))
                continue
            if type(data) is not dict:
                yield Reject(
                    source,
                    line,
                    f"not a JSON object (got {_type_name(data)})",
                    _raw_text((raw,)),
                )
            elif check is None:
                yield _row(source, line, str(line), data)
            else:
                result = check(data, line)
                if isinstance(result, str):
                    yield Reject(source, line, result, _raw_text((raw,)))
                else:
                    yield result
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(source, line + 1, f"read failed: {exc}") from exc


def _json_reason(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return _utf8_reason(raw, bad, None)
    return f"invalid JSON: {exc.msg} (col {exc.colno})"


def _read_delimited(
    lines: Iterable[bytes],
    source: str,
    check: Callable[[dict[str, Any], int], Row | str] | None,
    delimiter: str,
) -> Iterator[Row | Reject]:
    """Parse delimited text with full csv quoting while keeping physical line numbers.

    csv pulls exactly the lines of one record from the decoding generator, so `buf`
    holds that record's raw bytes (for the reject's `raw`) and `bad` any line of it that
    was not UTF-8; the record then starts one past where the previous one ended.
    """
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    buf: list[bytes] = []
    bad: list[tuple[int, bytes, UnicodeDecodeError]] = []
    reader = csv.reader(_decoded(_without_bom(lines), buf, bad), delimiter=delimiter)
    kind = "TSV" if delimiter == "\t" else "CSV"
    header = _Header()
    end = 0
    try:
        while True:
            buf.clear()
            bad.clear()
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                start, end = end + 1, reader.line_num
                reason = _bad_lines_reason(bad, start) if bad else _csv_reason(kind, exc)
                yield Reject(source, start, header.unreadable(start, reason), _raw_text(buf))
                continue
            start, end = end + 1, reader.line_num
            if start == end and (not record or not buf[0].strip()):
                continue  # a blank line
            if bad:
                reason = header.unreadable(start, _bad_lines_reason(bad, start))
                yield Reject(source, start, reason, _raw_text(buf))
                continue
            if header.columns is None:
                refused = header.take(record, start)
                if refused is not None:
                    yield Reject(source, start, refused, _raw_text(buf))
                continue
            yield _delimited_row(source, start, record, header.columns, check, buf)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(source, end + 1, f"read failed: {exc}") from exc


@dataclass
class _Header:
    """The header of a delimited file: its columns once a record could be read as one,
    or why none could (every later record's reject then names it, since without a header
    no row can be read)."""

    columns: list[str] | None = None
    failure: str | None = None

    def unreadable(self, start: int, reason: str) -> str:
        """The reject reason of an unreadable record; before any header, the record was
        meant to be the header, and its failure is remembered as the header's."""
        if self.columns is None and self.failure is None:
            self.failure = f"line {start}: {reason}"
            return f"unreadable header: {reason}"
        return reason

    def take(self, record: list[str], start: int) -> str | None:
        """Take `record` as the header; the reason it cannot be one, else None."""
        if self.failure is not None:
            return f"no usable header ({self.failure})"
        duplicate = _first_duplicate(record)
        if duplicate is not None:
            self.failure = f"line {start}: duplicate column {_quote(duplicate)}"
            return f"unusable header: duplicate column {_quote(duplicate)}"
        self.columns = record
        return None


def _delimited_row(
    source: str,
    start: int,
    record: list[str],
    columns: list[str],
    check: Callable[[dict[str, Any], int], Row | str] | None,
    raw: list[bytes],
) -> Row | Reject:
    """One record under the header: a row, or a reject naming its line and why."""
    if len(record) != len(columns):
        few = "few" if len(record) < len(columns) else "many"
        return Reject(
            source, start, f"too {few} fields: expected {len(columns)}, got {len(record)}", _raw_text(raw)
        )
    data = dict(zip(columns, record, strict=True))
    if check is None:
        return _row(source, start, str(start), data)
    result = check(data, start)
    if isinstance(result, str):
        return Reject(source, start, result, _raw_text(raw))
    return result


def _decoded(
    lines: Iterator[bytes], buf: list[bytes], bad: list[tuple[int, bytes, UnicodeDecodeError]]
) -> Iterator[str]:
    """Decode line by line, noting bad lines instead of failing the whole file.

    surrogateescape keeps csv parsing the bad line to its true end, so the record
    boundaries (and every later line number) stay right; the record is rejected anyway.
    """
    for raw in lines:
        buf.append(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append((len(buf) - 1, raw, exc))
            text = raw.decode("utf-8", "surrogateescape")
        yield text


def _csv_reason(kind: str, exc: csv.Error) -> str:
    # csv's own wording blames how the file was opened; the real cause is a stray \r.
    if "new-line character seen in unquoted field" in str(exc):
        return f"malformed {kind}: carriage return (\\r) inside an unquoted field"
    return f"malformed {kind}: {exc}"


def _first_duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


# --------------------------------------------------------------------------- arrow readers


def _parquet_batches(parquet: Any, source: str) -> Iterator[list[dict[str, Any]]]:
    try:
        for batch in parquet.iter_batches(batch_size=_BATCH):
            yield batch.to_pylist()
    except Exception as exc:  # a corrupt row group mid-file: nothing after it is trustworthy
        raise InputError(source, None, f"Parquet read failed: {exc}") from exc
    finally:
        parquet.close()


def _hf_batches(dataset: Any) -> Iterator[list[dict[str, Any]]]:
    # Arrow format skips datasets' per-row Python formatting; to_pylist is one C call.
    for table in dataset.with_format("arrow").iter(batch_size=_BATCH):
        yield table.to_pylist()


def _read_arrow(
    batches: Iterator[list[dict[str, Any]]],
    source: str,
    check: Callable[[dict[str, Any], int], Row | str] | None,
) -> Iterator[Row | Reject]:
    line = 0
    for batch in batches:
        for data in batch:
            line += 1
            if check is None:
                yield _row(source, line, str(line), data)
                continue
            result = check(data, line)
            if isinstance(result, str):
                yield Reject(source, line, result, None)
            else:
                yield result


# --------------------------------------------------------------------------- text helpers


def _utf8_reason(raw: bytes, exc: UnicodeDecodeError, line: int | None) -> str:
    where = f"line {line} col {exc.start + 1}" if line is not None else f"col {exc.start + 1}"
    return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at {where})"


def _bad_lines_reason(bad: list[tuple[int, bytes, UnicodeDecodeError]], start: int) -> str:
    offset, raw, exc = bad[0]
    return _utf8_reason(raw, exc, start + offset if offset else None)


def _raw_text(lines: Iterable[bytes]) -> str:
    text = b"".join(lines).decode("utf-8", "replace")
    return text.removesuffix("\n").removesuffix("\r")


def _quote(text: str, limit: int = 80) -> str:
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
