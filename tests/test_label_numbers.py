"""`label_numbers` (the export's fast reading of a label answer) gives exactly what
`read_answer` gives, or None: thousands of random answers with logprobs, every shape the
general reading handles (decorated tokens, the chosen token outside the top-k, filler
first tokens, labels spread over tokens, ambiguous prefixes, no mass on any label)."""

from __future__ import annotations

import dataclasses
import math
import pickle
import random

import orjson
import pytest

from labeler.answer import read_answer
from labeler.completion import Completion, StoredCompletion, TokenLogprob
from labeler.soft_labels import LabelSpace, label_numbers
from labeler.task import load_task

# One label per token, decorated ones, none at all, and pieces of a longer answer
TOKENS = [
    "positive",
    "negative",
    "Positive",
    " negative",
    "POS",
    "neg",
    "pos",
    "**",
    "\n",
    " ",
    "the",
    "It",
    "posi",
    "tive",
    "nega",
    "Neutral",
    "'",
    "positive.",
    "n",
    "p",
    "Ġpositive",
    "▁negative",
    "Label",
    ":",
]


def random_completion(rng: random.Random) -> Completion:
    tokens = []
    for _ in range(rng.randint(1, 4)):
        top = tuple((rng.choice(TOKENS), math.log(rng.uniform(1e-6, 1.0))) for _ in range(rng.randint(0, 5)))
        if top and rng.random() < 0.7:
            token, lp = top[0] if rng.random() < 0.8 else rng.choice(top)
        else:
            token, lp = rng.choice(TOKENS), math.log(rng.uniform(1e-6, 1.0))
        tokens.append(TokenLogprob(token, lp, top))
    return Completion("".join(t.token for t in tokens), tokens=tokens)


def stored(completion: Completion) -> StoredCompletion:
    return StoredCompletion(
        completion.text,
        orjson.loads(orjson.dumps(completion.tokens_to_json())),
        model=completion.model,
        finish_reason=completion.finish_reason,
    )


@pytest.mark.parametrize("template", ["sentiment", "sentiment-completion"])
def test_label_numbers_are_read_answer_s_numbers(template: str) -> None:
    task = load_task(template)
    space = task.label_space
    assert space is not None
    rng = random.Random(13)
    read = fell_back = 0
    for _ in range(5000):
        completion = random_completion(rng)
        numbers = label_numbers(completion, space, task.mode == "completion")
        # the same answer as the store reads it back: numbers from its stored JSON form
        assert label_numbers(stored(completion), space, task.mode == "completion") == numbers
        if numbers is None:
            fell_back += 1
            continue
        read += 1
        answer = read_answer(task, completion)
        assert answer.soft is not None and answer.confidence is not None
        index, probs, outside, max_prob, margin, entropy, mean_logprob = numbers
        label = None if index is None else space.labels[index]
        assert label == answer.label, completion
        assert probs == answer.soft.probs and outside == answer.soft.outside
        assert not answer.soft.ambiguous and answer.soft.source == "logprobs"
        conf = answer.confidence
        assert (max_prob, margin, entropy, mean_logprob) == (
            conf.max_prob,
            conf.margin,
            conf.entropy,
            conf.mean_logprob,
        ), completion
        assert conf.agreement is None
    # both readings are exercised: most answers take the fast one
    assert read > 2500 and fell_back > 200, (read, fell_back)


def test_what_label_numbers_leaves_to_the_general_reading() -> None:
    space = load_task("sentiment").label_space
    assert space is not None

    def numbers(*tokens: TokenLogprob) -> object:
        return label_numbers(Completion("".join(t.token for t in tokens), list(tokens)), space)

    assert numbers() is None
    assert label_numbers(Completion("positive", None, samples=["positive"]), space) is None
    assert numbers(TokenLogprob("\n", -0.1), TokenLogprob("positive", -0.1)) is None  # filler
    cards = LabelSpace(("card_arrival", "card_linking"))
    card = Completion(
        "card_arrival", [TokenLogprob("card", -0.1, (("card", -0.1),)), TokenLogprob("_arrival", -0.1)]
    )
    assert label_numbers(card, cards) is None  # a first token that two labels begin with
    assert numbers(TokenLogprob("positive", -0.1, (("positive", -0.1), ("n", -3.0)))) is not None


def test_a_stored_completion_reads_as_the_completion_it_stands_for() -> None:
    rng = random.Random(5)
    for _ in range(200):
        completion = random_completion(rng)
        completion.model, completion.finish_reason = "m", "stop"
        assert stored(completion) == completion and completion == stored(completion)
        assert stored(completion).tokens == completion.tokens
        copy = pickle.loads(pickle.dumps(stored(completion)))
        assert copy == completion and copy.token_rows is None
        assert dataclasses.replace(stored(completion), text="x").tokens == completion.tokens
        assert stored(completion) != dataclasses.replace(completion, text="other")
    kept = stored(completion)
    kept.tokens = None
    assert kept.tokens is None and kept.token_rows is None
    assert StoredCompletion("t", None).tokens is None
