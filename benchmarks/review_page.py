"""The review page with 100,000 answers in the store: start-up, first paint, page changes.

    python benchmarks/review_page.py                  # 100,000 rows, 7 repeats
    python benchmarks/review_page.py --rows 20000 --repeat 3
    python benchmarks/review_page.py --screenshot docs/review.png   # the picture on docs/review.md

The store is filled directly (a synthetic answer with top logprobs per row, keyed exactly
as a run would key it), then `labeler review` runs in its own process and Debian's
headless chromium loads the page through chromedriver. Times are taken inside the page
(`performance.now()`, up to the animation frame after the rows are in the DOM):

- first paint: from navigation start to the first page of rows painted;
- page change: from a click on "Next" to the next page painted;
- filter / search: from changing the label filter, or typing a search, to the rows painted;
- decision: from a key press to the progress count showing the committed decision.

`--screenshot` instead labels the shipped samples/news.csv through the local teacher
server, records two decisions, and saves a picture of the page.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from labeler.completion import Completion, TokenLogprob, Usage
from labeler.store import Store
from labeler.task import load_task
from labeler.teachers import make_teacher
from labeler.testing.browser import Browser, browser_missing

REPO = Path(__file__).resolve().parent.parent
TEACHER = "openai-compatible:teacher-test"
BASE_URL = "http://127.0.0.1:9/v1"  # only part of the key: nothing is sent
TARGET_MS = 300.0
_WORDS = (
    "markets rally after the central bank holds rates as striker scores twice in the "
    "derby while chip maker unveils a faster processor and leaders meet for talks on "
    "the border ceasefire amid record heat"
)


def fill_store(workdir: Path, n: int, seed: int = 7) -> tuple[Path, Path]:
    """An input of `n` topic rows and a store holding an answer for each."""
    rng = random.Random(seed)
    task = load_task("topic")
    identity = make_teacher(TEACHER, base_url=BASE_URL).identity
    labels = list(task.labels)
    data, store_path = workdir / "rows.jsonl", workdir / "store.sqlite"
    with open(data, "wb") as f, Store(store_path) as store:
        batch = []
        for i in range(n):
            row = {"id": f"r{i:06d}", "text": " ".join(rng.choices(_WORDS.split(), k=14)) + f" #{i}"}
            f.write(orjson.dumps(row) + b"\n")
            weights = [rng.random() ** 3 for _ in labels]
            total = sum(weights) * 1.02
            top = sorted(
                ((lab, math.log(w / total)) for lab, w in zip(labels, weights, strict=True)),
                key=lambda t: -t[1],
            )
            completion = Completion(
                top[0][0],
                [TokenLogprob(top[0][0], top[0][1], tuple(top))],
                Usage(60, 2),
                "stop",
                "teacher-test",
            )
            batch.append((task.render(row).key(identity), completion, None))
            if len(batch) >= 5000:
                store.put_many(batch)
                batch = []
        store.put_many(batch)
    return data, store_path


class ReviewServer:
    """`labeler review --no-browser --port 0` in its own process; `url` has the token."""

    def __init__(self, task: str, data: Path, store: Path, base_url: str) -> None:
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labeler.cli",
                "review",
                task,
                str(data),
                "--teacher",
                TEACHER,
                "--base-url",
                base_url,
                "--store",
                str(store),
                "--port",
                "0",
                "--no-browser",
                "--reviewer",
                "ada",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        self.startup_s = time.perf_counter() - start
        if not self.url.startswith("http"):
            raise RuntimeError("labeler review did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        if self.proc.stdout:
            self.proc.stdout.close()


def _timed(b: Browser, action: str, done: str) -> float:
    """Milliseconds from running `action` in the page to the next paint after `done`."""
    painted = int(b.js("return Number(document.body.dataset.painted || 0)"))
    b.js(f"window.__t0 = performance.now(); {action}")
    b.wait(f"({done}) && Number(document.body.dataset.painted || 0) > {painted}", timeout=30)
    return float(b.js("return Number(document.body.dataset.paintedAt) - window.__t0"))


def measure(url: str, repeat: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        "first paint": [],
        "page change": [],
        "label filter": [],
        "text search": [],
        "decision (Enter)": [],
    }
    with Browser() as b:
        for _ in range(repeat):
            b.get("about:blank")
            b.get(url)
            b.wait("Number(document.body.dataset.painted || 0) >= 1", timeout=60)
            out["first paint"].append(float(b.js("return Number(document.body.dataset.paintedAt)")))
            for _ in range(3):
                out["page change"].append(_timed(b, "document.getElementById('next').click();", "true"))
            out["label filter"].append(
                _timed(
                    b,
                    "const s = document.getElementById('f-label'); s.value = 'Sports';"
                    "s.dispatchEvent(new Event('change'));",
                    "true",
                )
            )
            out["text search"].append(
                _timed(
                    b,
                    "const t = document.getElementById('f-text'); t.value = 'derby ceasefire';"
                    "document.getElementById('filters').requestSubmit();",
                    "true",
                )
            )
            before = b.js("return document.getElementById('progress').textContent")
            b.js("window.__t0 = performance.now();")
            b.keys("Enter")
            b.wait(f"document.getElementById('progress').textContent !== {orjson.dumps(before).decode()}")
            out["decision (Enter)"].append(float(b.js("return performance.now() - window.__t0")))
            b.keys("u")
            b.wait(f"document.getElementById('progress').textContent === {orjson.dumps(before).decode()}")
    return out


def screenshot(path: Path, workdir: Path) -> None:
    import asyncio

    from labeler import Job, run_job
    from labeler.testing import ServerConfig, TeacherServer

    with TeacherServer(ServerConfig(labels=["World", "Sports", "Business", "Sci/Tech"], seed=3)) as srv:
        job = Job(
            task="topic",
            input=REPO / "samples" / "news.csv",
            teacher=TEACHER,
            base_url=srv.url + "/v1",
            store=workdir / "news.sqlite",
            progress=False,
        )
        asyncio.run(run_job(job))
        server = ReviewServer(
            "topic", REPO / "samples" / "news.csv", workdir / "news.sqlite", srv.url + "/v1"
        )
        try:
            with Browser(width=1000, height=760) as b:
                b.get(server.url)
                b.wait("Number(document.body.dataset.painted || 0) >= 1")
                b.keys("Enter")
                b.wait("document.getElementById('progress').textContent.startsWith('1 ')")
                b.keys("3")
                b.wait("document.getElementById('progress').textContent.startsWith('2 ')")
                b.keys("Up")
                b.js("window.scrollTo(0, 0)")
                time.sleep(0.3)
                b.screenshot(path)
        finally:
            server.stop()
    _shrink(path)


def _shrink(path: Path) -> None:
    """64 colours are plenty for a page of text: a third of the bytes (needs Pillow,
    which the `plot` extra brings; without it the picture stays as chromium wrote it)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--screenshot", type=Path, help="save a picture of the page and exit")
    args = ap.parse_args(argv)
    reason = browser_missing()
    if reason:
        print(f"review_page: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.screenshot:
            screenshot(args.screenshot, workdir)
            print(f"{args.screenshot} ({args.screenshot.stat().st_size // 1024} KiB)")
            return 0
        t0 = time.perf_counter()
        data, store = fill_store(workdir, args.rows)
        fill_s = time.perf_counter() - t0
        server = ReviewServer("topic", data, store, BASE_URL)
        try:
            results = measure(server.url, args.repeat)
        finally:
            server.stop()
    print(
        f"review page, {args.rows:,} rows in the store (filled in {fill_s:.1f} s); "
        f"`labeler review` ready in {server.startup_s:.1f} s\n"
    )
    print("| measure | median ms | max ms | target | result |\n|---|---|---|---|---|")
    for name, values in results.items():
        med = statistics.median(values)
        target = f"< {TARGET_MS:.0f}" if name in ("first paint", "page change") else "—"
        verdict = ("PASS" if med < TARGET_MS else "FAIL") if target != "—" else "—"
        print(f"| {name} | {med:.0f} | {max(values):.0f} | {target} | {verdict} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
