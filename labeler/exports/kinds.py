"""The kinds of export, one class each: its columns, its rows, its card's lines, its Hub task.

`--kind NAME` picks one from the registry (`labeler.exports.options.KINDS`) that the CLI's
choice, the options check, the builder and the card all read; a kind joins it with
`@register`. A new kind is one class here (or anywhere imported with the package):
its name, the rules it sets on the options (`KindRules`), `features` and `row`, and the
card's description of its columns.

Kinds are stateless: what one export learns on the way (the input fields, whether a token
id came) lives in the `RowBuilder` handed to every call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from labeler.errors import ConfigError
from labeler.exports import features as hf
from labeler.exports.features import Features
from labeler.exports.options import KINDS, ExportOptions, ExportReport, KindRules, register
from labeler.exports.rows import (
    RowBuilder,
    alternatives,
    label_features,
    message_list,
    traced_message_list,
    value_feature,
)
from labeler.reasoning import inline
from labeler.soft_labels import IGNORE_LABEL

if TYPE_CHECKING:
    from labeler.answer import Answer
    from labeler.completion import Completion
    from labeler.exports.fast import FastClassification
    from labeler.inputs import Row
    from labeler.plan import Item
    from labeler.request import Request
    from labeler.task import Task
    from labeler.verify import Checked


class ExportKind(KindRules):
    """One kind of export row. Subclass, set `name`, write `features`, `row` and `columns`,
    and decorate with `@register`."""

    label_source: ClassVar[bool] = False  # a label task's rows say who labeled them
    reasoning_column: ClassVar[bool] = False  # a trace carried apart: a `reasoning` column
    provenance: ClassVar[bool] = False  # a cascade's or ensemble's rows say who answered
    # a store holding traces carries them unless --reasoning says otherwise
    carries_reasoning: ClassVar[bool] = True
    classifies: ClassVar[bool] = False  # of a label task: the Hub's text-classification

    def features(self, b: RowBuilder, sample: dict[str, Any] | None) -> Features:
        """The columns after `id`, in order (`sample`: the first row, which types input
        columns)."""
        raise NotImplementedError

    def row(
        self,
        b: RowBuilder,
        row: Row,
        request: Request,
        completion: Completion,
        answer: Answer,
        trace: str | None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def verified(
        self, b: RowBuilder, record: dict[str, Any], item: Item, checked: Checked, report: ExportReport
    ) -> list[dict[str, Any]]:
        """The export rows of a row whose answers were checked (--verify)."""
        return [record]

    def columns(self, task: Task, opts: ExportOptions) -> list[str]:
        """The card's lines on the columns after `id`."""
        raise NotImplementedError

    def reasoning_columns(self, opts: ExportOptions) -> list[str]:
        """The card's line on where a trace went, when it has a column."""
        if self.reasoning_column and opts.reasoning in ("separate", "inline"):
            return [
                "- `reasoning`: the teacher's thinking before its answer (reasoning "
                "teachers), null where it wrote none or a person overruled its label."
            ]
        return []

    def task_category(self, task: Task) -> str:
        """The Hub's `task_categories` value of the card."""
        return "text-classification" if self.classifies and task.output_kind == "label" else "text-generation"

    def card_rows(self, report: ExportReport) -> list[str]:
        """Lines of the card's summary table only this kind has."""
        return []

    def verification_rows(self, report: ExportReport) -> list[str]:
        """Lines of the card's verification table only this kind has."""
        return []

    def check_task(self, task: Task) -> None:
        """Refuse a task this kind cannot export."""

    def fast_rows(self, task: Task, b: RowBuilder) -> FastClassification | None:
        """A reader of rows straight from their answers' numbers, where the kind has one."""
        return None


def export_kind(opts: ExportOptions) -> ExportKind:
    """The registered kind the options name."""
    found = KINDS[opts.kind]
    if not isinstance(found, ExportKind):
        raise TypeError(f"export kind {opts.kind!r} is not an ExportKind")
    return found


