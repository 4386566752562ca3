"""Every error labeler raises, as one tree, so callers can catch by meaning.

    LabelerError
    ├── ConfigError          a bad flag, option or config file; the run cannot start
    ├── InputError           a bad input row or file (carries file and line)
    ├── TemplateError        a bad prompt template or a row it cannot render (file, field, row)
    │   └── TemplateLimitError   rendering went past its time or size limit: the template's
    │                            bug, so it stops the run instead of rejecting a row
    ├── StoreError           the SQLite store cannot be opened, migrated or written
    ├── ExportError          the export cannot be written there; the answers stay in the store
    └── TeacherError         a teacher call failed
        ├── TeacherUnreachable  no server answers at the teacher's address: the run stops
        ├── RetryableError   worth another try: 429, 408, 409, 5xx, overloaded, timeouts,
        │                    dropped connections, a 200 whose body is not valid JSON
        └── FinalError       retrying cannot help: 400, 401, 403, 404, context too long,
            │                content filter, a 200 whose answer breaks the rules
            │                (`answer_checks`); recorded once with its reason
            └── ParameterRefused  the teacher turns down one parameter (logprobs, a
                             temperature, max_tokens): learned once, then sent without it

Each TeacherError carries a short machine-readable `reason` (e.g. ``http_429``,
``context_length``) so failures can be counted by cause in `labeler stats`. Its message is
redacted (`labeler.redact`) as it is made: it never holds an API key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from labeler.redact import redact

if TYPE_CHECKING:
    from labeler.completion import Completion


class LabelerError(Exception):
    """Base of every error labeler raises on purpose."""


class ConfigError(LabelerError):
    """A flag, option or config file that makes the run impossible to start."""


class InputError(LabelerError):
    """A bad input file or row; the message starts with ``file:line:``."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source = source
        self.line = line
        self.reason = reason
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


class TemplateError(LabelerError):
    """A template that cannot load, or a row it cannot render.

    The message names the template file, the field and (when rendering) the input row,
    because a user fixing it needs all three.
    """

    def __init__(
        self,
        template: str,
        reason: str,
        *,
        field: str | None = None,
        row: str | None = None,
    ) -> None:
        self.template = template
        self.field = field
        self.row = row
        self.reason = reason
        parts = [template]
        if row is not None:
            parts.append(f"row {row}")
        if field is not None:
            parts.append(f"field '{field}'")
        super().__init__(f"{': '.join(parts)}: {reason}")

    def for_row(self, row: str) -> TemplateError:
        """The same error naming `row`: a caller that renders many rows names one only when
        it fails, since building every row's name would cost more than rendering it."""
        named = TemplateError(self.template, self.reason, field=self.field, row=row)
        named.__cause__ = self.__cause__
        return named


class TemplateLimitError(TemplateError):
    """A template that loops or allocates past the rendering limits (bounded_jinja.py).

    Unlike a row that cannot render, this stops the whole run at once: waiting for the
    limit on every row of a large input would take hours to say the same thing."""

    def for_row(self, row: str) -> TemplateLimitError:
        named = TemplateLimitError(self.template, self.reason, field=self.field, row=row)
        named.__cause__ = self.__cause__
        return named


class StoreError(LabelerError):
    """The store cannot be opened, migrated or written (disk full, read-only, too new)."""


class ExportError(LabelerError):
    """The export folder cannot be written (not a folder, read-only, disk full); every
    answer is already in the store, so fixing the path and rerunning sends nothing."""


