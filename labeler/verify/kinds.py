"""The verifier kinds, one class each, in one registry that the spec parser reads.

A step either extracts (``regex``: the answer's first group replaces the answer for the
steps after it) or checks (every other kind: a `Verdict`). A spec is a chain of steps;
an answer passes when every check passes, and its score is the lowest score given.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from labeler.errors import ConfigError
from labeler.verify.python_checker import PythonChecker

PASS, FAIL, ERROR, TIMEOUT = "pass", "fail", "error", "timeout"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a verifier said of one answer. `status` is pass or fail, or error / timeout
    when the checker itself failed (the answer is then not kept, as a fail, but the
    reason is told apart). `score` is set where the check gives one (a Python checker
    returning a float); `detail` says why it failed, or what was extracted."""

    status: str
    score: float | None = None
    detail: str | None = None
    # False where a later run may say otherwise (a judge that has not answered yet): such
    # a verdict is not stored, so the next run checks the answer again
    settled: bool = True

    @property
    def passed(self) -> bool:
        return self.status == PASS


class Step:
    """One step of a spec; `argument` is what followed `KIND:`."""

    kind: ClassVar[str]
    needs_argument: ClassVar[bool] = True
    extracts: ClassVar[bool] = False
    whole_answer: ClassVar[bool] = False  # checks the answer as written, not an extraction

    def __init__(
        self,
        argument: str | None,
        *,
        schema: Any = None,
        timeout_s: float = 10.0,
        task: Any = None,
        make_teacher: Any = None,
        judge_calibration: Any = None,
    ) -> None:
        if self.needs_argument and not argument:
            raise ConfigError(f"--verify {self.kind} needs an argument: {self.usage}")
        self.argument = argument

    usage: ClassVar[str] = ""

    @property
    def field(self) -> str | None:
        """The input field this step compares with (checked on the input before a run)."""
        return None

    def identity(self) -> Any:
        """What a verdict of this step depends on besides the row: part of its cache key."""
        return [self.kind, self.argument]

    def reference(self, row: Mapping[str, Any]) -> Any:
        """What of the row a verdict depends on: part of its cache key, so an edited gold
        value re-checks the answers it judges."""
        return None

    def extract(self, answer: str) -> str | None:  # pragma: no cover - extractors override
        raise NotImplementedError

    def check(self, row: Mapping[str, Any], answer: str) -> Verdict:  # pragma: no cover
        raise NotImplementedError

    def bind(self, store: Any) -> None:
        """Read what the step needs from this store (a judge's answers)."""

    def prepare(self, pairs: Any) -> None:
        """Get ready to check many (row, answer) pairs at once (a judge's store lookups)."""

    def close(self) -> None:
        """Release what the step holds (a worker process)."""


class _FieldStep(Step):
    def __init__(self, argument: str | None, **kw: Any) -> None:
        super().__init__(argument, **kw)
        self._field = (argument or "").split(":")[0]

    @property
    def field(self) -> str:
        return self._field

    def reference(self, row: Mapping[str, Any]) -> Any:
        return row.get(self._field)


class Exact(_FieldStep):
    """The answer equals the row's field after trimming and case folding."""

    kind = "exact"
    usage = "exact:FIELD"

    def check(self, row: Mapping[str, Any], answer: str) -> Verdict:
        gold = row.get(self.field)
        ok = answer.strip().casefold() == str("" if gold is None else gold).strip().casefold()
        return Verdict(PASS if ok else FAIL)


_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in `text` (thousands separators allowed), or None."""
    found = _NUMBER.findall(text)
    for token in reversed(found):
        try:
            return float(token.replace(",", ""))
        except ValueError:
            continue
    return None


class Numeric(_FieldStep):
    """The last number in the answer equals the row's number within a tolerance."""

    kind = "numeric"
    usage = "numeric:FIELD[:TOL]"

    def __init__(self, argument: str | None, **kw: Any) -> None:
        super().__init__(argument, **kw)
        _, sep, tol = (argument or "").partition(":")
        try:
            self.tolerance = float(tol) if sep else 0.0
        except ValueError:
            raise ConfigError(f"--verify numeric:{argument}: tolerance '{tol}' is not a number") from None
        if not self.tolerance >= 0:
            raise ConfigError(f"--verify numeric:{argument}: tolerance must be at least 0")

    def check(self, row: Mapping[str, Any], answer: str) -> Verdict:
        gold_value = row.get(self.field)
        gold = (
            float(gold_value)
            if isinstance(gold_value, int | float) and not isinstance(gold_value, bool)
            else last_number(str(gold_value or ""))
        )
        if gold is None:
            return Verdict(ERROR, detail=f"the row's '{self.field}' holds no number")
        got = last_number(answer)
        if got is None:
            return Verdict(FAIL, detail="no number in the answer")
        ok = math.isclose(got, gold, rel_tol=1e-9, abs_tol=self.tolerance)
        return Verdict(PASS if ok else FAIL, detail=None if ok else f"{got:g} != {gold:g}")


