"""Read a provider request body into one neutral `Parsed` request, or refuse it.

Validation mirrors the providers' own 400s for the mistakes a client library could
make (missing messages, out-of-range top_logprobs, Anthropic's required max_tokens),
so a pipeline that passes here sends requests the real APIs accept.

The prompt is kept as segments, one per message (per content block for Anthropic, so a
`cache_control` mark can point at any block). Usage counts each segment's tokens on its
own; the flattened `text` joins them with newlines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from labeler.testing.hashing import text_hash
from labeler.testing.tokens import count_tokens

CacheMark = tuple[int, str]

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")

OPENAI_CHAT = "openai-chat"
OPENAI_COMPLETIONS = "openai-completions"
ANTHROPIC = "anthropic"


class BadRequest(Exception):
    """A request the provider would reject with 400, with its `param` and `code`."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(slots=True)
class Parsed:
    """One request in provider-neutral terms; `prompts` is set only for completions."""

    provider: str
    model: str
    segments: list[str]
    text: str
    last_user: str
    max_tokens: int | None
    temperature: float | None
    seed: int | None
    n: int = 1
    stop: list[str] = field(default_factory=list)
    top_k: int | None = None
    prompts: list[str] | None = None
    cache_marks: list[CacheMark] = field(default_factory=list)
    thinking_budget: int | None = None  # Anthropic's extended thinking, when asked for
    seg_tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    longest_prompt: int = 0
    hash: int = 0

    def finish(self) -> Parsed:
        """Fill the derived counts once the segments are known."""
        self.seg_tokens = [count_tokens(s) for s in self.segments]
        self.prompt_tokens = sum(self.seg_tokens)
        self.longest_prompt = max(self.seg_tokens) if self.prompts else self.prompt_tokens
        self.hash = text_hash(self.text)
        return self


def parse_openai_chat(body: dict[str, Any]) -> Parsed:
    _reject_stream(body)
    model = _model(body)
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    segments: list[str] = []
    last_user = ""
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg:
            raise BadRequest(
                f"Missing required parameter: 'messages[{i}].role'.",
                f"messages[{i}].role",
                "missing_required_parameter",
            )
        text = _openai_content(msg.get("content"))
        segments.append(f"{msg['role']}: {text}")
        if msg["role"] == "user":
            last_user = text
    top_k = None
    if body.get("logprobs"):
        top_k = _int_in(body, "top_logprobs", 0, 20, default=0)
    elif body.get("top_logprobs") is not None:
        raise BadRequest(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            "top_logprobs",
            "invalid_value",
        )
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise BadRequest(
            f"Invalid value: '{effort}'. Supported values are: "
            + ", ".join(f"'{e}'" for e in REASONING_EFFORTS[:-1])
            + f", and '{REASONING_EFFORTS[-1]}'.",
            "reasoning_effort",
            "invalid_value",
        )
    return Parsed(
        provider=OPENAI_CHAT,
        model=model,
        segments=segments,
        text="\n".join(segments),
        last_user=last_user,
        max_tokens=_positive(max_tokens, "max_tokens"),
        temperature=_temperature(body, 2.0),
        seed=body.get("seed"),
        n=_int_in(body, "n", 1, 128, default=1),
        stop=_stops(body.get("stop")),
        top_k=top_k,
    ).finish()


