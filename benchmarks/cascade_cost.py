"""What a cascade saves: a local first stage before a priced API teacher, against the API
teacher alone, at the same accuracy target.

    python -m benchmarks.cascade_cost                       # SST-2, 400 rows, local Gemma first
    python -m benchmarks.cascade_cost --first local:smollm2-135m --api-error 0.08
    python -m benchmarks.cascade_cost --work /tmp/cc        # keep the stores: a rerun asks nobody

The "API" is labeler's test server (`labeler.testing`), not a model: it answers each row's
gold label, except for a seeded random share (``--api-error``) where it answers another
label, and it is priced per token like a real API (``--api-price``, USD per million input
and output tokens; its token counts are the test server's, close to but not a real
tokenizer's). Everything else is labeler's real path: `run_job` with `--teacher` or
`--cascade`, the local teacher through llama.cpp, the store, the export.

The gold rows are split in two (fixed seed): on the calibration half, `labeler eval
--cascade` (`evaluate_cascade_job`) picks, per accuracy target, the threshold whose
accepted rows' accuracy has a 95% Clopper–Pearson lower bound at the target; on the test
half, the API alone and the cascade at each threshold label the same rows, and the table
gives each one's accuracy, rows sent to the API, API cost and the local stage's time.

Data comes from ``../shared/data`` beside the repository (or $LABELER_DATA), read in place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from benchmarks.local_quality import DATASETS, Gold, load_gold
from labeler import Job, run_job
from labeler.eval_job import evaluate_cascade_job
from labeler.pricing import PriceTable
from labeler.testing import Reply, RequestView, ServerConfig, TeacherServer

API_MODEL = "api-sim"


class GoldResponder:
    """The stand-in API: each row's gold label, wrong on a seeded random `error` share.

    A row is found in the prompt as the gold text that appears last in it (the template's
    few-shot examples come before the row). The answer's probability is `confidence`."""

    def __init__(
        self,
        texts: Sequence[str],
        gold: Sequence[str],
        labels: Sequence[str],
        error: float,
        seed: int = 0,
        confidence: float = 0.95,
    ) -> None:
        self.gold = dict(zip(texts, gold, strict=True))
        self.labels = list(labels)
        self.confidence = confidence
        rng = random.Random(seed)
        self.wrong = {t for t in texts if rng.random() < error}
        self.rng_seed = seed

    def answer_for(self, text: str) -> str:
        right = self.gold[text]
        if text not in self.wrong:
            return right
        others = [lab for lab in self.labels if lab != right]
        return random.Random(f"{self.rng_seed}:{text}").choice(others)

    def __call__(self, view: RequestView) -> Reply:
        found = max(self.gold, key=lambda t: view.prompt.rfind(t) if t in view.prompt else -1)
        if found not in view.prompt:
            return Reply("unknown")
        label = self.answer_for(found)
        space = " " if view.provider == "openai-completions" else ""
        rest = (1 - self.confidence) / max(1, len(self.labels) - 1)
        top = [(space + label, math.log(self.confidence))]
        top += [(space + lab, math.log(rest)) for lab in self.labels if lab != label]
        return Reply(space + label, tokens=[space + label], top_logprobs=[top])


