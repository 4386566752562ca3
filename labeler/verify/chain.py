"""A parsed `--verify` spec: its steps in order, its digest, and the verdict of an answer."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from labeler.errors import ConfigError
from labeler.inputs import Reject, Row
from labeler.store import Store
from labeler.store_access import StoreAccess
from labeler.verify.judge import Judge, MakeJudge
from labeler.verify.kinds import ERROR, FAIL, PASS, TIMEOUT, Python, Step, Verdict
from labeler.verify.registry import REGISTRY
from labeler.verify.spec import split_steps

DEFAULT_TIMEOUT_S = 10.0


class Verifier:
    """The chain of steps a spec names. `digest` changes whenever what a verdict means
    changes (the spec, the template's schema, a Python checker's source), so stored
    verdicts of another verifier are never read as this one's."""

    def __init__(
        self,
        spec: str,
        *,
        schema: Any = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        task: Any = None,
        make_teacher: MakeJudge | None = None,
        judge_calibration: str | None = None,
    ) -> None:
        """`task` is the template whose answers are checked (a judge renders its prompt;
        its `schema` is the default of `schema`); `make_teacher` builds a judge's teacher
        (a job's: its API key and options), else one is built from the environment;
        `judge_calibration` is a saved calibration file each judge reads its soft label
        through (part of the digest, so changing it checks the stored answers again)."""
        self.spec = spec
        if schema is None and task is not None:
            schema = task.schema
        self.steps: list[Step] = [
            REGISTRY[kind](
                arg,
                schema=schema,
                timeout_s=timeout_s,
                task=task,
                make_teacher=make_teacher,
                judge_calibration=judge_calibration,
            )
            for kind, arg in split_steps(spec, REGISTRY)
        ]
        self.digest = (
            "b2:"
            + hashlib.blake2b(
                orjson.dumps([s.identity() for s in self.steps], option=orjson.OPT_SORT_KEYS), digest_size=16
            ).hexdigest()
        )

    @property
    def judges(self) -> list[Judge]:
        """The steps that read a judge's answers (asked by a judge pass before checking)."""
        return [s for s in self.steps if isinstance(s, Judge)]

    def bind(self, store: Store | StoreAccess) -> None:
        """Read what the steps need (a judge's answers) from this store."""
        for step in self.steps:
            step.bind(store)

    def prepare(self, pairs: list[tuple[Mapping[str, Any], str]]) -> None:
        """Get ready to check these (row, answer) pairs (one store lookup per chunk)."""
        if pairs:
            for step in self.steps:
                step.prepare(pairs)

    @property
    def fields(self) -> list[str]:
        """The input fields the checks compare with."""
        return [s.field for s in self.steps if s.field]

    def key(self, row: Mapping[str, Any]) -> str:
        """The verdict key of this verifier on one row: its digest and what of the row it
        reads (an edited gold value is a different key, hence a fresh check)."""
        refs = [s.reference(row) for s in self.steps]
        if not any(r is not None for r in refs):
            return self.digest
        h = hashlib.blake2b(
            orjson.dumps(refs, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str),
            digest_size=16,
        ).hexdigest()
        return f"{self.digest}:{h}"

    def check(self, row: Mapping[str, Any], answer: str) -> Verdict:
        """Every step in order: an extraction that finds nothing fails the answer; the
        first check that does not pass decides; the score is the lowest one given."""
        text = answer
        scores: list[float] = []
        details: list[str] = []
        checked = False
        for step in self.steps:
            if step.extracts:
                found = step.extract(text)
                if found is None:
                    return Verdict(FAIL, detail=f"no match for {step.kind}:{step.argument}")
                text = found
                continue
            checked = True
            verdict = step.check(row, answer if step.whole_answer else text)
            if not verdict.passed:
                return verdict
            if verdict.score is not None:
                scores.append(verdict.score)
            if verdict.detail is not None:
                details.append(verdict.detail)
        detail = None if checked else text[:200]  # a regex alone: what it extracted
        if len(details) == 1:  # a judge's label and confidence: worth keeping
            detail = details[0]
        return Verdict(PASS, score=min(scores) if scores else None, detail=detail)

    def start(self) -> None:
        """Start what the checks need (a Python checker's worker, its module imported):
        an error here is the user's, told before anything is paid."""
        for step in self.steps:
            if isinstance(step, Python):
                step.start()

    def check_input(self, rows: Iterable[Row | Reject], source: str | None = None) -> None:
        """Raise naming the field and the first row without it, when a check compares with
        an input field that a row lacks (`source` names the input where its rows' own
        source would mislead: stdin, spooled to a file)."""
        fields = self.fields
        if not fields:
            return
        for row in rows:
            if not isinstance(row, Row):
                continue
            for name in fields:
                if name not in row.data:
                    raise ConfigError(
                        f"--verify {self.spec}: {source or row.source}:{row.line} (row "
                        f"'{row.id}') has "
                        f"no field '{name}'"
                        + (f" (it has: {', '.join(list(row.data)[:12])})" if row.data else "")
                    )

    def close(self) -> None:
        for step in self.steps:
            step.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DEFAULT_TIMEOUT_S", "ERROR", "FAIL", "PASS", "TIMEOUT", "Verdict", "Verifier"]