@register
class Records(ExportKind):
    """Everything: input fields, messages, response, label columns, teacher, logprobs."""

    name = "records"
    label_source = True
    reasoning_column = True
    provenance = True
    classifies = True

    def features(self, b: RowBuilder, sample: dict[str, Any] | None) -> Features:
        f: Features = {}
        for k in b.input_fields or []:
            col = b.input_column(k)
            f[col] = value_feature(sample.get(col) if sample else None)
        f["messages"] = message_list()
        f["prompt"] = hf.value("string")
        f["response"] = hf.value("string")
        if b.task.output_kind == "label":
            f.update(label_features(b.task, calibrated=b.calibrated))
        elif b.task.output_kind == "json":
            f["parsed"] = hf.value("string")
        for k in ("teacher", "teacher_model", "template", "finish_reason"):
            f[k] = hf.value("string")
        top = hf.list_of({"token": hf.value("string"), "logprob": hf.value("float64")})
        f["logprobs"] = hf.list_of(
            {
                "token": hf.value("string"),
                "logprob": hf.value("float64"),
                "top_logprobs": top,
            }
        )
        if b.reasoning_column:
            f["reasoning"] = hf.value("string")
        if b.opts.verify is not None:
            f["verdicts"] = hf.list_of(
                {
                    "sample": hf.value("int64"),
                    "text": hf.value("string"),
                    "status": hf.value("string"),
                    "score": hf.value("float64"),
                    "detail": hf.value("string"),
                    "kept": hf.value("bool"),
                }
            )
            f["passed"] = hf.value("int64")
            f["pass_at_1"] = hf.value("float64")
        f.update(_provenance_features(b, sample))
        return f

    def row(
        self,
        b: RowBuilder,
        row: Row,
        request: Request,
        completion: Completion,
        answer: Answer,
        trace: str | None,
    ) -> dict[str, Any]:
        return _records_row(b, row, request, completion, answer, trace)

    def verified(
        self, b: RowBuilder, record: dict[str, Any], item: Item, checked: Checked, report: ExportReport
    ) -> list[dict[str, Any]]:
        """Every answer of the row with its verdict."""
        answers, verdicts, kept = checked.answers, checked.verdicts, checked.kept
        record["verdicts"] = [
            {
                "sample": i,
                "text": a,
                "status": v.status,
                "score": v.score,
                "detail": v.detail,
                "kept": i in kept,
            }
            for i, (a, v) in enumerate(zip(answers, verdicts, strict=True))
        ]
        passed = sum(v.passed for v in verdicts)
        record["passed"] = passed
        record["pass_at_1"] = passed / len(answers) if answers else None
        return [record]

    def columns(self, task: Task, opts: ExportOptions) -> list[str]:
        cols = [
            "- input fields (an input field named like an output column gets an `input_` "
            "prefix), `messages`/`prompt`, `response`, `teacher`, `teacher_model`, "
            "`template`, `finish_reason`, `logprobs` (per token: `token`, `logprob`, "
            "`top_logprobs`)."
        ]
        if task.output_kind == "label":
            cols += _label_columns(opts)
        elif task.output_kind == "json":
            cols.append("- `parsed`: the answer as JSON text when it matched the schema, else null.")
        if opts.verify is not None:
            cols.append(
                "- `verdicts`: every answer of the row (`sample`, `text`) with its "
                "verdict (`status`: pass, fail, error or timeout; `score`; `detail`) "
                "and whether an sft export `kept` it; `passed`: how many pass; "
                "`pass_at_1`: their share."
            )
        return cols


def _records_row(
    b: RowBuilder, row: Row, request: Request, completion: Completion, answer: Answer, trace: str | None
) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": row.id}
    for k in b.input_fields or []:
        rec[b.input_column(k)] = row.data.get(k)
    rec["messages"] = b.messages(request, completion.text) if request.messages else None
    rec["prompt"] = request.prompt
    rec["response"] = completion.text
    if b.task.output_kind == "label":
        rec.update(b.label_cols(answer))
    elif b.task.output_kind == "json":
        rec["parsed"] = orjson.dumps(answer.parsed).decode() if answer.valid else None
    rec["teacher"] = f"{b.identity.get('provider')}:{b.identity.get('model')}"
    rec["teacher_model"] = completion.model
    rec["template"] = b.task.identity
    rec["finish_reason"] = completion.finish_reason
    rec["logprobs"] = [
        {
            "token": t.token,
            "logprob": t.logprob,
            "top_logprobs": [{"token": a, "logprob": lp} for a, lp in t.top],
        }
        for t in completion.tokens or []
    ]
    if b.reasoning == "inline" and rec["messages"]:
        rec["messages"][-1]["content"] = inline(trace, completion.text)
    if b.reasoning_column:
        rec["reasoning"] = trace
    return rec


