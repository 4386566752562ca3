"""Teacher options checked before a teacher is built: names, numbers and URLs.

A teacher's options (`timeout`, `max_connections`, `samples`, ...) reach its constructor as
keywords, so a misspelt one was a TypeError traceback and a negative or NaN timeout a
teacher that gives up at once or never. A base URL with ``user:pass@`` carries a secret
into the cache key, the dataset card and every message that names the endpoint. Each is
refused here with one line that names the option (never the secret).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from labeler.errors import ConfigError

# Options whose range is not "a positive number".
_RANGES: dict[str, tuple[float, float]] = {"port": (0, 65535)}
_BUILT_HERE = {"model", "provider", "base_url", "api_key", "cache_identity"}


def check_teacher_options(factory: Any, options: Mapping[str, Any], where: str = "") -> None:
    """Refuse an option `factory` does not take, or a number that is not finite and in
    range (positive, unless listed in _RANGES), or of another type than its default."""
    prefix = f"{where}: " if where else ""
    params = inspect.signature(factory).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = {
        n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    } - _BUILT_HERE
    for name, value in options.items():
        if name in _BUILT_HERE:
            continue
        if name not in known and not open_ended:
            raise ConfigError(
                f"{prefix}teacher option '{name}' is not one this teacher "
                f"takes (it takes: {', '.join(sorted(known))})"
            )
        default = params[name].default if name in params else inspect.Parameter.empty
        _check_value(name, value, default, prefix)


def _check_value(name: str, value: Any, default: Any, prefix: str) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    wants_number = isinstance(default, int | float) and not isinstance(default, bool)
    if wants_number and not number:
        raise ConfigError(f"{prefix}teacher option '{name}' must be a number, got {type(value).__name__}")
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(f"{prefix}teacher option '{name}' must be true or false")
    if not number:
        return
    low, high = _RANGES.get(name, (0, math.inf))
    ok = math.isfinite(value) and low <= value <= high and (name in _RANGES or value > 0)
    if not ok:
        want = f"from {low:g} to {high:g}" if name in _RANGES else "a finite number > 0"
        raise ConfigError(f"{prefix}teacher option '{name}' must be {want}, got {value}")


def check_base_url(url: str, where: str = "") -> None:
    """Refuse a base URL that carries credentials (``https://user:key@host/v1``)."""
    prefix = f"{where}: " if where else ""
    try:
        parts = urlsplit(url)
        has_userinfo = "@" in parts.netloc
    except ValueError as exc:
        raise ConfigError(f"{prefix}base URL is not a URL ({exc})") from None
    if has_userinfo:
        host = parts.netloc.rpartition("@")[2]
        shown = urlunsplit((parts.scheme, "***@" + host, parts.path, "", ""))
        raise ConfigError(
            f"{prefix}base URL {shown}: credentials in the URL (user:pass@) "
            "would be kept with every answer's key and shown wherever the "
            "endpoint is named; give the key with --api-key-file (or "
            "api_key_file) or the provider's environment variable"
        )


__all__ = ["check_base_url", "check_teacher_options"]
