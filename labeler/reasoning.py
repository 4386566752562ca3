"""Reasoning teachers: how hard they think, and how their thinking reaches a dataset.

One home for what several stages need to agree on. A template's ``params`` (or
``--reasoning-effort`` / ``--thinking-budget``, which override them) carry the effort an
OpenAI-style reasoning model spends (``reasoning_effort``, sent as it is) and Anthropic's
extended-thinking budget (``thinking_budget``, sent as ``thinking.budget_tokens``). Both
are request parameters, so they are part of every cache key: the same row asked to think
harder is another paid answer, never a stale one.

Anthropic counts the thinking inside ``max_tokens`` and refuses a budget that leaves no
room for the answer, so the rule is settled here, before anything is sent. A template
written without thinking sized its ``max_tokens`` for the answer: a budget is added to
it. A template that sets ``thinking_budget`` and ``max_tokens`` itself speaks the API's
terms: its max_tokens must exceed the budget (else one line, exit 1).

An export carries the trace one of three ways (`MODES`): ``separate`` (the assistant
message's ``reasoning_content``, the field Qwen3's and DeepSeek's chat templates read, and
a ``reasoning`` column), ``inline`` (``<think>`` ... ``</think>`` before the answer, so a
trainer that knows no such field still trains on it) or ``drop``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labeler.errors import ConfigError

# OpenAI's values; servers that take fewer refuse the others themselves.
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
MIN_THINKING_BUDGET = 1024  # Anthropic's smallest budget_tokens
THINKING_TEMPERATURE = 1.0  # the only temperature Anthropic accepts with thinking
THINKING_TOP_P_MIN = 0.95  # Anthropic refuses a smaller top_p with thinking
MODES = ("separate", "inline", "drop")
# What `--reasoning` left unset does: `separate` when the store holds any trace, else
# nothing at all, so an export of a store without traces keeps its columns.
AUTO = "auto"


def thinking_budget(params: Mapping[str, Any]) -> int | None:
    """The request's thinking budget in tokens, or None (no extended thinking)."""
    value = params.get("thinking_budget")
    return int(value) if value else None


def reasoning_params(
    params: Mapping[str, Any],
    *,
    answer_tokens: int | None,
    effort: str | None = None,
    budget: int | None = None,
    where: str = "",
) -> dict[str, Any]:
    """`params` with `effort` and `budget` set over them (None keeps the template's), and
    max_tokens made room for the thinking; raises ConfigError naming the bad value.

    `answer_tokens` is what the template allows the answer alone: with a budget,
    max_tokens becomes budget + answer_tokens. It is None where the template's own
    max_tokens already counts the thinking (it sets a thinking_budget and max_tokens
    itself, in the API's terms); that max_tokens must then exceed the budget."""
    out = dict(params)
    prefix = f"{where}: " if where else ""
    if effort is not None:
        out["reasoning_effort"] = effort
    if budget is not None:
        out["thinking_budget"] = budget
    chosen = out.get("reasoning_effort")
    if chosen is not None and chosen not in EFFORTS:
        raise ConfigError(f"{prefix}reasoning_effort must be one of {', '.join(EFFORTS)}, got {chosen!r}")
    raw = out.get("thinking_budget")
    if raw is None:
        return out
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < MIN_THINKING_BUDGET:
        raise ConfigError(
            f"{prefix}thinking_budget must be a whole number of tokens, at "
            f"least {MIN_THINKING_BUDGET} (Anthropic's minimum), got {raw!r}"
        )
    if answer_tokens is not None:
        out["max_tokens"] = raw + answer_tokens
        out.pop("max_completion_tokens", None)
        return out
    max_tokens = out.get("max_tokens") or out.get("max_completion_tokens")
    if max_tokens is None or int(max_tokens) <= raw:
        raise ConfigError(
            f"{prefix}thinking_budget {raw} must be below max_tokens ({max_tokens}), which "
            "counts the thinking and the answer: raise params.max_tokens above the budget "
            "(or remove it: the budget plus the default answer allowance)"
        )
    return out


def answer_allowance(template_params: Mapping[str, Any], defaults: Mapping[str, Any]) -> int | None:
    """The answer's own token allowance in a template's params (`defaults` filled in), or
    None where its max_tokens counts the thinking too: a template that sets both a
    thinking_budget and max_tokens speaks the API's terms."""
    explicit = template_params.get("max_tokens") or template_params.get("max_completion_tokens")
    if "thinking_budget" in template_params:
        return None if explicit is not None else int(defaults.get("max_tokens") or 0)
    value = explicit if explicit is not None else defaults.get("max_tokens")
    return int(value) if value is not None else None


def inline(trace: str | None, answer: str) -> str:
    """The answer with its trace before it as Qwen3's and DeepSeek-R1's chat templates
    render an assistant turn (``<think>\\n...\\n</think>\\n\\n`` then the answer), so a
    student trained on it meets at inference the very tokens its template writes."""
    if not trace:
        return answer
    return f"<think>\n{trace.strip(chr(10))}\n</think>\n\n{answer.lstrip(chr(10))}"


def check_mode(mode: str) -> None:
    if mode not in (*MODES, AUTO):
        raise ConfigError(f"--reasoning '{mode}': expected one of {', '.join(MODES)}")


__all__ = [
    "AUTO",
    "EFFORTS",
    "MIN_THINKING_BUDGET",
    "MODES",
    "THINKING_TEMPERATURE",
    "THINKING_TOP_P_MIN",
    "answer_allowance",
    "check_mode",
    "inline",
    "reasoning_params",
    "thinking_budget",
]
