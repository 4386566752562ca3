"""Prompt templates: load a YAML file, render a row into a Request, parse the answer.

A template is data with a strict schema: an unknown key is an error naming the file and
the key, because a typo in a prompt file must never become a silent default. Rendering
runs in a Jinja2 sandbox with strict undefined, so a row that lacks a field the template
uses is an error naming the template, the field and the row instead of an empty string
sent to a paid API.

Two modes:
- ``chat``: system prompt, few-shot examples as user/assistant turns, then the row.
- ``completion``: one text prompt (instructions, few-shot examples, then the row) that
  ends where the label goes; the label distribution is read from the next token. Small
  local models label far better this way than through a chat template. The shared prefix
  comes first so servers can reuse its cached computation.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
import orjson
import yaml

from labeler.bounded_jinja import BoundedEnvironment, RenderLimit, render_bounded
from labeler.errors import ConfigError, TemplateError, TemplateLimitError
from labeler.example_pool import ExamplePool, load_pool
from labeler.reasoning import answer_allowance, reasoning_params
from labeler.request import Request, chat_request, completion_request
from labeler.soft_labels import LabelSpace
from labeler.yaml_files import YamlTooLarge, load_yaml


def _prompts_dir() -> Path:
    """The shipped templates: prompts/ of a source checkout, or where a wheel put them."""
    import sys

    source = Path(__file__).resolve().parent.parent / "prompts"
    installed = Path(sys.prefix) / "share" / "labeler" / "prompts"
    return source if source.is_dir() or not installed.is_dir() else installed


PROMPTS_DIR = _prompts_dir()
OUTPUT_KINDS = ("label", "text", "json")
MODES = ("chat", "completion")
TOP_KEYS = {
    "name",
    "version",
    "description",
    "mode",
    "system",
    "user",
    "output",
    "few_shot",
    "params",
    "soft_targets",
    "top_logprobs",
    "fields",
    "example_separator",
    "answer_prefix",
    "few_shot_pool",
    "variants",
    "example_orders",
}
VARIANT_KEYS = {"system", "user", "few_shot"}
POOL_KEYS = {"file", "k", "label_field"}
OUTPUT_KEYS = {"kind", "labels", "schema", "case_sensitive", "confidence"}
# `output.confidence`: where a label task's soft label comes from when not from the answer
# itself. `verbalized`: the teacher answers {"label": ..., "confidence": p} as JSON.
CONFIDENCE_KINDS = ("verbalized",)
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "label": {"temperature": 0.0, "max_tokens": 8},
    "text": {"temperature": 0.0, "max_tokens": 512},
    "json": {"temperature": 0.0, "max_tokens": 512},
}

_ENV = BoundedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


@dataclass(frozen=True)
class FewShot:
    """One worked example: the input fields and the answer the teacher should give."""

    input: dict[str, Any]
    output: str


@dataclass(frozen=True)
class Task:
    """A loaded template; `render` turns a row into a Request, `label_space` parses answers."""

    name: str
    version: str
    path: str
    mode: str
    output_kind: str
    system: str
    user: jinja2.Template = field(repr=False)
    user_source: str = field(repr=False, default="")
    label_space: LabelSpace | None = None
    schema: dict[str, Any] | None = None
    few_shot: tuple[FewShot, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    soft_targets: bool = False
    top_logprobs: int = 0
    # The teacher states its confidence in its answer (`output.confidence: verbalized`):
    # the soft label is read from that statement (`soft_labels.verbalized_soft_label`).
    verbalized: bool = False
    fields: tuple[str, ...] = ()
    example_separator: str = "\n\n"
    answer_prefix: str = " "
    description: str = ""
    warnings: tuple[str, ...] = ()
    _prefix: str = field(repr=False, default="")
    _shot_messages: tuple[dict[str, str], ...] = field(repr=False, default=())
    # Whether the user template reads `task`: building that dict costs more than the
    # rest of the context, so rows of templates that never look at it skip it.
    _uses_task: bool = field(repr=False, default=True)
    # A user template that only puts fields into text ("Review: {{ text }}"): its pieces,
    # (text, field or None) in order, rendered without Jinja (see `_plain_pieces`).
    _plain: tuple[tuple[str, str | None], ...] | None = field(repr=False, default=None)
    # few_shot_pool: per row, the k most similar labeled examples go after the fixed prefix.
    pool: ExamplePool | None = field(repr=False, default=None)
    pool_k: int = 0
    # A prompt ensemble (`variants`, `example_orders`): the other prompt forms each row is
    # also asked in, each a full Task of its own, so each is its own request and cache key.
    others: tuple[Task, ...] = field(repr=False, default=())
    # The tokens the template allows the answer alone (None: its max_tokens counts the
    # thinking too): a thinking budget is added to it (labeler/reasoning.py).
    answer_tokens: int | None = field(repr=False, default=None)

    @property
    def identity(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def labels(self) -> tuple[str, ...]:
        return self.label_space.labels if self.label_space else ()

    @property
    def members(self) -> tuple[Task, ...]:
        """Every prompt form a row is asked in: this one first, then the ensemble's others."""
        return (self, *self.others)

    def with_reasoning(self, effort: str | None, budget: int | None) -> Task:
        """This task asking for `effort` and/or a thinking `budget` (None keeps the
        template's), every prompt form alike; raises ConfigError for a bad value, before
        anything is sent."""
        if effort is None and budget is None:
            return self
        params = reasoning_params(
            self.params, answer_tokens=self.answer_tokens, effort=effort, budget=budget, where=self.path
        )
        others = tuple(t.with_reasoning(effort, budget) for t in self.others)
        return dataclasses.replace(self, params=params, others=others)

    def render_all(self, row: Mapping[str, Any], *, row_id: str = "?") -> tuple[Request, ...]:
        """One request per prompt form (one, unless the template is an ensemble)."""
        if not self.others:
            return (self.render(row, row_id=row_id),)
        return tuple(t.render(row, row_id=row_id) for t in self.members)

    def render(self, row: Mapping[str, Any], *, row_id: str = "?") -> Request:
        """Render one input row; raises TemplateError naming the file, field and row."""
        for name in self.fields:
            if name not in row:
                raise TemplateError(self.path, "missing in the input row", field=name, row=row_id)
            if row[name] is None:
                raise TemplateError(self.path, "is null in the input row", field=name, row=row_id)
        text = self._render_user(row, row_id)
        if not text.strip():
            raise TemplateError(self.path, "renders to an empty prompt", row=row_id)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate from a caller's dict rows:
                # no API accepts it and the cache key cannot hash it, so it is this row's error
                raise TemplateError(
                    self.path,
                    f"renders to text that is not valid Unicode ({exc.reason} at character {exc.start})",
                    row=row_id,
                ) from exc
        params = dict(self.params)
        soft = self.soft_targets
        if self.pool is None:  # no examples chosen per row: nothing more to render
            if self.mode == "completion":
                return completion_request(self._prefix + text, params, self.identity, soft)
            return chat_request(
                (*self._shot_messages, {"role": "user", "content": text}), params, self.identity, soft
            )
        chosen = self.pool.nearest(row, self.pool_k)
        if self.mode == "completion":
            shots = "".join(
                self._render_user(ex.input, "few_shot_pool")
                + self.answer_prefix
                + self._answer_word(ex.output)
                + self.example_separator
                for ex in chosen
            )
            return Request(
                prompt=self._prefix + shots + text, params=params, template=self.identity, soft_targets=soft
            )
        pairs = tuple(
            m
            for ex in chosen
            for m in (
                {"role": "user", "content": self._render_user(ex.input, "few_shot_pool")},
                {"role": "assistant", "content": self._answer_word(ex.output)},
            )
        )
        messages = (*self._shot_messages, *pairs, {"role": "user", "content": text})
        return Request(messages=messages, params=params, template=self.identity, soft_targets=soft)

    def _render_user(self, row: Mapping[str, Any], row_id: str) -> str:
        if self._plain is not None:
            try:
                return "".join([text if name is None else str(row[name]) for text, name in self._plain])
            except Exception:  # a missing field, a value str() refuses: Jinja renders
                pass  # it, or names the problem as it always has
        try:
            return render_bounded(self.user, _context(self, row))
        except RenderLimit as exc:
            raise TemplateLimitError(
                self.path,
                f"{exc}: a template bug (rendering is limited in time and size)",
                field="user",
                row=row_id,
            ) from exc
        except jinja2.UndefinedError as exc:
            raise TemplateError(self.path, str(exc), field=_undefined_name(exc), row=row_id) from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(self.path, f"cannot render: {exc}", row=row_id) from exc
        except Exception as exc:  # a filter applied to a value of the wrong type
            raise TemplateError(self.path, f"cannot render: {exc!r}", row=row_id) from exc

    def _answer_word(self, label: str) -> str:
        space = self.label_space
        return space.verbalizers[label][0] if space is not None and label in space.labels else label