def parse_openai_completions(body: dict[str, Any]) -> Parsed:
    _reject_stream(body)
    model = _model(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest(
            "Invalid 'prompt': expected a string or an array of strings.",
            "prompt",
            "invalid_type",
        )
    logprobs = body.get("logprobs")
    top_k = None
    if logprobs is not None and logprobs is not False:
        top_k = 0 if logprobs is True else _int_in(body, "logprobs", 0, 20, default=0)
    max_tokens = body.get("max_tokens")
    return Parsed(
        provider=OPENAI_COMPLETIONS,
        model=model,
        segments=list(prompts),
        text=prompts[0] if len(prompts) == 1 else "\n".join(prompts),
        last_user=prompts[-1],
        max_tokens=16 if max_tokens is None else _positive(max_tokens, "max_tokens"),
        temperature=_temperature(body, 2.0),
        seed=body.get("seed"),
        n=_int_in(body, "n", 1, 128, default=1),
        stop=_stops(body.get("stop")),
        top_k=top_k,
        prompts=list(prompts),
    ).finish()


def parse_anthropic(body: dict[str, Any]) -> Parsed:
    if body.get("stream"):
        raise BadRequest("stream: streaming is not supported by this test server")
    if not body.get("model"):
        raise BadRequest("model: Field required")
    if body.get("max_tokens") is None:
        raise BadRequest("max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            "messages: Field required" if messages is None else "messages: at least one message is required"
        )
    segments: list[str] = []
    marks: list[CacheMark] = []
    for tool in body.get("tools") or ():
        segments.append("tools: " + orjson.dumps(tool).decode())
        _mark(tool, len(segments) - 1, marks)
    system = body.get("system")
    if isinstance(system, str):
        segments.append(f"system: {system}")
    elif isinstance(system, list):
        _blocks("system", system, segments, marks)
    last_user = ""
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = msg.get("content")
        if isinstance(content, str):
            segments.append(f"{msg['role']}: {content}")
            text = content
        elif isinstance(content, list):
            text = _blocks(msg["role"], content, segments, marks)
        else:
            raise BadRequest(f"messages.{i}.content: Field required")
        if msg["role"] == "user":
            last_user = text
    if body.get("cache_control") and segments:
        marks.append((len(segments) - 1, _ttl(body["cache_control"])))
    stop = body.get("stop_sequences") or []
    budget = _thinking(body)
    return Parsed(
        provider=ANTHROPIC,
        model=str(body["model"]),
        segments=segments,
        text="\n".join(segments),
        last_user=last_user,
        max_tokens=_positive(body["max_tokens"], "max_tokens", anthropic=True),
        temperature=_temperature(body, 1.0, anthropic=True),
        seed=None,
        stop=[s for s in stop if isinstance(s, str)],
        cache_marks=sorted(set(marks)),
        thinking_budget=budget,
    ).finish()


_THINKING_DOCS = (
    "Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


def _thinking(body: dict[str, Any]) -> int | None:
    """The budget of an extended-thinking request, refused as the Messages API refuses
    what thinking does not allow: a budget under 1024 or not under max_tokens, a
    temperature other than 1, a top_p under 0.95, top_k."""
    thinking = body.get("thinking")
    if thinking is None or (isinstance(thinking, dict) and thinking.get("type") == "disabled"):
        return None
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        raise BadRequest("thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled'")
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        raise BadRequest("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens <= budget:
        raise BadRequest(f"`max_tokens` must be greater than `thinking.budget_tokens`. {_THINKING_DOCS}")
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise BadRequest(f"`temperature` may only be set to 1 when thinking is enabled. {_THINKING_DOCS}")
    top_p = body.get("top_p")
    if top_p is not None and top_p < 0.95:
        raise BadRequest(
            "`top_p` must be greater than or equal to 0.95 or unset when "
            f"thinking is enabled. {_THINKING_DOCS}"
        )
    if body.get("top_k") is not None:
        raise BadRequest(f"`top_k` must be unset when thinking is enabled. {_THINKING_DOCS}")
    return budget


def _blocks(role: str, blocks: list[Any], segments: list[str], marks: list[CacheMark]) -> str:
    texts = []
    for j, block in enumerate(blocks):
        text = _block_text(block)
        texts.append(text)
        segments.append(f"{role}: {text}" if j == 0 else text)
        _mark(block, len(segments) - 1, marks)
    return "\n".join(texts)


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return str(block)
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_result":
        inner = block.get("content")
        if isinstance(inner, list):
            return "\n".join(_block_text(b) for b in inner)
        return str(inner or "")
    if kind == "tool_use":
        return orjson.dumps(block.get("input", {})).decode()
    return f"[{kind}]"


def _mark(block: Any, index: int, marks: list[CacheMark]) -> None:
    if isinstance(block, dict) and block.get("cache_control"):
        marks.append((index, _ttl(block["cache_control"])))


def _ttl(control: Any) -> str:
    return control.get("ttl", "5m") if isinstance(control, dict) else "5m"


def _openai_content(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type')}]")
        return "\n".join(parts)
    return str(content)


def _reject_stream(body: dict[str, Any]) -> None:
    if body.get("stream"):
        raise BadRequest("Streaming is not supported by this test server.", "stream")


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not model:
        raise BadRequest("you must provide a model parameter")
    return str(model)


def _int_in(body: dict[str, Any], name: str, lo: int, hi: int, *, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(
            f"Invalid type for '{name}': expected an integer, but got {type(value).__name__}.",
            name,
            "invalid_type",
        )
    if value > hi:
        raise BadRequest(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {hi}, "
            f"but got {value} instead.",
            name,
            "integer_above_max_value",
        )
    if value < lo:
        raise BadRequest(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {lo}, "
            f"but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    return value


def _positive(value: Any, name: str, *, anthropic: bool = False) -> int | None:
    if value is None:
        return None
    lowest = 0 if anthropic else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        if anthropic:
            raise BadRequest(f"{name}: Input should be greater than or equal to 0")
        raise BadRequest(
            f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    return value


def _temperature(body: dict[str, Any], hi: float, *, anthropic: bool = False) -> float | None:
    value = body.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= hi:
        if anthropic:
            raise BadRequest(f"temperature: range: 0..{hi:g}")
        raise BadRequest(
            f"Invalid 'temperature': decimal out of range. Expected a value between 0 and "
            f"{hi:g}, but got {value} instead.",
            "temperature",
            "decimal_above_max_value",
        )
    return float(value)


def _stops(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    return [s for s in stop if isinstance(s, str)]
