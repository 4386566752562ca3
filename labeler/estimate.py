"""What a run would cost, before anything is sent: tokens and USD per task, input and teacher.

`estimate` renders every row exactly as a run would (same template, same dedup of rows
that render to the same request), counts prompt tokens, predicts output tokens and prices
both with the `PriceTable`. Nothing is sent and no API key is needed.

Prompt tokens. With ``tiktoken`` installed, OpenAI models are counted with their own
encoding (o200k_base for gpt-4o/4.1/5 and o-series, cl100k_base otherwise) and other
models with o200k_base as a stand-in. Without it, a heuristic: ASCII text at 4
characters a token (OpenAI's rule of thumb for English), every other character as one
token (CJK and most non-Latin scripts run close to one token a character), plus 4 tokens
of framing per chat message and 3 to prime the reply. Expect it within about 20% for
English prose; counts are estimates either way, the provider's usage is the truth.

Output tokens are predicted honestly rather than padded or guessed low:

- label tasks answer with one verbalizer: the longest verbalizer's token count (capped by
  max_tokens) is the expected output, since the teacher stops after the label;
- text and json tasks have no such bound: max_tokens is used and the estimate says it is
  an upper bound (`output_is_upper_bound`);
- sampled soft labels pay every sample (``samples``, default 5, N below): a teacher
  without logprobs (Anthropic), or any teacher with ``soft_labels="samples"``, answers a
  soft-target request N times, so output is N times a label's. The prompt is paid once
  where the server takes ``n`` (OpenAI), N times where it does not (Anthropic, the local
  llama.cpp server) or where that is not known before a run (any other OpenAI-compatible
  server: priced as N requests, the dearer case, and said in a note); a template's
  ``n`` multiplies output on OpenAI-style teachers.

Prompt caching is priced as the providers bill it: the shared prefix (system prompt and
few-shot turns) is written once and read by every later request when it is long enough
to be cached (1024 tokens; Anthropic only with its cache mark, which its teacher sets;
OpenAI automatically, in 128-token steps). `max_cost_usd` is the worst case: no cache
hits and every allowed output token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labeler.inputs import Reject, Row
from labeler.plan import CACHED, REJECTED, Planner
from labeler.pricing import PER, PriceTable
from labeler.reasoning import thinking_budget
from labeler.request import Request
from labeler.task import Task, load_task
from labeler.teachers import PROVIDERS, Provider
from labeler.teachers.base import Teacher, request_shape
from labeler.teachers.sampling import Sampling

MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3
CACHE_MIN_TOKENS = 1024
OPENAI_CACHE_STEP = 128
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")


@dataclass
class Estimate:
    """Predicted tokens and cost of labeling some rows (nothing sent)."""

    model: str
    rows: int = 0
    requests: int = 0  # distinct requests (duplicate rows are sent once)
    http_requests: int = 0  # what the provider bills: samples included
    answers: int = 0  # answers the teacher gives (a sampled row gives several)
    rejected: int = 0
    already_stored: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    max_output_tokens: int = 0
    output_is_upper_bound: bool = False
    cost_usd: float | None = None
    max_cost_usd: float | None = None
    tokenizer: str = "heuristic"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("cost_usd", "max_cost_usd"):
            if d[k] is not None:
                d[k] = round(d[k], 6)
        return d


class TokenCounter:
    """tiktoken when installed, else the documented heuristic."""

    def __init__(self, model: str) -> None:
        self._enc: Any = None
        self.name = "heuristic (~4 ASCII chars or 1 other char per token)"
        try:
            import tiktoken
        except ImportError:
            return
        encoding = (
            "o200k_base"
            if model.startswith(_O200K_PREFIXES) or not model.startswith(("gpt-", "text-"))
            else "cl100k_base"
        )
        try:
            self._enc = tiktoken.get_encoding(encoding)
            self.name = f"tiktoken {encoding}"
        except Exception:  # an offline machine without the encoding file cached
            self._enc = None

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._enc is not None:
            return len(self._enc.encode(text, disallowed_special=()))
        ascii_chars = len(text.encode("ascii", "ignore"))
        return math.ceil(ascii_chars / 4 + (len(text) - ascii_chars))

    def prompt(self, request: Request) -> tuple[int, int]:
        """(whole prompt, shared prefix) tokens; the prefix is all but the row's own turn."""
        if request.prompt is not None:
            return self.count(request.prompt), 0
        messages = list(request.messages or ())
        sizes = [self.count(m.get("content") or "") + MESSAGE_OVERHEAD for m in messages]
        total = sum(sizes) + REPLY_OVERHEAD
        return total, sum(sizes[:-1])


