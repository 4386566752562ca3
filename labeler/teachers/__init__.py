"""Teacher registry: ``--teacher provider:model`` picks a factory by its prefix.

The core never imports a provider by name; adding one is a module plus a line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from labeler.errors import ConfigError
from labeler.teachers.base import Teacher

# provider prefix -> "module:factory"; imported only when used so a missing optional
# dependency of one provider never breaks the others.
REGISTRY: dict[str, str] = {
    "openai": "labeler.teachers.fast_openai:openai_teacher",
    "openai-compatible": "labeler.teachers.fast_openai:openai_teacher",
    "anthropic": "labeler.teachers.anthropic:AnthropicTeacher",
    "local": "labeler.teachers.local:LocalTeacher",
}


def parse_spec(spec: str) -> tuple[str, str]:
    """``openai:gpt-4o-mini`` -> (``openai``, ``gpt-4o-mini``); a clear error otherwise."""
    provider, sep, model = spec.partition(":")
    if not sep or not provider or not model:
        raise ConfigError(
            f"--teacher '{spec}': expected PROVIDER:MODEL, e.g. openai:gpt-4o-mini "
            f"(providers: {', '.join(REGISTRY)})"
        )
    if provider not in REGISTRY:
        raise ConfigError(
            f"--teacher '{spec}': unknown provider '{provider}' (known: {', '.join(REGISTRY)})"
        )
    return provider, model


def make_teacher(spec: str, **options: Any) -> Teacher:
    """Build a teacher from ``provider:model`` and provider options (base_url, api_key…).

    ``base_url`` may name several endpoints (a list, or one comma-separated string): each
    gets its own teacher and an `EndpointPool` spreads requests over them. So does a
    ``cache_identity`` option, even with one endpoint (see teachers/pool.py for why the
    endpoint list is kept out of the cache key).
    """
    provider, model = parse_spec(spec)
    module_name, _, attr = REGISTRY[provider].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    urls = base_urls(options.pop("base_url", None))
    cache_identity = options.pop("cache_identity", None)
    if len(urls) > 1 or cache_identity is not None:
        from labeler.teachers.pool import EndpointPool

        endpoints = [factory(model=model, provider=provider, base_url=u, **options)
                     for u in (urls or [None])]
        return EndpointPool(endpoints, cache_identity=cache_identity)
    if urls:
        options["base_url"] = urls[0]
    return factory(model=model, provider=provider, **options)


def base_urls(value: str | Sequence[str] | None) -> list[str]:
    """``--base-url`` values, repeated and/or comma-separated, in order, without repeats."""
    if not value:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        for url in str(item).split(","):
            url = url.strip()
            if url and url not in out:
                out.append(url)
    return out


__all__ = ["REGISTRY", "Teacher", "base_urls", "make_teacher", "parse_spec"]