def _provenance_features(b: RowBuilder, sample: dict[str, Any] | None) -> Features:
    """Who answered a row: an ensemble's members or a cascade's stages."""
    f: Features = {}
    if b.provenance == "ensemble":
        f["ensemble"] = hf.list_of(
            {
                "member": hf.value("int64"),
                "teacher": hf.value("string"),
                "weight": hf.value("float64"),
                "label": hf.value("string"),
                "valid": hf.value("bool"),
                "soft_label": hf.list_of(hf.value("float64")),
            }
        )
    elif b.provenance == "cascade":
        f["cascade_stage"] = hf.value("int64")
        f["cascade"] = hf.list_of(
            {
                "stage": hf.value("int64"),
                "teacher": hf.value("string"),
                "label": hf.value("string"),
                "valid": hf.value("bool"),
                "soft_label": hf.list_of(hf.value("float64")),
                "confidence": hf.value("float64"),
            }
        )
        if sample is not None and "awaiting_human" in sample:
            f["awaiting_human"] = hf.value("bool")
    return f


@register
class Classification(ExportKind):
    """Text, `label` (ClassLabel), `soft_label` in label order, confidence columns."""

    name = "classification"
    reads = ("text_field",)
    verify = "refuses"
    assistant_turn = False
    label_source = True
    reasoning_column = True
    classifies = True

    def features(self, b: RowBuilder, sample: dict[str, Any] | None) -> Features:
        f: Features = {"text": hf.value("string"), **label_features(b.task, calibrated=b.calibrated)}
        if b.reasoning_column:
            f["reasoning"] = hf.value("string")
        return f

    def row(
        self,
        b: RowBuilder,
        row: Row,
        request: Request,
        completion: Completion,
        answer: Answer,
        trace: str | None,
    ) -> dict[str, Any]:
        rec = {"id": row.id, "text": b.text(row), **b.label_cols(answer)}
        if b.reasoning_column:
            rec["reasoning"] = trace
        return rec

    def columns(self, task: Task, opts: ExportOptions) -> list[str]:
        return ["- `text`: the input text.", *_label_columns(opts)]

    def check_task(self, task: Task) -> None:
        if task.output_kind != "label":
            raise ConfigError(
                f"--kind classification needs a label task; {task.path} is '{task.output_kind}'"
            )

    def fast_rows(self, task: Task, b: RowBuilder) -> FastClassification | None:
        from labeler.exports.fast import FastClassification

        return FastClassification(task, b)