class Regex(Step):
    """Extracts the answer's first group (the whole match when the pattern has no group);
    alone, it checks that the pattern matches."""

    kind = "regex"
    usage = "regex:PATTERN"
    extracts = True

    def __init__(self, argument: str | None, **kw: Any) -> None:
        super().__init__(argument, **kw)
        try:
            self.pattern = re.compile(argument or "", re.DOTALL)
        except re.error as exc:
            raise ConfigError(f"--verify regex:{argument}: not a regular expression: {exc}") from None

    def extract(self, answer: str) -> str | None:
        found = self.pattern.search(answer)
        if found is None:
            return None
        return found.group(1) if self.pattern.groups else found.group(0)


class JsonSchema(Step):
    """The answer parses as JSON and validates against the template's schema."""

    kind = "json-schema"
    usage = "json-schema (the template's output.schema)"
    needs_argument = False

    def __init__(self, argument: str | None, *, schema: Any = None, **kw: Any) -> None:
        super().__init__(argument, **kw)
        if argument:
            raise ConfigError("--verify json-schema takes no argument: it reads the template's output.schema")
        if schema is None:
            raise ConfigError("--verify json-schema needs a template with output.schema (kind: json)")
        try:
            import jsonschema
        except ImportError:
            raise ConfigError(
                "--verify json-schema needs jsonschema: pip install 'labeler-distill[verify]'"
            ) from None
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError(
                f"--verify json-schema: the template's schema is not valid: {exc.message}"
            ) from None
        self.schema = schema
        self.validator = cls(schema)

    def identity(self) -> Any:
        return [self.kind, self.schema]

    def check(self, row: Mapping[str, Any], answer: str) -> Verdict:
        try:
            value = orjson.loads(_unfenced(answer))
        except orjson.JSONDecodeError as exc:
            return Verdict(FAIL, detail=f"not JSON: {exc}"[:200])
        error = next(iter(self.validator.iter_errors(value)), None)
        if error is None:
            return Verdict(PASS)
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return Verdict(FAIL, detail=f"{where}: {error.message}"[:200])


def _unfenced(text: str) -> str:
    """A JSON answer without the ```json fence chat models put around it."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0]
    return s


class Python(Step):
    """A user function `(row, answer) -> bool | float` in a worker process with a
    timeout: True or a score above 0 passes."""

    kind = "python"
    usage = "python:MODULE:FUNCTION"

    def __init__(self, argument: str | None, *, timeout_s: float = 10.0, **kw: Any) -> None:
        super().__init__(argument, **kw)
        module, sep, function = (argument or "").rpartition(":")
        if not sep or not module or not function:
            raise ConfigError(f"--verify python:{argument}: expected python:MODULE:FUNCTION")
        self.module, self.function = module, function
        self.source = _module_source(module, argument or "")
        self.checker = PythonChecker(module, function, timeout_s)

    def identity(self) -> Any:
        # the module's source: an edited checker re-checks the answers it judged
        return [self.kind, self.argument, self.source]

    def reference(self, row: Mapping[str, Any]) -> Any:
        return dict(row)

    def start(self) -> None:
        self.checker.start()

    def check(self, row: Mapping[str, Any], answer: str) -> Verdict:
        status, value = self.checker.call(dict(row), answer)
        if status == "timeout":
            return Verdict(TIMEOUT, detail=value)
        if status != "ok":
            return Verdict(ERROR, detail=value)
        if isinstance(value, bool):
            return Verdict(PASS if value else FAIL, score=1.0 if value else 0.0)
        score = float(value)
        if math.isnan(score):
            return Verdict(ERROR, detail="returned NaN")
        return Verdict(PASS if score > 0 else FAIL, score=score)

    def close(self) -> None:
        self.checker.close()


def _module_source(module: str, argument: str) -> str:
    """A digest of the checker module's file, found without running it (a dotted name's
    parent packages are imported, as Python must to find it)."""
    import os
    import sys

    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"--verify python:{argument}: cannot import {module}: {exc}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    if spec is None:
        raise ConfigError(
            f"--verify python:{argument}: no module named '{module}' (looked in {cwd} and the Python path)"
        )
    origin = spec.origin
    if origin is None or not os.path.isfile(origin):
        return ""
    with open(origin, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


CHECKS: dict[str, type[Step]] = {cls.kind: cls for cls in (Exact, Numeric, Regex, JsonSchema, Python)}
