"""The fleet's one store on a Ray cluster of two nodes on one machine.

`ray.cluster_utils.Cluster` starts two real nodes (a raylet each, a temp dir each, three
logical CPUs each); the driver runs on the first, where the store actor owns the store file, and the
labeling actors spread over both. Nothing but that file holds answers or claims: no path
is shared between the nodes, so what a test sees paid once was paid once fleet-wide. The
teacher is labeler's test server over real HTTP, and its request log is the record of
what was paid for.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ray_helpers import (
    LABELS,
    TEACHER,
    answers_per_prompt,
    count_or_error,
    items,
    owner_pids,
    run_cli,
    same_export,
    stored_keys,
    wait_for,
    write_jsonl,
)

from labeler.cli import main
from labeler.testing import ServerConfig, TeacherServer

from conftest import chat_requests

ray = pytest.importorskip("ray", reason="labeler.ray needs the ray extra: pip install 'labeler-distill[ray]'")
import labeler.ray as labeler_ray  # noqa: E402
from labeler.ray.fleet_store import actor_name  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # two raylets take seconds to start on a small machine
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors:UserWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    # Short roots: a node's sockets live in its temp dir, and socket paths are short.
    roots = [tempfile.mkdtemp(prefix="lrn") for _ in range(2)]
    fleet = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 3, "temp_dir": roots[0], "include_dashboard": False}
    )
    fleet.add_node(num_cpus=3, temp_dir=roots[1])
    ray.init(address=fleet.address, logging_level="WARNING")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield fleet
    ray.shutdown()
    fleet.shutdown()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def fleet_report(store: Path) -> dict[str, Any]:
    """What the store actor served: calls by kind, owners that claimed, by node."""
    actor = ray.get_actor(actor_name(str(store.resolve())))
    return ray.get(actor.report.remote())


def stores_under(root: Path) -> list[Path]:
    return sorted(root.rglob("*.sqlite"))


def test_the_fleet_exports_what_one_process_does_and_a_rerun_on_any_partitioning_is_free(
    tmp_path: Path,
) -> None:
    rows = items(600)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    fleet_store, local_store = tmp_path / "fleet.sqlite", tmp_path / "local.sqlite"
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        base = ["-t", TEACHER, "--base-url", srv.url + "/v1", "-q"]
        run_cli(
            "run",
            "sentiment",
            str(data),
            *base,
            "--store",
            str(fleet_store),
            "--engine",
            "ray",
            "--workers",
            "2",
            "--out",
            str(tmp_path / "fleet"),
        )
        assert chat_requests(srv) == 600
        # One process, a store of its own: the same dataset, card and counts.
        run_cli(
            "run",
            "sentiment",
            str(data),
            *base,
            "--store",
            str(local_store),
            "--out",
            str(tmp_path / "local"),
        )
        assert chat_requests(srv) == 1200
        same_export(tmp_path / "fleet", tmp_path / "local")
        # Another number of actors and batch size, through the library: all cached.
        again = labeler_ray.label(
            ray.data.from_items(rows),
            "sentiment",
            TEACHER,
            base_url=srv.url + "/v1",
            api_key="k",
            store=fleet_store,
            workers=3,
            batch_size=70,
            num_cpus=0.25,
        ).take_all()
        assert len(again) == 600
        assert chat_requests(srv) == 1200, "a rerun on another partitioning paid again"
    # The fleet kept one store, the driver's; no node made one of its own.
    assert stores_under(tmp_path) == [fleet_store, local_store]
    assert stored_keys(fleet_store) == 600


def test_duplicate_rows_on_two_nodes_are_paid_once(tmp_path: Path) -> None:
    """Every row twice, the copies in different batches: whichever nodes label them at
    the same moment, each prompt is paid once (claims in the one store). An actor takes
    two CPUs of a node's three, so the two actors run on two nodes."""
    rows = items(60)
    twice = rows + [{**r, "id": r["id"] + 1000} for r in rows]
    store = tmp_path / "s.sqlite"
    config = ServerConfig(labels=LABELS, latency_s=0.2, latency_jitter_s=0.05)
    with TeacherServer(config) as srv:
        out = labeler_ray.label(
            ray.data.from_items(twice),
            "sentiment",
            TEACHER,
            base_url=srv.url + "/v1",
            api_key="k",
            store=store,
            workers=2,
            num_cpus=2,
            batch_size=15,
            concurrency=4,
        ).take_all()
        per_prompt = answers_per_prompt(srv)
    assert len(out) == 120
    assert len(per_prompt) == 60 and set(per_prompt.values()) == {1}, per_prompt.most_common(3)
    report = fleet_report(store)
    assert len(report["owners_by_node"]) == 2, report
    # Batched: a chunk is one lookup and one claim call, not one per row.
    calls = report["calls"]
    assert calls["look_up"] + calls.get("claim", 0) < 120, calls


