"""Teachers that refuse request parameters, answering as the real providers do.

Reasoning models and several OpenAI-compatible hosts turn down parameters a label
template sends by default (logprobs, a temperature other than 1, `max_tokens`), each in
its own words and body shape. A mode names one such teacher; the server checks a request
against it after validation and before anything is charged, as the providers do:

- ``openai-reasoning``: OpenAI's o-series and gpt-5 models. HTTP 400 with
  ``code: unsupported_parameter`` and ``param: logprobs`` (or ``top_logprobs``), then
  ``code: unsupported_value`` for a temperature other than 1, then
  ``unsupported_parameter`` for ``max_tokens`` ("Use 'max_completion_tokens' instead.");
  one refusal per request, the first parameter found.
- ``openai-403``: deployments that answer a logprobs request with HTTP 403 "You are not
  allowed to request logprobs from this model" (no param, no code).
- ``gemini``: Gemini's OpenAI-compatible endpoint, HTTP 400 with a JSON *list* of Google
  errors: ``[{"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT"}}]``.
- ``groq``: HTTP 400 "`logprobs` is not supported with this model".
- ``silent``: no refusal at all, but no logprobs either: a 200 without them, as older
  Ollama builds and some gateways answer.
- ``anthropic-thinking``: Anthropic's Messages API with extended thinking on, which
  refuses any temperature but 1 (HTTP 400 ``invalid_request_error``).
"""

from __future__ import annotations

from typing import Any

import orjson

MODES = (None, "openai-reasoning", "openai-403", "gemini", "groq", "silent", "anthropic-thinking")
THINKING_TEMPERATURE = (
    "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
    "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    "#important-considerations-when-using-extended-thinking"
)


def refusal(mode: str | None, body: dict[str, Any]) -> tuple[int, bytes] | None:
    """(status, body) of the refusal `mode` gives an OpenAI-style request, or None."""
    if mode is None or mode in ("silent", "anthropic-thinking"):
        return None
    asks_logprobs = bool(body.get("logprobs")) or body.get("top_logprobs") is not None
    if mode == "openai-reasoning":
        if asks_logprobs:
            param = "logprobs" if body.get("logprobs") else "top_logprobs"
            return 400, _openai(
                f"Unsupported parameter: '{param}' is not supported with this model.",
                param,
                "unsupported_parameter",
            )
        temperature = body.get("temperature")
        if temperature is not None and float(temperature) != 1.0:
            return 400, _openai(
                f"Unsupported value: 'temperature' does not support {temperature:g} with this "
                "model. Only the default (1) value is supported.",
                "temperature",
                "unsupported_value",
            )
        if body.get("max_tokens") is not None:
            return 400, _openai(
                "Unsupported parameter: 'max_tokens' is not supported with "
                "this model. Use 'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        return None
    if not asks_logprobs:
        return None
    if mode == "openai-403":
        return 403, _openai("You are not allowed to request logprobs from this model", None, None)
    if mode == "gemini":
        return 400, orjson.dumps(
            [
                {
                    "error": {
                        "code": 400,
                        "message": "Logprobs is not supported for this model.",
                        "status": "INVALID_ARGUMENT",
                    }
                }
            ]
        )
    if mode == "groq":
        return 400, orjson.dumps(
            {
                "error": {
                    "message": "`logprobs` is not supported with this model",
                    "type": "invalid_request_error",
                }
            }
        )
    raise ValueError(f"unknown refusal mode {mode!r}")


def anthropic_refusal(mode: str | None, body: dict[str, Any]) -> str | None:
    """The message of the 400 `mode` gives a Messages API request, or None."""
    temperature = body.get("temperature")
    if mode == "anthropic-thinking" and temperature is not None and float(temperature) != 1.0:
        return THINKING_TEMPERATURE
    return None


def gives_logprobs(mode: str | None) -> bool:
    """Whether a teacher in `mode` puts logprobs in the answers it does give."""
    return mode != "silent"


def _openai(message: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    )
