"""API keys come from the environment or from a file only its owner can read.

A key in a world-readable file (or in a config file that gets committed) leaks; refusing
such a file is cheaper than rotating a key. The CLI's --api-key-file and a refresh
config's api_key_file both go through `read_key_file`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labeler.errors import ConfigError
from labeler.redact import looks_like_secret, remember


def read_key_file(path: str | os.PathLike[str]) -> str:
    """The key in `path`, which must not be readable or writable by group or others."""
    p = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{p}: API key file must not be readable by others (chmod 600 {p}; it is {oct(mode)})"
            )
        key = clean_key(p.read_text("utf-8"), str(p))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the API key file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: the API key file is not UTF-8 text") from exc
    if not key:
        raise ConfigError(f"{p}: the API key file is empty")
    remember(key)
    return key


def clean_key(key: str, source: str) -> str:
    """The key without the blanks around it (a file written by `echo` ends in a newline;
    an HTTP header cannot carry one); a key with a line break or blank inside is refused,
    since it is two things pasted together, and is never echoed."""
    key = key.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in key):
        lines = len(key.splitlines())
        raise ConfigError(
            f"{source}: the API key has a line break, blank or control "
            f"character inside it ({lines} line(s)); a key is one line of "
            "text alone"
        )
    return key


# Names of settings (and HTTP headers) whose value is a credential.
SECRET_NAME = re.compile(
    r"(?i)(^|[_-])(api[_-]?key|secret|password|passwd|token|"
    r"authorization|auth|credentials?|cookie|bearer)($|[_-])"
)


def find_secret(config: Any, path: str = "") -> str | None:
    """Where in `config` (a parsed YAML/JSON value) a secret sits: a key named like one
    (api_key, Authorization, x-api-key, token...) with a value, or a value holding a
    configured key or anything shaped like a credential; None when there is none. The
    path names the place (``teacher_options.extra_headers.Authorization``), never the value."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            here = f"{path}.{key}" if path else str(key)
            if SECRET_NAME.search(str(key)) and value not in (None, "", False):
                return here
            found = find_secret(value, here)
            if found is not None:
                return found
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            found = find_secret(value, f"{path}[{i}]")
            if found is not None:
                return found
    elif isinstance(config, str) and looks_like_secret(config):
        return path or "value"
    return None


def key_from_env(name: str) -> str:
    """The key in environment variable `name` (named by a config, so it must be set)."""
    key = clean_key(os.environ.get(name, ""), f"environment variable {name}")
    if not key:
        raise ConfigError(f"environment variable {name} (api_key_env) is not set")
    remember(key)
    return key
