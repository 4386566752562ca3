"""Recognising a teacher that refuses a request parameter, in each provider's own words.

Every transport (the OpenAI SDK, the lean aiohttp one, Anthropic's SDK) hands its error
answers here, so a refusal is told apart from any other 400 in one place. The shapes are
the providers' own:

- OpenAI (o-series, gpt-5): HTTP 400 ``{"error": {"message": "Unsupported parameter:
  'logprobs' is not supported with this model.", "type": "invalid_request_error",
  "param": "logprobs", "code": "unsupported_parameter"}}``; ``code: unsupported_value``
  with ``param: temperature`` ("Only the default (1) value is supported."); the same for
  ``max_tokens`` ("Use 'max_completion_tokens' instead.").
- Some OpenAI deployments: HTTP 403 "You are not allowed to request logprobs from this
  model", with neither param nor code.
- Gemini's OpenAI-compatible endpoint: HTTP 400 whose body is a JSON *list*,
  ``[{"error": {"code": 400, "message": "Logprobs is not supported for this model.",
  "status": "INVALID_ARGUMENT"}}]`` (`error_fields` reads both shapes).
- Groq: HTTP 400 "`logprobs` is not supported with this model"; vLLM builds without
  logprob support: "... doesn't support logprobs. Please remove 'logprobs'/'top_logprobs'".
- Anthropic with extended thinking: "`temperature` may only be set to 1 when thinking is
  enabled".
- Servers that take logprobs and return none (older Ollama, gateways): a 200 without them,
  found by `check_logprobs` after the answer is parsed.

Only the parameters labeler can do without are recognised (labeler/teacher_params.py
says how each is worked around); any other 400 stays an ordinary final failure.
"""

from __future__ import annotations

import re
from typing import Any

from labeler.completion import Completion
from labeler.errors import ParameterRefused, short
from labeler.request import Request
from labeler.teacher_params import WATCHED

REFUSAL_CODES = frozenset({"unsupported_parameter", "unsupported_value"})
REFUSAL_STATUSES = frozenset({400, 403, 422})
# Words a refusal is said with, and the parameter it names (the first one named: "Use
# 'max_completion_tokens' instead" names the fix after the refused parameter).
_REFUSING = re.compile(
    r"not supported|unsupported|not allowed|not enabled|does not support|"
    r"doesn't support|may only be set|only the default",
    re.IGNORECASE,
)
_PARAM = re.compile(
    r"(?<![a-z_])(" + "|".join(sorted(WATCHED, key=len, reverse=True)) + r")(?![a-z_])", re.IGNORECASE
)


def refused(status: int, code: Any, param: Any, message: str) -> ParameterRefused | None:
    """The refusal an HTTP error answer states, or None when it is some other error."""
    if status not in REFUSAL_STATUSES:
        return None
    if code in REFUSAL_CODES and param in WATCHED:
        return ParameterRefused(str(param), message, status=status)
    if not _REFUSING.search(message):
        return None
    named = _PARAM.search(message)
    if named is None:
        return None
    return ParameterRefused(named.group(1).lower(), message, status=status)


def check_logprobs(request: Request, completion: Completion) -> Completion:
    """`completion`, unless logprobs were asked for and the answer carries none: then the
    teacher ignores the parameter, which is a refusal too, raised with the (paid) answer.
    An empty answer tells nothing (a reasoning model that spent its tokens thinking may
    send ``"logprobs": {"content": null}``): only an answer with text and no logprobs is
    one."""
    if completion.tokens is None and completion.text and request.params.get("logprobs"):
        raise ParameterRefused("logprobs", "the answers carry no logprobs", status=200, answer=completion)
    return completion


def error_fields(body: Any) -> tuple[Any, Any, str | None]:
    """(code, param, message) of an error body: OpenAI's ``{"error": {...}}`` (or the bare
    inner object, as the OpenAI SDK hands it on), and Google's list of them."""
    if isinstance(body, list):
        body = next((item for item in body if isinstance(item, dict)), None)
    if not isinstance(body, dict):
        return None, None, None
    err = body.get("error", body)
    if not isinstance(err, dict):
        return None, None, short(str(err)) if err else None
    message = err.get("message")
    text = short(str(message)) if message else None
    return err.get("code"), err.get("param"), text


__all__ = ["REFUSAL_CODES", "check_logprobs", "error_fields", "refused"]
