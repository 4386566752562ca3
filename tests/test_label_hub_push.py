"""label(..., push_to_hub=REPO) pushes the export through the CLI's path (the card merged,
private unless public=True). The Hub cannot be reached here: a stub endpoint that refuses
every call proves the upload is attempted with the repo and visibility asked for, and the
export the error names as intact is there, with the card options applied."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import datasets

from labeler.testing import TeacherServer

from conftest import SAMPLES

SCRIPT = """
import json, sys
import labeler

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for public in (False, True):
    try:
        labeler.label(rows, "sentiment", "openai-compatible:teacher-test", base_url=sys.argv[2],
                      store=sys.argv[3], progress=False, push_to_hub="someone/reviews",
                      public=public, card_license="cc-by-4.0")
    except labeler.LabelerError as exc:
        print(str(exc))
    else:
        print("no error")
"""


class _RefusingHub(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def _deny(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        _RefusingHub.seen.append({"call": f"{self.command} {self.path}", "body": body})
        # No such repo yet (so the push goes on to create it), and no right to create it.
        missing = self.command == "GET" and self.path.startswith("/api/datasets/")
        answer = b'{"error": "Repository not found"}' if missing else b'{"error": "Invalid credentials"}'
        self.send_response(404 if missing else 401)
        if missing:
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_HEAD = _deny

    def log_message(self, *args: object) -> None:
        pass


def test_push_to_hub_from_label_reaches_the_hub_call(teacher_server: TeacherServer, tmp_path: Path) -> None:
    _RefusingHub.seen.clear()
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    env = dict(
        os.environ,
        HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}",
        HF_TOKEN="hf_test_token",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    try:
        res = subprocess.run(
            [
                sys.executable,
                "-c",
                SCRIPT,
                str(SAMPLES / "reviews.jsonl"),
                teacher_server.url + "/v1",
                str(tmp_path / "s.sqlite"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        hub.shutdown()
    said = res.stdout.splitlines()
    kept = [
        Path(m.group(1)) for m in (re.search(r"the export in (\S+) is intact", line) for line in said) if m
    ]
    try:
        assert res.returncode == 0 and len(said) == 2, res.stdout + res.stderr
        for line in said:
            assert "push to the Hub repo 'someone/reviews' failed" in line and "intact" in line, line
        # The repo is asked for as private by default, public only when asked.
        created = [s["body"] for s in _RefusingHub.seen if s["call"].startswith("POST /api/repos/create")]
        assert len(created) == 2, _RefusingHub.seen
        assert [_private(body) for body in created] == [True, False], created
        # The export each error names is kept, whole, with the card's licence.
        assert len(kept) == 2, said
        for folder in kept:
            assert len(datasets.load_from_disk(str(folder))) == 24
            assert "license: cc-by-4.0" in (folder / "README.md").read_text("utf-8")
    finally:
        for folder in kept:
            shutil.rmtree(folder.parent, ignore_errors=True)


def _private(body: dict[str, Any]) -> bool:
    """The visibility a create call asks for, in either of huggingface_hub's spellings."""
    if "private" in body:
        return bool(body["private"])
    return body.get("visibility") == "private"
