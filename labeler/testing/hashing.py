"""Cheap, seedable, platform-stable hashing: the source of every "random" choice.

Python's `hash()` is salted per process and `random.Random` is order-dependent, so
neither can give the same fault or the same sampled label for the same prompt across
runs and concurrency levels. Everything the server decides is a pure function of
(seed, prompt, attempt) through these helpers instead.
"""

from __future__ import annotations

import hashlib

_MASK = (1 << 64) - 1
_TO_UNIT = 1.0 / (1 << 53)


def text_hash(text: str) -> int:
    """A 64-bit digest of a string, identical on every machine and run."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _splitmix(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def mix(*parts: int) -> int:
    """Fold integers into one well-spread 64-bit value (order matters)."""
    h = 0
    for part in parts:
        h = _splitmix(h ^ (part & _MASK))
    return h


def unit(*parts: int) -> float:
    """A uniform float in [0, 1) determined by the parts."""
    return (mix(*parts) >> 11) * _TO_UNIT
