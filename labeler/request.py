"""A provider-neutral request and the content-addressed key that caches it.

The key is the whole identity of a paid answer: who answered (provider, model, endpoint),
exactly what was asked (every message, the system prompt included, or the completion
prompt), how (every sampling parameter) and from which template version. Anything that
could change the answer changes the key; nothing else does, so adding a row never misses
the cache for the others, and editing a template relabels only what it renders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

KEY_PREFIX = "b2:"
# A teacher identity's entry for its sampling options (N, and whether to sample a teacher
# that gives logprobs). They say how a soft-target request is sent, not who answers, so
# they are never hashed as part of the teacher: a sampled request carries its count in its
# own params (``n``), and every other request keeps the key it has without the options.
SAMPLING = "sampling"


@dataclass(frozen=True, slots=True)
class Request:
    """What to ask the teacher.

    Exactly one of `messages` (chat) and `prompt` (completion mode: a few-shot prefix whose
    next token is read as the label distribution) is set. `params` holds sampling options
    in OpenAI's vocabulary (temperature, max_tokens, logprobs, top_logprobs, n, stop, seed);
    each teacher translates them for its provider.
    """

    messages: tuple[dict[str, str], ...] | None = None
    prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    template: str = ""
    # Whether the template wants a distribution over answers (its ``soft_targets``), as
    # opposed to logprobs kept only for token-level distillation. A teacher without
    # logprobs samples answers only for the former. None: not said (a hand-built
    # request); teachers then go by ``params["logprobs"]``. Not part of the key: it is
    # implied by the template, whose identity is.
    soft_targets: bool | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a Request has either messages (chat) or prompt (completion)")

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def wants_soft_targets(self) -> bool:
        """A distribution over answers asked for: a teacher with no logprobs then samples
        n answers. The template's ``soft_targets`` decides; logprobs kept only for
        token-level distillation (a free-text template with ``top_logprobs``) are not worth
        n answers. A hand-built request that does not say goes by ``logprobs``."""
        if self.soft_targets is not None:
            return self.soft_targets
        return bool(self.params.get("logprobs"))

    def canonical(self, teacher_identity: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "teacher": key_identity(teacher_identity),
            "params": self.params,
            "template": self.template,
        }
        if self.messages is not None:
            body["messages"] = list(self.messages)
        else:
            body["prompt"] = self.prompt
        return body

    def key(self, teacher_identity: dict[str, Any]) -> str:
        return request_key(self.canonical(teacher_identity))


def chat_request(
    messages: tuple[dict[str, str], ...], params: dict[str, Any], template: str, soft_targets: bool | None
) -> Request:
    """A chat `Request`, as every renderer of a chat template makes it."""
    return Request(messages=messages, params=params, template=template, soft_targets=soft_targets)


def completion_request(
    prompt: str, params: dict[str, Any], template: str, soft_targets: bool | None
) -> Request:
    """A completion-mode `Request`, likewise."""
    return Request(prompt=prompt, params=params, template=template, soft_targets=soft_targets)


def key_identity(teacher_identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a teacher's identity that keys its answers: all of it but `SAMPLING`."""
    if SAMPLING not in teacher_identity:
        return teacher_identity
    return {k: v for k, v in teacher_identity.items() if k != SAMPLING}


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace: the same object always gives the same bytes."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def request_key(canonical: dict[str, Any]) -> str:
    """`b2:` + a 128-bit BLAKE2b digest; the prefix names the hash so a change cannot collide."""
    return KEY_PREFIX + _hasher(canonical_json(canonical)).hexdigest()


class RequestKeys:
    """`Request.key` for many requests to one teacher, each hashing only its own part.

    A canonical request is {"messages" | "prompt", "params", "teacher", "template"}, and
    most of it is the same for every row: the teacher's identity, and in a chat the system
    prompt and few-shot messages before the row's own. Its sorted-key JSON is built here
    from pieces serialised once (the identity, the template) or once per run of equal
    leading messages, whose hash state is kept too, so a row hashes only its own message
    and what follows it; the bytes hashed, and the keys, are exactly `Request.key`'s
    (tests/test_request_keys.py holds them to that)."""

    def __init__(self, teacher_identity: dict[str, Any]) -> None:
        self._teacher = b',"teacher":' + canonical_json(key_identity(teacher_identity))
        self._template = ""
        self._template_tail = self._teacher + b',"template":' + canonical_json("") + b"}"
        # copies of the leading messages last seen (text only: equal as dicts means equal
        # as JSON, so comparing with them notices an edit in place) and the hash state
        # after their JSON, each message followed by its comma
        self._lead: tuple[dict[str, str], ...] = ()
        self._lead_hash = _hasher(b'{"messages":[')

    def key(self, request: Request) -> str:
        if request.template != self._template:
            self._template = request.template
            self._template_tail = self._teacher + b',"template":' + canonical_json(request.template) + b"}"
        messages = request.messages
        if messages is None:
            hasher = _hasher(
                b'{"params":'
                + canonical_json(request.params)
                + b',"prompt":'
                + canonical_json(request.prompt)
                + self._template_tail
            )
        else:
            lead = messages[:-1]
            hasher = (self._lead_hash if lead == self._lead else self._leading(lead)).copy()
            own = canonical_json(messages[-1]) if messages else b""
            hasher.update(own + b'],"params":' + canonical_json(request.params) + self._template_tail)
        return KEY_PREFIX + hasher.hexdigest()

    def _leading(self, lead: tuple[dict[str, str], ...]) -> hashlib.blake2b:
        hasher = _hasher(b'{"messages":[' + b"".join([canonical_json(m) + b"," for m in lead]))
        if all(
            type(m) is dict and all(type(k) is str and type(v) is str for k, v in m.items()) for m in lead
        ):
            self._lead, self._lead_hash = tuple([dict(m) for m in lead]), hasher
        return hasher


def _hasher(data: bytes) -> hashlib.blake2b:
    """The hash `request_key` takes, fed `data` so far."""
    return hashlib.blake2b(data, digest_size=16)
