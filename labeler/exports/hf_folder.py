"""A `save_to_disk` folder written with pyarrow alone, byte for byte what `datasets` writes.

An export streams each split into one Arrow file as it goes; `datasets` would then read
those files back and write them again (`Dataset.save_to_disk`), after a second and a half
of importing itself. For the folders an export writes, `save_to_disk` makes one shard per
split, written in batches of 1,000 rows, beside two small JSON files: this module writes
the split files in exactly that layout in the first place, moves them into the folder and
writes the JSON files itself. `datasets.load_from_disk` reads the result like any other;
`tests/test_export_golden.py` compares the bytes with those `datasets` wrote.

Where `save_to_disk` would do something else (a split over its shard size, rows so large
that it shrinks its batches, an empty split), `save` returns False and the caller goes
through `datasets` as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labeler.exports import features as hf_features
from labeler.exports.features import Features

BATCH_ROWS = 1000  # datasets.config.DEFAULT_MAX_BATCH_SIZE
# save_to_disk starts a second shard past 500 MB (MAX_SHARD_SIZE), and writes smaller
# batches when 1,000 rows exceed 100 MB (MAX_ROW_GROUP_SIZE); with a margin, since it
# measures the bytes of the file it reads back, not of the arrays written.
_MAX_SPLIT_BYTES = 400 * 10**6
_MAX_BATCH_BYTES = 80 * 10**6
_DATA_FILE = "data-00000-of-00001.arrow"


class SplitFile:
    """One split's rows as an Arrow stream file, in batches of `BATCH_ROWS` rows: rows
    come in as lists of values in column order and leave as one Arrow array per column
    (transposed in C by `zip`, no dict per row)."""

    def __init__(self, path: Path, features: Features) -> None:
        import pyarrow as pa

        self.path = path
        self.schema = hf_features.arrow_schema(features)
        self.rows = 0
        self.nbytes = 0
        self._pending: list[list[Any]] = []
        self._writer = pa.ipc.new_stream(str(path), self.schema)

    def add(self, values: list[Any]) -> None:
        self._pending.append(values)
        if len(self._pending) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        columns = zip(*self._pending, strict=True)
        arrays = [pa.array(list(col), type=f.type) for col, f in zip(columns, self.schema, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        self._writer.write_table(table, BATCH_ROWS)
        self.rows += table.num_rows
        self.nbytes += table.nbytes
        self._pending = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


def fits(split: SplitFile) -> bool:
    """Whether `save_to_disk` would write this split as one shard in 1,000-row batches."""
    if split.rows == 0:
        return False
    return split.nbytes <= _MAX_SPLIT_BYTES and split.nbytes / split.rows * BATCH_ROWS <= _MAX_BATCH_BYTES


def save(folder: Path, splits: Mapping[str, SplitFile], features: Features, *, as_dict: bool) -> bool:
    """Move closed split files into `folder` in `save_to_disk`'s layout: the folder of a
    `Dataset` for one split (`as_dict` False), of a `DatasetDict` otherwise. False, with
    nothing moved, where `datasets` must write it."""
    if not splits or not all(fits(s) for s in splits.values()):
        return False
    if not as_dict:
        (only,) = splits.values()
        _save_split(folder, only, features)
        return True
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}), "utf-8")
    for name, split in splits.items():
        _save_split(folder / name, split, features)
    return True


def _save_split(folder: Path, split: SplitFile, features: Features) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / _DATA_FILE
    os.replace(split.path, data)
    # datasets names a dataset's state by a fingerprint (its map() cache files are named
    # after it); a digest of the data gives the same export the same one.
    state: dict[str, Any] = {
        "_data_files": [{"filename": _DATA_FILE}],
        "_fingerprint": _digest(data),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    with open(folder / "state.json", "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    info = {"citation": "", "description": "", "features": dict(features), "homepage": "", "license": ""}
    with open(folder / "dataset_info.json", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)


def _digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def order(names: Sequence[str]) -> list[str]:
    """Splits in the order an export writes them: train first, then by name."""
    return sorted(names, key=lambda s: (s != "train", s))
