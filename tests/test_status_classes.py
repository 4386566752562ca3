"""One HTTP status ladder: a status means the same failure whichever path met it (the live
SDK teachers, the lean transport, a batch result line), with each provider's own words
naming the reason."""

from __future__ import annotations

import pytest

from labeler.batch.base import status_error
from labeler.errors import RetryableError, classify_status, is_transient
from labeler.teachers.openai_lean import status_error as lean_status_error


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (408, True),
        (409, True),
        (422, False),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (529, True),
    ],
)
def test_the_status_alone_decides_retryable(status: int, retryable: bool) -> None:
    for provider in ("openai", "anthropic"):
        err = classify_status(status, "boom", provider=provider, retry_after=2.0)
        assert err.retryable is retryable and err.status == status
        assert err.retry_after == (2.0 if retryable else None)
        assert is_transient(err.reason, err.status) is retryable


def test_a_batch_result_reads_as_the_live_answer_of_its_provider() -> None:
    # Anthropic's 413 "request_too_large" and 529 "overloaded_error"; OpenAI has no 529.
    assert status_error(413, "too big", "request_too_large", provider="anthropic").reason == "too_large"
    assert status_error(529, "busy", "overloaded_error", provider="anthropic").reason == "overloaded"
    assert status_error(529, "busy").reason == lean_status_error(529, None, b"").reason == "http_529"
    long = b'{"error": {"message": "maximum context length is 8192", "code": null}}'
    assert (
        status_error(400, "maximum context length is 8192").reason
        == lean_status_error(400, None, long).reason
        == "context_length"
    )
    assert status_error(400, "prompt is too long", provider="anthropic").reason == "context_length"


def test_a_body_code_that_is_no_string_is_ignored() -> None:
    err = classify_status(400, "bad", provider="anthropic", code=[{"x": 1}])
    assert err.reason == "http_400" and not err.retryable
    assert isinstance(classify_status(503, "down", code={"a": 1}), RetryableError)