def _context(task: Task, row: Mapping[str, Any]) -> dict[str, Any]:
    ctx = dict(row)
    if not task._uses_task:
        return ctx
    ctx["task"] = {
        "labels": list(task.labels),
        "verbalizers": (
            {k: list(v) for k, v in task.label_space.verbalizers.items()} if task.label_space else {}
        ),
        "answers": [task.label_space.verbalizers[lab][0] for lab in task.labels] if task.label_space else [],
    }
    return ctx


def _plain_pieces(parsed: jinja2.nodes.Template) -> tuple[tuple[str, str | None], ...] | None:
    """The pieces of a template that is only text and `{{ field }}`s, else None.

    Jinja spends most of a row's rendering on setting up a context; such a template
    renders to its text with each field's `str()` (what Jinja writes for an expression
    without autoescape or finalize), so it is joined directly, and the rendered prompt,
    and with it every cache key, is the same."""
    body = parsed.body
    if _ENV.finalize is not None or _ENV.autoescape:
        return None
    if len(body) != 1 or not isinstance(body[0], jinja2.nodes.Output):
        return None
    pieces: list[tuple[str, str | None]] = []
    for node in body[0].nodes:
        if isinstance(node, jinja2.nodes.TemplateData):
            pieces.append((node.data, None))
        elif isinstance(node, jinja2.nodes.Name) and node.ctx == "load" and node.name != "task":
            pieces.append(("", node.name))
        else:
            return None
    return tuple(pieces)


