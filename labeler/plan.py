"""The plan stage: input rows in, planned items out. Every path takes this one step first.

    rows ─► render ─► key ─► store: answered? (fresh enough?) failed (resend or not)?
              │                         │
              ▼ bad row                 ▼
            Item(rejected)      Item(cached | failed | send)

A live run, a batch run, an export, `labeler eval`, `labeler estimate` and a refresh all
need the same answer to "what is this row, under which key, and what does the store hold
for it", so they all get it here: one rendering, one key, one row naming, one reject format
and one rule for which stored failures are sent again. What happens next (send, submit,
export, score, price) is the caller's.

A chunk of rows costs one store query per kind of lookup, not one per row; the caller runs
`Planner.plan` in a thread when it must not block an event loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

from labeler.answer_checks import UNUSABLE
from labeler.completion import Completion
from labeler.errors import TemplateError, TemplateLimitError, is_transient
from labeler.inputs import Reject, Row
from labeler.label_scoring import Misses, attach_scores, scored_space
from labeler.request import Request, RequestKeys
from labeler.store import Failure, Store
from labeler.store_access import StoreAccess
from labeler.task import Task
from labeler.teacher_params import TeacherParams

CHUNK = 256
# The row name a render error gets until it is given the row's real one (`where`), which
# is built only for the rare row that fails.
_THIS_ROW = "<this row>"

SEND = "send"  # nothing usable stored: ask the teacher
CACHED = "cached"  # an answer is stored (and fresh enough)
FAILED = "failed"  # a stored failure that is not to be sent again
REJECTED = "rejected"  # the row cannot become a request (bad input, template error)


@dataclass(slots=True)
class Item:
    """One input row, planned."""

    row: Row
    status: str  # SEND | CACHED | FAILED | REJECTED
    request: Request | None = None
    key: str | None = None
    completion: Completion | None = None  # CACHED, when the planner reads completions
    failure: Failure | None = None  # FAILED: the stored failure
    reject: Reject | None = None  # REJECTED: the line for the rejects file
    # REJECTED: "input" (the reader could not make a row of it) or "template" (a row the
    # template cannot render, and `error` says why)
    reason: str | None = None
    error: TemplateError | None = None
    # A prompt ensemble plans a row as one item per prompt form, in Task.members order
    # and next to each other; `variant` is the form's index (0 for the template as written).
    variant: int = 0
    # A cascade's export: which stage answered and what every reached stage said
    provenance: dict[str, Any] | None = None
    # An ensemble's export: the members' answers combined, read instead of `completion`'s
    answer: Any = None
    # A sampled request's single-answer form and its key: read where no sampled answer is
    # stored (`Planner.single_answers`)
    single: tuple[Request, str] | None = None


class Planner:
    """Plans chunks of rows for one task and teacher against one store.

    - `completions`: read the stored answers (export, eval, a run that yields them) or
      only learn that they exist (a run that counts, a batch submission);
    - `max_age_s`: a stored answer older than this is planned as SEND (and overwritten);
    - `failures`: look up stored failures; a failure blocks its row (FAILED) unless
      `retry_failed`, or it was transient and has fewer than `max_attempts` tries;
    - no `store` (an estimate with no store): every rendered row is SEND;
    - `teacher_params`: what the teacher refuses (read from the store when not given):
      every request is planned, and keyed, as it will be sent (labeler/teacher_params.py);
    - `single_answers`: where a sampled request has no stored answer, read the one answer
      its row got before the teacher sampled (a store whose teacher learned to refuse
      logprobs when no soft labels were sampled for it): an export reads what was paid.
    """

    # A planner that replays several teachers' answers (a cascade's or an ensemble's) says
    # which in `kind` and reports what each teacher answered in `usage`; this one reads one.
    kind: str | None = None
    usage: Sequence[Any] = ()

    def __init__(
        self,
        task: Task,
        identity: Mapping[str, Any],
        store: Store | StoreAccess | None = None,
        *,
        completions: bool = True,
        max_age_s: float | None = None,
        failures: bool = True,
        retry_failed: bool = False,
        max_attempts: int | None = None,
        teacher_params: TeacherParams | None = None,
        single_answers: bool = False,
    ) -> None:
        self.task = task
        self.identity = dict(identity)  # copied once, not once per row
        if teacher_params is None and store is not None:
            teacher_params = TeacherParams.load(store, self.identity)
        self.teacher_params = teacher_params
        self._keys = RequestKeys(self.identity)  # the identity serialised once, too
        self.store = store
        self.completions = completions
        self.max_age_s = max_age_s
        self.failures = failures
        self.retry_failed = retry_failed
        self.max_attempts = max_attempts
        self.single_answers = single_answers
        self._line = 0
        # Labels sharing first tokens, scored (labeler/label_scoring.py): each read answer
        # gets its stored scores; those not stored yet, of the last chunk, are kept here
        self._scored = scored_space(task, self.identity) if completions else None
        self.score_misses: Misses = {}

    def resend(self, failure: Failure) -> bool:
        """The one rule for a stored failure: sent again if asked to, or if it was
        transient and still has tries left."""
        if self.retry_failed:
            return True
        if not is_transient(failure.reason, failure.status):
            return False
        return self.max_attempts is None or failure.attempts < self.max_attempts

    def plan(self, chunk: Sequence[Row | Reject | Mapping[str, Any]]) -> list[Item]:
        """Plan one chunk: render and key every row, then look the keys up in the store."""
        items: list[Item] = []
        add, render, key = items.append, self.task.render_all, self._keys.key
        known = self.teacher_params
        for entry in chunk:
            if isinstance(entry, Reject):
                row = Row(entry.source, entry.line or 0, str(entry.line), {})
                add(Item(row, REJECTED, reject=entry, reason="input"))
                continue
            row = entry if isinstance(entry, Row) else self._wrap(entry)
            try:
                requests = render(row.data, row_id=_THIS_ROW)
            except TemplateLimitError as exc:  # the template's bug: it stops the run
                if exc.row is _THIS_ROW:
                    raise exc.for_row(where(row)) from exc.__cause__
                raise
            except TemplateError as exc:
                if exc.row is _THIS_ROW:
                    exc = exc.for_row(where(row))
                reject = Reject(row.source, row.line, template_problem(exc), raw_json(row))
                add(Item(row, REJECTED, reject=reject, reason="template", error=exc))
                continue
            rendered = requests
            if known is not None and known.rewrites:  # keyed as sent: sampled, and without
                # what the teacher refuses
                requests = tuple(known.apply(r) for r in requests)
            if len(requests) == 1:
                add(Item(row, SEND, requests[0], key(requests[0])))
            else:
                for variant, request in enumerate(requests):
                    add(Item(row, SEND, request, key(request), variant=variant))
            if self.single_answers and known is not None and requests is not rendered:
                for item, raw in zip(items[-len(requests) :], rendered, strict=True):
                    if known.samples(raw) > 1:
                        plain = known.plain(raw)
                        item.single = (plain, key(plain))
        if self.store is not None:
            self.look_up([i for i in items if i.key is not None])
        return items

    def plan_rows(
        self, rows: Iterable[Row | Reject | Mapping[str, Any]], chunk: int = CHUNK
    ) -> Iterator[list[Item]]:
        """Plan `rows` chunk by chunk (streamed: memory stays flat however long the input)."""
        it = iter(rows)
        while batch := list(islice(it, chunk)):
            yield self.plan(batch)

    def look_up(self, items: list[Item]) -> None:
        """Set the status of rendered items from the store (CACHED, FAILED or left SEND)."""
        store = self.store
        assert store is not None
        keys = list(dict.fromkeys(i.key for i in items if i.key is not None))
        if not keys:
            return
        # An answer the store cannot use (see `Store.get_many`) counts as a final failure:
        # it was paid for, so a rerun does not pay again, and nothing reads it.
        unusable: dict[str, str] = {}
        found: Mapping[str, Completion | None] = (
            store.get_many(keys, unusable=unusable) if self.completions else dict.fromkeys(store.known(keys))
        )
        if self.max_age_s is not None and found:
            created = store.created_at(list(found))
            cutoff = time.time() - self.max_age_s
            found = {k: v for k, v in found.items() if created.get(k, 0) >= cutoff}
        blocked: dict[str, Failure] = {}
        if self.failures:
            misses = [k for k in keys if k not in found]
            if misses:
                blocked = {k: f for k, f in store.failures_for(misses).items() if not self.resend(f)}
        for item in items:
            key = item.key
            if key is None:  # no request: nothing stored under it
                continue
            if key in found:
                item.status = CACHED
                item.completion = found[key]
            elif key in blocked:
                item.status = FAILED
                item.failure = blocked[key]
            elif key in unusable:
                item.status = FAILED
                item.failure = Failure(key, UNUSABLE, unusable[key], None, 0)
        self._read_single_answers([i for i in items if i.status == SEND and i.single])
        if self._scored is not None:
            self.score_misses = attach_scores(
                [
                    (i.request, i.completion)
                    for i in items
                    if i.request is not None and i.completion is not None
                ],
                self._scored,
                self._keys.key,
                store.get_many,
            )

    def _read_single_answers(self, items: list[Item]) -> None:
        """Items whose sampled answer is missing, read from their single answer if stored."""
        if not items or not self.completions or self.store is None:
            return
        found = self.store.get_many(list(dict.fromkeys(i.single[1] for i in items if i.single is not None)))
        for item in items:
            assert item.single is not None
            request, key = item.single
            if found.get(key) is not None:
                item.status, item.request, item.key = CACHED, request, key
                item.completion = found[key]

    def _wrap(self, data: Mapping[str, Any]) -> Row:
        """A caller's plain dict as a Row: its `id` field names it, else its position."""
        self._line += 1
        rid = data.get("id")
        return Row("<rows>", self._line, str(rid if rid is not None else self._line), dict(data))


