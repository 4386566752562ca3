"""What a teacher takes and what it refuses, learned from its answers and kept in the store.

Templates speak OpenAI's vocabulary (`logprobs`, `top_logprobs`, `temperature`,
`max_tokens`), and not every teacher takes all of it: reasoning models refuse logprobs,
any temperature but 1 and `max_tokens`; Gemini's and Groq's OpenAI-compatible endpoints
refuse logprobs; some servers take logprobs and silently return none. A teacher's refusal
(recognised once, in labeler/teachers/refusals.py) is learned here for that teacher, its
whole identity (provider, model, endpoint), and every request still to go is sent without
what it refuses: `apply` is the one place a request is rewritten, and the planner applies
it before keying, so the cache key is always that of the request actually sent. A
parameter the teacher answered once is remembered as taken, so that a run sends its first
request with an untried parameter alone (see labeler/engine.py) and at most one request per
refused parameter is turned down.

A teacher that refuses logprobs gets its soft labels from samples instead (N answers per
row, teachers/sampling.py): `apply` plans such a request sampled, with its ``n``, before
leaving out what is refused, and the run tells the teacher (`teachers.base.tell_refusals`)
so that it sends them so.

Both verdicts live in the store's ``teacher_params`` table, so the next run, an export and
a cron refresh start right; `forget` (``labeler forget-refusals``) clears them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labeler.errors import ConfigError
from labeler.request import (
    Request,
    canonical_json,
    chat_request,
    completion_request,
    key_identity,
)
from labeler.store import Store
from labeler.store_access import StoreAccess
from labeler.teachers.sampling import Sampling, sampled_request

REFUSED = "refused"
ACCEPTED = "accepted"
# Whether the server takes OpenAI's `n` (N samples in one request): not a parameter a
# template sends, but learned the same way by a sampling teacher (teachers/sampling.py)
# and kept beside the refusals, so that the next run samples right from its first request.
N = "n"


@dataclass(frozen=True)
class Fix:
    """How a request is sent to a teacher that refuses one parameter."""

    drops: tuple[str, ...] = ()
    rename_to: str | None = None
    instead: str = ""  # what labeler does instead, for the one line that says so


# The parameters labeler can do without. Anything else a teacher refuses stays an ordinary
# final failure: dropping `n`, `stop` or `response_format` would change what is asked.
FIXES: dict[str, Fix] = {
    "logprobs": Fix(
        ("logprobs", "top_logprobs"),
        instead="sending requests without logprobs: labels come from the answer "
        "text, without soft labels (--samples N samples N answers per "
        "row for soft labels, N x the output tokens)",
    ),
    "top_logprobs": Fix(
        ("top_logprobs",),
        instead="sending requests without top_logprobs: soft labels see only the chosen token's logprob",
    ),
    "temperature": Fix(
        ("temperature",), instead="sending requests without temperature (the teacher's default)"
    ),
    "max_tokens": Fix(
        rename_to="max_completion_tokens", instead="sending the output cap as max_completion_tokens"
    ),
}
WATCHED = frozenset(FIXES)


@dataclass(frozen=True)
class Refusal:
    """One parameter a teacher turned down, with the status and message it said so with."""

    param: str
    status: int | None = None
    message: str = ""


class TeacherParams:
    """The parameters one teacher refuses and those it has taken, for one store.

    Shared by a run's planner (in a worker thread) and its workers (on the event loop):
    the sets are replaced, never changed in place, so a reader sees one or the other.
    """

    def __init__(
        self,
        identity: Mapping[str, Any],
        refused: Mapping[str, Refusal] | None = None,
        accepted: Iterable[str] = (),
    ) -> None:
        self.identity = dict(identity)
        self.teacher = teacher_key(identity)
        # How the teacher's soft-target requests are sent: N samples where it gives no
        # logprobs (or is told to sample), each keyed with its count (``n``).
        self.sampling = Sampling.from_identity(identity)
        self.refused: dict[str, Refusal] = dict(refused or {})
        self.accepted: frozenset[str] = frozenset(accepted)
        self.takes_n: bool | None = None
        # (the refusals it was made for, params in, params out)
        self._memo: tuple[dict[str, Refusal], dict[str, Any], dict[str, Any]] | None = None

    @classmethod
    def load(cls, store: StoreAccess, identity: Mapping[str, Any]) -> TeacherParams:
        """What the store remembers of this teacher."""
        key = teacher_key(identity)

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(
                "SELECT param, verdict, status, message FROM teacher_params WHERE teacher = ?", (key,)
            ).fetchall()

        refused, accepted, takes_n = {}, [], None
        for param, verdict, status, message in store.execute_read(read):
            if param == N:
                takes_n = verdict == ACCEPTED
            elif verdict == REFUSED and param in FIXES:
                refused[param] = Refusal(param, status, message or "")
            elif verdict == ACCEPTED:
                accepted.append(param)
        known = cls(identity, refused, accepted)
        known.takes_n = takes_n
        return known

    # -- requests -------------------------------------------------------------------------

    @property
    def gives_logprobs(self) -> bool:
        return "logprobs" not in self.refused

    @property
    def rewrites(self) -> bool:
        """Whether any request may be sent otherwise than it is rendered."""
        return (
            bool(self.refused)
            or self.sampling.soft_labels == "samples"
            or (self.sampling.samples or 0) > 1  # a generation template's N answers
        )

    def samples(self, request: Request) -> int:
        """Answers `request` is sampled for (0: sent once, as it is)."""
        return self.sampling.samples_for(request, self.gives_logprobs)

    def apply(self, request: Request) -> Request:
        """`request` as it must be sent to this teacher: sampled where its soft label must
        come from samples (N answers, ``n`` in its params, so that its key says so), then
        without what the teacher refuses; the same object when nothing changes."""
        n = self.samples(request)
        if n:
            request = sampled_request(request, n)
        params = self.params(request.params)
        if params is request.params:
            return request
        if request.messages is not None:
            return chat_request(request.messages, params, request.template, request.soft_targets)
        return completion_request(request.prompt or "", params, request.template, request.soft_targets)

    def plain(self, request: Request) -> Request:
        """`request` without what the teacher refuses, never sampled: the request a single
        answer was given to (a 200 that carried no logprobs)."""
        params = self.params(request.params)
        if params is request.params:
            return request
        if request.messages is not None:
            return chat_request(request.messages, params, request.template, request.soft_targets)
        return completion_request(request.prompt or "", params, request.template, request.soft_targets)

    def params(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` without what this teacher refuses (the same dict when nothing is)."""
        refused = self.refused
        if not refused or not any(p in params for p in refused):
            return params
        memo = self._memo  # a template's rows share their parameters: rewrite them once
        if memo is not None and memo[0] is refused and memo[1] == params:
            return memo[2]
        out = dict(params)
        for param in refused:
            fix = FIXES[param]
            if fix.rename_to is not None and param in out:
                value = out.pop(param)
                out.setdefault(fix.rename_to, value)
            for name in fix.drops:
                out.pop(name, None)
        self._memo = (refused, dict(params), out)
        return out

    def unproven(self, params: Mapping[str, Any]) -> bool:
        """Whether `params` carry a parameter this teacher may still refuse: one it has
        neither taken nor refused yet."""
        accepted, refused = self.accepted, self.refused
        return any(p in WATCHED and p not in accepted and p not in refused for p in params)

    # -- learning -------------------------------------------------------------------------

    def learn(self, refusal: Refusal) -> bool:
        """Remember a refusal; False when it was known already or cannot be worked around."""
        if refusal.param not in FIXES or refusal.param in self.refused:
            return False
        self.refused = {**self.refused, refusal.param: refusal}
        return True

    def accept(self, params: Iterable[str]) -> list[str]:
        """Remember the watched parameters a teacher answered; returns those new to it."""
        new = [p for p in params if p in WATCHED and p not in self.accepted and p not in self.refused]
        if new:
            self.accepted = self.accepted | frozenset(new)
        return new

    def save(self, store: StoreAccess, refused: Sequence[Refusal] = (), accepted: Sequence[str] = ()) -> None:
        """Write verdicts to the store (a refusal replaces an earlier "taken")."""
        now = time.time()
        rows: list[tuple[str, str, str, int | None, str | None, float]] = [
            (self.teacher, r.param, REFUSED, r.status, r.message, now) for r in refused
        ]
        rows += [(self.teacher, p, ACCEPTED, None, None, now) for p in accepted]
        if not rows:
            return
        provider, model = self.identity.get("provider"), self.identity.get("model")

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO teacher_params (teacher, param, verdict, status, message,"
                " learned_at, provider, model) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(teacher, param) DO UPDATE SET verdict=excluded.verdict,"
                " status=excluded.status, message=excluded.message,"
                " learned_at=excluded.learned_at",
                [(*row, provider, model) for row in rows],
            )

        store.execute_write(write)

    def save_takes_n(self, store: StoreAccess, takes: bool) -> None:
        """Remember whether the server takes ``n``, once a run has learned it."""
        self.takes_n = takes
        if takes:
            self.save(store, accepted=[N])
        else:
            self.save(store, [Refusal(N, None, "n > 1 refused, or fewer choices answered")])

    def announcement(self, refusal: Refusal) -> str:
        """The one line that says what was refused, by whom, what labeler does now and,
        where it samples instead, what that costs per row."""
        said = (
            f"HTTP {refusal.status}" if refusal.status and refusal.status >= 400 else "its answers carry none"
        )
        message = f": {refusal.message}" if refusal.message else ""
        instead = FIXES[refusal.param].instead
        n = self.sampling.n
        if refusal.param == "logprobs" and self.sampling.soft_labels == "auto" and n > 1:
            instead = (
                f"sampling {n} answers per row for soft labels: about {n}x the output "
                "tokens; --samples 1 keeps hard labels only"
            )
        return (
            f"{describe(self.identity)} refuses {refusal.param} ({said}{message}); "
            f"{instead}, for this and every later run "
            "(labeler forget-refusals to try again)"
        )

    def unused_samples(self, wants_soft_targets: bool) -> str | None:
        """The line that says ``--samples`` does nothing, or None: a teacher in ``auto``
        mode that gives logprobs takes its soft labels from them."""
        sampling = self.sampling
        if (
            sampling.samples is None
            or sampling.soft_labels != "auto"
            or not self.gives_logprobs
            or not wants_soft_targets
        ):
            return None
        return (
            f"--samples {sampling.n} has no effect: {describe(self.identity)} gives "
            "logprobs, so soft labels come from logprobs (--soft-labels samples forces "
            "sampling)"
        )