@dataclass
class Line:
    name: str
    accuracy: float
    api_rows: int
    api_cost: float
    local_s: float | None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _write(path: Path, gold: Gold, idx: Sequence[int]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in idx:
            f.write(json.dumps({**gold.rows[i], "gold": gold.gold[i]}) + "\n")
    return path


def _accuracy(out: Path, gold: dict[str, str]) -> float:
    ds = datasets.load_from_disk(str(out))
    ds = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    names = ds.features["label"].names
    right = sum(1 for r in ds if 0 <= r["label"] < len(names) and names[r["label"]] == gold[r["id"]])
    return right / len(gold)  # a row missing from the export counts as wrong


async def bench(args: argparse.Namespace) -> list[Line]:
    gold = load_gold(args.dataset, args.n, args.seed)
    order = list(range(len(gold.rows)))
    cal_n = int(len(order) * args.calibration_share)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cascade-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    cal = _write(work / "calibration.jsonl", gold, order[:cal_n])
    test = _write(work / "test.jsonl", gold, order[cal_n:])
    test_gold = {gold.rows[i]["id"]: gold.gold[i] for i in order[cal_n:]}
    from labeler.task import load_task

    labels = list(load_task(gold.template).labels)
    prices = PriceTable.default().with_override(f"{API_MODEL}={args.api_price}")
    responder = GoldResponder([r["text"] for r in gold.rows], gold.gold, labels, args.api_error, args.seed)
    lines: list[Line] = []
    with TeacherServer(ServerConfig(model=API_MODEL, responder=responder)) as api:
        api_spec = f"openai-compatible:{API_MODEL}@{api.url}/v1"
        common: dict[str, Any] = dict(task=gold.template, progress=False, prices=prices)

        # The API alone, into a fresh store of its own: every test row paid.
        for stale in work.glob("api.sqlite*"):
            stale.unlink()
        alone = await run_job(
            Job(
                input=test,
                teacher=f"openai-compatible:{API_MODEL}",
                base_url=api.url + "/v1",
                store=work / "api.sqlite",
                out=work / "out-api",
                **common,
            )
        )
        lines.append(
            Line(
                "API alone",
                _accuracy(work / "out-api", test_gold),
                len(test_gold),
                alone.summary.cost_usd,
                None,
            )
        )

        # The local teacher alone, on both halves (the cascade's stage 1 answers; a kept
        # --work store answers from its cache, and the time is then the first run's).
        store = work / "cascade.sqlite"
        first, _, url = args.first.partition("@")
        await run_job(Job(input=cal, teacher=first, base_url=url or None, store=store, **common))
        res = await run_job(
            Job(
                input=test, teacher=first, base_url=url or None, store=store, out=work / "out-local", **common
            )
        )
        times = work / "local_seconds.json"
        if res.summary.labeled or not times.exists():
            times.write_text(json.dumps(res.summary.elapsed_s))
        local_s = float(json.loads(times.read_text()))
        lines.append(Line(f"{first} alone", _accuracy(work / "out-local", test_gold), 0, 0.0, local_s))

        # Thresholds from the calibration half, as `labeler eval --cascade` suggests them.
        cascade = f"{args.first},{api_spec}"
        report = evaluate_cascade_job(
            Job(input=cal, teacher="unused:x", cascade=cascade, escalate_below=0.5, store=store, **common),
            "gold",
            None,
            tuple(args.targets),
        )
        for sug in report.suggestions:
            if sug["stage"] != 1:
                continue
            name = f"cascade, target {sug['target']:g}"
            if sug["threshold"] is None:
                lines.append(
                    Line(
                        name + " (no threshold reaches it: all to the API)",
                        math.nan,
                        len(test_gold),
                        math.nan,
                        None,
                    )
                )
                continue
            t = sug["threshold"]["threshold"]
            out = work / f"out-cascade-{sug['target']:g}"
            res = await run_job(
                Job(
                    input=test,
                    teacher="unused:x",
                    cascade=cascade,
                    escalate_below=t,
                    store=store,
                    out=out,
                    **common,
                )
            )
            assert res.export is not None
            used = {u["teacher"]: u for u in res.export.teachers}
            api_used = used[f"stage 2: openai-compatible:{API_MODEL}"]
            lines.append(
                Line(name, _accuracy(out, test_gold), api_used["rows"], api_used["cost_usd"], local_s, t)
            )
    return lines


def table(lines: Sequence[Line], args: argparse.Namespace, n_test: int) -> str:
    api = lines[0]
    out = [
        f"{args.dataset}: {n_test} test rows ({args.n} sampled with seed {args.seed}; "
        f'thresholds chosen on the other {args.n - n_test}). The "API" is labeler\'s test '
        f"server answering the gold label with {args.api_error:.0%} seeded errors, priced at "
        f"${args.api_price.replace(',', ' / $')} per million input / output tokens: a "
        "stand-in for a priced API teacher, not a real model.",
        "",
        "| labeling | escalate below | accuracy | rows sent to the API | API cost | vs API alone "
        "| local stage time |",
        "|---|---|---|---|---|---|---|",
    ]
    for ln in lines:
        acc = "—" if math.isnan(ln.accuracy) else f"{ln.accuracy:.1%}"
        cost = "—" if math.isnan(ln.api_cost) else f"${ln.api_cost:.5f}"
        ratio = "—" if math.isnan(ln.api_cost) or not api.api_cost else f"{ln.api_cost / api.api_cost:.0%}"
        thr = "—" if ln.threshold is None else f"{ln.threshold:.3f}"
        local = "—" if ln.local_s is None else f"{ln.local_s:.0f} s"
        out.append(
            f"| {ln.name} | {thr} | {acc} | {ln.api_rows} ({ln.api_rows / n_test:.0%}) "
            f"| {cost} | {ratio} | {local} |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    p.add_argument("--n", type=int, default=400, help="gold rows sampled (both halves)")
    p.add_argument("--calibration-share", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", default="local:gemma3-270m", help="the cascade's first stage")
    p.add_argument("--api-error", type=float, default=0.05, help="share of wrong API answers")
    p.add_argument(
        "--api-price",
        default="0.15,0.60",
        help="USD per million input,output tokens (default: gpt-4o-mini's list price)",
    )
    p.add_argument("--targets", type=lambda s: [float(x) for x in s.split(",")], default=[0.9, 0.93])
    p.add_argument("--work", help="folder for stores and exports (default: a new temp folder)")
    p.add_argument("--json", action="store_true", help="also print the lines as JSON")
    args = p.parse_args(argv)
    lines = asyncio.run(bench(args))
    n_test = args.n - int(args.n * args.calibration_share)
    print(table(lines, args, n_test))
    if args.json:
        print(json.dumps([ln.to_dict() for ln in lines]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
