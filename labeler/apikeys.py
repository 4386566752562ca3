"""API keys come from the environment or from a file only its owner can read.

A key in a world-readable file (or in a config file that gets committed) leaks; refusing
such a file is cheaper than rotating a key. The CLI's --api-key-file and a refresh
config's api_key_file both go through `read_key_file`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from labeler.errors import ConfigError
from labeler.redact import remember


def read_key_file(path: str | os.PathLike[str]) -> str:
    """The key in `path`, which must not be readable or writable by group or others."""
    p = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        if mode & 0o077:
            raise ConfigError(f"{p}: API key file must not be readable by others "
                              f"(chmod 600 {p}; it is {oct(mode)})")
        key = p.read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the API key file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: the API key file is not UTF-8 text") from exc
    if not key:
        raise ConfigError(f"{p}: the API key file is empty")
    remember(key)
    return key


def key_from_env(name: str) -> str:
    """The key in environment variable `name` (named by a config, so it must be set)."""
    key = os.environ.get(name, "").strip()
    if not key:
        raise ConfigError(f"environment variable {name} (api_key_env) is not set")
    remember(key)
    return key
