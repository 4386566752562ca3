"""Teacher registry: ``--teacher provider:model`` picks a factory by its prefix.

The core never imports a provider by name; adding one is a module plus a line here.
"""

from __future__ import annotations

import importlib
from typing import Any

from labeler.errors import ConfigError
from labeler.teachers.base import Teacher

# provider prefix -> "module:factory"; imported only when used so a missing optional
# dependency of one provider never breaks the others.
REGISTRY: dict[str, str] = {
    "openai": "labeler.teachers.openai:OpenAITeacher",
    "openai-compatible": "labeler.teachers.openai:OpenAITeacher",
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
    """Build a teacher from ``provider:model`` and provider options (base_url, api_key…)."""
    provider, model = parse_spec(spec)
    module_name, _, attr = REGISTRY[provider].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(model=model, provider=provider, **options)


__all__ = ["REGISTRY", "Teacher", "make_teacher", "parse_spec"]
