"""Teacher setups: who answers a job's rows, and how their answers become one.

    Job ──setup_for──► Single | Cascade | Ensemble ──► teachers, planner, name, strategy
                                                           │
                   run_job, export_job, review, eval ◄─────┘  (they ask; none switches)

A setup is built once, from a `Job`'s flags (`setup_for`) or directly by a library user
(``Cascade("openai:gpt-4o-mini", "openai:gpt-4o", escalate_below=0.9)``), and answers
every question that differs between setups: which teachers it names, the planner that
reads their stored answers back as one item per row (the export's, the review page's),
the name a person reads, and the strategy that labels. Every strategy satisfies
`Strategy` (run, stop, aclose), so the job driver runs any of them the same way. A new
setup is one class here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from labeler.batch.base import BatchClient
from labeler.batch.clients import make_client
from labeler.batch.runner import BatchRunner
from labeler.cascade import CascadePlanner, CascadeRun, CascadeSpec, Gate, MultiPlanner, Stage
from labeler.engine import Labeler
from labeler.ensemble import EnsemblePlanner, EnsembleRun, EnsembleSpec
from labeler.errors import ConfigError
from labeler.inputs import Reject, RejectsWriter, Row
from labeler.plan import Planner
from labeler.settings import LabelSettings
from labeler.store import Store
from labeler.summary import RunSummary
from labeler.task import Task
from labeler.teachers import parse_spec, provider
from labeler.teachers.base import Teacher

Rows = Callable[[], Iterable[Row | Reject | Mapping[str, Any]]]  # a fresh pass per call
MakeTeacher = Callable[[Stage], Teacher]  # the job's key and options, the stage's endpoint
Warn = Callable[[str], None]


class Strategy(Protocol):
    """How a setup labels: `run` labels every row `rows()` gives (calling it once per pass
    it needs), `stop` ends the run gracefully (SIGINT), `aclose` frees what it opened."""

    async def run(self, rows: Rows) -> RunSummary: ...

    def stop(self) -> None: ...

    def stop_notice(self) -> str:
        """What `stop` waits for and how long, told to whoever pressed Ctrl-C."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Wiring:
    """What one run gives a setup's strategy: the task, the store, how to label, where
    rows that cannot be labeled and warnings go, and how to reach a batch API."""

    task: Task
    store: Store
    settings: LabelSettings
    rejects: RejectsWriter | None = None
    on_warning: Warn | None = None
    total: Callable[[], int | None] = lambda: None  # rows in the input, for the progress bar
    batch: bool = False  # through the provider's batch API, where it has one
    api_key: str | None = None
    client: BatchClient | None = None  # the caller's batch client (a single teacher's)
    run_tag: Callable[[Teacher], str] | None = None  # names this run's batches
    stack: contextlib.AsyncExitStack | None = None  # closes the batch clients made here
    gate: Gate | None = None  # --verify: a cascade passes on a row whose answers all fail

    def live(
        self,
        teacher: Teacher,
        *,
        first: bool = True,
        settings: LabelSettings | None = None,
        on_warning: Warn | None = None,
    ) -> Labeler:
        """A live pass; only the `first` of several tells bad rows and counts the input."""
        return Labeler(
            self.task,
            teacher,
            store=self.store,
            settings=settings or self.settings,
            rejects=self.rejects if first else None,
            total=self.total() if first else None,
            on_warning=on_warning or self.on_warning,
            close_teacher=False,
        )

    def batched(
        self, teacher: Teacher, *, first: bool = True, settings: LabelSettings | None = None
    ) -> BatchRunner:
        """A pass through the provider's batch API (a client made here is closed here)."""
        client = self.client
        if client is None:
            client = make_client(teacher, self.api_key)
            if self.stack is not None:
                self.stack.push_async_callback(client.aclose)
        return BatchRunner(
            self.task,
            teacher,
            client,
            self.store,
            settings=settings or self.settings,
            rejects=self.rejects if first else None,
            run_tag=self.run_tag(teacher) if self.run_tag else None,
            on_warning=self.on_warning,
        )