def _undefined_name(exc: jinja2.UndefinedError) -> str | None:
    msg = str(exc)
    if msg.startswith("'") and "' is undefined" in msg:
        return msg[1 : msg.index("' is undefined")]
    if "has no attribute '" in msg:
        return msg.split("has no attribute '", 1)[1].rstrip("'")
    return None


def resolve_template_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped template (``sentiment``)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise TemplateError(str(p), "template file not found")
        return p
    for candidate in (Path("prompts") / f"{p}.yaml", PROMPTS_DIR / f"{p}.yaml"):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(t.stem for t in PROMPTS_DIR.glob("*.yaml")))
    raise TemplateError(str(name_or_path), f"no such template file or shipped template ({shipped})")


def load_task(name_or_path: str | Path) -> Task:
    """Load and validate a template; every problem names the file and the key."""
    path = resolve_template_path(name_or_path)
    where = str(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(where, f"cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise TemplateError(where, f"invalid YAML: {exc}") from exc
    except YamlTooLarge as exc:
        raise TemplateError(where, f"not a template: the YAML {exc}") from exc
    if not isinstance(raw, dict):
        raise TemplateError(where, "must be a YAML mapping of template keys")
    return task_from_dict(raw, where)


def task_from_dict(raw: dict[str, Any], where: str = "<template>") -> Task:
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise TemplateError(
            where, f"unknown key (allowed: {', '.join(sorted(TOP_KEYS))})", field=sorted(unknown)[0]
        )
    if "variants" in raw or "example_orders" in raw:
        return _ensemble(raw, where)
    return _single(raw, where)


def _ensemble(raw: dict[str, Any], where: str) -> Task:
    """A prompt ensemble: the template as written, then each `variants` entry (a mapping
    that overrides system, user and/or few_shot), each asked again in `example_orders - 1`
    shuffles of its few-shot examples. The first member is exactly the template without
    these keys, so adding variants to a template relabels nothing already stored."""
    base_raw = {k: v for k, v in raw.items() if k not in ("variants", "example_orders")}
    variants = raw.get("variants", []) or []
    if not isinstance(variants, list):
        raise TemplateError(where, "must be a list of mappings", field="variants")
    orders = raw.get("example_orders", 1)
    if not isinstance(orders, int) or isinstance(orders, bool) or not 1 <= orders <= 16:
        raise TemplateError(where, "must be an integer from 1 to 16", field="example_orders")
    forms = [base_raw]
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or not v:
            raise TemplateError(
                where, "must be a mapping of system, user and/or few_shot", field=f"variants[{i}]"
            )
        bad = set(v) - VARIANT_KEYS
        if bad:
            raise TemplateError(
                where,
                f"unknown key (allowed: {', '.join(sorted(VARIANT_KEYS))})",
                field=f"variants[{i}].{sorted(bad)[0]}",
            )
        forms.append({**base_raw, **v})
    members: list[Task] = []
    for i, form in enumerate(forms):
        task = _single(form, where if i == 0 else f"{where} (variants[{i - 1}])")
        members.append(task)
        members.extend(_reordered(task, orders, where))
    base = members[0]
    if base.output_kind != "label":
        raise TemplateError(
            where,
            "prompt ensembles need output kind 'label' (their label distributions are averaged)",
            field="variants",
        )
    if len(members) == 1:
        return base
    return dataclasses.replace(base, others=tuple(members[1:]))


def _reordered(task: Task, orders: int, where: str) -> list[Task]:
    """`orders - 1` copies of `task` whose few-shot examples come in other (seeded, fixed,
    pairwise distinct) orders."""
    if orders == 1:
        return []
    n = len(task.few_shot)
    if math.factorial(n) < orders:
        raise TemplateError(
            where,
            f"asks for {orders} orders of {n} few-shot example(s), which have only {math.factorial(n)}",
            field="example_orders",
        )
    seen = {tuple(range(n))}
    out: list[Task] = []
    rng = random.Random(n)
    while len(out) < orders - 1:
        order = tuple(rng.sample(range(n), n))
        if order in seen:
            continue
        seen.add(order)
        shots = tuple(task.few_shot[j] for j in order)
        out.append(_with_prefix(dataclasses.replace(task, few_shot=shots)))
    return out


@dataclass(frozen=True)
class _Output:
    """What a template's `output:` mapping says, checked: the answer's kind, its label
    space and the warnings that space raises, and where a soft label comes from."""

    kind: str
    space: LabelSpace | None
    warnings: tuple[str, ...]
    verbalized: bool
    schema: Any


@dataclass(frozen=True)
class _UserTemplate:
    """The compiled `user:` template and what loading needs to know about it: the names it
    reads and, for a template of plain text and fields, its pieces (rendered without Jinja)."""

    template: jinja2.Template
    names: frozenset[str]
    plain: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True)
class _Sampling:
    """The request parameters a template sends, and whether its answers carry soft targets."""

    params: dict[str, Any]
    soft: bool
    top_k: int
    answer_tokens: int | None


def _single(raw: dict[str, Any], where: str) -> Task:
    name = _req_str(raw, "name", where)
    version = str(raw.get("version", "1"))
    mode = raw.get("mode", "chat")
    if mode not in MODES:
        raise TemplateError(where, f"must be one of {', '.join(MODES)}", field="mode")
    user_src = _req_str(raw, "user", where)
    system = raw.get("system", "") or ""
    if not isinstance(system, str):
        raise TemplateError(where, "must be a string", field="system")
    out = _output(raw.get("output", {"kind": "text"}), mode, where)
    user = _user_template(user_src, where)
    fields_t = _fields(raw.get("fields"), user.names - {"task"}, where)
    # verbalized answers are JSON, not a label word: few-shot answers are checked as JSON
    few = _few_shot(raw.get("few_shot", []) or [], where, None if out.verbalized else out.space)
    sampling = _sampling(raw, name, out, where)
    task = Task(
        name=name,
        version=version,
        path=where,
        mode=mode,
        output_kind=out.kind,
        system=system,
        user=user.template,
        user_source=user_src,
        label_space=out.space,
        schema=out.schema,
        few_shot=few,
        params=sampling.params,
        soft_targets=sampling.soft,
        top_logprobs=sampling.top_k,
        verbalized=out.verbalized,
        fields=fields_t,
        example_separator=str(raw.get("example_separator", "\n\n")),
        answer_prefix=str(raw.get("answer_prefix", " ")),
        description=str(raw.get("description", "")),
        warnings=out.warnings,
        _uses_task="task" in user.names,
        _plain=user.plain,
        answer_tokens=sampling.answer_tokens,
    )
    pool = raw.get("few_shot_pool")
    if pool is not None:
        examples, k = _pool(pool, where, fields_t, out.space)
        object.__setattr__(task, "pool", ExamplePool(examples, fields_t))
        object.__setattr__(task, "pool_k", k)
    return _with_prefix(task)


def _output(output: Any, mode: str, where: str) -> _Output:
    """The `output:` mapping checked against itself and the template's mode, so that a
    template whose answers could not be read is refused at load, not after paying."""
    if not isinstance(output, dict):
        raise TemplateError(where, "must be a mapping with 'kind'", field="output")
    bad = set(output) - OUTPUT_KEYS
    if bad:
        raise TemplateError(
            where,
            f"unknown key (allowed: {', '.join(sorted(OUTPUT_KEYS))})",
            field=f"output.{sorted(bad)[0]}",
        )
    kind = output.get("kind", "text")
    if kind not in OUTPUT_KINDS:
        raise TemplateError(where, f"must be one of {', '.join(OUTPUT_KINDS)}", field="output.kind")
    space = None
    warnings: tuple[str, ...] = ()
    if kind == "label":
        space = _label_space(output, where)
        warning = space.ambiguity_warning(completion=mode == "completion")
        warnings = (warning,) if warning else ()
    elif "labels" in output:
        raise TemplateError(where, "labels are only allowed with kind: label", field="output.labels")
    verbalized = output.get("confidence") == "verbalized"
    if "confidence" in output:
        if output["confidence"] not in CONFIDENCE_KINDS:
            raise TemplateError(
                where, f"must be one of {', '.join(CONFIDENCE_KINDS)}", field="output.confidence"
            )
        if kind != "label" or mode != "chat":
            raise TemplateError(
                where, "verbalized confidence is for chat templates of kind label", field="output.confidence"
            )
    schema = output.get("schema")
    if kind == "json" and schema is not None and not isinstance(schema, dict):
        raise TemplateError(where, "must be a JSON schema mapping", field="output.schema")
    if mode == "completion" and kind != "label":
        raise TemplateError(where, "completion mode needs output kind 'label'", field="mode")
    return _Output(kind, space, warnings, verbalized, schema)


def _user_template(user_src: str, where: str) -> _UserTemplate:
    """Compile the `user:` template once; a syntax error names the line within it."""
    try:
        user_tmpl = _ENV.from_string(user_src)
        # Jinja keeps a template's globals as a ChainMap over the environment's and copies
        # it (slowly) on every render; ours never change after load, so one flat dict
        # gives the same names at a fraction of the per-row cost.
        user_tmpl.globals = dict(user_tmpl.globals)
        parsed = _ENV.parse(user_src)
        names = jinja2.meta.find_undeclared_variables(parsed)
        plain = _plain_pieces(parsed)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            where, f"Jinja2 syntax error line {exc.lineno}: {exc.message}", field="user"
        ) from exc
    return _UserTemplate(user_tmpl, frozenset(names), plain)


