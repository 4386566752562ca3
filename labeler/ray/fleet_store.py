"""One store for a whole Ray fleet: a store actor on the driver's node owns the SQLite file.

    node 1: actor ─┐                                   ┌─ lookups, claims, commits
    node 2: actor ─┼─► FleetStore actor (driver's node) ┤   one call per chunk each
    node N: actor ─┘        owns labels.sqlite          └─ the one-machine Store inside

Why an actor and not a file each node opens: SQLite's locks and write-ahead log need
one host's shared memory, so a file on a network filesystem is unsafe, and a file per
node neither shares the cache nor the claims across machines. A store actor needs
nothing besides Ray (no database server, no shared filesystem): every labeling actor
reaches it through Ray's own calls, it runs the one-machine `Store` and `Claims`
unchanged, and the file it owns is the driver's, where `labeler export` and
`labeler stats` read it afterwards.

The promises of one machine hold for the fleet because every one of them is kept in
that one file: an answer is committed there (durably) before the call that carried it
returns, so before its batch is handed on; a key any actor claimed is refused to the
others until its answer lands or its lease runs out; a rerun on any partitioning looks
every key up in the same place.

Throughput: a chunk of rows costs one lookup call (answers, their ages and the misses'
failures together) and one claim call; a group of answers costs one commit call. The
actor serves many callers at once on threads (the SQLite handle serialises the writes,
as it does for one process).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import ray

from labeler.answer_checks import UNUSABLE
from labeler.claims import Claims
from labeler.completion import Completion
from labeler.errors import LabelerError, StoreError
from labeler.human import HumanLabel, any_human_labels, human_labels
from labeler.owner import Owner
from labeler.store import Failure, Store

T = TypeVar("T")

# A fleet owner on another machine cannot be checked for life: its claims end with their
# lease. Short enough that a batch Ray retries after a node died waits little; renewed a
# third of it apart, so a live actor never loses one.
FLEET_LEASE_S = 20.0
# Calls the store actor serves at once (reads overlap; writes queue on the SQLite lock).
SERVER_THREADS = 16


class FleetStore:
    """The store actor: the one-machine `Store` and `Claims`, served to the fleet.

    Each method takes and returns plain values (keys, completions, failures): one Ray
    call carries a whole chunk.
    """

    def __init__(self, path: str) -> None:
        self.store = Store(path)
        self.calls: dict[str, int] = {}
        self.owners: dict[str, set[str]] = {}  # node id -> owners that claimed from it
        self._count_lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._count_lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def ping(self) -> str:
        """The file it owns (a caller's check that the actor opened it)."""
        return str(self.store.path)

    def look_up(
        self, keys: Sequence[str], completions: bool, ages: bool, failures: bool
    ) -> tuple[dict[str, Completion | None], dict[str, float], dict[str, Failure]]:
        """Everything a planner asks of a chunk, in one call: the stored answers (or only
        that they exist), their ages where asked, and the stored failures of the misses."""
        self._count("look_up")
        store = self.store
        unusable: dict[str, str] = {}
        found: dict[str, Completion | None] = (
            dict(store.get_many(keys, unusable=unusable)) if completions else dict.fromkeys(store.known(keys))
        )
        created = store.created_at(list(found)) if ages and found else {}
        misses = [k for k in keys if k not in found]
        failed = store.failures_for(misses) if failures and misses else {}
        # A stored answer the store cannot use is a final failure (labeler/plan.py).
        failed.update({k: Failure(k, UNUSABLE, why, None, 0) for k, why in unusable.items()})
        return found, created, failed

    def created_at(self, keys: Sequence[str]) -> dict[str, float]:
        self._count("created_at")
        return self.store.created_at(keys)

    def failures_for(self, keys: Sequence[str]) -> dict[str, Failure]:
        self._count("failures_for")
        return self.store.failures_for(keys)

    def put_many(self, items: list[tuple[str, Completion, float | None]]) -> None:
        self._count("put_many")
        self.store.put_many(items)

    def record_failures(
        self, items: list[tuple[str, str, str, int | None, int]], bodies: Mapping[str, bytes] | None = None
    ) -> None:
        self._count("record_failures")
        self.store.record_failures(items, bodies=bodies)

    def execute_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self.store.execute_read(fn)

    def execute_write(self, fn: Callable[[sqlite3.Connection], T], durable: bool = True) -> T:
        return self.store.execute_write(fn, durable=durable)

    def start_run(self, task: str, teacher: str) -> int:
        return self.store.start_run(task, teacher)

    def finish_run(self, run_id: int, outcome: str, summary: dict[str, Any]) -> None:
        self.store.finish_run(run_id, outcome, summary)

    def claim(
        self, owner: Owner, node: str, lease_s: float, keys: Sequence[str], fresh_since: float | None
    ) -> set[str]:
        self._count("claim")
        with self._count_lock:
            self.owners.setdefault(node, set()).add(owner.id)
        return Claims(self.store, owner, lease_s).claim(keys, fresh_since=fresh_since)

    def release(self, owner: Owner, keys: Sequence[str]) -> None:
        Claims(self.store, owner).release(keys)

    def release_all(self, owner: Owner) -> None:
        Claims(self.store, owner).release_all()

    def renew(self, owner: Owner, lease_s: float) -> None:
        Claims(self.store, owner, lease_s).renew()

    def human_labels(self, keys: Sequence[str]) -> dict[str, HumanLabel]:
        """The review decisions for these keys ({} while nobody reviewed anything)."""
        if not any_human_labels(self.store):
            return {}
        return human_labels(self.store, keys)

    def report(self) -> dict[str, Any]:
        """Calls served by kind, and which nodes claimed (for tests and the benchmark)."""
        with self._count_lock:
            return {"calls": dict(self.calls), "owners_by_node": {n: len(o) for n, o in self.owners.items()}}


def start_fleet_store(path: str) -> Any:
    """The store actor for the store at `path`, on the driver's node (where the path is
    the driver's), started and checked: a store it cannot open is this call's StoreError.

    The file is opened here first, in the driver, so that a path it cannot write is one
    line before any actor starts (and the schema is migrated once). One actor per store
    file serves every stage of the job, and lives as long as the job: a stage run after
    another finds the answers and claims where the first left them."""
    Store(path).close()
    job = ray.get_runtime_context().get_job_id()
    actor = _started.get((job, path))
    if actor is not None:
        try:
            call(actor.ping)
            return actor
        except StoreError:  # it died with its node: a new one takes over the file
            del _started[job, path]
    here = ray.get_runtime_context().get_node_id()
    actor = (
        ray.remote(FleetStore)
        .options(
            name=actor_name(path),
            num_cpus=0,
            max_concurrency=SERVER_THREADS,
            max_restarts=0,
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                here, soft=False
            ),
        )
        .remote(path)
    )
    call(actor.ping)
    _started[job, path] = actor
    return actor


