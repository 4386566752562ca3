"""A Hugging Face Hub dataset as input: ``hf://datasets/NAME[:CONFIG][:SPLIT]``.

The dataset is streamed through `datasets` (`load_dataset(..., streaming=True)`), so a
run over a few rows of a large dataset reads those rows, nothing is copied into the cache
first, and memory stays flat; a run that reads its input twice (label, then export)
streams it twice. NAME is whatever `load_dataset` takes: a Hub id (``stanfordnlp/sst2``),
or a local folder of data files by the same name, which `load_dataset` prefers when it
exists, so a dataset kept beside the job reads through exactly the same path.

One suffix is the config when the dataset has a config of that name, else the split
(``hf://datasets/stanfordnlp/sst2:validation``); two are ``CONFIG:SPLIT``. Rows are named
like those of a saved dataset: ``SOURCE:LINE`` where LINE is the row's index + 1 in the
split, and that is the row's id when it has no id column, so a rerun over the same
revision finds every answer in the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from labeler.errors import ConfigError, InputError, short

PREFIX = "hf://datasets/"
_BATCH = 1024


def is_hub(source: str | os.PathLike[str]) -> bool:
    """Whether `source` names a Hub dataset rather than a file."""
    return isinstance(source, str) and source.startswith(PREFIX)


@dataclass(frozen=True)
class HubSpec:
    """A parsed ``hf://datasets/...`` input; `parts` are the suffixes after NAME."""

    given: str
    name: str
    parts: tuple[str, ...]


def parse(given: str) -> HubSpec:
    """Split ``hf://datasets/NAME[:CONFIG][:SPLIT]``; a malformed spec is one line."""
    rest = given[len(PREFIX) :]
    name, *parts = rest.split(":")
    if not name.strip("/") or len(parts) > 2 or any(not p for p in parts):
        raise InputError(
            given,
            None,
            "expected hf://datasets/NAME[:CONFIG][:SPLIT], e.g. hf://datasets/stanfordnlp/sst2:validation",
        )
    return HubSpec(given, name, tuple(parts))


@dataclass(frozen=True)
class HubSplit:
    """One resolved split: what to stream and how to name its rows."""

    source: str  # hf://datasets/NAME:CONFIG:SPLIT (CONFIG left out when the spec had none)
    dataset: Any  # a datasets.IterableDataset

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        """The rows in order, a batch at a time; a stream that breaks is one line."""
        try:
            for batch in self.dataset.iter(batch_size=_BATCH):
                columns = list(batch)
                size = len(batch[columns[0]]) if columns else 0
                yield [{c: batch[c][i] for c in columns} for i in range(size)]
        except InputError:
            raise
        except Exception as exc:  # a dropped connection, a corrupt shard
            raise InputError(self.source, None, f"reading the dataset failed: {_one_line(exc)}") from exc

    def num_rows(self) -> int | None:
        """The split's size when the dataset's card states it (for a progress bar)."""
        info = getattr(self.dataset, "info", None)
        splits = getattr(info, "splits", None) or {}
        split = getattr(self.dataset, "split", None)
        found = splits.get(str(split)) if split is not None else None
        return int(found.num_examples) if found is not None and found.num_examples else None


def open_split(given: str, split: str | None = None) -> HubSplit:
    """Resolve the spec to one streamed split; `split` is the ``--split`` flag, which a
    split in the spec must agree with. A dataset that cannot be found or loaded, a config
    or split it does not have: one `InputError` line naming the input."""
    spec = parse(given)
    import datasets

    config, spec_split = _config_and_split(spec)
    if spec_split is not None and split is not None and spec_split != split:
        raise ConfigError(f"{given}: split {spec_split!r} in the input but --split {split!r}")
    split = spec_split or split
    try:
        loaded = datasets.load_dataset(spec.name, config, split=split, streaming=True)
    except Exception as exc:  # datasets raises its own, OS, connection and value errors
        raise InputError(given, None, f"cannot load the Hugging Face dataset: {_one_line(exc)}") from exc
    if isinstance(loaded, datasets.IterableDatasetDict | datasets.DatasetDict):
        names = ", ".join(loaded) or "none"
        if len(loaded) != 1:
            raise InputError(
                given, None, f"has several splits; name one as {given}:SPLIT (or --split), one of: {names}"
            )
        split = next(iter(loaded))
        loaded = loaded[split]
    where = ":".join(p for p in (spec.name, config, split) if p)
    return HubSplit(PREFIX + where, loaded)


def _config_and_split(spec: HubSpec) -> tuple[str | None, str | None]:
    """Two suffixes are CONFIG:SPLIT; one is the config if the dataset has one so named."""
    if len(spec.parts) == 2:
        return spec.parts[0], spec.parts[1]
    if not spec.parts:
        return None, None
    import datasets

    try:
        configs = datasets.get_dataset_config_names(spec.name)
    except Exception as exc:
        raise InputError(spec.given, None, f"cannot load the Hugging Face dataset: {_one_line(exc)}") from exc
    only = spec.parts[0]
    return (only, None) if only in configs else (None, only)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return short(text[0] if text else type(exc).__name__, 240)


__all__ = ["PREFIX", "HubSplit", "is_hub", "open_split", "parse"]
