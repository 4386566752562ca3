"""Each label's whole probability where labels share their first tokens.

A soft label is read from the teacher's alternatives at the answer position
(labeler/soft_labels.py). When several labels begin with the same token (" a" for "alarm"
and "account"), only the path the teacher generated continues past it; the mass of every
other shared alternative would have to be divided by guesswork. A server that completes
a prompt can say exactly how it divides: asked to continue the row's prompt followed by
that shared prefix for one token, it answers the next-token alternatives there, and
P(label) = P(t1) · P(t2 | t1) · … follows, one request per shared prefix (and deeper
where the labels still share the next token).

These scoring requests are ordinary completion requests (``max_tokens`` 1, greedy, top-k
logprobs as the row's own request asks), keyed and stored like any: a rerun finds them
and pays nothing, and every reader of an answer (export, eval, review) finds them beside
it here, through the plan stage (`attach_scores`), so the soft label is the same
whatever reads it. Only completion-mode label templates can be scored: a chat endpoint
cannot be asked to continue its own answer. Where a scoring request is missing (a chat
template, a failure, a teacher told not to), the division stays the approximation,
marked ``logprobs:split``.

Whether a teacher's answers are scored is its soft-label mode, ``logprobs:exact``
(`Sampling.soft_labels`, read back from the teacher identity like its sampling options,
never part of a key): ``--soft-labels logprobs:exact``, and the local teacher's default
(its requests cost time only, and the division they replace picks another top label in
most rows of a many-intent set: docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from labeler.completion import Completion
from labeler.errors import ConfigError
from labeler.request import Request, completion_request
from labeler.soft_labels import LabelSpace, unscored_prefixes
from labeler.task import Task
from labeler.teachers.sampling import EXACT, Sampling

DEFAULT_TOP_LOGPROBS = 20
MAX_DEPTH = 32  # levels of shared prefixes; real label sets need a handful

Scores = tuple[tuple[str, float], ...]
# key -> (the scoring request, the answer prefix it scores, the answers waiting for it)
Misses = dict[str, tuple[Request, str, list[tuple[Request, Completion]]]]


def scored_space(task: Task, identity: Mapping[str, Any]) -> LabelSpace | None:
    """The label space whose shared prefixes this teacher's answers to `task` get scored,
    or None: the teacher is told to (``logprobs:exact``), the template is one completion
    prompt of kind label, and some labels share a first word."""
    if Sampling.from_identity(identity).soft_labels != EXACT:
        return None
    space = task.label_space
    if (
        space is None
        or task.mode != "completion"
        or task.output_kind != "label"
        or task.verbalized
        or len(task.members) != 1
    ):
        return None
    return space if space.ambiguity() else None


def check_scoring(task: Task, soft_labels: str) -> None:
    """Refuse ``--soft-labels logprobs:exact`` where no continuation can be scored, before
    anything is sent: a chat template's answer cannot be continued by the endpoint that
    wrote it. (A teacher that scores by default, the local one, just does not there.)"""
    if soft_labels != EXACT or task.output_kind != "label":
        return
    if task.mode != "completion" or task.verbalized or len(task.members) != 1:
        raise ConfigError(
            f"--soft-labels {EXACT} scores continuations of a completion prompt; template "
            f"{task.identity} is not one completion prompt (mode: {task.mode}): use "
            "--soft-labels logprobs, whose labels sharing first tokens are divided and "
            "marked logprobs:split"
        )


def scoring_request(request: Request, prefix: str) -> Request:
    """The request that asks what follows `prefix` in the answer to `request`: the same
    prompt followed by it, one greedy token, the row's own number of alternatives."""
    top = request.params.get("top_logprobs")
    params = {
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": top if isinstance(top, int) and top > 0 else DEFAULT_TOP_LOGPROBS,
    }
    return completion_request((request.prompt or "") + prefix, params, request.template, False)


def next_token_scores(completion: Completion) -> Scores | None:
    """The alternatives a scoring answer gives for its one position (the chosen token
    added where the server left it out of its list), None when it gave no logprobs."""
    tokens = completion.tokens
    if not tokens:
        return None
    first = tokens[0]
    top = tuple(first.top)
    if not any(t == first.token for t, _ in top):
        top += ((first.token, first.logprob),)
    return top


def attach_scores(
    answers: Sequence[tuple[Request, Completion]],
    space: LabelSpace,
    key: Callable[[Request], str],
    get_many: Callable[[list[str]], Mapping[str, Completion | None]],
) -> Misses:
    """Give each answer the stored scores its shared prefixes need, level by level (one
    store query per level); the scoring requests not stored yet, by key, come back."""
    misses: Misses = {}
    todo = list(answers)
    for completion in {id(c): c for _, c in todo}.values():
        if completion.scores is None:
            completion.scores = {}
    for _ in range(MAX_DEPTH):
        wanted: Misses = {}
        for request, completion in todo:
            for prefix in unscored_prefixes(completion, space):
                asked = scoring_request(request, prefix)
                k = key(asked)
                if k in misses:
                    misses[k][2].append((request, completion))
                    continue
                wanted.setdefault(k, (asked, prefix, []))[2].append((request, completion))
        if not wanted:
            break
        found = get_many(list(wanted))
        advanced: dict[int, tuple[Request, Completion]] = {}  # each answer once per level
        for k, (asked, prefix, waiting) in wanted.items():
            stored = found.get(k)
            if stored is None:
                misses[k] = (asked, prefix, waiting)
                continue
            scores = next_token_scores(stored)
            if scores is None:  # answered without logprobs: the prefix stays divided
                continue
            for request, completion in waiting:
                assert completion.scores is not None
                completion.scores[prefix] = scores
                advanced[id(completion)] = (request, completion)
        todo = list(advanced.values())
    return misses


__all__ = [
    "Misses",
    "attach_scores",
    "check_scoring",
    "next_token_scores",
    "scored_space",
    "scoring_request",
]