def _fields(fields: Any, used: frozenset[str], where: str) -> tuple[str, ...]:
    """The row fields a template reads: those it names in `fields:`, else those its user
    template uses."""
    if fields is None:
        return tuple(sorted(used))
    if isinstance(fields, list) and all(isinstance(f, str) for f in fields):
        return tuple(fields)
    raise TemplateError(where, "must be a list of field names", field="fields")


def _sampling(raw: dict[str, Any], name: str, out: _Output, where: str) -> _Sampling:
    """The kind's default parameters under the template's own, checked, with what soft
    targets need (logprobs, top_logprobs) and what a JSON answer needs (response_format)."""
    kind = out.kind
    params = dict(DEFAULT_PARAMS[kind])
    user_params = raw.get("params", {}) or {}
    if not isinstance(user_params, dict):
        raise TemplateError(where, "must be a mapping", field="params")
    params.update(user_params)
    _check_params(params, where)
    answer_tokens = answer_allowance(user_params, DEFAULT_PARAMS[kind])
    try:
        params = reasoning_params(params, answer_tokens=answer_tokens)
    except ConfigError as exc:
        raise TemplateError(where, str(exc), field="params") from None
    # A verbalized soft label is stated, not read from logprobs or samples: by default the
    # request asks for neither.
    soft = bool(raw.get("soft_targets", kind == "label" and not out.verbalized))
    top_k = raw.get("top_logprobs", 20 if soft else 0)
    if not _is_int(top_k) or not 0 <= top_k <= 20:
        raise TemplateError(where, "must be between 0 and 20 (the OpenAI limit)", field="top_logprobs")
    if soft or top_k:
        params["logprobs"] = True
        if top_k:
            params["top_logprobs"] = top_k
    if kind == "json":
        params.setdefault("response_format", _response_format(name, out.schema))
    return _Sampling(params, soft, top_k, answer_tokens)


