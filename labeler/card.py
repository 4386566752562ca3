"""The dataset card (README.md) of an export: what a Hub user needs to train on it.

A card is published: it names the teacher by provider and model, the template by its
shipped name or a path relative to where the export was made, and never an absolute local
path or an endpoint URL (a private server's address) unless the user opts in with
``card_endpoint``. Its YAML header is the Hub's metadata (licence, size category, task,
the ``configs`` that map files to splits), so ``load_dataset(folder_or_repo)`` yields the
same splits the export wrote; the body documents every column of the chosen kind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from labeler.targets import IGNORE_LABEL
from labeler.task import PROMPTS_DIR, Task

if TYPE_CHECKING:
    from labeler.export import ExportOptions, ExportReport

_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
          (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def size_category(rows: int) -> str:
    """The Hub's `size_categories` value for a row count."""
    for limit, name in _SIZES:
        if rows < limit:
            return name
    return "n>1T" if rows >= 10**12 else "100M<n<1B" if rows < 10**9 else "1B<n<10B"


def template_reference(task: Task) -> str:
    """How the card names the template: the shipped name, a path relative to the working
    directory, or the bare file name; never an absolute path of this machine."""
    path = Path(task.path)
    try:
        resolved = path.resolve()
        if resolved.parent == PROMPTS_DIR.resolve():
            return f"{resolved.stem} (shipped with labeler)"
        return os.path.relpath(resolved, Path.cwd()) if resolved.is_relative_to(
            Path.cwd().resolve()) else path.name
    except (OSError, ValueError):
        return path.name


def public_identity(identity: Mapping[str, Any], *, endpoint: bool = False) -> dict[str, Any]:
    """The teacher identity fit for a published file: the endpoint URL only when asked."""
    return {k: v for k, v in identity.items() if endpoint or k not in ("base_url", "endpoints")}


def split_files(report: ExportReport, fmt: str) -> dict[str, str]:
    """Split name -> file name, in the order the export wrote them (train first)."""
    names = sorted(report.splits or {"train": 0}, key=lambda s: (s != "train", s))
    ext = "parquet" if fmt == "parquet" else "jsonl"
    return {s: f"{s}.{ext}" for s in names}


def load_snippet(report: ExportReport, fmt: str, *, repo: str | None = None) -> str:
    """Python that loads the export with every split it has, as a printed card shows it.

    A glob over the folder would merge validation into train; naming each split's file
    keeps them apart. The folder is the export's path as given when it is relative, else
    its name (run the snippet from the folder that holds it).
    """
    if repo:
        return f'from datasets import load_dataset\nds = load_dataset("{repo}")'
    out = Path(report.path)
    folder = out.as_posix() if not out.is_absolute() else out.name
    if fmt == "hf":
        return f'from datasets import load_from_disk\nds = load_from_disk("{folder}")'
    builder = "parquet" if fmt == "parquet" else "json"
    files = ", ".join(f'"{s}": f"{{folder}}/{name}"' for s, name in split_files(report, fmt).items())
    return ("from datasets import load_dataset\n"
            f'folder = "{folder}"  # this export\'s folder\n'
            f'ds = load_dataset("{builder}", data_files={{{files}}})')


def _front_matter(task: Task, teacher: str, opts: ExportOptions, report: ExportReport,
                  repo: str | None) -> str:
    meta: dict[str, Any] = {}
    if opts.card_license:
        meta["license"] = opts.card_license
    meta["pretty_name"] = f"{task.name} labeled by {teacher}"
    meta["tags"] = ["distillation", "labeler", "synthetic"]
    meta["size_categories"] = [size_category(report.exported)]
    label_task = task.output_kind == "label" and opts.kind in ("classification", "records")
    meta["task_categories"] = ["text-classification" if label_task else "text-generation"]
    if opts.format in ("parquet", "jsonl") and not repo:  # pushed: the Hub's own configs
        meta["configs"] = [{"config_name": "default", "data_files": [
            {"split": s, "path": name} for s, name in split_files(report, opts.format).items()
        ]}]
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def _awaiting(report: ExportReport) -> str:
    if report.held_for_human:
        return "held out of this export"
    return "exported with the last teacher's label and `awaiting_human`"