def by_row(items: Sequence[Item]) -> Iterator[list[Item]]:
    """A planned chunk as one list per row: a prompt ensemble's forms of one row together
    (a chunk never splits them), a single item otherwise."""
    group: list[Item] = []
    for item in items:
        if group and item.variant == 0:
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def where(row: Row) -> str:
    """The one way a row is named in messages: ``file:line``, which editors and terminals
    jump to, with ``(id X)`` after it when the row's id is not its line number."""
    if row.id == str(row.line):
        return f"{row.source}:{row.line}"
    return f"{row.source}:{row.line} (id {row.id})"


def template_problem(exc: TemplateError) -> str:
    """The template error without the row (a reject line puts ``file:line:`` in front)."""
    parts = [f"template {exc.template}"]
    if exc.field is not None:
        parts.append(f"field '{exc.field}'")
    parts.append(exc.reason)
    return ": ".join(parts)


def raw_json(row: Row) -> str | None:
    """A row as one JSON line for the rejects file, so it can be fixed and fed again."""
    try:
        return orjson.dumps(row.data, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # e.g. a lone surrogate in a caller-made row
        return None


__all__ = [
    "CACHED",
    "CHUNK",
    "FAILED",
    "REJECTED",
    "SEND",
    "Item",
    "Planner",
    "by_row",
    "raw_json",
    "template_problem",
    "where",
]
