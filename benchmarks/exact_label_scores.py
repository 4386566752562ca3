"""Labels that share first tokens: the divided approximation against exact scoring.

Banking77 (77 intents; many begin with the same word: card…, top up…, transfer…) labeled
by a local teacher through a user-written completion template whose answers are the
intent names in words. One run stores the answers and the scoring requests; the same
store is then read twice, with `--soft-labels logprobs` (shared mass divided,
`logprobs:split`) and `logprobs:exact`, so both readings see the same paid answers.
Printed: how often the top label differs, each reading's accuracy against gold, and what
the scoring cost in requests and time.

    python -m benchmarks.exact_label_scores --rows 200
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.local_quality import data_dir

DATA = data_dir() / "banking77_test"


def _name(category: str) -> str:
    return category.replace("_", " ").replace("?", "").strip().lower()


def template(names: list[str], shots: list[dict[str, str]]) -> dict[str, object]:
    listed = "\n".join(f"- {n}" for n in names)
    return {
        "name": "banking77-intents",
        "version": "1",
        "mode": "completion",
        "system": f"A bank's customers wrote these messages. The intent of each is one of:\n{listed}",
        "user": "Message: {{ text }}\nIntent:",
        "output": {"kind": "label", "labels": names},
        "params": {"temperature": 0, "max_tokens": 1},
        "top_logprobs": 20,
        "few_shot": [{"input": {"text": r["text"]}, "output": r["gold"]} for r in shots],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--teacher", default="local:gemma3-270m")
    parser.add_argument("--shots", type=int, default=16, help="few-shot examples, one intent each")
    parser.add_argument("--work", default=None, help="folder for the store (default: a temporary one)")
    args = parser.parse_args()
    names = [_name(c) for c in json.loads((DATA / "categories.json").read_text())]
    with (DATA / "banking77_test.csv").open() as f:
        rows = [{"text": r["text"], "gold": _name(r["category"])} for r in csv.DictReader(f)]
    random.Random(0).shuffle(rows)
    # few-shot examples: the first row of each of `--shots` intents, from rows not labeled
    shots: list[dict[str, str]] = []
    for r in rows[args.rows :]:
        if len(shots) < args.shots and all(s["gold"] != r["gold"] for s in shots):
            shots.append(r)
    rows = [{"id": str(i), **r} for i, r in enumerate(rows[: args.rows])]
    work = Path(args.work or tempfile.mkdtemp(prefix="exact-scores-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "banking77.json"
    path.write_text(json.dumps(template(names, shots)))
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    split, s1, t_split = _run(args.teacher, path, data, work, "logprobs")
    exact, s2, t_exact = _run(args.teacher, path, data, work, "logprobs:exact")
    gold = {r["id"]: r["gold"] for r in rows}
    # the export writes each label as its index in the template's label order
    a = {r["id"]: names[r["label"]] for r in split if r["valid"]}
    b = {r["id"]: names[r["label"]] for r in exact if r["valid"]}
    both = sorted(set(a) & set(b))
    differ = sum(a[i] != b[i] for i in both)
    marked = sum(r["soft_label_source"] == "logprobs:split" for r in split)
    rows_a, rows_b = len(a), len(b)
    acc_a = sum(a[i] == gold[i] for i in a) / args.rows
    acc_b = sum(b[i] == gold[i] for i in b) / args.rows
    marked_b = sum(r["soft_label_source"] == "logprobs:split" for r in exact)
    print(
        "| reading | rows with a label | accuracy (all rows) | marked logprobs:split | requests | seconds |"
    )
    print("|---|---|---|---|---|---|")
    print(f"| divided (logprobs) | {rows_a} | {acc_a:.1%} | {marked} | {s1['requests']} | {t_split:.0f} |")
    print(
        f"| exact (logprobs:exact) | {rows_b} | {acc_b:.1%} | {marked_b} | "
        f"+{s2['scoring_requests']} scoring | +{t_exact:.0f} |"
    )
    share = differ / max(1, len(both))
    print(f"\ntop label differs in {differ} of {len(both)} rows labeled by both ({share:.1%})")


def _run(
    teacher: str, template_path: Path, data: Path, work: Path, soft_labels: str
) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """One `labeler run` on the shared store, its records export and summary, and its time."""
    out = work / soft_labels.replace(":", "-")
    cmd = [
        sys.executable,
        "-c",
        "from labeler.cli import main; main()",
        "run",
        str(template_path),
        str(data),
        "--teacher",
        teacher,
    ]
    cmd += ["--store", str(work / "store.sqlite"), "--out", str(out), "--force", "--format", "jsonl"]
    cmd += ["--kind", "classification", "--calibration", "none", "--soft-labels", soft_labels]
    cmd += ["--id-field", "id", "--quiet", "--json", "--local-context", "2048"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"labeler run failed ({done.returncode}): {done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    return rows, json.loads(done.stdout), elapsed


if __name__ == "__main__":
    main()
