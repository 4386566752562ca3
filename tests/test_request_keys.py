"""`RequestKeys` (the plan stage's keys, the identity serialised once) gives exactly
`Request.key`: every bundled template over many rows, few-shot pools, completion prompts,
edited and unusual messages, and a store filled the one way answers lookups the other."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from labeler.completion import Completion
from labeler.plan import CACHED, Planner
from labeler.request import Request, RequestKeys
from labeler.store import Store
from labeler.task import load_task

PROMPTS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "prompts").glob("*.yaml"))
IDENTITY = {"provider": "openai-compatible", "model": "m", "base_url": "http://h/v1"}


def rows(n: int) -> list[dict[str, str]]:
    rng = random.Random(7)
    words = ["good", "bad", "é", '"quoted"', "line\nbreak", "x" * 50, "tab\t", "ünï", "🙂"]
    return [
        {
            "id": str(i),
            **{
                f: " ".join(rng.choices(words, k=rng.randint(1, 6)))
                for f in ("text", "title", "query", "instruction", "input", "prompt", "response")
            },
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("template", PROMPTS)
def test_keys_are_request_key_s_for_every_template(template: str) -> None:
    task = load_task(template)
    keys = RequestKeys(IDENTITY)
    for row in rows(300):
        for request in task.render_all(row):
            assert keys.key(request) == request.key(IDENTITY)


def test_keys_follow_edits_and_odd_requests() -> None:
    keys = RequestKeys(IDENTITY)
    system = {"role": "system", "content": "Be brief."}
    shot = {"role": "user", "content": "a"}

    def both(request: Request) -> None:
        assert keys.key(request) == request.key(IDENTITY)

    for i in range(3):
        both(Request(messages=(system, shot, {"role": "user", "content": f"row {i}"})))
    shot["content"] = "edited in place"  # the same dicts, other text: other keys
    both(Request(messages=(system, shot, {"role": "user", "content": "row"})))
    both(Request(messages=(dict(system), shot, {"role": "user", "content": "row"})))
    both(Request(messages=({"role": "user", "content": "only"},), template="t@2"))
    both(Request(messages=(), params={"temperature": 0}))
    both(
        Request(
            messages=({"role": "user", "content": "n", "name": 1},),  # type: ignore[dict-item]
            params={"n": True, "stop": ["\n"]},
        )
    )
    both(Request(prompt="Review: x\nSentiment:", params={"max_tokens": 1, "logprobs": 5}, template="c@1"))
    both(Request(messages=(system, {"role": "user", "content": "back"}), template="t@1"))


def test_a_store_filled_through_request_key_answers_the_planner(tmp_path: Path) -> None:
    task = load_task("sentiment")
    data = [{"id": r["id"], "text": f"review {r['id']}: {r['text']}"} for r in rows(600)]
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(
            [(task.render(r).key(IDENTITY), Completion(f"positive {r['id']}"), None) for r in data]
        )
        planner = Planner(task, IDENTITY, store, failures=False)
        planned = [i for chunk in planner.plan_rows(data, 128) for i in chunk]
    assert len(planned) == 600 and all(i.status == CACHED for i in planned)
    assert [i.completion.text for i in planned] == [f"positive {r['id']}" for r in data]