def _pool(spec: Any, where: str, fields: tuple[str, ...], space: LabelSpace | None) -> tuple[list[Any], int]:
    """``few_shot_pool: FILE`` or ``{file: FILE, k: 4, label_field: label}``; FILE is a
    JSONL of labeled rows, relative to the template file."""
    if isinstance(spec, str):
        spec = {"file": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("file"), str):
        raise TemplateError(where, "must be a file name or a mapping with 'file'", field="few_shot_pool")
    bad = set(spec) - POOL_KEYS
    if bad:
        raise TemplateError(
            where,
            f"unknown key (allowed: {', '.join(sorted(POOL_KEYS))})",
            field=f"few_shot_pool.{sorted(bad)[0]}",
        )
    k = spec.get("k", 4)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 64:
        raise TemplateError(where, "must be an integer from 1 to 64", field="few_shot_pool.k")
    label_field = spec.get("label_field", "label")
    if not isinstance(label_field, str):
        raise TemplateError(where, "must be a field name", field="few_shot_pool.label_field")
    base = Path(where).parent if where and not where.startswith("<") else Path.cwd()
    path = Path(spec["file"])
    path = path if path.is_absolute() else base / path
    examples = load_pool(path, fields, label_field, space.labels if space else None, where)
    return examples, k


def _with_prefix(task: Task) -> Task:
    """Pre-render the shared prefix (system + few-shot) once; every row reuses it."""
    shots: list[dict[str, str]] = []
    if task.system:
        shots.append({"role": "system", "content": task.system})
    parts: list[str] = [task.system + task.example_separator] if task.system else []
    for i, ex in enumerate(task.few_shot):
        text = task._render_user(ex.input, f"few_shot[{i}]")
        shots.append({"role": "user", "content": text})
        shots.append({"role": "assistant", "content": ex.output})
        parts.append(text + task.answer_prefix + ex.output + task.example_separator)
    return dataclasses.replace(task, _shot_messages=tuple(shots), _prefix="".join(parts))