@register
class Sft(ExportKind):
    """The chat format TRL's SFTTrainer reads: prompt/completion or one `messages` list."""

    name = "sft"
    reads = ("sft_shape",)

    def features(self, b: RowBuilder, sample: dict[str, Any] | None) -> Features:
        f: Features = {}
        if b.task.mode == "completion":
            f["prompt"] = hf.value("string")
            f["completion"] = hf.value("string")
            if b.reasoning == "separate":
                f["reasoning_content"] = hf.value("string")
        elif b.opts.sft_shape == "messages":
            f["messages"] = traced_message_list(b.reasoning)
        else:
            f["prompt"] = message_list()
            f["completion"] = traced_message_list(b.reasoning)
        if b.opts.verify is not None:
            f["sample"] = hf.value("int64")  # which of the row's answers it is
        return f

    def row(
        self,
        b: RowBuilder,
        row: Row,
        request: Request,
        completion: Completion,
        answer: Answer,
        trace: str | None,
    ) -> dict[str, Any]:
        """An `sft` row, its trace carried as the reasoning mode says: the assistant
        message's `reasoning_content` (Qwen3's and DeepSeek's chat templates render it
        inside <think>), inline before the answer, or not at all."""
        return self._reply(b, row, request, b.answer_text(answer), trace)

    def _reply(
        self, b: RowBuilder, row: Row, request: Request, reply: str, trace: str | None
    ) -> dict[str, Any]:
        mode = b.reasoning
        if mode == "inline":
            reply = inline(trace, reply)
        if request.prompt is not None:
            rec: dict[str, Any] = {
                "id": row.id,
                "prompt": request.prompt,
                "completion": b.task.answer_prefix + reply,
            }
            if mode == "separate":
                rec["reasoning_content"] = trace
            return rec
        turn: dict[str, Any] = {"role": "assistant", "content": reply}
        if mode == "separate":
            turn["reasoning_content"] = trace
        if b.opts.sft_shape == "messages":
            lead: list[dict[str, Any]] = [dict(m) for m in request.messages or ()]
            if mode == "separate":  # one struct type for every message of the list
                lead = [{**m, "reasoning_content": None} for m in lead]
            return {"id": row.id, "messages": [*lead, turn]}
        # TRL's conversational prompt-completion: the loss covers the completion only,
        # never the template's few-shot answers that sit in the prompt.
        return {"id": row.id, "prompt": [dict(m) for m in request.messages or ()], "completion": [turn]}

    def verified(
        self, b: RowBuilder, record: dict[str, Any], item: Item, checked: Checked, report: ExportReport
    ) -> list[dict[str, Any]]:
        """One row per kept answer. A reasoning trace goes only with the answer it led to:
        a sampled completion's samples have none of their own."""
        assert item.request is not None and item.completion is not None
        trace = None if item.completion.sampled else item.completion.reasoning
        return [
            {**self._reply(b, item.row, item.request, checked.answers[i], trace), "sample": i}
            for i in checked.kept
        ]

    def columns(self, task: Task, opts: ExportOptions) -> list[str]:
        cols = self._shape(task, opts)
        if opts.verify is not None:
            cols.append("- one row per kept (verified) answer; `sample`: which of the row's answers it is.")
        return cols

    def _shape(self, task: Task, opts: ExportOptions) -> list[str]:
        if task.mode == "completion":
            return [
                "- `prompt`: the few-shot prefix and row; `completion`: the teacher's "
                "answer (TRL's prompt-completion format)."
            ]
        if opts.sft_shape == "messages":
            return [
                "- `messages`: system prompt, few-shot turns, the row and the teacher's "
                "answer as one conversation (a trainer's assistant-only loss also trains "
                "the few-shot answers)."
            ]
        return [
            "- `prompt`: the conversation up to the row's user turn (system prompt and "
            "few-shot turns included); `completion`: the one assistant turn holding the "
            "teacher's answer (TRL's conversational prompt-completion format: only the "
            "answer is trained)."
        ]

    def reasoning_columns(self, opts: ExportOptions) -> list[str]:
        if opts.reasoning == "separate":
            return [
                "- `reasoning_content`: the teacher's thinking before its answer, on the "
                "assistant turn (a column of its own in completion mode); null where it "
                "wrote none or a person overruled its label."
            ]
        return []


