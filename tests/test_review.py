"""The review page: a real `labeler review` process, driven by a real headless chromium.

Browser tests skip with the reason when Debian's chromium and chromium-driver are absent.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from labeler import Job, run_job
from labeler.human import human_labels, record_label
from labeler.review import ReviewQuery, load_index
from labeler.store import Store
from labeler.testing import Reply, ScriptedResponder, ServerConfig, TeacherServer
from labeler.testing.browser import Browser, browser_missing

from conftest import REPO

LABELER = [sys.executable, "-m", "labeler.cli"]
SCRIPT_TEXT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
# Per prompt word: (answer, probability of positive, probability of negative).
ROWS = {
    "sure": ("positive", 0.97, 0.02),
    "torn": ("positive", 0.51, 0.47),  # the most uncertain labeled row
    "leaning": ("negative", 0.25, 0.70),
    "odd": ("positive", 0.80, 0.15),
}
SECRET = "sk-review-secret-0123456789"


def responder() -> ScriptedResponder:
    rules = []
    for word, (text, pos, neg) in ROWS.items():
        top = [("positive", math.log(pos)), ("negative", math.log(neg))]
        top.sort(key=lambda t: -t[1])
        rules.append((word, Reply(text, tokens=[text], top_logprobs=[top])))
    return ScriptedResponder(rules, default=lambda view: Reply("positive"))


@pytest.fixture
def labeled(tmp_path: Path) -> Iterator[tuple[TeacherServer, Job]]:
    data = tmp_path / "in.jsonl"
    lines = [{"id": word, "text": f"{word} review"} for word in ROWS]
    lines.append({"id": "xss", "text": f"odd {SCRIPT_TEXT}"})
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with TeacherServer(ServerConfig(responder=responder())) as srv:
        job = Job(
            task="sentiment",
            input=data,
            teacher="openai-compatible:teacher-test",
            base_url=srv.url + "/v1",
            store=tmp_path / "s.sqlite",
            progress=False,
            api_key=SECRET,
        )
        asyncio.run(run_job(job))
        yield srv, job


class ReviewProcess:
    """`labeler review ... --no-browser --port 0` as a child; `url` is what it printed."""

    def __init__(self, job: Job, *extra: str) -> None:
        env = {**os.environ, "OPENAI_API_KEY": SECRET}
        self.proc = subprocess.Popen(
            [
                *LABELER,
                "review",
                str(job.task),
                str(job.input),
                "--teacher",
                job.teacher,
                "--base-url",
                str(job.base_url),
                "--store",
                str(job.store),
                "--port",
                "0",
                "--no-browser",
                "--reviewer",
                "ada",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()
        self.line = json.loads(first) if first.startswith("{") else None  # with --json
        self.url = self.line["url"] if self.line else first
        if not self.url.startswith("http://"):
            self.proc.kill()
            raise AssertionError(f"no URL printed: {self.url!r} {self.proc.stderr.read()!r}")
        self.base = self.url.split("/?", 1)[0]
        self.token = self.url.split("token=", 1)[1]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(20)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc


@pytest.fixture
def browser() -> Iterator[Browser]:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    with Browser() as b:
        yield b


def open_page(b: Browser, url: str, loads: int = 1) -> None:
    b.get(url)
    b.wait(f"Number(document.body.dataset.loads || 0) >= {loads}")


def row_ids(b: Browser) -> list[str]:
    return b.js("return [...document.querySelectorAll('article.row .rowid')].map(e => e.textContent);")


def http(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- without a browser ------------------------------------------------------------------------


def test_queue_is_most_uncertain_first_and_filters(labeled: tuple[TeacherServer, Job]) -> None:
    _, job = labeled
    with Store(job.store_path()) as st:
        index = load_index(job, st)
    ids = [r["id"] for r in index.page(ReviewQuery())["rows"]]
    assert ids[:3] == ["torn", "leaning", "odd"]
    assert ids[-1] == "sure"
    assert [r["id"] for r in index.page(ReviewQuery(label="negative"))["rows"]] == ["leaning"]
    assert {r["id"] for r in index.page(ReviewQuery(min_conf=0.9))["rows"]} == {"sure"}
    assert [r["id"] for r in index.page(ReviewQuery(text="TORN"))["rows"]] == ["torn"]
    page = index.page(ReviewQuery(offset=1, limit=2))
    assert (page["matched"], [r["id"] for r in page["rows"]]) == (5, ["leaning", "odd"])


def test_request_without_the_token_gets_403(labeled: tuple[TeacherServer, Job]) -> None:
    _, job = labeled
    server = ReviewProcess(job)
    try:
        good = {"X-Labeler-Token": server.token, "Content-Type": "application/json"}
        decision = json.dumps({"key": "k", "label": "positive"}).encode()
        for path in ("/", "/static/review.js", "/api/meta", "/api/rows", "/nothing"):
            assert http(server.base + path)[0] == 403, path
        assert http(server.base + "/?token=wrong")[0] == 403
        assert http(server.base + "/api/rows", headers={"X-Labeler-Token": "wrong"})[0] == 403
        # A cross-site form can send the cookie but neither the header nor a JSON type.
        cookie = {"Cookie": f"labeler_review_token={server.token}"}
        assert (
            http(
                server.base + "/api/label",
                method="POST",
                body=decision,
                headers={**cookie, "Content-Type": "application/json"},
            )[0]
            == 403
        )
        assert (
            http(
                server.base + "/api/label",
                method="POST",
                body=decision,
                headers={**good, "Content-Type": "text/plain"},
            )[0]
            == 415
        )
        assert (
            http(
                server.base + "/api/label",
                method="POST",
                body=decision,
                headers={**good, "Origin": "http://evil.example"},
            )[0]
            == 403
        )
        assert http(server.base + "/api/rows", headers=good)[0] == 200
        assert http(server.base + "/static/review.js", headers=cookie)[0] == 200
    finally:
        server.stop()
    with Store(job.store_path()) as st:
        assert st.execute_read(lambda db: db.execute("SELECT count(*) FROM human_labels").fetchone()[0]) == 0


def test_json_prints_one_line_and_quiet_drops_the_banner(labeled: tuple[TeacherServer, Job]) -> None:
    """`--json`: the URL's one JSON line (a script reads the token and port from it);
    `-q`: no banner on stderr. Without them: the bare URL, the banner on stderr."""
    _, job = labeled
    server = ReviewProcess(job, "--json", "-q")
    try:
        line = server.line
        assert line is not None and line["token"] == server.token
        assert line["url"] == f"http://127.0.0.1:{line['port']}/?token={server.token}"
        assert (line["rows"], line["reviewed"], line["missing"]) == (5, 0, 0)
        assert line["store"] == str(job.store_path())
        assert http(server.url)[0] == 200
    finally:
        server.stop()
    assert "labeler:" not in server.stderr  # only the stop notice, which answers the signal
    plain = ReviewProcess(job)
    plain.stop()
    assert plain.line is None and "reviewing 5 rows" in plain.stderr


def test_api_key_never_reaches_the_page(labeled: tuple[TeacherServer, Job]) -> None:
    _, job = labeled
    server = ReviewProcess(job)
    try:
        auth = {"X-Labeler-Token": server.token}
        seen = b"".join(http(server.base + p, headers=auth)[1] for p in ("/api/meta", "/api/rows?limit=200"))
        seen += http(server.url)[1]
        assert b"teacher-test" in seen
        assert SECRET.encode() not in seen
    finally:
        server.stop()


def test_binding_beyond_loopback_needs_a_flag(labeled: tuple[TeacherServer, Job]) -> None:
    _, job = labeled
    refused = subprocess.run(
        [
            *LABELER,
            "review",
            str(job.task),
            str(job.input),
            "--teacher",
            job.teacher,
            "--base-url",
            str(job.base_url),
            "--store",
            str(job.store),
            "--host",
            "0.0.0.0",
            "--no-browser",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--allow-remote" in errors[0], refused.stderr
    server = ReviewProcess(job, "--host", "0.0.0.0", "--allow-remote")
    try:
        assert server.base.startswith("http://0.0.0.0:")
    finally:
        server.stop()
    assert "warning: the review page listens on 0.0.0.0" in server.stderr


# -- in a headless browser --------------------------------------------------------------------


def test_most_uncertain_row_comes_first(labeled: tuple[TeacherServer, Job], browser: Browser) -> None:
    _, job = labeled
    server = ReviewProcess(job)
    try:
        open_page(browser, server.url)
        assert row_ids(browser)[:3] == ["torn", "leaning", "odd"]
        assert browser.js("return document.querySelector('#progress').textContent") == "0 of 5 reviewed"
        assert browser.js("return location.search") == ""  # the token left the address bar
    finally:
        server.stop()


def test_keyboard_decisions_survive_a_server_restart(
    labeled: tuple[TeacherServer, Job], browser: Browser
) -> None:
    _, job = labeled
    server = ReviewProcess(job)
    try:
        open_page(browser, server.url)
        browser.keys("Enter")  # accept the teacher's label on "torn" (positive)
        browser.wait("document.querySelector('#progress').textContent === '1 of 5 reviewed'")
        browser.keys("Down", "1")  # skip "leaning", correct "odd": positive -> negative
        browser.wait("document.querySelector('#progress').textContent === '2 of 5 reviewed'")
        browser.keys("u")  # undo the correction, then make it again
        browser.wait("document.querySelector('#progress').textContent === '1 of 5 reviewed'")
        browser.keys("1")
        browser.wait("document.querySelector('#progress').textContent === '2 of 5 reviewed'")
    finally:
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    with Store(job.store_path()) as st:
        index = load_index(job, st)
        decided = human_labels(st, [it.key for it in index.items])
    by_id = {d.row_id: d for d in decided.values()}
    assert {k: (d.label, d.teacher_label, d.reviewer) for k, d in by_id.items()} == {
        "torn": ("positive", "positive", "ada"),
        "odd": ("negative", "positive", "ada"),
    }
    server = ReviewProcess(job)
    try:
        open_page(browser, server.url, loads=1)
        assert browser.js("return document.querySelector('#progress').textContent") == "2 of 5 reviewed"
        humans = browser.js(
            "return [...document.querySelectorAll('article.row')].map("
            "a => [a.querySelector('.rowid').textContent, "
            "a.querySelector('.human').textContent])"
        )
        assert dict(humans)["odd"] == "human: negative"
        browser.click("article.row[data-index='2'] button.bar[data-label='positive']")  # mouse
        browser.wait(
            "document.querySelector('#progress').textContent === '2 of 5 reviewed' && "
            "document.querySelector('#status').textContent.startsWith('odd')"
        )
    finally:
        server.stop()
    with Store(job.store_path()) as st:
        assert {d.row_id: d.label for d in human_labels(st, list(decided)).values()} == {
            "torn": "positive",
            "odd": "positive",
        }


def test_script_in_a_row_is_inert(labeled: tuple[TeacherServer, Job], browser: Browser) -> None:
    _, job = labeled
    server = ReviewProcess(job)
    try:
        open_page(browser, server.url)
        texts = browser.js(
            "return [...document.querySelectorAll('article.row .text')].map(e => e.textContent)"
        )
        assert f"odd {SCRIPT_TEXT}" in texts
        time.sleep(0.3)  # give an injected onerror handler the time to fire
        assert browser.js("return window.__pwned === undefined")
        assert browser.js("return document.querySelectorAll('#rows script, #rows img').length") == 0
    finally:
        server.stop()


def test_recorded_label_replaces_the_previous_one(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as st:
        record_label(st, "b2:k", "positive", reviewer="ada", teacher_label="negative")
        record_label(st, "b2:k", "negative", reviewer="bo", teacher_label="negative")
        got = human_labels(st, ["b2:k", "b2:other"])
    assert list(got) == ["b2:k"]
    assert (got["b2:k"].label, got["b2:k"].reviewer) == ("negative", "bo")


@pytest.mark.parametrize("problem", ["no store", "port taken", "not a label task"])
def test_bad_start_is_one_clear_line(
    labeled: tuple[TeacherServer, Job], tmp_path: Path, problem: str
) -> None:
    _, job = labeled
    args = ["sentiment", str(job.input), "--store", str(job.store), "--port", "0"]
    holder = None
    if problem == "no store":
        args[3] = str(tmp_path / "typo.sqlite")
    elif problem == "port taken":
        holder = ReviewProcess(job)
        args[5] = holder.base.rsplit(":", 1)[1]
    else:
        args[0] = "extract"
    try:
        out = subprocess.run(
            [
                *LABELER,
                "review",
                *args,
                "--teacher",
                job.teacher,
                "--base-url",
                str(job.base_url),
                "--no-browser",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        if holder:
            holder.stop()
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert out.returncode == 1 and len(errors) == 1, out.stderr
    assert {
        "no store": "typo.sqlite: no such store",
        "port taken": "cannot listen on",
        "not a label task": "needs a label task",
    }[problem] in errors[0]
    assert not (tmp_path / "typo.sqlite").exists()


@pytest.mark.slow
def test_the_review_benchmark_runs_at_a_tiny_size(tmp_path: Path, browser: Browser) -> None:
    """Keeps benchmarks/review_page.py working; no speed is asserted."""
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/review_page.py",
            "--rows",
            "300",
            "--repeat",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| first paint |" in out.stdout and "| page change |" in out.stdout


def test_undecodable_credentials_get_403_not_500(labeled: tuple[TeacherServer, Job]) -> None:
    """Bytes that are not UTF-8 in the token header, the cookie or the query are a wrong
    token like any other: answered 403 by the token check, never a 500 before it."""
    import http.client

    _, job = labeled
    server = ReviewProcess(job)
    try:
        host = server.base.removeprefix("http://")
        cases = [
            ("GET", "/api/rows", {"X-Labeler-Token": "tok\xe9n"}),
            ("GET", "/", {"Cookie": "labeler_review_token=\xe9\xff"}),
            ("GET", "/?token=%ff%fe", {}),
            ("GET", "/api/rows", {"X-Labeler-Token": server.token + "\xe9"}),
            ("GET", "/api/rows", {"X-Labeler-Token": server.token, "Origin": "http://h\xe9st"}),
        ]
        for method, path, headers in cases:
            conn = http.client.HTTPConnection(host, timeout=10)
            conn.request(method, path, headers=headers)
            status = conn.getresponse().status
            conn.close()
            assert status == 403, (path, headers, status)
    finally:
        server.stop()
