"""Simulated prompt caching, so cost accounting of cached tokens can be tested.

Anthropic caches explicitly: each block marked with `cache_control` ends a cacheable
prefix. The first request with a prefix pays `cache_creation_input_tokens` for it; later
requests with the same prefix (same model, within the TTL) get
`cache_read_input_tokens`. OpenAI caches automatically: a prompt of at least 1024
tokens reports `cached_tokens` for the longest previously seen prefix, in 128-token
steps. Prefixes are identified by digests, never stored as text.
"""

from __future__ import annotations

import hashlib

from labeler.testing.prompts import CacheMark
from labeler.testing.tokens import tokenize

_TTL_S = {"5m": 300.0, "1h": 3600.0}
_OPENAI_TTL_S = 600.0
_OPENAI_STEP = 128
_MAX_ENTRIES = 200_000


class PromptCaches:
    def __init__(self) -> None:
        self._entries: dict[bytes, float] = {}

    def anthropic(
        self,
        model: str,
        segments: list[str],
        seg_tokens: list[int],
        marks: list[CacheMark],
        now: float,
        min_tokens: int,
    ) -> tuple[int, int, int]:
        """(read, written with 5m TTL, written with 1h TTL) token counts for one request."""
        if not marks:
            return 0, 0, 0
        hasher = hashlib.blake2b(model.encode(), digest_size=16)
        prefixes: list[tuple[bytes, int, str]] = []
        tokens = 0
        at = 0
        for index, ttl in marks:
            while at <= index:
                hasher.update(segments[at].encode())
                hasher.update(b"\x00")
                tokens += seg_tokens[at]
                at += 1
            prefixes.append((hasher.copy().digest(), tokens, ttl))
        read = 0
        for digest, size, ttl in reversed(prefixes):
            if self._entries.get(digest, 0.0) > now:
                read = size
                self._entries[digest] = now + _TTL_S.get(ttl, 300.0)
                break
        _, last_size, last_ttl = prefixes[-1]
        written = 0
        if last_size > read and last_size >= min_tokens:
            written = last_size - read
            self._trim()
            for digest, size, ttl in prefixes:
                if size >= min_tokens:
                    self._entries[digest] = now + _TTL_S.get(ttl, 300.0)
        if last_ttl == "1h":
            return read, 0, written
        return read, written, 0

    def openai(self, model: str, segments: list[str], now: float, min_tokens: int) -> int:
        """Cached prompt tokens for an automatically cached OpenAI prompt."""
        tokens = [tok for segment in segments for tok in tokenize(segment)]
        if len(tokens) < min_tokens or min_tokens <= 0:
            return 0
        hasher = hashlib.blake2b(model.encode(), digest_size=16)
        hasher.update("".join(tokens[:min_tokens]).encode())
        cached = 0
        digests = []
        for end in range(min_tokens, len(tokens) + 1, _OPENAI_STEP):
            if end > min_tokens:
                hasher.update("".join(tokens[end - _OPENAI_STEP : end]).encode())
            digest = hasher.copy().digest()
            digests.append(digest)
            if self._entries.get(digest, 0.0) > now:
                cached = end
        self._trim()
        for digest in digests:
            self._entries[digest] = now + _OPENAI_TTL_S
        return cached

    def _trim(self) -> None:
        if len(self._entries) > _MAX_ENTRIES:
            self._entries.clear()
