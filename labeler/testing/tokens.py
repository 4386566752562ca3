"""The server's tokenizer: simple, deterministic and lossless.

A real BPE vocabulary is not needed to exercise a labeling pipeline, but two properties
of real tokenizers are: words carry their leading space (so `" positive"` and
`"positive"` are different tokens, as with GPT-style vocabularies) and joining the
tokens gives back the text exactly (so offsets and truncation are well defined).
"""

from __future__ import annotations

import re

TOKEN_RE = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")


def tokenize(text: str) -> list[str]:
    """Words with their leading whitespace, each punctuation mark on its own."""
    return TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """How many tokens `tokenize` would return; the unit of usage and rate limits."""
    return len(TOKEN_RE.findall(text))
