"""A local teacher for testing labeling pipelines against the real OpenAI and Anthropic SDKs.

`TeacherServer` speaks the OpenAI chat and legacy completions APIs (optionally in
llama.cpp's llama-server shape) and the Anthropic Messages API over real HTTP, with
deterministic answers and logprobs, simulated prompt caching, provider-shaped errors and
headers, enforced rate limits, and reproducible faults. Nothing leaves the machine::

    from labeler.testing import LabelResponder, ServerConfig, TeacherServer

    with TeacherServer(ServerConfig(labels=["positive", "negative"])) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="test")
        ...                                  # anthropic.Anthropic(base_url=srv.url, ...)
        srv.config.error_rate = 0.2          # change behaviour between phases
        assert srv.log[-1].status == 200

Answers come from a responder (`LabelResponder`, `EchoResponder`, `ScriptedResponder`, or
any callable from `RequestView` to `Reply`). For benchmarks, run it as a process:
`python -m labeler.testing serve --port 0 --latency 0.2 --rpm 600`, which prints its URL
first and serves `GET /_stats`, `GET|POST /_config` and `POST /_reset` besides the APIs.
"""

from labeler.testing.config import ServerConfig
from labeler.testing.records import RequestLog, RequestRecord
from labeler.testing.responders import (
    EchoResponder,
    LabelResponder,
    Reply,
    RequestView,
    Responder,
    ScriptedResponder,
)
from labeler.testing.server import TeacherServer, serve
from labeler.testing.tokens import count_tokens, tokenize

__all__ = [
    "EchoResponder",
    "LabelResponder",
    "Reply",
    "RequestLog",
    "RequestRecord",
    "RequestView",
    "Responder",
    "ScriptedResponder",
    "ServerConfig",
    "TeacherServer",
    "count_tokens",
    "serve",
    "tokenize",
]
