"""Templates: strict loading, rendering, errors that name file, field and row."""

from __future__ import annotations

from pathlib import Path

import pytest

from labeler.errors import TemplateError
from labeler.task import PROMPTS_DIR, load_task

ROW = {"text": "Great film."}


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "t.yaml"
    p.write_text(body)
    return p


BASE = """
name: t
version: "3"
system: "Label it."
user: "Text: {{ text }}"
output: {kind: label, labels: [neg, pos]}
"""


@pytest.mark.parametrize("path", sorted(PROMPTS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_template_loads_and_renders(path: Path) -> None:
    task = load_task(path)
    row = {f: "some input text" for f in task.fields}
    request = task.render(row, row_id="r1")
    assert request.template == f"{task.name}@{task.version}"
    assert request.messages or request.prompt


def test_shipped_templates_resolve_by_name() -> None:
    assert load_task("sentiment").name == "sentiment"


def test_chat_render_has_system_few_shot_and_row() -> None:
    task = load_task("sentiment")
    req = task.render(ROW)
    msgs = list(req.messages or ())
    assert msgs[0] == {"role": "system", "content": task.system}
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[-1]["content"].startswith("Review: Great film.")
    assert req.params["logprobs"] is True and req.params["top_logprobs"] == 20


def test_completion_render_puts_shared_prefix_first() -> None:
    task = load_task("sentiment-completion")
    a = task.render({"text": "good"}).prompt or ""
    b = task.render({"text": "bad"}).prompt or ""
    assert a.endswith("Review: good\nSentiment:")
    prefix = a[: -len("Review: good\nSentiment:")]
    assert b.startswith(prefix) and task.system in prefix


def test_missing_field_names_file_field_and_row(tmp_path: Path) -> None:
    task = load_task(write(tmp_path, BASE))
    with pytest.raises(TemplateError) as e:
        task.render({"body": "x"}, row_id="data.jsonl:7")
    msg = str(e.value)
    assert "t.yaml" in msg and "'text'" in msg and "data.jsonl:7" in msg


def test_null_field_is_an_error(tmp_path: Path) -> None:
    task = load_task(write(tmp_path, BASE))
    with pytest.raises(TemplateError, match="null"):
        task.render({"text": None})


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="'sytem'"):
        load_task(write(tmp_path, BASE + "sytem: oops\n"))


def test_unknown_output_kind(tmp_path: Path) -> None:
    body = BASE.replace("kind: label", "kind: labels")
    with pytest.raises(TemplateError, match=r"output\.kind"):
        load_task(write(tmp_path, body))


def test_label_task_without_labels(tmp_path: Path) -> None:
    body = BASE.replace(", labels: [neg, pos]", "")
    with pytest.raises(TemplateError, match=r"output\.labels"):
        load_task(write(tmp_path, body))


def test_few_shot_output_must_be_a_label(tmp_path: Path) -> None:
    body = BASE + "few_shot:\n  - input: {text: a}\n    output: meh\n"
    with pytest.raises(TemplateError, match=r"few_shot\[0\]"):
        load_task(write(tmp_path, body))


def test_template_rendering_to_empty_prompt(tmp_path: Path) -> None:
    body = BASE.replace('user: "Text: {{ text }}"', 'user: "{{ text }}"').replace('system: "Label it."', "")
    task = load_task(write(tmp_path, body))
    with pytest.raises(TemplateError, match="empty prompt"):
        task.render({"text": "   "})


def test_sandbox_blocks_attribute_escape(tmp_path: Path) -> None:
    body = BASE.replace("{{ text }}", "{{ text.__class__.__mro__ }}")
    task = load_task(write(tmp_path, body))
    with pytest.raises(TemplateError):
        task.render(ROW)


def test_jinja_syntax_error_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="syntax"):
        load_task(write(tmp_path, BASE.replace("{{ text }}", "{{ text ")))


def test_missing_template_lists_shipped_ones() -> None:
    with pytest.raises(TemplateError, match="sentiment"):
        load_task("no-such-template")


def test_ambiguous_labels_warn_at_load(tmp_path: Path) -> None:
    body = BASE.replace("[neg, pos]", "[card_arrival, card_linking, refund]")
    task = load_task(write(tmp_path, body))
    assert task.warnings and "card" in " ".join(task.warnings)
