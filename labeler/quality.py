"""`labeler eval`: the stored answers of a run against a gold column of its input.

No request is sent: rows are rendered and keyed as the run did, and answers come from the
store. Gold values may be label names, or integers (class indices in the template's label
order, unless a `gold_map` says otherwise, e.g. AG News' 1-based classes). The gold name
``human`` means the labels people gave on the review page (labeler/human.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labeler.answer import read_answer
from labeler.errors import ConfigError
from labeler.evaluate import EvalReport, confidence_measures, evaluate
from labeler.human import human_labels
from labeler.job import Job
from labeler.plan import REJECTED, Planner, where
from labeler.store import Store

HUMAN_GOLD = "human"  # `--gold human`: the review page's labels, not an input column


def parse_gold_map(spec: str | None) -> dict[str, str]:
    """``1=World,2=Sports`` -> {"1": "World", "2": "Sports"}."""
    if not spec:
        return {}
    out = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--gold-map '{spec}': expected GOLD=LABEL[,GOLD=LABEL...]")
        out[key.strip()] = value.strip()
    return out


def evaluate_job(
    job: Job,
    gold_field: str,
    *,
    gold_map: Mapping[str, str] | None = None,
    targets: tuple[float, ...] = (0.9, 0.95, 0.99),
) -> EvalReport:
    task = job.load_task()
    if task.output_kind != "label" or task.label_space is None:
        raise ConfigError(f"eval needs a label task; {task.path} is '{task.output_kind}'")
    labels = task.labels
    teacher = job.make_teacher()
    identity = teacher.identity
    gold: list[str] = []
    pred: list[str | None] = []
    confs: list[Any] = []
    missing_gold = 0
    from_people = gold_field == HUMAN_GOLD
    with Store(job.store_path()) as store:
        planner = Planner(task, identity, store, failures=False)
        for planned in planner.plan_rows(job.rows(task), 512):
            people = (human_labels(store, [i.key for i in planned if i.completion is not None])
                      if from_people else {})
            for item in planned:
                if item.status == REJECTED:
                    continue  # never labeled: not part of the evaluation
                if from_people:
                    if item.key not in people:
                        continue  # nobody reviewed this row
                    g = people[item.key].label
                else:
                    raw = item.row.data.get(gold_field)
                    if raw is None or raw == "":
                        missing_gold += 1
                        continue
                    g = _gold_label(raw, labels, gold_map or {}, where(item.row), gold_field)
                if item.completion is None:
                    continue  # not labeled (yet): not part of the evaluation
                answer = read_answer(task, item.completion)
                gold.append(g)
                pred.append(answer.label)
                confs.append(answer.confidence)
    if from_people and not gold:
        raise ConfigError("no reviewed rows: label some with `labeler review` first, with the "
                          "same task, input and teacher")
    if not gold:
        raise ConfigError(
            f"no labeled rows with a '{gold_field}' value: run `labeler run` first with the same "
            "task, input and teacher"
        )
    measures = {k: v for k, v in confidence_measures(confs).items()
                if any(x is not None for x in v)}
    return evaluate(gold, pred, measures, labels=list(labels), targets=targets)


def _gold_label(raw: Any, labels: tuple[str, ...], gold_map: Mapping[str, str], where: str,
                field: str) -> str:
    text = str(raw).strip()
    if text in gold_map:
        return gold_map[text]
    if text in labels:
        return text
    folded = {label.lower(): label for label in labels}
    if text.lower() in folded:
        return folded[text.lower()]
    if isinstance(raw, int) or text.isdigit():
        index = int(text)
        if 0 <= index < len(labels):
            return labels[index]
    raise ConfigError(
        f"{where}: gold value {text!r} in field '{field}' is not a label of the task "
        f"({', '.join(labels[:8])}{'…' if len(labels) > 8 else ''}); map it with --gold-map"
    )

