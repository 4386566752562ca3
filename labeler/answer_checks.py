"""What a teacher's answer may hold: types, finite numbers, ranges and sizes.

A teacher's answer is data from outside, paid for and kept: one malformed field must cost
that one request, never the run, and nothing kept may later stop an export. So every
provider's parser checks each field where it enters (with the cheap checks here, one
type test and one chained comparison per logprob on the hot path), an answer that fails
becomes a `FinalError` with reason ``malformed_answer`` naming the field (stored as a
failure with the raw body, never resent by a plain rerun), and the store checks the same
bounds on what it reads back (`token_rows_problem`), since a store written by an older
labeler or merged from elsewhere may hold what no parser would let in now.

The bounds, and why:

- A logprob is finite, at most ``LOGPROB_CEILING`` (0.01: the rounding of a softmax
  computed in half precision can put the top token a hair above 0, and a probability of
  e^0.01 = 1.01 is harmless to every consumer, while e^800 overflows) and at least
  ``LOGPROB_FLOOR`` (-1e5). No real softmax goes below about -1e4 (fp32 logits differ by
  a few thousand at most; OpenAI's and vLLM's own floor for "impossible" is -9999), so
  -1e5 keeps every real value with room to spare, while sums and means over a million
  tokens stay near -1e11, far from where float arithmetic overflows into inf and NaN.
- A token count is an integer in [0, ``MAX_COUNT``] (10^12: no answer has a trillion
  tokens; a million such sums still fit SQLite's 64-bit integers).
- Sizes: ``MAX_POSITIONS`` tokens per answer, ``MAX_ALTERNATIVES`` alternatives per
  position, ``MAX_CHOICES`` answers per request, and ``MAX_BODY_BYTES`` per response body
  (after decompression): an OpenAI answer of 16k tokens with 20 alternatives each, the
  most any API returns, is about 25 MB of JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from labeler.errors import FinalError, RetryableError, TeacherError

MALFORMED = "malformed_answer"
TOO_LARGE = "response_too_large"
UNUSABLE = "unusable_answer"  # a stored answer that no longer passes these checks
LOGPROB_FLOOR = -1e5
LOGPROB_CEILING = 0.01
MAX_COUNT = 10**12
MAX_POSITIONS = 1_000_000
MAX_ALTERNATIVES = 1024
MAX_CHOICES = 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
KEPT_BODY_BYTES = 64 * 1024  # of a failed answer's raw body, kept in the store for inspection


def malformed(where: str, problem: str) -> FinalError:
    """The failure of an answer whose field `where` breaks the rules: final, since the
    same request asked again gets the same broken answer from the same server."""
    return FinalError(MALFORMED, f"{where}: {problem}")


def too_large(size: int | None = None) -> FinalError:
    said = f" ({size:,} bytes said)" if size is not None else ""
    return FinalError(
        TOO_LARGE, f"the response body is over {MAX_BODY_BYTES // 2**20} MiB{said}; it was not read further"
    )


def describe(value: Any) -> str:
    """A value as a message quotes it: its type and a short repr."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:39] + '…'}"


def logprob(value: Any, where: str) -> float:
    """`value` as a logprob, or the failure naming `where`."""
    if (type(value) is float or type(value) is int) and LOGPROB_FLOOR <= value <= LOGPROB_CEILING:
        return float(value)
    if type(value) is float or type(value) is int:
        return _logprob_out_of_range(value, where)
    raise malformed(where, f"a logprob must be a number, got {describe(value)}")


def _logprob_out_of_range(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise malformed(where, f"a logprob must be finite, got {value}")
    raise malformed(
        where, f"a logprob must be within [{LOGPROB_FLOOR:g}, {LOGPROB_CEILING:g}], got {value:g}"
    )


def count(value: Any, where: str) -> int:
    """A token count: None means 0; an integral float is taken, anything else refused."""
    if value is None:
        return 0
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise malformed(where, f"a token count must be an integer, got {describe(value)}")
    if not 0 <= value <= MAX_COUNT:
        raise malformed(where, f"a token count must be within [0, {MAX_COUNT:g}], got {value}")
    return value


def optional_text(value: Any, where: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise malformed(where, f"expected a string, got {describe(value)}")


def object_at(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise malformed(where, f"expected an object, got {describe(value)}")
    return value


def list_at(value: Any, where: str, limit: int) -> list[Any]:
    if type(value) is not list:
        raise malformed(where, f"expected a list, got {describe(value)}")
    if len(value) > limit:
        raise malformed(where, f"{len(value):,} items, more than the {limit:,} allowed")
    return value


def load_json(raw: bytes) -> Any:
    """The body as JSON. A body that is not JSON at all (cut short, an HTML error page) is
    worth another try; one that is JSON which no parser of doubles can hold (numbers past
    1e308, NaN, Infinity) or nested past any real answer's depth is a malformed answer."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        problem = _strict_json_problem(raw)
        if problem is not None:
            raise malformed("response", problem) from exc
        raise RetryableError("invalid_json", "HTTP 200 with a body that is not JSON") from exc


def _strict_json_problem(raw: bytes) -> str | None:
    """Why a body that orjson refused is still deterministic JSON, or None if it is not."""
    try:
        json.loads(raw)
    except RecursionError:
        return "JSON nested deeper than any answer is"
    except ValueError:
        return None
    return "JSON with a number that is not finite or out of range"


def keep_body(exc: TeacherError, raw: bytes | None) -> TeacherError:
    """`exc` with the raw body that caused it, capped, for the store to keep."""
    if raw is not None:
        exc.body = raw[:KEPT_BODY_BYTES]
    return exc


def token_rows_problem(rows: Any) -> str | None:
    """What makes stored token rows (`Completion.tokens_to_json`'s form) unusable, or None.

    Every reader (targets, exports, eval, the review page) does arithmetic on these
    numbers, so a stored row that breaks the bounds would stop each of them."""
    if rows is None:
        return None
    if type(rows) is not list:
        return "tokens: not a list"
    floor, ceiling = LOGPROB_FLOOR, LOGPROB_CEILING
    for i, item in enumerate(rows):
        if type(item) is not list or len(item) < 3:
            return f"tokens[{i}]: not a [token, logprob, alternatives] row"
        lp = item[1]
        if type(item[0]) is not str or not (
            (type(lp) is float or type(lp) is int) and floor <= lp <= ceiling
        ):
            return f"tokens[{i}]: token {describe(item[0])}, logprob {describe(lp)}"
        top = item[2]
        if type(top) is not list:
            return f"tokens[{i}]: alternatives are not a list"
        for alt in top:
            if type(alt) is not list or len(alt) < 2:
                return f"tokens[{i}]: an alternative is not a [token, logprob] pair"
            b = alt[1]
            if type(alt[0]) is not str or not (
                (type(b) is float or type(b) is int) and floor <= b <= ceiling
            ):
                return f"tokens[{i}]: alternative {describe(alt[0])}, logprob {describe(b)}"
        if len(item) > 3 and (len(item) < 7 or type(item[5]) is not list or type(item[6]) is not list):
            return f"tokens[{i}]: ids and bytes are not [id, raw, top_ids, top_raw]"
    return None


def samples_problem(samples: Any) -> str | None:
    if samples is None or (type(samples) is list and all(type(s) is str for s in samples)):
        return None
    return "samples: not a list of strings"


def counts_problem(counts: tuple[Any, ...]) -> str | None:
    for value in counts:
        if type(value) is not int or not 0 <= value <= MAX_COUNT:
            return f"token counts: {describe(value)}"
    return None