def dataset_card(task: Task, identity: Mapping[str, Any], opts: ExportOptions,
                 report: ExportReport, *, repo: str | None = None) -> str:
    """The README.md of an export (of the Hub repo `repo` when pushed)."""
    teacher = f"{identity.get('provider')}:{identity.get('model')}"
    lines = ["---", _front_matter(task, teacher, opts, report, repo).rstrip("\n"), "---", "",
             f"# {task.name}: labeled by `{teacher}`", "",
             "Labels produced by a teacher model with [labeler](https://pypi.org/project/labeler-distill/).",
             "", "| | |", "|---|---|", f"| teacher | `{teacher}` |"]
    if opts.card_endpoint and identity.get("base_url"):
        lines.append(f"| endpoint | `{identity.get('base_url')}` |")
    if opts.kind == "kd":
        tokenizer = report.teacher_tokenizer
        named = f"`{tokenizer}`" if tokenizer else "unknown: the teacher sent no token ids"
        lines.append(f"| teacher tokenizer | {named} |")
    lines += [
        f"| template | `{task.identity}`: {template_reference(task)} |",
        f"| output | {task.output_kind}, {task.mode} mode |",
        f"| export kind / format | {opts.kind} / {opts.format} |",
        *([f"| reasoning traces | {_REASONING[opts.reasoning]} |"]
          if opts.reasoning in _REASONING else []),
        f"| calibration (applied to soft labels, confidence, filters) | "
        f"{_calibration_text(opts)} |",
        f"| licence | {opts.card_license or 'not set (export with --card-license)'} |",
        f"| input rows | {report.rows_in} |",
        f"| exported rows | {report.exported} |",
        f"| labels given by a person (labeler review), over the teacher's | {report.human_labeled} |",
        *([f"| rows awaiting a person (labeler review), {_awaiting(report)} | "
           f"{report.awaiting_human} |"] if report.awaiting_human else []),
        f"| no stored answer (failed or not yet labeled) | {report.missing} |",
        f"| rejected input rows | {report.rejected} |",
        *[f"| rows answered by {stage} | {n} |"
          for stage, n in sorted(report.stages.items())],
        "", "## Splits", "",
    ]
    lines += [f"- `{k}`: {v} rows" for k, v in sorted(report.splits.items())] or ["- (empty)"]
    if task.labels:
        lines += ["", "## Labels", "",
                  "Index order of `label` (a `ClassLabel`) and of every `soft_label` vector:", "",
                  "| index | label | rows |", "|---|---|---|"]
        lines += [f"| {i} | {name} | {report.label_counts.get(name, 0)} |"
                  for i, name in enumerate(task.labels)]
    if report.prior_warnings:
        lines += ["", "## Label prior", "",
                  "The exported labels' shares depart strongly from what this export knows "
                  "of the truth; a student trained on them learns that tilt:", ""]
        lines += [f"- {w}" for w in report.prior_warnings]
    if report.soft_label_sources:
        lines += ["", "## Soft labels", "", "Where each row's `soft_label` came from:", "",
                  "| source | rows | how |", "|---|---|---|"]
        lines += [f"| `{source}` | {n} | {soft_label_source_text(source)} |"
                  for source, n in sorted(report.soft_label_sources.items())]
    if report.teachers:
        lines += ["", "## Teachers", "",
                  "What each teacher answered for these input rows, as stored:", "",
                  "| teacher | rows answered | prompt tokens | output tokens | answer time (s) "
                  "| cost (USD) |", "|---|---|---|---|---|---|"]
        lines += [f"| {t['teacher']} | {t['rows']} | {t['prompt_tokens']} | "
                  f"{t['completion_tokens']} | {t['teacher_s']:.1f} | {t['cost_usd']:.4f} |"
                  for t in report.teachers]
    lines += ["", "## Columns", "", *_columns(task, opts)]
    lines += ["", "## Prompt", "", _prompt_text(task)]
    lines += ["", "## Filters", ""]
    spec = opts.filters
    lines.append(f"min_confidence={spec.min_confidence}, min_margin={spec.min_margin}, "
                 f"max_entropy={spec.max_entropy}, drop_invalid={spec.drop_invalid}")
    lines.append("")
    for name, n in report.filtered.items():
        lines.append(f"- removed by `{name}`: {n}")
    lines += ["", "## Load", "", "```python", load_snippet(report, opts.format, repo=repo),
              "```", ""]
    return "\n".join(lines)


def _calibration_text(opts: ExportOptions) -> str:
    """Which calibration the soft labels went through, or why none (the raw distribution
    stays in `soft_label_raw` when one was applied)."""
    if opts.calibration_note:
        text = opts.calibration_note
    elif opts.calibration is not None:
        text = opts.calibration.describe()
    else:
        text = "none (raw teacher probabilities)"
    if opts.calibration is not None:
        text += "; the raw distribution is in `soft_label_raw`"
    return text.replace("|", "/")


def soft_label_source_text(source: str) -> str:
    """What a `soft_label_source` value means, in a sentence for the card."""
    if source.startswith("samples:"):
        n = source.split(":", 1)[1]
        return (f"the share of each answer among {n} sampled answers (steps of 1/{n}); "
                "confidence is their agreement")
    return {
        "logprobs": "the teacher's token logprobs at the answer position, over the labels",
        "logprobs:split": "the teacher's token logprobs, where some mass sat on a token "
                          "several labels begin with and no continuation told them apart: "
                          "divided among them by their other mass (an approximation)",
        "verbalized": "the confidence the teacher stated for its label (p on it, 1 - p shared "
                      "equally by the others); fit a calibration before trusting it",
        "ensemble": "the mean of several prompt forms' label distributions",
        "none": "a one-hot on the one parsed answer (no distribution was asked for)",
    }.get(source, "as named")