class TeacherError(LabelerError):
    """A teacher call that did not produce a completion."""

    retryable: bool = False
    # The raw response body behind a failed answer (capped), kept in the store with the
    # failure so that what the server sent can be inspected; None when there was none.
    body: bytes | None = None

    def __init__(
        self,
        reason: str,
        message: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        # Made here, once, for every provider and path: a server may quote the key back.
        message = redact(message)
        self.message = message
        super().__init__(f"{reason}: {message}" if message else reason)


class TeacherUnreachable(TeacherError):
    """The teacher's server refuses every connection before answering once: the run stops,
    since every other row would fail the same way. A teacher failure, not a bad option,
    so a caller catching `TeacherError` sees it; its message is the one line the CLI prints."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__("unreachable", f"cannot reach the teacher at {where}: {detail}")
        self.where = where
        self.detail = detail
        self.args = (self.message,)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Raised in a Ray actor, it crosses a process boundary as itself.
        return (TeacherUnreachable, (self.where, self.detail))


class RetryableError(TeacherError):
    """A failure that another attempt may fix (rate limit, overload, network)."""

    retryable = True


class FinalError(TeacherError):
    """A failure that no retry can fix; recorded at once with its reason."""

    retryable = False


class ParameterRefused(FinalError):
    """The teacher turned down one request parameter, named in OpenAI's vocabulary
    (``logprobs``, ``top_logprobs``, ``temperature``, ``max_tokens``).

    Retrying the same request cannot help, but the same request without that parameter
    can: the orchestrator learns the refusal once for the teacher (labeler/teacher_params.py)
    and sends every request still to go without it, this one included. `answer` is set
    when the teacher answered anyway and only left out what the parameter asks for (a 200
    that carries no logprobs): that answer is paid for and kept.
    """

    def __init__(
        self, param: str, message: str, *, status: int | None = None, answer: Completion | None = None
    ) -> None:
        reason = f"http_{status}" if status is not None and status >= 400 else f"no_{param}"
        super().__init__(reason, message, status=status)
        self.param = param
        self.answer = answer


CONTEXT_TOO_LONG = "prompt too long for the server's context"
# How servers word a prompt over their context in a 400: OpenAI and vLLM ("maximum
# context length"), llama.cpp's server ("exceeds the available context size", type
# exceed_context_size_error), Anthropic ("prompt is too long").
CONTEXT_WORDINGS = (
    "maximum context length",
    "exceeds the available context size",
    "exceed_context_size_error",
    "prompt is too long",
)


def context_too_long(code: str | None, message: str, status: int | None) -> FinalError | None:
    """The failure of a prompt the server's context cannot hold, said in those words (a
    bare HTTP 400 hides the one cause no retry and no other option fixes), or None."""
    if code in ("context_length_exceeded", "exceed_context_size_error") or any(
        w in message for w in CONTEXT_WORDINGS
    ):
        return FinalError("context_length", f"{CONTEXT_TOO_LONG}: {message}", status=status)
    return None


# Reasons of failures that are worth another run even after --max-attempts ran out (a
# server that was down, slow or overloaded may be fine an hour later); HTTP reasons are
# judged by their status. Everything else (400, 401, 403, 404, context too long, content
# filter, refusal) is final: only --retry-failed sends it again.
TRANSIENT_REASONS = frozenset(
    {
        "timeout",
        "connection",
        "disconnected",
        "endpoints_down",
        "invalid_json",
        "error_body",
        "api_error",
        "overloaded",
    }
)
TRANSIENT_STATUSES = frozenset({408, 409, 429})


def retryable_status(status: int) -> bool:
    """Whether an HTTP error status is worth another try: rate limited (429), timed out
    (408), conflicting (409) or the server's own failure (5xx)."""
    return status in TRANSIENT_STATUSES or status >= 500


def is_transient(reason: str, status: int | None = None) -> bool:
    """Whether a stored failure (its reason, and HTTP status if any) was transient."""
    if status is None and reason.startswith("http_") and reason[5:].isdigit():
        status = int(reason[5:])
    if status is not None and retryable_status(status):
        return True
    return reason in TRANSIENT_REASONS


@dataclass(frozen=True)
class StatusHints:
    """What one provider's error answers say beyond their status, in its own words.

    The status decides retryable or final; these hints only name the reason, so `labeler
    stats` counts the same failure under the same reason whichever path (live SDK, lean
    transport, batch result) met it.
    """

    overloaded_statuses: frozenset[int] = frozenset()  # retryable, counted as "overloaded"
    overloaded_codes: frozenset[str] = frozenset()
    filter_codes: frozenset[str] = frozenset()  # final: the content was refused
    too_large_statuses: frozenset[int] = frozenset()  # final: the request body is too big


# The providers' own shapes: OpenAI answers "content_filter" (Azure) or
# "content_policy_violation"; Anthropic answers 529 "overloaded_error" when busy and 413
# "request_too_large". A prompt over the context is told by every server's wording
# (`context_too_long`). Every OpenAI-compatible server is read with OpenAI's hints.
STATUS_HINTS: dict[str, StatusHints] = {
    "openai": StatusHints(
        filter_codes=frozenset({"content_filter", "content_policy_violation"}),
    ),
    "anthropic": StatusHints(
        overloaded_statuses=frozenset({529}),
        overloaded_codes=frozenset({"overloaded_error"}),
        too_large_statuses=frozenset({413}),
    ),
}


def classify_status(
    status: int,
    message: str,
    *,
    provider: str = "openai",
    code: object = None,
    retry_after: float | None = None,
    refusal: ParameterRefused | None = None,
) -> TeacherError:
    """An HTTP error answer as labeler's failure: the one ladder every teacher and batch
    path goes through. ``code`` is the provider's error code or type, ``retry_after`` what
    the server asked to wait (kept on retryable failures only) and ``refusal`` the
    parameter refusal the caller recognised in the answer (labeler/teachers/refusals.py),
    which wins over a plain final failure but not over a known reason."""
    hints = STATUS_HINTS.get(provider, STATUS_HINTS["openai"])
    code = code if isinstance(code, str) else None  # bodies carry ints and lists too
    if status in hints.overloaded_statuses or code in hints.overloaded_codes:
        return RetryableError("overloaded", message, status=status, retry_after=retry_after)
    if retryable_status(status):
        return RetryableError(f"http_{status}", message, status=status, retry_after=retry_after)
    too_long = context_too_long(code, message, status)  # every server's wording
    if too_long is not None:
        return too_long
    if code in hints.filter_codes:
        return FinalError("content_filter", message, status=status)
    if status in hints.too_large_statuses:
        return FinalError("too_large", message, status=status)
    if refusal is not None:  # a parameter the teacher does without: learned, then not sent
        return refusal
    return FinalError(f"http_{status}", message, status=status)


def short(text: str, limit: int = 300) -> str:
    """A message on one line, at most `limit` characters: error bodies can be pages long."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