def estimate(
    task: Task | str | Path,
    rows: Iterable[Row | Reject | Mapping[str, Any]],
    teacher: Teacher | str,
    prices: PriceTable | None = None,
    *,
    samples: int | None = None,
    soft_labels: str = "auto",
    store: Any = None,
    copies: int = 1,
    padding_tokens: int = 0,
) -> Estimate:
    """Tokens and cost of labeling `rows` with `task` and `teacher`, without sending.

    `teacher` is a teacher object, a ``provider:model`` spec or a bare model name (then
    priced as that model, one request per row). `samples` and `soft_labels` are the run's
    (teachers/sampling.py) for a spec; a teacher object carries its own. With a teacher
    object and a `store`, rows whose answer is already stored are counted apart and cost
    nothing, as in a rerun.

    `copies` and `padding_tokens` price a judge: each distinct request stands for
    `copies` requests (one per answer it judges) whose prompts are `padding_tokens`
    longer (the answer, not written yet).
    """
    task = task if isinstance(task, Task) else load_task(task)
    prices = prices or PriceTable.default()
    provider, model, teacher_obj = _teacher(teacher)
    counter = TokenCounter(model)
    est = Estimate(model=model, tokenizer=counter.name)
    output_each, upper = _output_tokens(task, counter)
    est.output_is_upper_bound = upper
    # Without a teacher object there is no identity to key answers under, so nothing can be
    # found stored; rows are still keyed (under an empty identity) to count each distinct
    # request once.
    identity = teacher_obj.identity if teacher_obj is not None else {}
    planner = Planner(
        task, identity, store if teacher_obj is not None else None, completions=False, failures=False
    )
    sampling = Sampling(samples, soft_labels)
    prefix_tokens, priced_as_requests = _count(
        est,
        planner,
        rows,
        _Pricing(provider, teacher_obj, counter, sampling, output_each, task, copies, padding_tokens),
    )
    _shape_notes(est, task, sampling, priced_as_requests)
    if est.requests:
        _cache(est, provider, prefix_tokens, task)
    _price(est, prices)
    _bound_notes(est, task, upper, model)
    return est


@dataclass(frozen=True)
class _Pricing:
    """What counting one request's tokens needs: who would answer it and how."""

    provider: str
    teacher: Teacher | None
    counter: TokenCounter
    sampling: Sampling
    output_each: int
    task: Task
    copies: int = 1  # requests each distinct one stands for (a judge: one per answer)
    padding_tokens: int = 0  # prompt tokens not written yet (a judge: the answer)


def _count(
    est: Estimate, planner: Planner, rows: Iterable[Row | Reject | Mapping[str, Any]], how: _Pricing
) -> tuple[int, bool]:
    """Count rows, distinct requests and their tokens into `est`; a request already stored
    or seen before costs nothing. Returns the shared prefix's tokens (for prompt caching)
    and whether samples had to be priced as separate requests."""
    max_tokens = int(how.task.params.get("max_tokens") or how.task.params.get("max_completion_tokens") or 0)
    seen: set[str] = set()
    prefix_tokens = 0
    priced_as_requests = False
    for item in (i for chunk in planner.plan_rows(rows) for i in chunk):
        est.rows += item.variant == 0  # a prompt ensemble's forms of a row are one row
        if item.status == REJECTED:
            est.rejected += 1
            continue
        request, key = item.request, item.key
        assert request is not None and key is not None
        if key in seen:
            continue
        seen.add(key)
        if item.status == CACHED:
            est.already_stored += 1
            continue
        calls, answers = _shape(how.provider, how.teacher, request, how.sampling)
        priced_as_requests |= (
            how.teacher is None and calls > 1 and _facts(how.provider).choices_per_request is None
        )
        calls *= how.copies
        est.requests += how.copies
        est.http_requests += calls
        est.answers += calls * answers
        prompt, prefix = how.counter.prompt(request)
        est.prompt_tokens += (prompt + how.padding_tokens) * calls
        est.output_tokens += min(how.output_each, max_tokens or how.output_each) * calls * answers
        est.max_output_tokens += (max_tokens or how.output_each) * calls * answers
        prefix_tokens = prefix
    return prefix_tokens, priced_as_requests


def _shape_notes(est: Estimate, task: Task, sampling: Sampling, priced_as_requests: bool) -> None:
    """Why there are more requests than rows, when there are."""
    forms = len(task.members)
    if forms > 1:
        est.notes.append(
            f"prompt ensemble: each row is asked in {forms} prompt forms "
            f"({forms} requests per row, each cached on its own)"
        )
    if priced_as_requests:
        est.notes.append(
            f"{sampling.n} samples per row priced as {sampling.n} requests (the "
            "prompt paid each time): whether this server takes `n` (one request, "
            "the prompt paid once) is learned by the run"
        )


