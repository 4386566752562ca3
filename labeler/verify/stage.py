"""Verdicts for planned items: read where stored, checked (and stored) where not.

Checking runs after the answers are stored and reads only the store, so it never asks
the teacher: a rerun finds every verdict stored, and a changed verifier checks again
from the stored answers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labeler.completion import Completion
from labeler.store import Store
from labeler.store_access import StoreAccess
from labeler.verify import verdicts as table
from labeler.verify.chain import Verifier
from labeler.verify.kinds import Verdict
from labeler.verify.passk import PassRates

FLUSH_S = 1.0  # a slow checker's verdicts reach the store at least this often


def answers_of(completion: Completion) -> list[str]:
    """Every answer a completion holds: its samples where it has several, else its text."""
    samples = completion.samples
    return list(samples) if samples else [completion.text]


@dataclass(frozen=True, slots=True)
class Checked:
    """One row's answers with their verdicts, and which of them are kept."""

    answers: list[str]
    verdicts: list[Verdict]
    kept: list[int]
    picked: int | None = None  # the answer a person picked on the review page

    @property
    def failed(self) -> list[int]:
        """Answers a check turned down (a checker's own error or timeout is no evidence
        against an answer, so it never becomes a rejected one); never a person's pick."""
        return [i for i, v in enumerate(self.verdicts) if v.status == "fail" and i != self.picked]

    def pick(self, text: str) -> Checked:
        """The row as a person decided it: the picked answer is its one kept answer,
        whatever the verdicts said. A pick that is none of the row's answers (they were
        asked again since) changes nothing."""
        if text not in self.answers:
            return self
        i = self.answers.index(text)
        return Checked(self.answers, self.verdicts, [i], i)


def parse_keep(keep: str | int | None) -> int | None:
    """`all` -> None (no limit), `best` -> 1, `K` -> K; raises naming the flag."""
    from labeler.errors import ConfigError

    if keep is None or keep == "all":
        return None
    if keep == "best":
        return 1
    try:
        k = int(keep)
    except (TypeError, ValueError):
        raise ConfigError(f"--keep '{keep}': expected all, best or a number of answers per row") from None
    if k < 1:
        raise ConfigError(f"--keep {keep}: keep at least 1 answer per row")
    return k


def select(answers: Sequence[str], verdicts: Sequence[Verdict], limit: int | None) -> list[int]:
    """The kept answers: distinct passing ones, best score first (an answer without a
    score ranks as 1), the teacher's order among equals; at most `limit`."""
    seen: set[str] = set()
    passing: list[int] = []
    for i, (text, verdict) in enumerate(zip(answers, verdicts, strict=True)):
        if verdict.passed and text not in seen:
            seen.add(text)
            passing.append(i)

    def rank(i: int) -> float:
        score = verdicts[i].score
        return -(score if score is not None else 1.0)

    passing.sort(key=rank)
    return passing if limit is None else passing[:limit]


class VerifyStage:
    """Checks the answers of planned items against one verifier, with the store as cache."""

    def __init__(
        self, verifier: Verifier, store: Store | StoreAccess, keep: str | int | None = "all"
    ) -> None:
        self.verifier = verifier
        self.store = store
        verifier.bind(store)
        self.limit = parse_keep(keep)
        self.rates = PassRates()

    def check(self, rows: Sequence[tuple[dict[str, Any], str, Completion]]) -> list[Checked]:
        """(row data, response key, completion) -> each row's verdicts, in order."""
        plans = []
        slots = []
        for data, key, completion in rows:
            vkey = self.verifier.key(data)
            answers = answers_of(completion)
            row_slots = [(key, i, vkey) for i in range(len(answers))]
            plans.append((data, answers, row_slots))
            slots += row_slots
        stored = table.read(self.store, slots)
        self.verifier.prepare(
            [
                (data, answer)
                for data, answers, row_slots in plans
                for slot, answer in zip(row_slots, answers, strict=True)
                if slot not in stored
            ]
        )
        fresh: list[tuple[tuple[str, int, str], Verdict]] = []
        flushed = time.monotonic()
        out = []
        for data, answers, row_slots in plans:
            verdicts = []
            for slot, answer in zip(row_slots, answers, strict=True):
                verdict = stored.get(slot)
                if verdict is None:
                    verdict = self.verifier.check(data, answer)
                    if verdict.settled:  # else the next run checks it again
                        fresh.append((slot, verdict))
                    self.rates.checked += 1
                    if time.monotonic() - flushed > FLUSH_S:  # a kill loses at most this
                        table.write(self.store, fresh)
                        fresh, flushed = [], time.monotonic()
                else:
                    self.rates.cached += 1
                verdicts.append(verdict)
            self.rates.add_row([v.status for v in verdicts])
            out.append(Checked(answers, verdicts, select(answers, verdicts, self.limit)))
        table.write(self.store, fresh)
        return out
