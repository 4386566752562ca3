"""Soft labels without logprobs: N answers per row, asked the cheapest way the server allows.

A teacher that gives no logprobs (Anthropic; a reasoning model that refuses them), or one
told to sample (``soft_labels="samples"``, to compare with its logprob soft labels),
answers a soft-target request N times; the soft label is the share of each answer among
the N (`soft_labels.sampled_soft_label`, source ``samples:N``) and the confidence their
agreement. One answer is no distribution: with N = 1 the request goes once, without
logprobs, and its soft label is the one-hot of its answer (source ``none``).

How the N answers are asked. An OpenAI-style server takes ``n``: one request, the prompt
paid once, N choices back. Not every server does (Groq, llama.cpp's server and some
gateways answer 400; others answer one choice and ignore ``n``). The rule, learned once
per teacher (and kept in the store by the run, labeler/teacher_params.py, so the next
run starts right): the first sampled request goes alone with ``n``; if the server
refuses ``n`` (a 400 or 422 that names it) or answers fewer choices than asked, every
request from then on is N concurrent single requests (that first one included, so no row
fails for it); if it answers N choices, the rest go with ``n`` too. So at most one
request is refused per run, however many rows are in flight. A teacher known not to take
``n`` (Anthropic, the local llama.cpp server) starts with concurrent requests.

Which requests are sampled is decided where they are planned (`TeacherParams.apply`, with
the options read back from the teacher identity's ``sampling`` entry): a sampled request
is planned, keyed and sent as `sampled_request` makes it, with its ``n``, so a sampled
answer never stands under the key of a logprob request or of a single answer, and
requests that are not sampled keep the keys they have without these options.

Sampling needs a temperature above 0 (N greedy answers would be N copies of one): a
template's 0 is sent as 1.0 while sampling, its own positive temperature as it is.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labeler.completion import Completion, Usage
from labeler.errors import ConfigError, FinalError, TeacherError
from labeler.request import SAMPLING, Request, chat_request, completion_request

DEFAULT_SAMPLES = 5
# logprobs:exact: logprobs, with labels that share first tokens scored to their whole
# probability by continuation requests (labeler/label_scoring.py)
EXACT = "logprobs:exact"
SOFT_LABEL_MODES = ("auto", "logprobs", EXACT, "samples")
SAMPLING_TEMPERATURE = 1.0
_MAX_PARTIAL = 10_000  # requests whose surviving samples are kept for their retry
# How servers word a refused `n`: OpenAI ("Invalid 'n': ..."), Groq ("'n' : number must be
# at most 1"), llama.cpp ("Only one completion choice is allowed"), vLLM ("n must be 1 ...").
_N_REFUSED = re.compile(
    r"['`\"]n['`\"]|\bn\s*(?:must|should|is not|=\s*1|>\s*1|!=)|completion choice"
    r"|number of (?:choices|completions)|multiple (?:choices|completions)",
    re.IGNORECASE,
)

Send = Callable[[Request], Awaitable[Completion]]


@dataclass(frozen=True)
class Sampling:
    """How a teacher gets soft labels: ``auto`` (logprobs where the teacher gives them,
    else N samples), ``logprobs`` (never sample) or ``samples`` (always sample, even a
    teacher that gives logprobs). ``samples`` is N; None means `DEFAULT_SAMPLES`."""

    samples: int | None = None
    soft_labels: str = "auto"

    def __post_init__(self) -> None:
        if self.soft_labels not in SOFT_LABEL_MODES:
            raise ConfigError(
                f"soft_labels must be one of {', '.join(SOFT_LABEL_MODES)}, got {self.soft_labels!r}"
            )
        if self.samples is not None and (
            isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1
        ):
            raise ConfigError(f"samples must be a whole number of at least 1, got {self.samples!r}")

    @property
    def n(self) -> int:
        return DEFAULT_SAMPLES if self.samples is None else self.samples

    def samples_for(self, request: Request, gives_logprobs: bool) -> int:
        """Answers to ask for `request`: N when its soft label must come from samples,
        or when N answers of a generation template were asked for (``--samples N``:
        rejection sampling keeps the ones a checker accepts), else 0 (send it as it is).
        Free text that keeps logprobs only for token-level distillation is not sampled
        unasked."""
        if not request.wants_soft_targets():
            return self.samples if self.samples is not None and self.samples > 1 else 0
        if self.soft_labels in ("logprobs", EXACT):
            return 0
        if self.soft_labels == "samples" or not gives_logprobs:
            return self.n
        return 0

    @property
    def explicit(self) -> bool:
        """Whether these options were set (an N, or a mode other than ``auto``)."""
        return self.samples is not None or self.soft_labels != "auto"

    def identity(self) -> dict[str, Any]:
        """The teacher identity's `SAMPLING` entry: how soft-target requests are sent, read
        back by the planner (`from_identity`) so that an export or an eval keys them as
        the run did. Never hashed (`request.key_identity`): a sampled request carries its
        count in its own ``n``. Nothing for the defaults."""
        if not self.explicit:
            return {}
        return {SAMPLING: {"samples": self.n, "soft_labels": self.soft_labels}}

    @classmethod
    def from_identity(cls, identity: Mapping[str, Any]) -> Sampling:
        """The options a teacher identity names (the defaults where it names none)."""
        entry = identity.get(SAMPLING)
        if not isinstance(entry, Mapping):
            return cls()
        return cls(entry.get("samples"), entry.get("soft_labels", "auto"))


def sampled_request(request: Request, n: int) -> Request:
    """`request` as sent to sample `n` answers in one go (``n`` > 1 in the body), or one
    answer (`n` = 1): without logprobs (the soft label comes from the answers) and, for
    several, at a temperature above 0. A request already in that shape (planned so, and
    then sent without what its teacher refuses, a temperature perhaps) is returned as it
    is: it is keyed as sent, and must be sent as keyed."""
    if is_sampled(request, n):
        return request
    params = {k: v for k, v in request.params.items() if k not in ("logprobs", "top_logprobs", "n")}
    if n > 1:
        params["n"] = n
    if n > 1 or request.params.get("n"):
        temperature = params.get("temperature")
        if not isinstance(temperature, int | float) or temperature <= 0:
            params["temperature"] = SAMPLING_TEMPERATURE
    if request.messages is not None:
        return chat_request(request.messages, params, request.template, request.soft_targets)
    return completion_request(request.prompt or "", params, request.template, request.soft_targets)


def is_sampled(request: Request, n: int) -> bool:
    """Whether `request` already asks for `n` answers without logprobs."""
    params = request.params
    if "logprobs" in params or "top_logprobs" in params:
        return False
    return params.get("n") == n if n > 1 else "n" not in params


def one_of(request: Request) -> Request:
    """One answer of a request for several (``n`` left out), sent N times where the
    server does not take ``n``; its temperature is the sampled request's."""
    params = {k: v for k, v in request.params.items() if k != "n"}
    if request.messages is not None:
        return chat_request(request.messages, params, request.template, request.soft_targets)
    return completion_request(request.prompt or "", params, request.template, request.soft_targets)