def teacher_key(identity: Mapping[str, Any]) -> str:
    """A teacher's identity as one string: what answers the same way refuses the same."""
    return canonical_json(key_identity(dict(identity))).decode()


def describe(identity: Mapping[str, Any]) -> str:
    """``provider:model`` and where it is served, for messages."""
    name = f"{identity.get('provider')}:{identity.get('model')}"
    where = identity.get("base_url") or identity.get("endpoint")
    return f"{name} at {where}" if where else name


def forget(store: Store, teacher: str | None = None) -> list[tuple[str, str, str]]:
    """Drop what the store remembers of teachers' parameters, all of them or those of one
    ``provider:model``; returns the (teacher, parameter, verdict) rows dropped."""
    provider, _, model = (teacher or "").partition(":")
    if teacher is not None and not (provider and model):
        raise ConfigError(f"--teacher {teacher!r}: expected PROVIDER:MODEL, e.g. openai:o4-mini")

    def write(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
        args: tuple[str, ...]
        where, args = "", ()
        if teacher:
            where, args = " WHERE provider = ? AND model = ?", (provider, model)
        rows = db.execute(
            f"SELECT provider || ':' || model, param, verdict FROM teacher_params{where}", args
        ).fetchall()
        db.execute(f"DELETE FROM teacher_params{where}", args)
        return [(str(t), str(p), str(v)) for t, p, v in rows]

    return store.execute_write(write)


def refusals_of(store: Store) -> list[dict[str, Any]]:
    """Every refusal the store remembers, for `labeler stats`."""

    def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return db.execute(
            "SELECT provider, model, teacher, param, status, message, learned_at"
            " FROM teacher_params WHERE verdict = ? ORDER BY learned_at",
            (REFUSED,),
        ).fetchall()

    return [
        {
            "teacher": f"{p}:{m}",
            "identity": t,
            "param": param,
            "status": status,
            "message": message,
            "learned_at": at,
        }
        for p, m, t, param, status, message, at in store.execute_read(read)
    ]


__all__ = [
    "ACCEPTED",
    "FIXES",
    "REFUSED",
    "WATCHED",
    "Fix",
    "Refusal",
    "TeacherParams",
    "describe",
    "forget",
    "refusals_of",
    "teacher_key",
]
