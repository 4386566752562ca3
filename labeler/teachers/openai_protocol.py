"""The OpenAI HTTP API without the SDK: endpoints, request bodies and the error ladder.

Every OpenAI transport (the lean aiohttp one, the SDK one, batch files) builds the same
body and classifies the same HTTP answers, so those rules live here, in a module that
imports no SDK: the lean transport, which is the default, then never pays the second it
takes to import `openai`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from labeler import errors
from labeler.apikeys import clean_key
from labeler.errors import ConfigError, TeacherError, short
from labeler.redact import remember
from labeler.request import Request
from labeler.teachers.base import parse_retry_after
from labeler.teachers.refusals import refused

OPENAI_URL = "https://api.openai.com/v1"
CHAT_PARAMS = {
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "logit_bias",
    "reasoning_effort",
}
COMPLETION_PARAMS = {"temperature", "top_p", "max_tokens", "n", "stop", "seed", "logit_bias"}


def endpoint(provider: str, model: str, base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """(base URL without a trailing slash, API key) for an OpenAI(-compatible) teacher, as
    the SDK resolves them: OpenAI falls back to OPENAI_BASE_URL and needs a key; any
    other server needs a URL and may take no key."""
    if provider == "openai":
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
        api_key = api_key or clean_key(
            os.environ.get("OPENAI_API_KEY", ""), "environment variable OPENAI_API_KEY"
        )
        if not api_key:
            raise ConfigError("no OpenAI API key: set OPENAI_API_KEY (or pass --api-key-file FILE)")
        remember(api_key)
    else:
        if not base_url:
            raise ConfigError(
                f"--teacher {provider}:{model} needs --base-url (e.g. http://localhost:8000/v1)"
            )
        api_key = api_key or clean_key(
            os.environ.get("OPENAI_API_KEY", ""), "environment variable OPENAI_API_KEY"
        )
        remember(api_key)
        api_key = api_key or "not-needed"
    return base_url.rstrip("/"), api_key


def request_body(model: str, provider: str, request: Request) -> dict[str, Any]:
    """The JSON body for `request`, the one every OpenAI transport and batch file sends."""
    if request.is_chat:
        return {
            "model": model,
            "messages": list(request.messages or ()),
            **chat_params(request.params, provider),
        }
    return {"model": model, "prompt": request.prompt or "", **completion_params(request.params)}


def chat_params(params: Mapping[str, Any], provider: str) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if k in CHAT_PARAMS}
    if provider == "openai" and "max_tokens" in out:
        out["max_completion_tokens"] = out.pop("max_tokens")
    if not out.get("logprobs"):
        out.pop("top_logprobs", None)
    return out


def completion_params(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if k in COMPLETION_PARAMS}
    if params.get("logprobs"):
        out["logprobs"] = int(params.get("top_logprobs") or 1)
    return out


def completions_unserved(status: int, code: str | None, message: str, url: str) -> ConfigError | None:
    """A 404 from the legacy completions endpoint, told as what it means to a labeler user:
    the server serves chat only (OpenAI's own models, most gateways), so a completion
    template cannot work there and every row would fail the same way. A model that does
    not exist is a 404 too, and is left to say so itself."""
    if status != 404 or code == "model_not_found":
        return None
    return ConfigError(
        f"{url} answered 404 ({short(message, 160)}): the server does not serve "
        "completions; use a chat template (mode: chat) instead of a completion one"
    )


def classify_status(
    status: int, headers: Mapping[str, str] | None, code: Any, message: str, param: Any = None
) -> TeacherError:
    """An OpenAI-style HTTP error answer as labeler's failure, read the same way for the
    SDK's exceptions and the lean transport's raw answers (`errors.classify_status`, with
    the parameter refusal and retry-after read from this answer)."""
    return errors.classify_status(
        status,
        message,
        provider="openai",
        code=code,
        retry_after=parse_retry_after(headers),
        refusal=refused(status, code, param, message),
    )
