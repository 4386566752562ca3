"""What the Ray tests share: the rows they label, the server-log counts that say what was
paid for, the store's contents, and the export comparison. The single-runtime tests
(test_ray_stage.py) and the two-node cluster's (test_ray_cluster.py) ask the same
questions of different fleets."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from labeler.cli import main
from labeler.testing import TeacherServer

TEACHER = "openai-compatible:teacher-test"
LABELS = ["negative", "positive"]


def items(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": i, "text": f"item-{i:05d} was {'great' if i % 3 else 'awful'}", "n": i * 1.5}
        for i in range(start, start + n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def answers_per_prompt(server: TeacherServer) -> Counter[str]:
    return Counter(r.prompt for r in server.log if r.path.endswith("/chat/completions") and r.status == 200)


def stored_keys(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def owner_pids(store: Path) -> set[int]:
    """The processes holding claims in the store: the ones with requests in flight."""
    try:
        with sqlite3.connect(store, timeout=5) as db:
            return {r[0] for r in db.execute("SELECT DISTINCT pid FROM claims")}
    except sqlite3.OperationalError:  # not created yet
        return set()


def wait_for(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def count_or_error(ds: Any) -> Any:
    """The rows a run produced, or what stopped it: a run whose actor was killed may fail;
    the rerun after it must finish."""
    try:
        return ds.materialize().count()
    except Exception as exc:
        return exc


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def same_export(a: Path, b: Path) -> None:
    import datasets

    da, db = datasets.load_from_disk(str(a)), datasets.load_from_disk(str(b))
    assert da.features == db.features
    assert da.to_list() == db.to_list()
    meta_a, meta_b = (json.loads((p / "labeler_export.json").read_text()) for p in (a, b))
    for meta in (meta_a, meta_b):
        meta["report"].pop("seconds")
        # whether a verdict was checked by this export or read as stored is the run's
        for count in ("checked", "cached"):
            (meta["report"].get("verification") or {}).pop(count, None)
    assert meta_a == meta_b
    card_a = (a / "README.md").read_text().replace(str(a), "OUT").replace(a.name, "OUT")
    card_b = (b / "README.md").read_text().replace(str(b), "OUT").replace(b.name, "OUT")
    assert card_a == card_b