def refuses_n(error: TeacherError) -> bool:
    """Whether a failure is the server refusing ``n`` (not the request as a whole)."""
    return (
        isinstance(error, FinalError)
        and error.status in (400, 422)
        and bool(_N_REFUSED.search(error.message))
    )


def combine(samples: Sequence[Completion], *, latency_s: float) -> Completion:
    """n sampled answers -> one Completion: the majority text, every sample, summed usage,
    and the reasoning trace of the sample whose answer is kept (the trace that led to it).

    Ties go to the answer seen first, so the result does not depend on dict order.
    """
    texts = [c.text for c in samples]
    chosen = samples[texts.index(majority(texts))]
    usage = Usage()
    for c in samples:
        usage.prompt_tokens += c.usage.prompt_tokens
        usage.completion_tokens += c.usage.completion_tokens
        usage.cached_tokens += c.usage.cached_tokens
        usage.cache_write_tokens += c.usage.cache_write_tokens
        usage.reasoning_tokens += c.usage.reasoning_tokens
    first = samples[0]
    return Completion(
        text=chosen.text,
        tokens=None,
        usage=usage,
        finish_reason=first.finish_reason,
        model=first.model,
        latency_s=latency_s,
        samples=texts,
        reasoning=chosen.reasoning,
        reasoning_blocks=chosen.reasoning_blocks,
    )


