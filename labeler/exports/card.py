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
from typing import Any

import yaml

from labeler.exports.kinds import export_kind
from labeler.exports.options import ExportOptions, ExportReport
from labeler.task import PROMPTS_DIR, Task

_SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
)


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
        return (
            os.path.relpath(resolved, Path.cwd())
            if resolved.is_relative_to(Path.cwd().resolve())
            else path.name
        )
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
    return (
        "from datasets import load_dataset\n"
        f'folder = "{folder}"  # this export\'s folder\n'
        f'ds = load_dataset("{builder}", data_files={{{files}}})'
    )


def _front_matter(
    task: Task, teacher: str, opts: ExportOptions, report: ExportReport, repo: str | None
) -> str:
    meta: dict[str, Any] = {}
    if opts.card_license:
        meta["license"] = opts.card_license
    meta["pretty_name"] = f"{task.name} labeled by {teacher}"
    meta["tags"] = ["distillation", "labeler", "synthetic"]
    meta["size_categories"] = [size_category(report.exported)]
    meta["task_categories"] = [export_kind(opts).task_category(task)]
    if opts.format in ("parquet", "jsonl") and not repo:  # pushed: the Hub's own configs
        meta["configs"] = [
            {
                "config_name": "default",
                "data_files": [
                    {"split": s, "path": name} for s, name in split_files(report, opts.format).items()
                ],
            }
        ]
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def _awaiting(report: ExportReport) -> str:
    if report.held_for_human:
        return "held out of this export"
    return "exported with the last teacher's label and `awaiting_human`"


def dataset_card(
    task: Task,
    identity: Mapping[str, Any],
    opts: ExportOptions,
    report: ExportReport,
    *,
    repo: str | None = None,
) -> str:
    """The README.md of an export (of the Hub repo `repo` when pushed)."""
    teacher = f"{identity.get('provider')}:{identity.get('model')}"
    lines = [
        "---",
        _front_matter(task, teacher, opts, report, repo).rstrip("\n"),
        "---",
        "",
        f"# {task.name}: labeled by `{teacher}`",
        "",
        "Labels produced by a teacher model with [labeler](https://pypi.org/project/labeler-distill/).",
        "",
    ]
    lines += _summary_table(task, teacher, identity, opts, report)
    lines += ["", "## Splits", ""]
    lines += [f"- `{k}`: {v} rows" for k, v in sorted(report.splits.items())] or ["- (empty)"]
    lines += _labels_section(task, report)
    lines += _prior_section(report)
    lines += _soft_labels_section(report)
    lines += _teachers_section(report)
    lines += _verification(opts, report)
    lines += ["", "## Columns", "", *_columns(task, opts)]
    lines += ["", "## Prompt", "", _prompt_text(task)]
    lines += _filters_section(opts, report)
    lines += ["", "## Load", "", "```python", load_snippet(report, opts.format, repo=repo), "```", ""]
    return "\n".join(lines)


def _summary_table(
    task: Task, teacher: str, identity: Mapping[str, Any], opts: ExportOptions, report: ExportReport
) -> list[str]:
    """The card's first table: who labeled what, how it was exported, and where every input
    row went, so the counts add up for a reader checking that nothing was lost."""
    lines = ["| | |", "|---|---|", f"| teacher | `{teacher}` |"]
    if opts.card_endpoint and identity.get("base_url"):
        lines.append(f"| endpoint | `{identity.get('base_url')}` |")
    lines += export_kind(opts).card_rows(report)
    lines += [
        f"| template | `{task.identity}`: {template_reference(task)} |",
        f"| output | {task.output_kind}, {task.mode} mode |",
        f"| export kind / format | {opts.kind} / {opts.format} |",
        *([f"| reasoning traces | {_REASONING[opts.reasoning]} |"] if opts.reasoning in _REASONING else []),
        f"| calibration (applied to soft labels, confidence, filters) | {_calibration_text(opts)} |",
        f"| licence | {opts.card_license or 'not set (export with --card-license)'} |",
        f"| input rows | {report.rows_in} |",
        f"| exported rows | {report.exported} |",
        f"| labels given by a person (labeler review), over the teacher's | {report.human_labeled} |",
        *(
            [f"| rows awaiting a person (labeler review), {_awaiting(report)} | {report.awaiting_human} |"]
            if report.awaiting_human
            else []
        ),
        f"| no stored answer (failed or not yet labeled) | {report.missing} |",
        f"| rejected input rows | {report.rejected} |",
        *[f"| rows answered by {stage} | {n} |" for stage, n in sorted(report.stages.items())],
    ]
    return lines


def _labels_section(task: Task, report: ExportReport) -> list[str]:
    """The label order a student needs to read `label` and `soft_label` vectors."""
    if not task.labels:
        return []
    lines = [
        "",
        "## Labels",
        "",
        "Index order of `label` (a `ClassLabel`) and of every `soft_label` vector:",
        "",
        "| index | label | rows |",
        "|---|---|---|",
    ]
    lines += [f"| {i} | {name} | {report.label_counts.get(name, 0)} |" for i, name in enumerate(task.labels)]
    return lines


def _prior_section(report: ExportReport) -> list[str]:
    """The warning that the labels' shares depart from the truth, kept with the data."""
    if not report.prior_warnings:
        return []
    lines = [
        "",
        "## Label prior",
        "",
        "The exported labels' shares depart strongly from what this export knows "
        "of the truth; a student trained on them learns that tilt:",
        "",
    ]
    return lines + [f"- {w}" for w in report.prior_warnings]


