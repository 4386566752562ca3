"""Templates that only put fields into text render without Jinja, to the same text.

The prompt is hashed into the cache key, so a rendering that differs by one character
would miss every stored answer: the direct path is compared with Jinja's own rendering
for values of every type a row can hold, and templates it must not take are listed.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from labeler.errors import TemplateError
from labeler.task import load_task, task_from_dict

VALUES: list[Any] = [
    "plain",
    "naïve café — 🎬",
    "",
    " padded \n",
    "{{ not a template }}",
    "<b>&amp;</b>",
    0,
    -17,
    10**30,
    1.0,
    0.1,
    1e-7,
    1e300,
    -0.0,
    math.inf,
    math.nan,
    True,
    False,
    [1, "a", None],
    {"k": [1.5, {"n": None}]},
    None,
]


def task(user: str, **extra: Any) -> Any:
    return task_from_dict({"name": "t", "version": "1", "user": user, "output": {"kind": "text"}, **extra})


@pytest.mark.parametrize("value", VALUES, ids=repr)
@pytest.mark.parametrize(
    "user",
    [
        "Review: {{ text }}\nSentiment:\n",
        "{{ text }}",
        "{{text}} and {{ other }}!",
        "  {{ text }}  {{ text }}\n\n",
        "A {{ text }}\n{{ other }}\nB",
        "{# a note #}{{ text }}",
    ],
)
def test_direct_rendering_equals_jinja(user: str, value: Any) -> None:
    t = task(user, fields=[])  # no declared fields: None passes through to the template
    assert t._plain is not None
    row = {"text": value, "other": value, "unused": 1}
    assert t._render_user(row, "1") == t.user.render(**row)


@pytest.mark.parametrize(
    "user",
    [
        "{{ text | upper }}",
        "{{ text.strip() }}",
        "{% if text %}{{ text }}{% endif %}",
        "{{ task.labels }} {{ text }}",
        "{{ text ~ '!' }}",
        "{{ 'x' }}",
        "{% for w in words %}{{ w }}{% endfor %}",
    ],
)
def test_other_templates_go_through_jinja(user: str) -> None:
    assert task(user)._plain is None


def test_a_missing_field_is_named_as_before() -> None:
    t = task("A {{ text }} B {{ other }}", fields=["text"])
    with pytest.raises(TemplateError, match="other"):
        t.render({"text": "x"})


def test_shipped_templates_take_the_direct_path() -> None:
    for name in ("sentiment", "sentiment-completion", "topic", "intent", "extract"):
        t = load_task(name)
        assert t._plain is not None, name
        row = {"text": "a \u2014 b"}
        assert t._render_user(row, "1") == t.user.render(**row)
