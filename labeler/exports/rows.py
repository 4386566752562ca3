"""The state one export carries from row to row, and the parts every kind's row is made of.

A kind (labeler/exports/kinds.py) says which columns its rows have and fills them; what it
fills them from is here: a row's text, its label columns, its messages, the input fields
it keeps, and the coercion of every value to its declared feature. The builder asks its
kind for rows through `RowKind`, so this module never imports a kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import orjson

from labeler.exports import features as hf
from labeler.exports.features import Features
from labeler.exports.options import KINDS, ExportOptions, ExportReport
from labeler.soft_labels import IGNORE_LABEL

if TYPE_CHECKING:
    import datasets

    from labeler.answer import Answer
    from labeler.completion import Completion, TokenLogprob
    from labeler.inputs import Row
    from labeler.plan import Item
    from labeler.request import Request
    from labeler.task import Task
    from labeler.verify import Checked


@runtime_checkable
class RowKind(Protocol):
    """What the builder asks of a kind (labeler/exports/kinds.py, `ExportKind`)."""

    label_source: bool  # its rows of a label task say who labeled them (teacher | human)
    reasoning_column: bool  # a trace carried apart goes to a `reasoning` column

    def features(self, b: RowBuilder, sample: dict[str, Any] | None) -> Features: ...

    def row(
        self,
        b: RowBuilder,
        row: Row,
        request: Request,
        completion: Completion,
        answer: Answer,
        trace: str | None,
    ) -> dict[str, Any]: ...

    def verified(
        self, b: RowBuilder, record: dict[str, Any], item: Item, checked: Checked, report: ExportReport
    ) -> list[dict[str, Any]]: ...


def kind_of(opts: ExportOptions) -> RowKind:
    """The registered kind the options name, as the builder uses it."""
    found = KINDS[opts.kind]
    if not isinstance(found, RowKind):
        raise TypeError(f"export kind {opts.kind!r} does not build rows")
    return found


class RowBuilder:
    """Turns (row, request, completion, answer) into one export row of the chosen kind."""

    def __init__(
        self, task: Task, identity: Mapping[str, Any], opts: ExportOptions, report: ExportReport
    ) -> None:
        self.task = task
        self.identity = identity
        self.opts = opts
        self.kind = kind_of(opts)
        self.input_fields: list[str] | None = None
        self.text_field = opts.text_field or (task.fields[0] if task.fields else None)
        self.saw_ids = False  # whether any kd token came with a vocabulary id
        self.provenance: str | None = None  # "cascade" | "ensemble": records rows say who answered
        self._plan: list[tuple[str, dict[str, int] | None, list[str] | None, str | None, type | None]] = []
        self._plan_for: Features | None = None
        self.label_columns = (
            ("label_source",) if task.output_kind == "label" and self.kind.label_source else ()
        )
        # how a reasoning trace is carried: "separate" (a field or column of its own),
        # "inline" (before the answer) or not at all ("drop", and "auto" left unresolved:
        # no trace in the store)
        self.reasoning = opts.reasoning
        self.reasoning_column = self.kind.reasoning_column and self.reasoning in ("separate", "inline")
        self.output_columns = _OUTPUT_COLUMNS | {"reasoning"} if self.reasoning_column else _OUTPUT_COLUMNS
        if opts.verify is not None:
            self.output_columns = self.output_columns | _VERIFY_COLUMNS
        # a calibrated export: `soft_label_raw` and `calibration` columns beside the labels
        self.calibrated = opts.calibration is not None and task.output_kind == "label"

    def row(
        self, row: Row, request: Request, completion: Completion, answer: Answer, trace: str | None
    ) -> dict[str, Any]:
        """One export row; `trace` is the reasoning it carries (the answer's, or None)."""
        if self.input_fields is None:
            self.input_fields = [k for k in row.data if k not in _RESERVED]
        return self.kind.row(self, row, request, completion, answer, trace)

    def verified(
        self, record: dict[str, Any], item: Item, checked: Checked, report: ExportReport
    ) -> list[dict[str, Any]]:
        """The export rows of one verified row (the kind says which)."""
        return self.kind.verified(self, record, item, checked, report)

    def features(self, sample: dict[str, Any] | None) -> Features:
        f: Features = {"id": hf.value("string")}
        f.update(self.kind.features(self, sample))
        return f

    def input_column(self, name: str) -> str:
        """Input fields keep their names unless an output column has it (gold `label` ->
        `input_label`), so a gold column never overwrites the teacher's answer."""
        return f"input_{name}" if name in self.output_columns else name

    def as_bytes(self, data: bytes) -> bytes | list[int]:
        """Token bytes as Arrow binary, or for JSON lines as a list of byte values (as the
        providers send them): JSON has no bytes, and a cut character is not text."""
        return list(data) if self.opts.format == "jsonl" else data

    def answer_text(self, answer: Answer) -> str:
        if (
            self.task.output_kind == "label"
            and answer.label is not None
            and self.task.label_space
            and not self.task.verbalized
        ):
            return self.task.label_space.verbalizers[answer.label][0]
        return answer.text

    def messages(self, request: Request, reply: str) -> list[dict[str, str]]:
        return [dict(m) for m in request.messages or ()] + [{"role": "assistant", "content": reply}]

    def text(self, row: Row) -> str:
        if self.text_field is None:
            return ""
        value = row.data.get(self.text_field)
        return "" if value is None else str(value)

    def label_cols(self, answer: Answer) -> dict[str, Any]:
        """Label columns; a row whose answer named no label (kept with --keep-invalid) gets
        `valid` False, the ignored label and no soft label: its renormalised distribution
        is over the little mass that did land on labels and would look confident."""
        soft = answer.soft if answer.label is not None else None
        conf = answer.confidence
        return {
            "label": answer.label,
            "valid": answer.label is not None,
            "soft_label": list(soft.probs) if soft else None,
            "outside_mass": answer.soft.outside if answer.soft else None,
            "soft_label_source": soft.source if soft else None,
            "max_prob": conf.max_prob if conf and soft else None,
            "margin": conf.margin if conf and soft else None,
            "entropy": conf.entropy if conf and soft else None,
            "mean_logprob": conf.mean_logprob if conf else None,
            "agreement": conf.agreement if conf else None,
        }

    def calibration_cols(self, record: dict[str, Any], raw: Answer) -> None:
        """The teacher's own distribution beside the calibrated one, and the method that
        made it, in a calibrated export's row of a kind with label columns."""
        if not self.calibrated or "soft_label" not in record:
            return
        record["soft_label_raw"] = (
            list(raw.soft.probs) if raw.soft is not None and record["soft_label"] is not None else None
        )
        record["calibration"] = self.opts.calibration.method if self.opts.calibration else None

    def coerce(self, rec: dict[str, Any], features: Features) -> list[Any]:
        """A row's values in the order of the declared features, made to fit them (input
        columns are typed by the first row)."""
        if self._plan_for is not features:  # what each column needs, decided once, not per row
            self._plan = []
            for name, feat in features.items():
                t = hf.kind(feat)
                names = feat["names"] if t == "ClassLabel" else None
                dtype = feat["dtype"] if t == "Value" else None
                self._plan.append(
                    (
                        name,
                        _label_index(names) if names is not None else None,
                        names,
                        dtype,
                        _EXACT.get(dtype) if dtype else None,
                    )
                )
            self._plan_for = features
        out = []
        for name, index, names, dtype, exact in self._plan:
            value = rec.get(name)
            if index is not None:
                if value is None:
                    value = IGNORE_LABEL
                else:  # a label name; anything else as ClassLabel reads it (or its error)
                    found = index.get(value) if type(value) is str else None
                    if found is None:  # a label column always has its names (see _plan)
                        found = _class_label(cast(list[str], names)).str2int(value)
                    value = found
            elif dtype is not None and value is not None and type(value) is not exact:
                value = coerce_value(value, dtype)
            out.append(value)
        return out


# -- features every kind declares alike -------------------------------------------------


def message_list() -> hf.Feature:
    return hf.list_of({"role": hf.value("string"), "content": hf.value("string")})


def traced_message_list(reasoning: str) -> hf.Feature:
    """An assistant turn that carries its trace apart (the field chat templates read)."""
    return (
        hf.list_of(
            {
                "role": hf.value("string"),
                "content": hf.value("string"),
                "reasoning_content": hf.value("string"),
            }
        )
        if reasoning == "separate"
        else message_list()
    )


def label_features(task: Task, *, calibrated: bool = False) -> Features:
    """The label columns; a calibrated export adds the raw distribution and the method."""
    return {
        "label": hf.class_label(list(task.labels)),
        "valid": hf.value("bool"),
        "soft_label": hf.list_of(hf.value("float64")),
        "outside_mass": hf.value("float64"),
        "soft_label_source": hf.value("string"),
        "max_prob": hf.value("float64"),
        "margin": hf.value("float64"),
        "entropy": hf.value("float64"),
        "mean_logprob": hf.value("float64"),
        "agreement": hf.value("float64"),
        "label_source": hf.value("string"),  # teacher | human
        **(
            {"soft_label_raw": hf.list_of(hf.value("float64")), "calibration": hf.value("string")}
            if calibrated
            else {}
        ),
    }


def value_feature(value: Any) -> hf.Feature:
    if isinstance(value, bool):
        return hf.value("bool")
    if isinstance(value, int):
        return hf.value("int64")
    if isinstance(value, float):
        return hf.value("float64")
    return hf.value("string")


# -- values ---------------------------------------------------------------------------------


def _label_index(names: list[str]) -> dict[str, int]:
    """Label name -> ClassLabel index, for the names as they are (`str2int` also accepts
    padded names and digits, and is asked for those)."""
    return {name: i for i, name in enumerate(names)}


def _class_label(names: list[str]) -> datasets.ClassLabel:
    """datasets' own ClassLabel, for a label value that is not one of the names as they are
    (a padded name, a digit): it reads those, or raises its error, as any loader would."""
    import datasets

    return datasets.ClassLabel(names=names)


_RESERVED = {"id"}
_OUTPUT_COLUMNS = {
    "messages",
    "prompt",
    "response",
    "label",
    "valid",
    "soft_label",
    "outside_mass",
    "soft_label_source",
    "max_prob",
    "margin",
    "entropy",
    "mean_logprob",
    "agreement",
    "label_source",
    "soft_label_raw",
    "calibration",
    "parsed",
    "teacher",
    "teacher_model",
    "template",
    "finish_reason",
    "logprobs",
}
_VERIFY_COLUMNS = {"verdicts", "passed", "pass_at_1"}


def alternatives(tok: TokenLogprob, as_bytes: Callable[[bytes], Any]) -> list[dict[str, Any]]:
    ids = tok.top_ids or (None,) * len(tok.top)
    raws = tok.top_raw or (None,) * len(tok.top)
    return [
        {"token": a, "bytes": as_bytes(raw if raw is not None else a.encode("utf-8")), "id": i, "logprob": lp}
        for (a, lp), i, raw in zip(tok.top, ids, raws, strict=False)
    ]


# A value already of exactly this Python type passes `coerce_value` unchanged: skip the call.
_EXACT: dict[str, type] = {"string": str, "int64": int, "float64": float, "bool": bool}


def coerce_value(value: Any, dtype: str) -> Any:
    try:
        if dtype == "string":
            return value if isinstance(value, str) else orjson.dumps(value).decode()
        if dtype == "int64":
            return int(value)
        if dtype == "float64":
            return float(value)
        if dtype == "bool":
            return bool(value)
    except (TypeError, ValueError, orjson.JSONEncodeError):
        return None
    return value
