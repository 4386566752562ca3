"""Every answer other than a completion, in the asking provider's shape.

Errors differ between providers in body, vocabulary and headers (`x-request-id` and
`x-ratelimit-*` versus `request-id` and `anthropic-ratelimit-*`); one `Answers` per
request keeps those choices in one place, so the pipeline only says what went wrong.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labeler.testing import anthropic_wire, openai_wire
from labeler.testing.prompts import ANTHROPIC, OPENAI_CHAT
from labeler.testing.ratelimit import LimitState

Limits = tuple[LimitState | None, LimitState | None]

GARBAGE_JSON = b'{"id": "chatcmpl-7e57", "object": "chat.completion", "choices": [{"ind'
GARBAGE_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)
_BAD_JSON = {
    OPENAI_CHAT: "We could not parse the JSON body of your request. The API expects a JSON "
    "payload, but what was sent was not valid JSON.",
    ANTHROPIC: "There was an error parsing the body of your request.",
}
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


@dataclass(slots=True)
class Answer:
    """What to send; a None status means: drop the connection without a response."""

    status: int | None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    content_type: str = "application/json"


@dataclass(slots=True)
class Answers:
    """Answer builders for one request: `limits` gives the rate-limit state at answer time."""

    provider: str
    rid: str
    started: float
    limits: Callable[[], Limits | None]

    @property
    def anthropic(self) -> bool:
        return self.provider == ANTHROPIC

    def headers(self) -> dict[str, str]:
        limits = self.limits()
        if self.anthropic:
            headers = {"request-id": f"req_{self.rid}"}
            if limits is not None:
                anthropic_wire.ratelimit_headers(headers, *limits)
            return headers
        headers = {
            "x-request-id": f"req_{self.rid}",
            "openai-processing-ms": str(int((time.monotonic() - self.started) * 1000)),
            "openai-version": "2020-10-01",
        }
        if limits is not None:
            openai_wire.ratelimit_headers(headers, *limits)
        return headers

    def ok(self, body: bytes, fault: str | None = None, content_type: str = "application/json") -> Answer:
        return Answer(200, body, self.headers(), fault, content_type)

    def error(
        self,
        status: int,
        message: str | None = None,
        *,
        model: str = "",
        fault: str | None = None,
        retry_after: float | None = None,
        **openai_fields: Any,
    ) -> Answer:
        """A provider-shaped error; a 429 carries `retry-after` (seconds) and `retry-after-ms`."""
        headers = self.headers()
        if self.anthropic:
            body = anthropic_wire.error_body(status, message, model=model, request_id=f"req_{self.rid}")
        else:
            body = openai_wire.error_body(status, message, model=model, **openai_fields)
        if status == 429 and retry_after is not None:
            headers["retry-after"] = str(max(math.ceil(retry_after), 0))
            headers["retry-after-ms"] = str(max(math.ceil(retry_after * 1000), 0))
        return Answer(status, body, headers, fault)

    def bad_json(self) -> Answer:
        return self.error(400, _BAD_JSON[ANTHROPIC if self.anthropic else OPENAI_CHAT])

    def unauthorized(self, key_sent: bool, echo: str | None = None) -> Answer:
        """A bad or missing key; `echo` (the credential header as sent) is quoted back in
        the message, as some gateways and proxies do."""
        if echo is not None:
            return self.error(401, f"Incorrect API key provided: {echo}")
        if self.anthropic:
            return self.error(401, "invalid x-api-key" if key_sent else "x-api-key header is required")
        if key_sent:
            return self.error(401)
        return self.error(401, _NO_KEY, type="invalid_request_error")

    def context_exceeded(
        self, context: int, prompt_tokens: int, max_tokens: int | None, shape: str = "openai"
    ) -> Answer:
        if self.anthropic:
            return self.error(400, anthropic_wire.context_message(context, prompt_tokens))
        if shape == "llama":
            return Answer(400, openai_wire.llama_context_body(context, prompt_tokens), self.headers(), None)
        chat = self.provider == OPENAI_CHAT
        return self.error(
            400,
            openai_wire.context_message(context, prompt_tokens, max_tokens, chat),
            type="invalid_request_error",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )

    def over_limit(
        self, model: str, unit: str, limit: int, used: int, asked: int, wait: float, fault: str
    ) -> Answer:
        """The 429 of an enforced window, naming the limit the way each provider does."""
        if self.anthropic:
            message = anthropic_wire.rate_limit_message(unit, limit)
            return self.error(429, message, fault=fault, retry_after=wait)
        message = openai_wire.rate_limit_message(model, unit, limit, used, asked, wait)
        return self.error(429, message, fault=fault, retry_after=wait, type=unit, code="rate_limit_exceeded")

    def not_found(self, method: str, path: str) -> Answer:
        if self.anthropic:
            return self.error(404, "Not Found")
        return self.error(404, f"Invalid URL ({method} {path})", type="invalid_request_error")