def _prompt_text(task: Task) -> str:
    parts = []
    if task.system:
        parts += ["System prompt:", "", "```text", task.system.rstrip("\n"), "```", ""]
    parts += ["User template (Jinja2; fields: "
              f"{', '.join(f'`{f}`' for f in task.fields) or 'none'}):", "",
              "```jinja", task.user_source.rstrip("\n"), "```"]
    if task.few_shot:
        parts += ["", f"{len(task.few_shot)} few-shot examples precede each row "
                      f"({'as chat turns' if task.mode == 'chat' else 'in the prompt prefix'})."]
    if task.others:
        parts += ["", f"Prompt ensemble: each row was asked in {len(task.members)} prompt forms "
                      "(`variants`, `example_orders`); `soft_label` is the mean of their label "
                      "distributions and `label` its argmax."]
    return "\n".join(parts)


def _label_columns(opts: ExportOptions) -> list[str]:
    if opts.calibration is None:
        return _LABEL_COLUMNS
    return [*_LABEL_COLUMNS,
            "- `soft_label_raw`: the teacher's own distribution before calibration (`label`, "
            "`soft_label` and the confidence columns read the calibrated one); `calibration`: "
            "the method applied (see the table above)."]


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
    "a token shared by several labels was divided among them, an approximation), `samples:N` (the share "
    "of each answer among N sampled answers), `verbalized` (the confidence the teacher "
    "stated), `ensemble`, or `none` (a one-hot on the one parsed answer).",
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


# The card's line for each reasoning mode (`--reasoning`); an export of a store without
# any trace, the mode left unset, has no line: there was nothing to carry.
_REASONING = {
    "separate": "`separate`: the teacher's thinking kept apart from its answer (the `sft` "
                "assistant turn's `reasoning_content`, the field Qwen3's and DeepSeek's chat "
                "templates read; a `reasoning` column elsewhere), null where it wrote none",
    "inline": "`inline`: the teacher's thinking written before its answer as "
              "`<think>\n...\n</think>\n\n`, so a trainer trains on it",
    "drop": "`drop`: the teacher's thinking left out (`--reasoning drop`)",
}


def _columns(task: Task, opts: ExportOptions) -> list[str]:
    cols = ["- `id`: the input row's id.", *_kind_columns(task, opts)]
    if opts.reasoning in ("separate", "inline") and opts.kind in ("records", "classification"):
        cols.append("- `reasoning`: the teacher's thinking before its answer (reasoning "
                    "teachers), null where it wrote none or a person overruled its label.")
    elif opts.reasoning == "separate" and opts.kind == "sft":
        cols.append("- `reasoning_content`: the teacher's thinking before its answer, on the "
                    "assistant turn (a column of its own in completion mode); null where it "
                    "wrote none or a person overruled its label.")
    return cols


def _kind_columns(task: Task, opts: ExportOptions) -> list[str]:
    if opts.kind == "classification":
        return ["- `text`: the input text.", *_label_columns(opts)]
    if opts.kind == "sft":
        if task.mode == "completion":
            return ["- `prompt`: the few-shot prefix and row; `completion`: the teacher's "
                    "answer (TRL's prompt-completion format)."]
        if opts.sft_shape == "messages":
            return ["- `messages`: system prompt, few-shot turns, the row and the teacher's "
                    "answer as one conversation (a trainer's assistant-only loss also trains "
                    "the few-shot answers)."]
        return ["- `prompt`: the conversation up to the row's user turn (system prompt and "
                "few-shot turns included); `completion`: the one assistant turn holding the "
                "teacher's answer (TRL's conversational prompt-completion format: only the "
                "answer is trained)."]
    if opts.kind == "kd":
        cols = list(_KD_COLUMNS)
        if opts.kd_layout == "ids":
            cols.append("- `token_ids`, `top_values`: per answer position the teacher's top-k "
                        "ids and logprobs (DistillKit's raw top-k columns; position i is the "
                        "distribution that produced `response_ids[i]`).")
        return cols
    cols = ["- input fields (an input field named like an output column gets an `input_` "
            "prefix), `messages`/`prompt`, `response`, `teacher`, `teacher_model`, "
            "`template`, `finish_reason`, `logprobs` (per token: `token`, `logprob`, "
            "`top_logprobs`)."]
    if task.output_kind == "label":
        cols += _label_columns(opts)
    elif task.output_kind == "json":
        cols.append("- `parsed`: the answer as JSON text when it matched the schema, else null.")
    return cols