class Setup(ABC):
    """Who answers a job's rows; see the module doc."""

    @property
    @abstractmethod
    def teachers(self) -> tuple[Stage, ...]:
        """Each teacher as `PROVIDER:MODEL` and its own endpoint, in the setup's order."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Who answers, as the review page's header names it."""

    @abstractmethod
    def planner(
        self, task: Task, teachers: Sequence[Teacher], store: Store, gate: Gate | None = None
    ) -> Planner | MultiPlanner | None:
        """Reads the stored answers back, one item per row: the export's and review's
        (None: the export's own `Planner` of the one teacher). `gate`: the job's
        `--verify`, where the setup's choice of answer depends on it (a cascade's)."""

    @abstractmethod
    def strategy(self, wiring: Wiring, teachers: Sequence[Teacher]) -> Strategy:
        """The strategy that labels with `teachers` (made by `make_teachers`)."""

    def make_teachers(self, make: MakeTeacher) -> list[Teacher]:
        return [make(stage) for stage in self.teachers]

    def answering(self, teachers: Sequence[Teacher]) -> Mapping[str, Any]:
        """The identity an export is made for (its card, its calibration)."""
        return teachers[-1].identity

    def check(self, task: Task) -> None:
        """Refuse a task this setup cannot label, before any teacher is made."""
        return None  # most setups label any task


class _OnePass:
    """A single pass (a `Labeler` or a `BatchRunner`) as a `Strategy`: it reads the rows
    once, and a live one starts its teacher (a local one runs a server) first."""

    def __init__(self, runner: Labeler | BatchRunner, start: Teacher | None) -> None:
        self.runner = runner
        self.start = start

    async def run(self, rows: Rows) -> RunSummary:
        if self.start is not None:
            await self.start.start()
        return await self.runner.run(rows())

    def stop(self) -> None:
        self.runner.stop()

    def stop_notice(self) -> str:
        return self.runner.stop_notice()

    async def aclose(self) -> None:
        await self.runner.aclose()


class Single(Setup):
    """One teacher answers every row: live, or through its provider's batch API."""

    def __init__(self, teacher: str, base_url: str | None = None) -> None:
        self.stage = Stage(teacher, base_url)

    @property
    def teachers(self) -> tuple[Stage, ...]:
        return (self.stage,)

    @property
    def name(self) -> str:
        return self.stage.teacher

    def planner(
        self, task: Task, teachers: Sequence[Teacher], store: Store, gate: Gate | None = None
    ) -> None:
        return None  # the export's own `Planner` of the one teacher

    def strategy(self, wiring: Wiring, teachers: Sequence[Teacher]) -> Strategy:
        (teacher,) = teachers
        if wiring.batch:
            return _OnePass(wiring.batched(teacher), None)
        return _OnePass(wiring.live(teacher), teacher)


class Cascade(Setup):
    """The cheap teacher answers every row, a dearer one only the doubtful (labeler/
    cascade.py): ``Cascade("a:m1", "b:m2", escalate_below=0.9)``; ``"human"`` last sends
    the last teacher's doubtful rows to the review page."""

    def __init__(
        self,
        *teachers: str,
        escalate_below: str | float | Sequence[float] | None,
        escalate_on: str | None = None,
    ) -> None:
        self.spec = CascadeSpec.parse(list(teachers), escalate_below, escalate_on)

    @classmethod
    def of(cls, spec: CascadeSpec) -> Cascade:
        setup = cls.__new__(cls)
        setup.spec = spec
        return setup

    @property
    def teachers(self) -> tuple[Stage, ...]:
        return self.spec.stages

    @property
    def name(self) -> str:
        return (
            "cascade: "
            + " → ".join(st.teacher for st in self.spec.stages)
            + (" → human" if self.spec.human else "")
        )

    def planner(
        self, task: Task, teachers: Sequence[Teacher], store: Store, gate: Gate | None = None
    ) -> CascadePlanner:
        return CascadePlanner(task, self.spec, [t.identity for t in teachers], store, gate)

    def strategy(self, wiring: Wiring, teachers: Sequence[Teacher]) -> Strategy:
        """One pass per stage; with `batch`, a stage whose provider has a batch API goes
        through it, the others (a local teacher) label live."""
        warn = wiring.on_warning or _stderr
        last = len(teachers) - 1

        def make_pass(stage: int, teacher: Teacher, budget: float | None) -> Labeler | BatchRunner:
            settings = dataclasses.replace(wiring.settings, budget_usd=budget)
            if wiring.batch and provider(parse_spec(self.spec.stages[stage].teacher)[0]).batch:
                return wiring.batched(teacher, first=stage == 0, settings=settings)
            # a failure before the last stage is escalated, not lost: it says so
            told = warn if stage == last else _passed_on(warn, stage + 2)
            return wiring.live(teacher, first=stage == 0, settings=settings, on_warning=told)

        return CascadeRun(
            wiring.task,
            self.spec,
            teachers,
            make_pass,
            budget_usd=wiring.settings.budget_usd,
            store=wiring.store,
            gate=wiring.gate,
        )