def _bound_notes(est: Estimate, task: Task, upper: bool, model: str) -> None:
    """Where the figures are bounds rather than estimates, or a price is missing."""
    if thinking_budget(task.params) is not None:
        est.notes.append(
            "output tokens count the whole thinking budget and max_tokens per answer: an upper bound"
        )
    elif upper:
        est.notes.append("output tokens are max_tokens per answer: an upper bound for free text")
    if task.params.get("reasoning_effort") not in (None, "none"):
        est.notes.append(
            "reasoning tokens (billed as output) are not counted: a reasoning "
            "model's thinking can be many times its answer"
        )
    if est.cost_usd is None:
        est.notes.append(f"no price known for '{model}': add --price {model}=IN,OUT (USD/1M)")


def _teacher(teacher: Teacher | str) -> tuple[str, str, Teacher | None]:
    if not isinstance(teacher, str):
        return teacher.provider, teacher.model, teacher
    provider, sep, model = teacher.partition(":")
    if not sep:
        return "", teacher, None
    return provider, model, None


def _shape(provider: str, teacher: Teacher | None, request: Request, sampling: Sampling) -> tuple[int, int]:
    """(HTTP requests, answers per request) of one row, as the teacher would send it."""
    if teacher is not None:
        return request_shape(teacher, request)
    facts = _facts(provider)
    sampled = sampling.samples_for(request, gives_logprobs=facts.sampled_answers is None)
    if sampled > 1:
        return (1, sampled) if facts.choices_per_request else (sampled, 1)
    if sampled == 1:
        return 1, 1
    if facts.sampled_answers is not None:  # no `n` at this provider: n requests
        return max(1, int(request.params.get("n") or 1)), 1
    return 1, max(1, int(request.params.get("n") or 1))


def _facts(provider: str) -> Provider:
    """The registry's facts for a provider; a bare model name is priced as one plain
    request per row with no prompt cache."""
    return PROVIDERS.get(provider) or Provider(factory="")


def _output_tokens(task: Task, counter: TokenCounter) -> tuple[int, bool]:
    """Expected answer tokens and whether that number is only an upper bound. A thinking
    budget is billed as output and counted whole: how much of it a model spends is not
    known before it answers."""
    budget = thinking_budget(task.params)
    if budget is not None:
        max_tokens = int(task.params.get("max_tokens") or 0)
        return max_tokens or budget, True
    max_tokens = int(task.params.get("max_tokens") or task.params.get("max_completion_tokens") or 0)
    space = task.label_space
    if task.output_kind == "label" and space is not None:
        words = [w for forms in space.verbalizers.values() for w in forms] or list(space.labels)
        longest = max(
            counter.count(task.answer_prefix + w if task.mode == "completion" else w) for w in words
        )
        return (min(longest, max_tokens) if max_tokens else longest), False
    return max_tokens or 512, True


def _cache(est: Estimate, provider: str, prefix: int, task: Task) -> None:
    """Move the shared prefix's tokens from fresh to cached as the provider would bill."""
    if task.mode != "chat" or prefix < CACHE_MIN_TOKENS:
        return
    reads = est.http_requests - 1
    cache = _facts(provider).prompt_cache
    if cache == "explicit":
        est.cache_write_tokens = prefix
        est.cached_prompt_tokens = prefix * reads
        est.prompt_tokens -= prefix  # the written prefix is billed apart, at the write rate
        est.notes.append(f"shared prefix of ~{prefix} tokens: written once, then read from cache")
    elif cache == "automatic":
        step = prefix - prefix % OPENAI_CACHE_STEP
        est.cached_prompt_tokens = step * reads
        est.notes.append(f"shared prefix of ~{prefix} tokens: cached automatically after the first")


def _price(est: Estimate, prices: PriceTable) -> None:
    price = prices.lookup(est.model)
    if price is None:
        return
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    write_rate = price.cache_write if price.cache_write is not None else price.input
    fresh = est.prompt_tokens - est.cached_prompt_tokens
    est.cost_usd = (
        fresh * price.input
        + est.cached_prompt_tokens * cached_rate
        + est.cache_write_tokens * write_rate
        + est.output_tokens * price.output
    ) / PER
    worst_prompt = est.prompt_tokens + est.cache_write_tokens
    est.max_cost_usd = (worst_prompt * price.input + est.max_output_tokens * price.output) / PER