@register
class Kd(ExportKind):
    """Prompt, response and per-token `top_logprobs` for logit distillation."""

    name = "kd"
    reads = ("kd_layout",)
    verify = "refuses"
    assistant_turn = False

    def features(self, b: RowBuilder, sample: dict[str, Any] | None) -> Features:
        raw = hf.list_of(hf.value("uint8")) if b.opts.format == "jsonl" else hf.value("binary")
        f: Features = {
            "prompt": hf.value("string"),
            "messages": message_list(),
            "response": hf.value("string"),
            "tokens": hf.list_of(hf.value("string")),
            "token_bytes": hf.list_of(raw),
            "response_ids": hf.list_of(hf.value("int64")),
            "token_logprobs": hf.list_of(hf.value("float64")),
            "top_logprobs": hf.list_of(
                hf.list_of(
                    {
                        "token": hf.value("string"),
                        "bytes": raw,
                        "id": hf.value("int64"),
                        "logprob": hf.value("float64"),
                    }
                )
            ),
        }
        if b.opts.kd_layout == "ids":
            f["token_ids"] = hf.list_of(hf.list_of(hf.value("int64")))
            f["top_values"] = hf.list_of(hf.list_of(hf.value("float32")))
        return f

    def row(
        self,
        b: RowBuilder,
        row: Row,
        request: Request,
        completion: Completion,
        answer: Answer,
        trace: str | None,
    ) -> dict[str, Any]:
        return {
            "id": row.id,
            "prompt": request.prompt,
            "messages": None if request.messages is None else list(request.messages),
            "response": completion.text,
            **self._token_cols(b, completion),
        }

    def _token_cols(self, b: RowBuilder, completion: Completion) -> dict[str, Any]:
        """Per answer token: text, exact bytes, vocabulary id (when the server sent one),
        logprob; and the top-k alternatives the same way. With `kd_layout="ids"` also the
        columns of DistillKit's raw top-k format (`token_ids`, `top_values`: per position
        the k ids and logprobs), for a student that shares the teacher's tokenizer."""
        toks = completion.tokens or []
        ids = [t.id for t in toks]
        if any(i is not None for i in ids):
            b.saw_ids = True
        cols: dict[str, Any] = {
            "tokens": [t.token for t in toks],
            "token_bytes": [b.as_bytes(t.token_bytes) for t in toks],
            "response_ids": ids,
            "token_logprobs": [t.logprob for t in toks],
            "top_logprobs": [alternatives(t, b.as_bytes) for t in toks],
        }
        if b.opts.kd_layout == "ids":
            if any(i is None for i in ids) or any(
                len(t.top_ids) != len(t.top) or None in t.top_ids for t in toks
            ):
                raise ConfigError(
                    "--kd-layout ids needs token ids, which this teacher's server "
                    "did not send (llama.cpp's server sends them; API teachers "
                    "do not): export --kind kd without it"
                )
            cols["token_ids"] = [list(t.top_ids) for t in toks]
            cols["top_values"] = [[lp for _, lp in t.top] for t in toks]
        return cols

    def columns(self, task: Task, opts: ExportOptions) -> list[str]:
        cols = list(_KD_COLUMNS)
        if opts.kd_layout == "ids":
            cols.append(
                "- `token_ids`, `top_values`: per answer position the teacher's top-k "
                "ids and logprobs (DistillKit's raw top-k columns; position i is the "
                "distribution that produced `response_ids[i]`)."
            )
        return cols

    def card_rows(self, report: ExportReport) -> list[str]:
        tokenizer = report.teacher_tokenizer
        named = f"`{tokenizer}`" if tokenizer else "unknown: the teacher sent no token ids"
        return [f"| teacher tokenizer | {named} |"]