# The sampling parameters every provider reads, with the numbers they take: a template is
# the place to find `max_tokens: "ten"`, not the middle of a run (or a budget check that
# multiplies by it). Parameters not listed go to the provider as written.
_INT_PARAMS: dict[str, tuple[int, int | None]] = {
    "max_tokens": (1, None),
    "n": (1, None),
    "seed": (-(2**63), 2**63 - 1),
}
_FLOAT_PARAMS: dict[str, tuple[float, float | None]] = {
    "temperature": (0.0, None),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}


def _check_params(params: Mapping[str, Any], where: str) -> None:
    for name, (low, high) in _INT_PARAMS.items():
        value = params.get(name)
        if value is not None and (not _is_int(value) or value < low or (high is not None and value > high)):
            limit = f"from {low}" + (f" to {high}" if high is not None else "")
            raise TemplateError(where, f"must be an integer {limit}, got {value!r}", field=f"params.{name}")
    for name, (lo, hi) in _FLOAT_PARAMS.items():
        value = params.get(name)
        if value is None:
            continue
        if not (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= lo
            and (hi is None or value <= hi)
        ):
            limit = f"from {lo:g}" + (f" to {hi:g}" if hi is not None else "")
            raise TemplateError(
                where, f"must be a finite number {limit}, got {value!r}", field=f"params.{name}"
            )
    stop = params.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop))
    ):
        raise TemplateError(where, "must be a string or a list of strings", field="params.stop")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _req_str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TemplateError(where, "is required and must be a non-empty string", field=key)
    return value