def open_files(pid: int) -> set[Path]:
    fds = Path(f"/proc/{pid}/fd")
    found: set[Path] = set()
    for fd in fds.iterdir() if fds.exists() else ():
        try:
            found.add(Path(os.readlink(fd)))
        except OSError:
            continue
    return found


ROWS = 300
CONCURRENCY = 6


def test_an_actor_killed_with_sigkill_loses_at_most_its_in_flight_requests(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    config = ServerConfig(labels=LABELS, latency_s=0.05, latency_jitter_s=0.05)
    with TeacherServer(config) as srv:

        def stage() -> Any:
            return labeler_ray.label(
                ray.data.from_items(items(ROWS)),
                "sentiment",
                TEACHER,
                base_url=srv.url + "/v1",
                api_key="k",
                store=store,
                concurrency=CONCURRENCY,
                batch_size=30,
            )

        outcome: list[Any] = []
        runner = threading.Thread(target=lambda: outcome.append(count_or_error(stage())))
        runner.start()
        seen: set[int] = set()

        def busy() -> bool:
            if len(answers_per_prompt(srv)) >= 60:
                seen.update(owner_pids(store) - {os.getpid()})
            return bool(seen)

        assert wait_for(busy, 180)
        victim = min(seen)
        # A labeling actor in the middle of its work holds no handle on the store file:
        # only the store actor opens it, so no node needs a path to it.
        assert store.resolve() not in open_files(victim)
        os.kill(victim, signal.SIGKILL)  # an actor holding claims: requests in flight
        killed_at = time.monotonic()
        runner.join(240)
        assert not runner.is_alive()
        print(f"the run with the killed actor ended with: {outcome[0]!r:.200}")
        assert len(stage().take_all()) == ROWS  # whatever Ray did, a rerun completes
        answered = [r for r in srv.log if r.path.endswith("/chat/completions") and r.status == 200]
        sent = chat_requests(srv)
        assert len(stage().take_all()) == ROWS and chat_requests(srv) == sent  # nothing new
    per_prompt = answers_per_prompt(srv)
    assert len(per_prompt) == ROWS and stored_keys(store) == ROWS
    repaid = {p for p, n in per_prompt.items() if n > 1}
    # Exact accounting from the server's log: every answer is one prompt's first, or the
    # second of a prompt whose first was asked before the kill and never committed (one
    # of the killed actor's places: at most CONCURRENCY).
    assert len(answered) == ROWS + len(repaid)
    assert max(per_prompt.values()) <= 2
    firsts = {}
    for r in answered:
        firsts.setdefault(r.prompt, r.received)
    assert all(firsts[p] < killed_at for p in repaid)
    print(f"{len(repaid)} prompts paid twice after the kill (the actor had {CONCURRENCY} places)")
    assert len(repaid) <= CONCURRENCY


def test_a_store_path_the_driver_cannot_write_is_one_line_and_nothing_is_sent(tmp_path: Path) -> None:
    from labeler.errors import StoreError

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        with pytest.raises(StoreError, match=r"not-a-folder/s\.sqlite: cannot create the store"):
            labeler_ray.label(
                ray.data.from_items(items(5)),
                "sentiment",
                TEACHER,
                base_url=srv.url + "/v1",
                api_key="k",
                store=blocker / "s.sqlite",
            )
        data = write_jsonl(tmp_path / "in.jsonl", items(5))
        res = CliRunner().invoke(
            main,
            [
                "run",
                "sentiment",
                str(data),
                "-t",
                TEACHER,
                "--base-url",
                srv.url + "/v1",
                "-q",
                "--store",
                str(blocker / "s.sqlite"),
                "--engine",
                "ray",
            ],
        )
        assert chat_requests(srv) == 0
    assert res.exit_code == 1
    errors = res.output.strip().splitlines()
    assert len(errors) == 1 and "cannot create the store" in errors[0], res.output


def test_a_worker_that_cannot_reach_the_teacher_is_one_line_and_nothing_is_paid_twice(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    rows = items(40)
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        labeler_ray.label(
            ray.data.from_items(rows[:20]),
            "sentiment",
            TEACHER,
            base_url=srv.url + "/v1",
            api_key="k",
            store=store,
        ).take_all()
        assert chat_requests(srv) == 20
        data = write_jsonl(tmp_path / "in.jsonl", rows)
        res = CliRunner().invoke(
            main,
            [
                "run",
                "sentiment",
                str(data),
                "-t",
                TEACHER,
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--store",
                str(store),
                "-q",
                "--engine",
                "ray",
                "--retry-initial-wait",
                "0.01",
            ],
        )
        errors = [line for line in res.output.splitlines() if line.startswith("labeler: error")]
        assert res.exit_code == 1
        assert len(errors) == 1 and "cannot reach the teacher at http://127.0.0.1:9/v1" in errors[0]
        # The 20 answered rows stay answered; the reachable rerun pays only the other 20.
        run_cli(
            "run",
            "sentiment",
            str(data),
            "-t",
            TEACHER,
            "--base-url",
            srv.url + "/v1",
            "--store",
            str(store),
            "-q",
            "--engine",
            "ray",
        )
        assert chat_requests(srv) == 40
        assert set(answers_per_prompt(srv).values()) == {1}


def test_an_unreachable_ray_address_is_one_line(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", items(3))
    with TeacherServer(ServerConfig(labels=LABELS)) as srv:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "labeler.cli",
                "run",
                "sentiment",
                str(data),
                "-t",
                TEACHER,
                "--base-url",
                srv.url + "/v1",
                "--store",
                str(tmp_path / "s.sqlite"),
                "-q",
                "--engine",
                "ray",
                "--ray-address",
                "127.0.0.1:9",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert chat_requests(srv) == 0
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("labeler: error: --ray-address 127.0.0.1:9: no Ray cluster"), lines
    assert not (tmp_path / "s.sqlite").exists()


def test_a_node_removed_mid_run_loses_at_most_its_in_flight_requests(cluster: Any, tmp_path: Path) -> None:
    """A third node joins, one actor on each node (an actor takes two of a node's three
    CPUs); the third node is removed mid-run with its actor. Its batch is retried on the
    others, its claims are taken over, and at most its places are paid twice."""
    root = tempfile.mkdtemp(prefix="lrn")
    extra = cluster.add_node(num_cpus=3, temp_dir=root)
    store = tmp_path / "s.sqlite"
    config = ServerConfig(labels=LABELS, latency_s=0.05, latency_jitter_s=0.05)
    try:
        with TeacherServer(config) as srv:

            def stage() -> Any:
                return labeler_ray.label(
                    ray.data.from_items(items(ROWS)),
                    "sentiment",
                    TEACHER,
                    base_url=srv.url + "/v1",
                    api_key="k",
                    store=store,
                    workers=3,
                    num_cpus=2,
                    concurrency=CONCURRENCY,
                    batch_size=30,
                )

            outcome: list[Any] = []
            runner = threading.Thread(target=lambda: outcome.append(count_or_error(stage())))
            runner.start()
            assert wait_for(lambda: len(answers_per_prompt(srv)) >= 60, 180)
            cluster.remove_node(extra, allow_graceful=False)
            runner.join(240)
            assert not runner.is_alive()
            print(f"the run that lost a node ended with: {outcome[0]!r:.200}")
            assert len(stage().take_all()) == ROWS
            answered = [r for r in srv.log if r.path.endswith("/chat/completions") and r.status == 200]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_prompt = answers_per_prompt(srv)
    assert len(per_prompt) == ROWS and stored_keys(store) == ROWS
    repaid = {p for p, n in per_prompt.items() if n > 1}
    assert len(answered) == ROWS + len(repaid) and max(per_prompt.values()) <= 2
    # The node's worker processes outlive its raylet by a moment (they notice it is gone),
    # so a repaid prompt may have been asked just after the removal: its actor's places
    # still bound them.
    print(f"{len(repaid)} prompts paid twice after the node went ({CONCURRENCY} places)")
    assert len(repaid) <= CONCURRENCY