@register
class Preference(ExportKind):
    """Pairs of a verified and a failed answer of one row, in TRL's preference format."""

    name = "preference"
    verify = "needs"
    needs_verify_because = "a pair is a verified answer and a failed one of the same row"
    carries_reasoning = False

    def features(self, b: RowBuilder, sample: dict[str, Any] | None) -> Features:
        side = hf.value("string") if b.task.mode == "completion" else message_list()
        return {
            "prompt": side,
            "chosen": side,
            "rejected": side,
            "chosen_sample": hf.value("int64"),
            "rejected_sample": hf.value("int64"),
        }

    def row(
        self,
        b: RowBuilder,
        row: Row,
        request: Request,
        completion: Completion,
        answer: Answer,
        trace: str | None,
    ) -> dict[str, Any]:
        """The row before its answers are paired, read as `records` reads it (the report
        counts its soft label's source)."""
        return _records_row(b, row, request, completion, answer, trace)

    def verified(
        self, b: RowBuilder, record: dict[str, Any], item: Item, checked: Checked, report: ExportReport
    ) -> list[dict[str, Any]]:
        """One pair per kept answer, each with a failed answer of the row (in turn); none
        when either side is missing."""
        assert item.request is not None
        answers, kept, failed = checked.answers, checked.kept, checked.failed
        if not kept or not failed:
            report.unpaired += 1
            return []
        pairs = []
        for n, i in enumerate(kept):
            j = failed[n % len(failed)]
            pairs.append(self._pair(b, item.row, item.request, answers[i], answers[j], i, j))
        return pairs

    def _pair(
        self, b: RowBuilder, row: Row, request: Request, chosen: str, rejected: str, i: int, j: int
    ) -> dict[str, Any]:
        """A row of TRL's preference format: conversational (message lists) for a chat
        template, standard (strings) for a completion-mode one."""
        if request.prompt is not None:
            prefix = b.task.answer_prefix
            return {
                "id": row.id,
                "prompt": request.prompt,
                "chosen": prefix + chosen,
                "rejected": prefix + rejected,
                "chosen_sample": i,
                "rejected_sample": j,
            }
        return {
            "id": row.id,
            "prompt": [dict(m) for m in request.messages or ()],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "chosen_sample": i,
            "rejected_sample": j,
        }

    def columns(self, task: Task, opts: ExportOptions) -> list[str]:
        shape = (
            "strings (TRL's standard preference format)"
            if task.mode == "completion"
            else "message lists (TRL's conversational preference format)"
        )
        return [
            f"- `prompt`, `chosen`, `rejected`: {shape}; `chosen` is an answer that "
            "passed verification, `rejected` one of the same row that failed it.",
            "- `chosen_sample`, `rejected_sample`: which of the row's answers each is.",
        ]

    def verification_rows(self, report: ExportReport) -> list[str]:
        return [f"| rows left out (no verified or no failed answer to pair) | {report.unpaired} |"]


def _label_columns(opts: ExportOptions) -> list[str]:
    if opts.calibration is None:
        return _LABEL_COLUMNS
    return [
        *_LABEL_COLUMNS,
        "- `soft_label_raw`: the teacher's own distribution before calibration (`label`, "
        "`soft_label` and the confidence columns read the calibrated one); `calibration`: "
        "the method applied (see the table above).",
    ]


_LABEL_COLUMNS = [
    "- `label`: the teacher's answer as a `ClassLabel` (names in the Labels table). Rows kept "
    f"with `--keep-invalid` whose answer named no label have `{IGNORE_LABEL}`, the index "
    "PyTorch's cross-entropy and transformers' heads ignore.",
    "- `valid`: whether the answer named a label.",
    "- `soft_label`: the teacher's probability per label, in label index order, read from its "
    "answer-token logprobs (or sampled answers) and renormalised over the labels only; null "
    "for invalid rows.",
    "- `outside_mass`: the share of probability that fell on no label before renormalising "
    "(high: the teacher strayed from the label set).",
    "- `soft_label_source`: where `soft_label` came from: `logprobs` (`logprobs:split` where "
    "a token shared by several labels was divided among them, an approximation), "
    "`samples:N` (the share of each answer among N sampled answers), `verbalized` (the "
    "confidence the teacher stated), `ensemble`, or `none` (a one-hot on the one parsed "
    "answer).",
    "- `max_prob`, `margin` (top-1 minus top-2), `entropy` (nats): confidence of `soft_label`; "
    "null for invalid rows. `mean_logprob`: mean answer-token logprob. `agreement`: share of "
    "samples naming the majority label (sampled teachers).",
]

_KD_COLUMNS = [
    "- `prompt` / `messages`: what the teacher was asked (completion or chat mode).",
    "- `response`: the teacher's answer text.",
    "- `tokens`, `token_bytes`, `response_ids`, `token_logprobs`: each answer token as text, as "
    "UTF-8 bytes (exact even where a token is part of a character), as the teacher's "
    "vocabulary id (null when the server does not report ids: API teachers) and its logprob.",
    "- `top_logprobs`: per position, the teacher's top-k alternatives (`token`, `bytes`, `id`, "
    "`logprob`). Token ids index the teacher's tokenizer (named above); a student with another "
    "tokenizer needs cross-tokenizer alignment, and for label tasks `soft_label` is the "
    "label-level equivalent.",
]

__all__ = ["Classification", "ExportKind", "Kd", "Preference", "Records", "Sft", "export_kind"]