def _label_space(output: dict[str, Any], where: str) -> LabelSpace:
    labels = output.get("labels")
    if isinstance(labels, list) and labels and all(isinstance(x, str | int) for x in labels):
        names = tuple(str(x) for x in labels)
        verbal: dict[str, tuple[str, ...]] = {n: (n,) for n in names}
    elif isinstance(labels, dict) and labels:
        names = tuple(str(k) for k in labels)
        verbal = {}
        for k, v in labels.items():
            forms = [v] if isinstance(v, str | int) else v
            if not isinstance(forms, list) or not forms:
                raise TemplateError(
                    where, "each label maps to a word or a list of words", field=f"output.labels.{k}"
                )
            verbal[str(k)] = tuple(str(f) for f in forms)
    else:
        raise TemplateError(
            where,
            "kind 'label' needs a non-empty list of labels (or label: [words] mapping)",
            field="output.labels",
        )
    if len(set(names)) != len(names):
        raise TemplateError(where, "labels must be unique", field="output.labels")
    return LabelSpace(
        labels=names, verbalizers=verbal, case_sensitive=bool(output.get("case_sensitive", False))
    )


def _few_shot(items: Any, where: str, space: LabelSpace | None) -> tuple[FewShot, ...]:
    if not isinstance(items, list):
        raise TemplateError(where, "must be a list of {input, output}", field="few_shot")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"input", "output"}:
            raise TemplateError(where, "needs exactly the keys input and output", field=f"few_shot[{i}]")
        if not isinstance(item["input"], dict):
            raise TemplateError(where, "must be a mapping of fields", field=f"few_shot[{i}].input")
        answer = item["output"]
        if not isinstance(answer, str):
            answer = orjson.dumps(answer).decode()
        if space is not None and answer in space.labels:
            answer = space.verbalizers[answer][0]
        elif space is not None and not any(answer in v for v in space.verbalizers.values()):
            raise TemplateError(where, f"'{answer}' is not one of the labels", field=f"few_shot[{i}].output")
        out.append(FewShot(input=item["input"], output=answer))
    return tuple(out)


def _response_format(name: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
