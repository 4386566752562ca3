"""Few-shot examples chosen per row: the labeled pool examples most similar to the row.

A fixed set of examples shows a small model what the labels look like; examples that
resemble the row at hand show it where the boundary lies for *this* kind of input (a
basketball story next to a basketball example). Similarity is BM25 over lower-cased word
tokens: no model to download, deterministic, and fast enough to rank a pool of thousands
per row.

The chosen examples go after the template's fixed prefix (system prompt and fixed
``few_shot``), most similar last, right before the row: the fixed prefix stays identical
across rows, so a server's prompt cache still reuses it.

A pool row that is the row itself (same text in every field) is never chosen: a row must
not be graded on its own answer.
"""

from __future__ import annotations

import math
import re
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from labeler.errors import TemplateError

__all__ = ["ExamplePool", "PoolExample", "load_pool", "tokens"]

_WORD = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits; punctuation splits)."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class PoolExample:
    """One labeled pool row: its template fields and its answer (a label name)."""

    input: dict[str, Any]
    output: str


class ExamplePool:
    """BM25 index over the pool's text; `nearest` returns the k best for a row.

    BM25 (k1 = 1.2, b = 0.75): for each query term t, idf(t) · tf·(k1+1) / (tf + k1·(1 − b
    + b·len/avglen)), with idf(t) = ln(1 + (N − df + 0.5) / (df + 0.5)). Ties go to the
    earlier pool row, so the choice is reproducible.
    """

    K1 = 1.2
    B = 0.75

    def __init__(self, examples: Sequence[PoolExample], fields: Sequence[str]) -> None:
        if not examples:
            raise ValueError("an example pool needs at least one example")
        self.examples = tuple(examples)
        self.fields = tuple(fields)
        docs = [tokens(self._text(ex.input)) for ex in self.examples]
        self._keys = [self._key(ex.input) for ex in self.examples]
        self._tf = [Counter(d) for d in docs]
        self._len = [len(d) for d in docs]
        self._avg = (sum(self._len) / len(docs)) or 1.0
        df: Counter[str] = Counter()
        postings: dict[str, list[int]] = {}
        for i, tf in enumerate(self._tf):
            df.update(tf.keys())
            for term in tf:
                postings.setdefault(term, []).append(i)
        n = len(docs)
        self._idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        self._postings = postings

    def _text(self, row: Mapping[str, Any]) -> str:
        return " ".join(str(row.get(f, "")) for f in self.fields)

    def _key(self, row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(row.get(f, "")).strip() for f in self.fields)

    def scores(self, row: Mapping[str, Any]) -> list[float]:
        """BM25 score of every pool example against the row's text."""
        out = [0.0] * len(self.examples)
        for term in set(tokens(self._text(row))):
            idf = self._idf.get(term)
            if idf is None:
                continue
            for i in self._postings[term]:
                tf = self._tf[i][term]
                norm = self.K1 * (1 - self.B + self.B * self._len[i] / self._avg)
                out[i] += idf * tf * (self.K1 + 1) / (tf + norm)
        return out

    def nearest(self, row: Mapping[str, Any], k: int) -> list[PoolExample]:
        """The k most similar examples, least similar first (the best sits next to the row)."""
        scores = self.scores(row)
        own = self._key(row)
        order = sorted((i for i in range(len(scores)) if self._keys[i] != own), key=lambda i: (-scores[i], i))
        return [self.examples[i] for i in reversed(order[:k])]


MAX_POOL_BYTES = 256 << 20  # every example is scored against every row: far past useful


def load_pool(
    path: str | Path, fields: Sequence[str], label_field: str, labels: Sequence[str] | None, where: str
) -> list[PoolExample]:
    """Read a JSONL pool: one object per line with the template's fields and a label.

    Every problem names the pool file and line; labels outside the template's label set
    are an error, not a silent example of a label the model may not answer.
    """
    path = Path(path)
    try:
        info = path.stat()
        # A device or pipe (/dev/zero, /dev/stdin) never ends or is read once; a pool is
        # a file of examples read at every template load.
        if not stat.S_ISREG(info.st_mode):
            raise TemplateError(where, f"few-shot pool {path} is not a regular file", field="few_shot_pool")
        if info.st_size > MAX_POOL_BYTES:
            raise TemplateError(
                where,
                f"few-shot pool {path} is {info.st_size:,} bytes; a pool holds at most {MAX_POOL_BYTES:,}",
                field="few_shot_pool",
            )
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise TemplateError(
            where, f"cannot read few-shot pool {path} ({exc.strerror})", field="few_shot_pool"
        ) from exc
    out: list[PoolExample] = []
    allowed = set(labels) if labels else None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise TemplateError(f"{path}:{n}", f"not JSON ({exc})", field="few_shot_pool") from exc
        if not isinstance(rec, dict):
            raise TemplateError(f"{path}:{n}", "must be a JSON object", field="few_shot_pool")
        missing = [f for f in (*fields, label_field) if rec.get(f) in (None, "")]
        if missing:
            raise TemplateError(f"{path}:{n}", "missing in the pool row", field=missing[0])
        label = str(rec[label_field])
        if allowed is not None and label not in allowed:
            raise TemplateError(f"{path}:{n}", f"'{label}' is not one of the labels", field=label_field)
        out.append(PoolExample({f: rec[f] for f in fields}, label))
    if not out:
        raise TemplateError(where, f"few-shot pool {path} has no rows", field="few_shot_pool")
    return out