class Ensemble(Setup):
    """Every member answers every row at once; the soft label is their mixture
    (labeler/ensemble.py): ``Ensemble("a:m1", "b:m2=2", combine="product")``."""

    def __init__(self, *teachers: str, combine: str | None = None) -> None:
        self.spec = EnsembleSpec.parse(list(teachers), combine)

    @classmethod
    def of(cls, spec: EnsembleSpec) -> Ensemble:
        setup = cls.__new__(cls)
        setup.spec = spec
        return setup

    @property
    def teachers(self) -> tuple[Stage, ...]:
        return self.spec.stages

    @property
    def name(self) -> str:
        return "ensemble: " + ", ".join(st.teacher for st in self.spec.stages)

    def check(self, task: Task) -> None:
        if task.label_space is None:
            raise ConfigError(f"--ensemble needs a label task; {task.path} is '{task.output_kind}'")

    def planner(
        self, task: Task, teachers: Sequence[Teacher], store: Store, gate: Gate | None = None
    ) -> EnsemblePlanner:
        return EnsemblePlanner(task, self.spec, [t.identity for t in teachers], store)

    def answering(self, teachers: Sequence[Teacher]) -> Mapping[str, Any]:
        return teachers[0].identity

    def strategy(self, wiring: Wiring, teachers: Sequence[Teacher]) -> Strategy:
        """Every member labels live with its own limiter: one member's rate limit never
        slows another; only the first shows progress and tells bad rows."""
        if wiring.batch:
            raise ConfigError("--ensemble labels live; --batch is not supported with it yet")

        def make_pass(member: int, teacher: Teacher) -> Labeler:
            if member == 0:
                return wiring.live(teacher)
            quiet = dataclasses.replace(wiring.settings, progress=False)
            return wiring.live(teacher, first=False, settings=quiet)

        return EnsembleRun(self.spec, teachers, make_pass)


class SetupFlags(Protocol):
    """What `setup_for` reads of a `Job` (labeler/job.py): its flags naming teachers."""

    teacher: str
    cascade: str | None
    escalate_below: str | None
    escalate_on: str
    ensemble: str | None
    ensemble_combine: str
    setup: Setup | None


def setup_for(job: SetupFlags) -> Setup:
    """The job's own setup, else the one its flags describe: `cascade`, else `ensemble`,
    else its teacher."""
    if job.setup is not None:
        return job.setup
    if job.cascade is not None:
        return Cascade.of(CascadeSpec.parse(job.cascade, job.escalate_below, job.escalate_on))
    if job.ensemble is not None:
        return Ensemble.of(EnsembleSpec.parse(job.ensemble, job.ensemble_combine))
    return Single(job.teacher)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _passed_on(warn: Warn, stage: int) -> Warn:
    """A cascade stage's warnings, saying that a failed row went on to the next stage."""

    def told(message: str) -> None:
        warn(f"{message} [cascade: passed on to stage {stage}]")

    return told


__all__ = ["Cascade", "Ensemble", "Setup", "Single", "Strategy", "Wiring", "setup_for"]