# The store actors this driver started, by (Ray job, store path): kept for the job's life.
_started: dict[tuple[str, str], Any] = {}


def actor_name(path: str) -> str:
    """The store actor's name in the job: one actor per store file, however many
    stages of one driver label into it (`ray.get_actor(actor_name(path))` finds it)."""
    return f"labeler-store:{path}"


def call(method: Any, *args: Any) -> Any:
    """One call to the store actor, its labeler error raised as itself (a full disk is
    a StoreError naming the file, not Ray's wrapper), its loss told in one line."""
    try:
        return ray.get(method.remote(*args))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, LabelerError):
            raise cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise StoreError(
            f"the fleet's store actor is gone (its node or the driver ended): {str(exc).splitlines()[0]}"
        ) from None


class RemoteStore:
    """`StoreAccess` through the store actor (labeler/store_access.py), for a labeling
    actor anywhere in the cluster.

    A planner asks for a chunk's answers, then their ages, then the misses' failures:
    the first question fetches all three in one call and the next two are answered from
    it (per thread: each planner plans in a worker thread of its own)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self._last = threading.local()

    def _look_up(self, keys: Sequence[str], completions: bool) -> dict[str, Completion | None]:
        found: dict[str, Completion | None]
        found, created, failed = call(self.actor.look_up, list(keys), completions, True, True)
        self._last.created, self._last.failed = created, failed
        self._last.keys = set(keys)
        return found

    def get_many(
        self, keys: Sequence[str], *, unusable: dict[str, str] | None = None
    ) -> dict[str, Completion]:
        found = self._look_up(keys, True)
        if unusable is not None:
            unusable.update({k: f.message for k, f in self._last.failed.items() if f.reason == UNUSABLE})
        return found  # type: ignore[return-value]

    def known(self, keys: Sequence[str]) -> set[str]:
        return set(self._look_up(keys, False))

    def _prefetched(self, keys: Sequence[str]) -> bool:
        asked = getattr(self._last, "keys", None)
        return asked is not None and asked.issuperset(keys)

    def created_at(self, keys: Sequence[str]) -> dict[str, float]:
        if self._prefetched(keys):
            wanted = set(keys)
            return {k: v for k, v in self._last.created.items() if k in wanted}
        return call(self.actor.created_at, list(keys))  # type: ignore[no-any-return]

    def failures_for(self, keys: Sequence[str]) -> dict[str, Failure]:
        if self._prefetched(keys):
            wanted = set(keys)
            return {k: f for k, f in self._last.failed.items() if k in wanted}
        return call(self.actor.failures_for, list(keys))  # type: ignore[no-any-return]

    def put_many(self, items: Iterable[tuple[str, Completion, float | None]]) -> None:
        rows = list(items)
        if rows:
            call(self.actor.put_many, rows)

    def record_failures(
        self,
        items: Iterable[tuple[str, str, str, int | None, int]],
        *,
        bodies: Mapping[str, bytes] | None = None,
    ) -> None:
        rows = list(items)
        if rows:
            call(self.actor.record_failures, rows, dict(bodies) if bodies else None)

    def execute_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` runs in the store actor, beside the file (Ray pickles it there)."""
        result: T = call(self.actor.execute_read, fn)
        return result

    def execute_write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        result: T = call(self.actor.execute_write, fn, durable)
        return result

    def start_run(self, task: str, teacher: str) -> int:
        return call(self.actor.start_run, task, teacher)  # type: ignore[no-any-return]

    def finish_run(self, run_id: int, outcome: str, summary: dict[str, Any]) -> None:
        call(self.actor.finish_run, run_id, outcome, summary)

    def human_labels(self, keys: Sequence[str]) -> dict[str, HumanLabel]:
        return call(self.actor.human_labels, list(keys))  # type: ignore[no-any-return]

    def close(self) -> None:
        """The store actor's file stays open for the rest of the fleet."""


class RemoteClaims:
    """`ClaimsAccess` through the store actor: one owner's claims in the fleet's store.

    The owner's id names its Ray node too, so that the store actor can tell which nodes
    claimed (a report); liveness across machines is the lease's business."""

    def __init__(self, actor: Any, lease_s: float = FLEET_LEASE_S) -> None:
        self.actor = actor
        self.lease_s = lease_s
        self.node = ray.get_runtime_context().get_node_id()
        self.owner = Owner.current()

    def claim(self, keys: Sequence[str], *, fresh_since: float | None = None) -> set[str]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        return call(  # type: ignore[no-any-return]
            self.actor.claim,
            self.owner,
            self.node,
            self.lease_s,
            unique,
            fresh_since,
        )

    def release(self, keys: Sequence[str]) -> None:
        if keys:
            call(self.actor.release, self.owner, list(keys))

    def release_all(self) -> None:
        call(self.actor.release_all, self.owner)

    def renew(self) -> None:
        call(self.actor.renew, self.owner, self.lease_s)


__all__ = [
    "FLEET_LEASE_S",
    "FleetStore",
    "RemoteClaims",
    "RemoteStore",
    "actor_name",
    "call",
    "start_fleet_store",
]
