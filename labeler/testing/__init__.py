"""A local teacher for testing labeling pipelines against the real OpenAI and Anthropic SDKs.

`TeacherServer` speaks, over real HTTP, the APIs a labeling pipeline calls:

- `POST /v1/chat/completions` (OpenAI chat: n, logprobs/top_logprobs, max_tokens or
  max_completion_tokens, stop, seed, temperature, usage with cached tokens);
- `POST /v1/completions` (legacy completions, with OpenAI's logprobs shape or, with
  `completions_shape="llama"`, llama.cpp llama-server's `logprobs.content[]`);
- `POST /v1/messages` and `/v1/messages/count_tokens` (Anthropic, with simulated prompt
  caching: `cache_control` prefixes are written once, then read);
- the batch APIs (testing/batches.py): OpenAI's `/v1/files` + `/v1/batches` and
  Anthropic's `/v1/messages/batches` (+ `/results`), each request answered as a live one
  would be, a batch taking `batch_speed_s` seconds, with `batch_fault` and
  `batch_error_rate` faults, and `GET /_batches` counting what was submitted;
- a reasoning model: `reasoning_field` puts a per-row trace in chat answers
  `reasoning_content` or `reasoning` (with `reasoning_tokens` in usage), and a Messages
  request with `thinking` gets a signed thinking block (and, with `redacted_thinking`, a
  redacted one), refused with the API's 400s where thinking forbids a setting;
- `GET /v1/models`, `GET /health`; and, for a server in another process,
  `GET /_stats`, `GET /_log` (needs `--log-requests`), `GET|POST /_config` and
  `POST /_reset`.

Answers are deterministic, come from a responder (`LabelResponder`, `EchoResponder`,
`ScriptedResponder`, `VerbalizedResponder`, `ArithmeticResponder` (right with a known
probability per answer, for verification), `ArithmeticJudge` (labels an arithmetic
answer correct or incorrect, for a judge), `SharedPrefixResponder` (multi-token labels
sharing first tokens, a known token-level distribution, continuations scored) or any
callable from `RequestView` to `Reply`), and carry the
providers' headers and error bodies; faults and rate limits are set on `ServerConfig`
and reproduce exactly for a given seed::

    from labeler.testing import ServerConfig, TeacherServer

    with TeacherServer(ServerConfig(labels=["positive", "negative"])) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="test")
        ...                                  # anthropic.Anthropic(base_url=srv.url, ...)
        srv.config.error_rate = 0.2          # change behaviour between phases
        assert srv.log[-1].status == 200

For benchmarks, run it as its own process: `python -m labeler.testing serve --port 0
--latency 0.2 --rpm 600 --labels a,b,c` prints its URL as the first line of stdout.
"""

from labeler.testing.arithmetic import ArithmeticJudge, ArithmeticResponder
from labeler.testing.config import ServerConfig
from labeler.testing.label_tree import SharedPrefixResponder
from labeler.testing.records import RequestLog, RequestRecord
from labeler.testing.responders import (
    EchoResponder,
    LabelResponder,
    Reply,
    RequestView,
    Responder,
    ScriptedResponder,
    VerbalizedResponder,
)
from labeler.testing.server import TeacherServer, serve
from labeler.testing.tokens import count_tokens, tokenize

__all__ = [
    "ArithmeticJudge",
    "ArithmeticResponder",
    "EchoResponder",
    "LabelResponder",
    "Reply",
    "RequestLog",
    "RequestRecord",
    "RequestView",
    "Responder",
    "ScriptedResponder",
    "ServerConfig",
    "SharedPrefixResponder",
    "TeacherServer",
    "VerbalizedResponder",
    "count_tokens",
    "serve",
    "tokenize",
]
