"""Teacher registry: ``--teacher provider:model`` picks a factory by its prefix.

The core never imports a provider by name; adding one is a module plus a line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labeler.apikeys import clean_key
from labeler.errors import ConfigError
from labeler.teachers.base import BaseTeacher, Teacher
from labeler.teachers.option_check import check_base_url, check_teacher_options


@dataclass(frozen=True)
class Provider:
    """What the core may know about a provider without importing it.

    Modules are named as ``"module:attribute"`` strings, imported only when used, so a
    missing optional dependency of one provider never breaks the others, and the SDKs are
    not imported by a run that does not use them.
    """

    factory: str  # builds the live teacher
    batch: str | None = None  # the BatchClient class for `--batch`, if the provider has one
    # How a shared prompt prefix is billed: "explicit" (written once at a premium, then
    # read cheaply: Anthropic's cache marks), "automatic" (OpenAI: cached reads, in steps
    # of 128 tokens), or None (not priced).
    prompt_cache: str | None = None
    # Answers sampled per soft-target request by a provider that returns no logprobs.
    sampled_answers: int | None = None
    # Whether its server answers `n` choices in one request (the prompt paid once): True
    # (OpenAI), False (Anthropic; llama.cpp's server) or None (not known before a run).
    choices_per_request: bool | None = None


PROVIDERS: dict[str, Provider] = {
    "openai": Provider(
        "labeler.teachers.openai_lean:openai_teacher",
        batch="labeler.batch.openai:OpenAIBatchClient",
        prompt_cache="automatic",
        choices_per_request=True,
    ),
    "openai-compatible": Provider(
        "labeler.teachers.openai_lean:openai_teacher", batch="labeler.batch.openai:OpenAIBatchClient"
    ),
    "anthropic": Provider(
        "labeler.teachers.anthropic:AnthropicTeacher",
        batch="labeler.batch.anthropic:AnthropicBatchClient",
        prompt_cache="explicit",
        sampled_answers=5,
        choices_per_request=False,
    ),
    "local": Provider("labeler.teachers.local:LocalTeacher", choices_per_request=False),
}
# provider prefix -> "module:factory" (the factories alone, as earlier versions had them)
REGISTRY: dict[str, str] = {name: p.factory for name, p in PROVIDERS.items()}


def provider(name: str) -> Provider:
    """The registry entry of a provider; an unknown name is a config error."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ConfigError(f"unknown provider '{name}' (known: {', '.join(PROVIDERS)})") from None


def load(ref: str) -> Any:
    """Import ``"module:attribute"`` and return the attribute."""
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def parse_spec(spec: str) -> tuple[str, str]:
    """``openai:gpt-4o-mini`` -> (``openai``, ``gpt-4o-mini``); a clear error otherwise."""
    provider, sep, model = spec.partition(":")
    if not sep or not provider or not model:
        raise ConfigError(
            f"--teacher '{spec}': expected PROVIDER:MODEL, e.g. openai:gpt-4o-mini "
            f"(providers: {', '.join(REGISTRY)})"
        )
    if provider not in REGISTRY:
        raise ConfigError(f"--teacher '{spec}': unknown provider '{provider}' (known: {', '.join(REGISTRY)})")
    return provider, model


def make_teacher(spec: str, **options: Any) -> Teacher:
    """Build a teacher from ``provider:model`` and provider options (base_url, api_key…).

    ``base_url`` may name several endpoints (a list, or one comma-separated string): each
    gets its own teacher and an `EndpointPool` spreads requests over them. So does a
    ``cache_identity`` option, even with one endpoint (see teachers/pool.py for why the
    endpoint list is kept out of the cache key).
    """
    provider, model = parse_spec(spec)
    factory = load(PROVIDERS[provider].factory)
    urls = base_urls(options.pop("base_url", None))
    for url in urls:
        check_base_url(url)
    check_teacher_options(factory, options)
    if isinstance(options.get("api_key"), str):
        options["api_key"] = clean_key(options["api_key"], "the API key")
    cache_identity = options.pop("cache_identity", None)
    if len(urls) > 1 or cache_identity is not None:
        from labeler.teachers.pool import EndpointPool

        default: list[str | None] = [None]  # the provider's own URL
        endpoints = [
            factory(model=model, provider=provider, base_url=u, **options) for u in (urls or default)
        ]
        return EndpointPool(endpoints, cache_identity=cache_identity)
    if urls:
        options["base_url"] = urls[0]
    teacher: Teacher = factory(model=model, provider=provider, **options)
    return teacher


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


__all__ = [
    "PROVIDERS",
    "REGISTRY",
    "BaseTeacher",
    "Provider",
    "Teacher",
    "base_urls",
    "load",
    "make_teacher",
    "parse_spec",
    "provider",
]