def majority(texts: Sequence[str]) -> str:
    """The most frequent answer (compared without surrounding whitespace), first on ties."""
    counts = Counter(t.strip() for t in texts)
    best = max(counts.values())
    return next(t for t in texts if counts[t.strip()] == best)


class PartialSamples:
    """Samples that arrived for a request whose other samples failed with a retryable
    error: the retry asks only for the missing ones, so a 429 on one sample does not pay
    for the others twice."""

    def __init__(self) -> None:
        self._kept: dict[str, list[Completion]] = {}

    async def gather(
        self,
        request: Request,
        n: int,
        send_one: Callable[[], Awaitable[Completion]],
        have: Sequence[Completion] = (),
    ) -> Completion:
        """`n` answers, `have` and those kept from an earlier attempt counted, the rest
        asked concurrently with `send_one`."""
        start = time.perf_counter()
        key = request.key({})
        got = (list(have) + self._kept.pop(key, []))[:n]
        results = await asyncio.gather(*(send_one() for _ in range(n - len(got))), return_exceptions=True)
        got += [r for r in results if isinstance(r, Completion)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            final = [e for e in errors if isinstance(e, FinalError)]
            if not final and len(self._kept) < _MAX_PARTIAL:
                self._kept[key] = got
            for e in errors:
                if not isinstance(e, TeacherError):
                    raise e
            raise final[0] if final else errors[0]
        return combine(got, latency_s=time.perf_counter() - start)


class Sampler:
    """A teacher's sampling: which requests are sampled, how (``n`` or N requests, learned
    as the module docstring says), and what that costs in HTTP requests."""

    def __init__(
        self, sampling: Sampling, *, gives_logprobs: bool = True, n_supported: bool | None = None
    ) -> None:
        self.sampling = sampling
        self.gives_logprobs = gives_logprobs
        self.n_supported = n_supported
        self._probe: asyncio.Future[None] | None = None
        self._partial = PartialSamples()
        # What the run learned about the server, said once in the run's warnings
        # (`teachers.base.notices`).
        self.notices: list[str] = []
        self.http_outcomes: Counter[str] = Counter()

    @property
    def fans_out(self) -> bool:
        """Whether one `complete` may send several HTTP requests: then the run counts
        them from `http_outcomes` (`teachers.base.http_outcomes`), not per call."""
        return self.sampling.soft_labels == "samples" or not self.gives_logprobs

    def outcomes(self) -> Counter[str] | None:
        return self.http_outcomes if self.fans_out else None

    def identity(self) -> dict[str, Any]:
        return self.sampling.identity()

    def refuses(self, params: Collection[str], takes_n: bool | None = None) -> None:
        """Told what the teacher refuses (labeler/teacher_params.py): a teacher that refuses
        logprobs gives none, and its soft labels come from samples from then on; whether
        it takes ``n``, as an earlier run learned it (unless this teacher was made knowing)."""
        if "logprobs" in params:
            self.gives_logprobs = False
        if takes_n is not None and self.n_supported is None:
            self.n_supported = takes_n

    def shape(self, request: Request) -> tuple[int, int]:
        """(HTTP requests, answers per request) one `complete` sends; until the server is
        known to take ``n``, the dearer shape (the prompt paid N times) for budgets."""
        n = self.sampling.samples_for(request, self.gives_logprobs)
        if n == 0:
            return 1, max(1, int(request.params.get("n") or 1))
        if n == 1 or self.n_supported:
            return 1, n
        return n, 1

    def as_sent(self, request: Request) -> Request:
        """The one request a batch file carries for `request` (``n`` where sampled)."""
        n = self.sampling.samples_for(request, self.gives_logprobs)
        return request if n == 0 else sampled_request(request, n)

    async def complete(self, request: Request, send: Send) -> Completion:
        """Answer `request` through `send` (one HTTP request), sampling where it must."""
        n = self.sampling.samples_for(request, self.gives_logprobs)
        if self.fans_out:
            send = self._counted(send)
        if n == 0:
            return await send(request)
        if n == 1:  # one answer is no distribution: its one-hot, without logprobs
            return await send(sampled_request(request, 1))
        while self.n_supported is None and self._probe is not None:
            await asyncio.shield(self._probe)  # the server's answer to `n` is on its way
        sampled = sampled_request(request, n)
        if self.n_supported is False:
            return await self._singles(sampled, n, send)
        probe = None
        if self.n_supported is None:  # this request finds out, the others wait for it
            probe = self._probe = asyncio.get_running_loop().create_future()
        try:
            answer = await send(sampled)
        except TeacherError as exc:
            if not refuses_n(exc):
                raise
            self._learn(
                False,
                f"the server refuses n={n} ({exc.message}); each row's {n} "
                f"samples go as {n} requests from now on (its prompt paid "
                f"{n} times)",
            )
            return await self._singles(sampled, n, send)
        finally:
            if probe is not None:
                probe.set_result(None)
                self._probe = None
        texts = answer.samples or [answer.text]
        if len(texts) < n:
            self._learn(
                False,
                f"the server answered {len(texts)} of n={n} choices; each "
                f"row's {n} samples go as {n} requests from now on (its prompt "
                f"paid {n} times)",
            )
            firsts = [
                Completion(
                    t,
                    usage=answer.usage if i == 0 else Usage(),
                    finish_reason=answer.finish_reason,
                    model=answer.model,
                    reasoning=answer.reasoning if i == 0 else None,
                    reasoning_blocks=answer.reasoning_blocks if i == 0 else None,
                )
                for i, t in enumerate(texts)
            ]
            return await self._singles(sampled, n, send, have=firsts)
        if probe is not None:
            self._learn(True, None)
        kept = majority(texts)
        # the server sends the first choice's trace: kept only with the answer it led to
        traced = kept == answer.text
        return Completion(
            kept,
            usage=answer.usage,
            finish_reason=answer.finish_reason,
            model=answer.model,
            latency_s=answer.latency_s,
            samples=list(texts),
            reasoning=answer.reasoning if traced else None,
            reasoning_blocks=answer.reasoning_blocks if traced else None,
        )

    def _counted(self, send: Send) -> Send:
        async def counted(request: Request) -> Completion:
            try:
                answer = await send(request)
            except TeacherError as exc:
                self.http_outcomes[exc.reason] += 1
                raise
            self.http_outcomes["ok"] += 1
            return answer

        return counted

    def _learn(self, supported: bool, notice: str | None) -> None:
        if self.n_supported is None and notice is not None:
            self.notices.append(notice)
        self.n_supported = supported

    async def _singles(
        self, sampled: Request, n: int, send: Send, have: Sequence[Completion] = ()
    ) -> Completion:
        """`sampled`'s n answers as n requests of one answer each."""
        one = one_of(sampled)
        return await self._partial.gather(sampled, n, lambda: send(one), have)


class SampledTeacher:
    """What a teacher that samples through a `Sampler` tells the orchestrator: its request
    shape, its HTTP outcomes and notices, the refusals it is told of. One place, so the
    OpenAI, lean and local teachers answer the same way."""

    sampler: Sampler

    def request_shape(self, request: Request) -> tuple[int, int]:
        return self.sampler.shape(request)

    @property
    def http_outcomes(self) -> Counter[str] | None:
        """Each HTTP request's outcome while sampling may send several per row."""
        return self.sampler.outcomes()

    @property
    def notices(self) -> list[str]:
        return self.sampler.notices

    def refuses(self, params: Collection[str], takes_n: bool | None = None) -> None:
        """What this teacher is known to refuse (`teachers.base.tell_refusals`)."""
        self.sampler.refuses(params, takes_n)

    @property
    def takes_n(self) -> bool | None:
        return self.sampler.n_supported


__all__ = [
    "DEFAULT_SAMPLES",
    "SOFT_LABEL_MODES",
    "PartialSamples",
    "SampledTeacher",
    "Sampler",
    "Sampling",
    "combine",
    "is_sampled",
    "majority",
    "one_of",
    "refuses_n",
    "sampled_request",
]