def _soft_labels_section(report: ExportReport) -> list[str]:
    """How many soft labels came from logprobs, samples or a stated confidence."""
    if not report.soft_label_sources:
        return []
    lines = [
        "",
        "## Soft labels",
        "",
        "Where each row's `soft_label` came from:",
        "",
        "| source | rows | how |",
        "|---|---|---|",
    ]
    return lines + [
        f"| `{source}` | {n} | {soft_label_source_text(source)} |"
        for source, n in sorted(report.soft_label_sources.items())
    ]


def _teachers_section(report: ExportReport) -> list[str]:
    """What each teacher of a cascade or ensemble answered and cost."""
    if not report.teachers:
        return []
    lines = [
        "",
        "## Teachers",
        "",
        "What each teacher answered for these input rows, as stored:",
        "",
        "| teacher | rows answered | prompt tokens | output tokens | answer time (s) | cost (USD) |",
        "|---|---|---|---|---|---|",
    ]
    return lines + [
        f"| {t['teacher']} | {t['rows']} | {t['prompt_tokens']} | "
        f"{t['completion_tokens']} | {t['teacher_s']:.1f} | {_usd(t['cost_usd'])} |"
        for t in report.teachers
    ]


def _filters_section(opts: ExportOptions, report: ExportReport) -> list[str]:
    """The filters applied and how many rows each removed."""
    spec = opts.filters
    lines = [
        "",
        "## Filters",
        "",
        f"min_confidence={spec.min_confidence}, min_margin={spec.min_margin}, "
        f"max_entropy={spec.max_entropy}, drop_invalid={spec.drop_invalid}",
        "",
    ]
    return lines + [f"- removed by `{name}`: {n}" for name, n in report.filtered.items()]


def _verification(opts: ExportOptions, report: ExportReport) -> list[str]:
    """What the answers' checks found: pass rate, pass@1 and pass@N (unbiased estimator
    over each row's answers), and what the export kept of them."""
    v = report.verification
    if not v:
        return []

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    verdicts = ", ".join(f"{k} {n}" for k, n in v["verdicts"].items()) or "none"
    lines = [
        "",
        "## Verification",
        "",
        f"Every answer was checked with `--verify {v['spec']}` (kept: `{v['keep']}`).",
        "",
        "| | |",
        "|---|---|",
        f"| rows with answers | {v['rows']} |",
        f"| answers checked (up to {v['samples']} per row) | {v['answers']} |",
        f"| verdicts | {verdicts} |",
        f"| pass rate (answers that pass) | {pct(v['pass_rate'])} |",
        f"| pass@1 | {pct(v['pass@1'])} |",
        *(
            [
                f"| pass@{v['samples']} (rows with a passing answer among {v['samples']}) | "
                f"{pct(v['pass@N'])} |"
            ]
            if v["samples"] > 1
            else []
        ),
        f"| rows with at least one passing answer | {v['rows_with_a_pass']} |",
    ]
    lines += export_kind(opts).verification_rows(report)
    lines += [
        "",
        "pass@k is the unbiased estimator 1 - C(n-c, k) / C(n, k) over each row's "
        "n answers of which c pass, averaged over rows. A checker that failed itself "
        "(`error`, `timeout`) counts as not passing, and its answer is never a "
        "rejected one.",
    ]
    return lines


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
        return (
            f"the share of each answer among {n} sampled answers (steps of 1/{n}); "
            "confidence is their agreement"
        )
    return {
        "logprobs": "the teacher's token logprobs at the answer position, over the labels",
        "logprobs:split": "the teacher's token logprobs, where some mass sat on a token "
        "several labels begin with and no continuation told them apart: "
        "divided among them by their other mass (an approximation)",
        "logprobs:exact": "the teacher's token logprobs, with labels that share first tokens "
        "scored to their whole probability by continuation requests",
        "verbalized": "the confidence the teacher stated for its label (p on it, 1 - p shared "
        "equally by the others); fit a calibration before trusting it",
        "ensemble": "the mean of several prompt forms' label distributions",
        "none": "a one-hot on the one parsed answer (no distribution was asked for)",
    }.get(source, "as named")


def _prompt_text(task: Task) -> str:
    parts = []
    if task.system:
        parts += ["System prompt:", "", "```text", task.system.rstrip("\n"), "```", ""]
    parts += [
        f"User template (Jinja2; fields: {', '.join(f'`{f}`' for f in task.fields) or 'none'}):",
        "",
        "```jinja",
        task.user_source.rstrip("\n"),
        "```",
    ]
    if task.few_shot:
        parts += [
            "",
            f"{len(task.few_shot)} few-shot examples precede each row "
            f"({'as chat turns' if task.mode == 'chat' else 'in the prompt prefix'}).",
        ]
    if task.others:
        parts += [
            "",
            f"Prompt ensemble: each row was asked in {len(task.members)} prompt forms "
            "(`variants`, `example_orders`); `soft_label` is the mean of their label "
            "distributions and `label` its argmax.",
        ]
    return "\n".join(parts)


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
    kind = export_kind(opts)
    return ["- `id`: the input row's id.", *kind.columns(task, opts), *kind.reasoning_columns(opts)]


def _usd(cost: float | None) -> str:
    """A stored cost for the card: "unknown" where an answer had no price, never 0."""
    return "unknown" if cost is None else f"{cost:.4f}"
