"""Keep API keys out of every message labeler prints, logs, stores or exports.

Some gateways and proxies answer a bad key with a message that quotes it back
(``Incorrect API key provided: Bearer sk-...``). Such a message would otherwise reach
stderr, the failures table, `labeler stats` and cron's JSON line. So every message is
passed through `redact` where it is made (a `TeacherError` redacts its own message) and
again where it leaves the process (the store's failure records, the CLI's output).

Two nets: the keys this process was configured with (remembered when they are read),
and anything shaped like a credential (``Bearer ...``, ``sk-...``, ``sk-ant-...``,
``x-api-key: ...``) whoever it belongs to.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence

MASK = "[redacted]"
# Environment variables whose values are keys even when labeler did not read them itself
# (an SDK may pick them up on its own).
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LABELER_TEACHER_API_KEY")
MIN_KEY_LENGTH = 8  # shorter "keys" (e.g. "test") are common words: masking them garbles text

_SHAPES = re.compile(
    r"(?i:\bbearer\s+)[^\s\"',;]+"  # Authorization header values, any token
    r"|(?i:\bx-api-key\s*[:=]\s*)[^\s\"',;]+"  # an Anthropic key header, quoted
    r"|\bsk-[A-Za-z0-9_\-*.]{6,}"  # OpenAI / Anthropic (sk-ant-...) / compatible keys
)

_known: set[str] = set()
_lock = threading.Lock()
_cached: tuple[tuple[int, tuple[str, ...]], list[str]] | None = None


def remember(key: str | None) -> None:
    """Mask this configured key in every later message (called wherever a key is read)."""
    if key and len(key.strip()) >= MIN_KEY_LENGTH:
        with _lock:
            _known.add(key.strip())


def redact(text: str) -> str:
    """`text` with every configured key and anything shaped like a credential masked."""
    if not text:
        return text
    for key in _secrets():
        if key in text:
            text = text.replace(key, MASK)
    lowered = text.lower()
    if "bearer" not in lowered and "sk-" not in lowered and "x-api-key" not in lowered:
        return text  # the common case, cheaply: no credential shape can match
    return _SHAPES.sub(_mask_match, text)


def looks_like_secret(text: str) -> bool:
    """Whether `text` holds a configured key or anything shaped like a credential."""
    return bool(text) and redact(text) != text


def redact_known(text: str, keys: Sequence[str] | None = None) -> str:
    """`text` with the keys this process was configured with masked, and nothing else: for
    a teacher's answer, where a word like "Bearer" is the teacher's own text, but a
    configured key quoted back by a gateway must not be stored or exported. `keys`: those
    of `configured_keys()`, read once for many texts."""
    if not text:
        return text
    for key in _secrets() if keys is None else keys:
        if key in text:
            text = text.replace(key, MASK)
    return text


def configured_keys() -> list[str]:
    """The keys `redact_known` masks now, longest first. Reading them looks up the
    environment, which costs more than masking a short answer, so whoever masks a batch of
    answers (`Store.put_many`) reads them once for the batch."""
    return _secrets()


def _mask_match(match: re.Match[str]) -> str:
    """Keep the label ("Bearer ", "api_key=") so the message still says what was wrong."""
    value = match.group(0)
    if value[:3].lower() == "sk-":
        return MASK
    cut = len(value) - len(value.lstrip())  # no leading blanks in practice; be exact anyway
    head = re.match(r"(?i)(bearer\s+|x-api-key\s*[:=]\s*)", value[cut:])
    return value[: cut + (head.end() if head else 0)] + MASK


def _secrets() -> list[str]:
    """Remembered keys and those in the environment now, longest first (a key that
    contains another is masked whole); cached until either changes."""
    global _cached
    env = tuple(os.environ.get(name, "") for name in KEY_VARIABLES)
    with _lock:
        if _cached is not None and _cached[0] == (len(_known), env):
            return _cached[1]
        keys = set(_known)
        keys.update(v.strip() for v in env if len(v.strip()) >= MIN_KEY_LENGTH)
        ordered = sorted(keys, key=len, reverse=True)
        _cached = ((len(_known), env), ordered)
        return ordered


__all__ = ["MASK", "configured_keys", "looks_like_secret", "redact", "redact_known", "remember"]
