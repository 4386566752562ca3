"""One labeling job end to end: read → label → export. The CLI and cron both call this.

Keeping the whole path in the library means `labeler run`, `labeler refresh` and a user's
own script do exactly the same thing; the CLI only turns flags into a `Job`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from labeler import aio, bounds
from labeler.batch.base import BatchClient
from labeler.batch.runner import fingerprint
from labeler.cascade import CascadeSpec, MultiPlanner, Stage
from labeler.ensemble import EnsembleSpec
from labeler.errors import ConfigError
from labeler.exports.guard import check_out_folder, export_to
from labeler.exports.options import ExportOptions, ExportReport, check_needs
from labeler.hub_input import is_hub
from labeler.input_map import check_fields, mapped, parse_input_map, required_columns
from labeler.inputs import FORMATS as INPUT_FORMATS
from labeler.inputs import Reject, RejectsWriter, Row, count_rows, prepare_rejects, read_rows
from labeler.label_scoring import check_scoring
from labeler.label_scoring_run import score_answers
from labeler.option_fields import option
from labeler.options import OPTIONS, check_values, default
from labeler.partners import check_partners
from labeler.plan import Planner
from labeler.pricing import PriceTable
from labeler.reasoning import reasoning_params
from labeler.retry import RetryPolicy
from labeler.row_fields import check_first_rows, require_fields
from labeler.settings import LabelSettings
from labeler.setups import Cascade, Setup, Single, Wiring, setup_for
from labeler.store import Store
from labeler.summary import RunSummary
from labeler.task import Task, load_task
from labeler.teachers import make_teacher, parse_spec
from labeler.teachers.base import Teacher
from labeler.template_check import check_template_fields
from labeler.verify import REGISTRY, Verifier, VerifyStage, parse_keep
from labeler.verify.gate import VerifyGate
from labeler.verify.judge_pass import JudgePass, add_judges
from labeler.verify.spec import split_steps


def default_home() -> Path:
    return Path(os.environ.get("LABELER_HOME") or Path.home() / ".cache" / "labeler")


def default_store() -> Path:
    return default_home() / "store.sqlite"


class InMemoryInput(Protocol):
    """Input rows held by the caller rather than in a file (see labeler/in_memory.py)."""

    def rows(
        self, *, id_field: str | None, id_column: str | None, required_fields: Sequence[str]
    ) -> Iterator[Row | Reject]: ...

    def __len__(self) -> int: ...


def _joined_urls(urls: str | Sequence[str]) -> dict[str, Any]:
    """--base-url repeated, or a config's list of URLs, as one comma-separated value."""
    joined = urls if isinstance(urls, str) else ",".join(str(u) for u in urls)
    return {"base_url": joined or None}


def _key_from_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Keys come from the environment or a file only its owner can read."""
    from labeler.apikeys import read_key_file

    return {"api_key": read_key_file(path)}


def _checked_map(spec: Any) -> dict[str, Any]:
    return {"input_map": parse_input_map(spec)}


@dataclass
class Job:
    """Everything a run needs; every field has the CLI flag of the same name."""

    task: str | Path | Task
    input: str | Path | InMemoryInput
    teacher: str = ""  # PROVIDER:MODEL; unused with a cascade, an ensemble or a setup
    out: str | Path | None = option(
        None,
        group="output",
        short="-o",
        path="folder",
        cli_only="a refresh config's `out` is required: it holds the versions and the "
        "`current` link, not one export",
        help="Export folder: new, empty, or a previous export of this kind, which it replaces.",
    )
    store: str | Path | None = option(
        None,
        group="teacher",
        path="file",
        help="SQLite store (cache + journal). Default: $LABELER_HOME/store.sqlite.",
    )
    base_url: str | None = option(
        None,
        group="teacher",
        multiple=True,
        also=(list,),
        convert=_joined_urls,
        help="Endpoint of the teacher, e.g. http://localhost:8000/v1. Repeat it (or separate "
        "with commas) to spread requests over several servers of the same model.",
    )
    api_key: str | None = option(
        None,
        group="teacher",
        flag="--api-key-file",
        path="file",
        convert=_key_from_file,
        cli_only="a refresh config names api_key_file or api_key_env, read when it starts",
        help="Read the API key from this file (must be mode 0600). Default: the provider's "
        "environment variable.",
    )
    teacher_options: dict[str, Any] = field(default_factory=dict)
    # The labeling options: defaults, types and ranges are declared in labeler/options.py.
    concurrency: int = default("concurrency")  # a ceiling: the in-flight target adapts below it
    rpm: float | None = default("rpm")
    tpm: float | None = default("tpm")
    max_attempts: int = default("max_attempts")
    retry_initial_wait: float | None = default("retry_initial_wait")  # None: RetryPolicy's
    retry_failed: bool = default("retry_failed")
    budget_usd: float | None = default("budget_usd")
    prices: PriceTable | None = None
    max_age_days: float | None = default("max_age_days")
    # A cascade of teachers (labeler/cascade.py): "a:m1,b:m2[@URL]" or a list of them
    cascade: str | None = default("cascade")
    escalate_below: str | None = default("escalate_below")  # "0.9" or "0.9,0.8", or numbers
    escalate_on: str = default("escalate_on")
    # An ensemble of teachers (labeler/ensemble.py): "a:m1,b:m2[@URL][=WEIGHT]" or a list
    ensemble: str | None = default("ensemble")
    ensemble_combine: str = default("ensemble_combine")
    # A reasoning teacher's effort and Anthropic's thinking budget, over the template's
    reasoning_effort: str | None = default("reasoning_effort")
    thinking_budget: int | None = default("thinking_budget")
    # Soft labels from samples (labeler/teachers/sampling.py): N answers, and whether to
    # sample even a teacher that gives logprobs
    samples: int | None = default("samples")
    soft_labels: str = default("soft_labels")
    # A local teacher's context per request (labeler/teachers/local.py)
    local_context: int | None = default("local_context")
    # Verification of every answer (labeler/verify/) and the answers exports keep
    verify: str | None = default("verify")
    keep: str | int = default("keep")
    verify_timeout: float = default("verify_timeout")
    judge_calibration: str | None = default("judge_calibration")
    id_field: str | None = option(None, group="input", help="Input field holding a unique row id.")
    input_format: str | None = option(
        None, group="input", choices=lambda: INPUT_FORMATS, help="Input format (default: from the file name)."
    )
    delimiter: str | None = option(
        None, group="input", help="Field delimiter for delimited text input (e.g. ';')."
    )
    input_split: str | None = option(
        None, group="input", flag="--split", help="Split of a saved DatasetDict or hf://datasets/NAME input."
    )
    # --map FIELD=COLUMN: template field -> input column (or a list of "FIELD=COLUMN")
    input_map: dict[str, str] = option(
        default_factory=dict,
        group="input",
        flag="--map",
        key="input_map",
        multiple=True,
        metavar="FIELD=COLUMN",
        convert=_checked_map,
        help="Fill the template's FIELD from the input's COLUMN (repeatable), e.g. --map text=sentence.",
    )
    limit: int | None = option(
        None,
        group="input",
        cli_only="a refresh publishes its whole input: a part would replace the whole",
        help="Only the first N input rows.",
    )
    rejects: str | Path | None = None
    export: ExportOptions = field(default_factory=ExportOptions)
    progress: bool | None = None
    batch: bool = False  # label through the provider's batch API (labeler/batch/)
    no_wait: bool = False  # with batch: submit and collect what has ended, then return
    stop_grace_s: float = default("stop_grace_s")  # after SIGINT/SIGTERM, for requests in flight
    request_timeout: float = default("request_timeout")  # seconds per attempt, connect to last byte
    # Who answers, built by the caller (labeler/setups.py): replaces `teacher`, `cascade`
    # and `ensemble`, as `Cascade("a:m1", "b:m2", escalate_below=0.9)`
    setup: Setup | None = None

    def __post_init__(self) -> None:
        """The same ranges as the CLI's flags, so a script gets the same one-line error."""
        f = self.export.filters
        self.input_map = parse_input_map(self.input_map)
        if isinstance(self.cascade, list | tuple):
            self.cascade = ",".join(self.cascade)
        if isinstance(self.ensemble, list | tuple):
            self.ensemble = ",".join(self.ensemble)
        if self.setup is not None and (self.cascade is not None or self.ensemble is not None):
            raise ConfigError("a setup and --cascade/--ensemble: give one")
        if not (self.teacher or self.setup or self.cascade or self.ensemble):
            raise ConfigError("a job needs a teacher (PROVIDER:MODEL) or a setup")
        if self.ensemble is not None:
            if self.cascade is not None:
                raise ConfigError("--cascade and --ensemble: choose one")
            self.ensemble_spec()
            if self.batch:
                raise ConfigError("--ensemble labels live; --batch is not supported with it yet")
        if isinstance(self.escalate_below, list | tuple):
            self.escalate_below = ",".join(str(x) for x in self.escalate_below)
        if self.cascade is not None:
            self.cascade_spec()  # a bad cascade is told before anything starts
        older = self.teacher_options.get("samples")  # the Anthropic option it once was
        if older is not None and self.samples is not None and self.samples != older:
            raise ConfigError(
                f"samples {self.samples} and teacher_options samples {older} disagree: give one"
            )
        check_values({o.key: getattr(self, o.field) for o in OPTIONS})
        reasoning_params(
            {}, answer_tokens=0, effort=self.reasoning_effort, budget=self.thinking_budget
        )  # a bad value is told before anything
        if self.verify is not None and self.export.verify is None:
            self.export = dataclasses.replace(
                self.export,
                verify=self.verify,
                keep=self.keep,
                verify_timeout=self.verify_timeout,
                judge_calibration=self.judge_calibration,
            )
        parse_keep(self.export.keep)
        if self.export.verify is not None:
            split_steps(self.export.verify, REGISTRY)  # a bad spec is told before anything
        check_needs(self.export)
        bounds.check(
            [
                ("limit", self.limit),
                ("samples", older),
                ("min_confidence", f.min_confidence),
                ("min_margin", f.min_margin),
                ("max_entropy", f.max_entropy),
                ("validation_size", self.export.validation_size),
            ]
        )
        check_partners(self)

    def cascade_spec(self) -> CascadeSpec | None:
        if self.cascade is None:
            return None
        return CascadeSpec.parse(self.cascade, self.escalate_below, self.escalate_on)

    def ensemble_spec(self) -> EnsembleSpec | None:
        if self.ensemble is None:
            return None
        return EnsembleSpec.parse(self.ensemble, self.ensemble_combine)

    def make_stage_teachers(self, spec: CascadeSpec | EnsembleSpec) -> list[Teacher]:
        """One teacher per stage: its own @URL, else --base-url; the job's key and options."""
        return [self.teacher_for(stage) for stage in spec.stages]

    def teacher_for(self, stage: Stage) -> Teacher:
        """A teacher of this job: its own endpoint, else --base-url; the job's key and
        options (what every setup builds its teachers with)."""
        opts = self.teacher_settings()
        if stage.base_url or self.base_url:
            opts["base_url"] = stage.base_url or self.base_url
        if self.api_key:
            opts["api_key"] = self.api_key
        return make_teacher(stage.teacher, **opts)

    def label_settings(self) -> LabelSettings:
        """How every pass of this job labels: the labeling options as one value."""
        return LabelSettings(
            concurrency=self.concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            retry=self.retry_policy(),
            retry_failed=self.retry_failed,
            progress=self.progress,
            prices=self.prices,
            budget_usd=self.budget_usd,
            max_age_s=self.max_age_s,
            stop_grace_s=self.stop_grace_s,
            request_timeout_s=self.request_timeout,
            no_wait=self.no_wait,
        )

    def retry_policy(self) -> RetryPolicy:
        if self.retry_initial_wait is None:
            return RetryPolicy(max_attempts=self.max_attempts)
        return RetryPolicy(max_attempts=self.max_attempts, initial_wait=self.retry_initial_wait)

    def load_task(self) -> Task:
        task = self.task if isinstance(self.task, Task) else load_task(self.task)
        return task.with_reasoning(self.reasoning_effort, self.thinking_budget)

    def teacher_settings(self) -> dict[str, Any]:
        """The options every teacher is built with: `teacher_options` and the sampling
        options, these only when set, so a teacher is built as before when they are not."""
        opts = dict(self.teacher_options)
        if self.samples is not None:  # else `teacher_options["samples"]`, as it was
            opts["samples"] = self.samples
        if self.soft_labels != default("soft_labels"):
            opts["soft_labels"] = self.soft_labels
        if self.local_context is not None:
            opts["local_context"] = self.local_context
        return opts

    def make_teacher(self) -> Teacher:
        return self.teacher_for(Stage(self.teacher))

    def judge_teacher(self, teacher: str, base_url: str | None) -> Teacher:
        """A `--verify judge:` teacher: its own @URL; where its provider is one of the job's
        teachers', also the job's --base-url (when it has no URL of its own), key and
        teacher options (sampling options aside: the judge samples as its provider does);
        else its provider's defaults and environment key."""
        opts: dict[str, Any] = {}
        own = parse_spec(teacher)[0]
        if own in {parse_spec(st.teacher)[0] for st in setup_for(self).teachers}:
            opts = {k: v for k, v in self.teacher_options.items() if k not in ("samples", "soft_labels")}
            if self.api_key:
                opts["api_key"] = self.api_key
            if self.base_url and not base_url:
                opts["base_url"] = self.base_url
        if base_url:
            opts["base_url"] = base_url
        return make_teacher(teacher, **opts)

    def verifier(self, task: Task) -> Verifier:
        """The job's `--verify` chain for this task (a judge built by `judge_teacher`)."""
        spec = self.export.verify
        if spec is None:
            raise ConfigError("this job has no --verify SPEC")
        return Verifier(
            spec,
            task=task,
            timeout_s=self.export.verify_timeout,
            make_teacher=self.judge_teacher,
            judge_calibration=self.export.judge_calibration,
        )

    def rows(self, task: Task) -> Iterator[Row | Reject]:
        # Without --id-field, a column named `id` still names the row (else its line).
        id_column = "id" if self.id_field is None else None
        check_fields(self.input_map, task.fields, str(task.path))
        required = required_columns(task.fields, self.input_map)
        if isinstance(self.input, str | os.PathLike):
            it = read_rows(
                self.input,
                format=self.input_format,
                id_field=self.id_field,
                id_column=id_column,
                required_fields=required,
                delimiter=self.delimiter,
                split=self.input_split,
            )
        else:
            it = self.input.rows(id_field=self.id_field, id_column=id_column, required_fields=required)
        if self.limit is not None:
            it = _limited(it, self.limit)
        if self.input_map:
            it = mapped(it, self.input_map)
        return check_template_fields(task, it, self.input_map)

    def export_fields(self) -> dict[str, str]:
        """The input fields the export is told by name to read, by the flag naming them."""
        named = {"--text-field": self.export.text_field, "--split-field": self.export.split_field}
        return {flag: name for flag, name in named.items() if name is not None}

    def export_rows(self, task: Task) -> Iterator[Row | Reject]:
        """`rows`, stopping at the first row without a field the export is told to read."""
        return require_fields(self.rows(task), self.export_fields())

    @property
    def max_age_s(self) -> float | None:
        return self.max_age_days * 86400 if self.max_age_days is not None else None

    def store_path(self) -> Path:
        return Path(self.store) if self.store else default_store()

    def check_out(self, note: str = "nothing was sent") -> None:
        """Refuse an `out` an export may not replace (labeler/exports/out_folder.py) before anything
        is paid: one holding the store, the input or the rejects file, a refresh folder, a
        folder that is not a previous export of this kind."""
        if self.out is None:
            return
        reads = (
            Path(self.input)
            if isinstance(self.input, str | os.PathLike) and str(self.input) != "-" and not is_hub(self.input)
            else None
        )
        check_out_folder(
            Path(self.out),
            self.store_path(),
            self.export,
            reads=reads,
            rejects=self.rejects_path(),
            note=note,
        )

    def rejects_path(self) -> Path | None:
        if self.rejects:
            return Path(self.rejects)
        if self.out:
            out = Path(self.out)
            return out.parent / f"{out.name}.rejects.jsonl"
        return None


@dataclass
class JobResult:
    summary: RunSummary
    export: ExportReport | None
    store: Path
    rejects: Path | None
    warnings: list[str] = field(default_factory=list)


def check_verifier(job: Job, task: Task, *, start: bool = True, source: str | None = None) -> None:
    """A verifier that cannot work is the user's error, told before anything is paid: a
    spec the template cannot serve, an input field a row lacks, a checker that does not
    import. stdin is read once, so its rows are checked once it is spooled."""
    if job.export.verify is None:
        return
    with job.verifier(task) as verifier:
        for judge in verifier.judges:
            if (
                job.budget_usd is not None
                and job.label_settings().price_table.lookup(judge.teacher.model) is None
            ):
                raise ConfigError(
                    f"--budget needs a price for the judge '{judge.teacher.model}': add --price "
                    f"{judge.teacher.model}=IN,OUT (USD per 1M tokens)"
                )
        if not _is_stdin(job):
            verifier.check_input(job.rows(task), source)
        if start:
            verifier.start()


def _is_stdin(job: Job) -> bool:
    return isinstance(job.input, str | os.PathLike) and str(job.input) == "-"


def open_job(job: Job, on_warning: Callable[[str], None] | None = None) -> tuple[Task, list[str]]:
    """The job's task and its template warnings (each told to `on_warning` with the
    template's path), after refusing an output folder that is not an export's: what every
    engine does before it labels anything, so a bad `--out` costs no request."""
    task = job.load_task()
    if job.out is not None:
        job.check_out()
    check_verifier(job, task)
    if job.out and str(job.input) != "-":  # stdin is read once, later
        check_first_rows(job.rows(task), job.export_fields())
    for w in task.warnings:
        if on_warning:
            on_warning(f"{task.path}: {w}")
    return task, list(task.warnings)


async def run_job(
    job: Job,
    *,
    teacher: Teacher | None = None,
    client: BatchClient | None = None,
    on_warning: Callable[[str], None] | None = None,
    handle_signals: bool = False,
) -> JobResult:
    """Label what the store lacks, then export (if `job.out`). Safe to rerun at any time.

    The one job driver: setup (task, stdin spool, store, rejects), the labeling strategy
    (live requests through `Labeler`, or the provider's batch API through `BatchRunner`
    when ``job.batch``), the export and the cleanup happen here once for both. The export
    runs only when nothing is pending or interrupted, so a dataset is never written from a
    half-collected job. A teacher (or batch client) passed in stays the caller's: it is
    started if needed but never closed here; one made here is closed here.
    """
    task, warnings = open_job(job, on_warning)
    spooled = _spool_stdin(job)
    rejects = job.rejects_path()
    if rejects is not None:
        prepare_rejects(rejects)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(_unspool, job, spooled)
        if spooled is not None:
            check_verifier(job, task, start=False, source="<stdin>")  # rows unread before
        store = stack.enter_context(Store(job.store_path()))
        setup = setup_for(job)
        setup.check(task)
        teachers = _open_teachers(job, setup, teacher, stack)
        check_scoring(task, job.soft_labels)
        gate = _gate(job, task, setup, store, stack, job.label_settings(), on_warning)
        wiring = dataclasses.replace(_wiring(job, task, store, rejects, stack, client, on_warning), gate=gate)
        strategy = setup.strategy(wiring, teachers)
        stack.push_async_callback(strategy.aclose)
        with aio.stop_on_signals(strategy, enabled=handle_signals):
            summary = await strategy.run(lambda: job.rows(task))
        if gate is not None:  # the judge passes of a cascade's stages
            summary.judges += gate.judged
            for judged in gate.judge_summaries:
                summary.cost_usd += judged.cost_usd
                summary.unpriced += judged.unpriced
                summary.interrupted |= judged.interrupted
                summary.budget_stopped |= judged.budget_stopped
        await _score(job, task, setup, teachers, store, summary)
        return await _after_labeling(
            job, task, setup, teachers, store, summary, warnings, gate, on_warning, handle_signals
        )


async def finish_labeled(
    job: Job,
    task: Task,
    summary: RunSummary,
    warnings: list[str],
    *,
    on_warning: Callable[[str], None] | None = None,
    handle_signals: bool = False,
) -> JobResult:
    """What follows the labeling where another engine labeled the store (the Ray fleet,
    labeler/ray/engine.py): the `--verify judge:` pass, in this process with the job's
    limits, then the export (which verifies and keeps) or, without --out, the stored
    answers' verdicts. The same steps as `run_job` after its own labeling, so the two
    engines report and export alike. `summary` is the labeling's, added to here."""
    setup = setup_for(job)
    async with contextlib.AsyncExitStack() as stack:
        store = stack.enter_context(Store(job.store_path()))
        teachers = _open_teachers(job, setup, None, stack)
        gate = _gate(job, task, setup, store, stack, job.label_settings(), on_warning)
        await _score(job, task, setup, teachers, store, summary)
        return await _after_labeling(
            job, task, setup, teachers, store, summary, warnings, gate, on_warning, handle_signals
        )


async def _score(
    job: Job, task: Task, setup: Setup, teachers: Sequence[Teacher], store: Store, summary: RunSummary
) -> None:
    """`--soft-labels logprobs:exact`: score the labels that share first tokens in the
    stored answers (labeler/label_scoring_run.py), once the labeling has ended, whichever
    engine labeled them, so both export the same soft labels."""
    if isinstance(setup, Single) and not job.batch and summary.outcome not in ("pending", "interrupted"):
        await score_answers(task, teachers[0], store, lambda: job.rows(task), job.label_settings(), summary)


async def _after_labeling(
    job: Job,
    task: Task,
    setup: Setup,
    teachers: Sequence[Teacher],
    store: Store,
    summary: RunSummary,
    warnings: list[str],
    gate: VerifyGate | None,
    on_warning: Callable[[str], None] | None,
    handle_signals: bool,
) -> JobResult:
    """The judge pass over the stored answers, then the export or the verification."""
    # a planner each: a cascade's counts what each stage answered as it reads
    answers = setup.planner(task, teachers, store, gate)
    await _judge(job, task, setup, teachers, store, summary, on_warning, handle_signals, answers)
    return await _finish(
        job,
        task,
        summary,
        setup.answering(teachers),
        store,
        job.rejects_path(),
        warnings,
        setup.planner(task, teachers, store, gate),
    )


def _gate(
    job: Job,
    task: Task,
    setup: Setup,
    store: Store,
    stack: contextlib.ExitStack | contextlib.AsyncExitStack,
    settings: LabelSettings | None,
    on_warning: Callable[[str], None] | None = None,
) -> VerifyGate | None:
    """A cascade's `--verify` gate (labeler/verify/gate.py): a row whose answers all fail
    goes on to the next teacher. `settings`: how its judge labels (None: read only)."""
    if job.export.verify is None or not isinstance(setup, Cascade):
        return None
    verifier = job.verifier(task)
    stack.callback(verifier.close)
    if isinstance(stack, contextlib.AsyncExitStack):
        for judge in verifier.judges:
            stack.push_async_callback(judge.teacher.aclose)
    return VerifyGate(verifier, task, store, settings, on_warning)


async def _judge(
    job: Job,
    task: Task,
    setup: Setup,
    teachers: Sequence[Teacher],
    store: Store,
    summary: RunSummary,
    on_warning: Callable[[str], None] | None,
    handle_signals: bool,
    answers: Planner | MultiPlanner | None,
) -> None:
    """The `--verify judge:` pass (labeler/verify/judge_pass.py), once the teachers' pass
    has ended: the judge labels every stored answer the export reads (`answers`)."""
    if job.export.verify is None or summary.outcome in ("pending", "interrupted", "budget"):
        return
    with job.verifier(task) as verifier:
        if not verifier.judges:
            return
        planner = answers or Planner(
            task, setup.answering(teachers), store, failures=False, single_answers=True
        )
        judging = JudgePass(verifier.judges, planner, store, job.label_settings(), on_warning)
        try:
            with aio.stop_on_signals(judging, enabled=handle_signals):
                done = await judging.run(lambda: job.rows(task), spent_usd=summary.cost_usd)
        finally:
            await judging.aclose()
        add_judges(summary, verifier.judges, done)


def _open_teachers(
    job: Job, setup: Setup, teacher: Teacher | None, stack: contextlib.AsyncExitStack
) -> list[Teacher]:
    """The setup's teachers, each made here closed when the job ends; a single teacher
    passed in stays the caller's."""
    if teacher is not None and isinstance(setup, Single):
        return [teacher]
    teachers = setup.make_teachers(job.teacher_for)
    for t in teachers:
        stack.push_async_callback(t.aclose)
    return teachers


def _wiring(
    job: Job,
    task: Task,
    store: Store,
    rejects: Path | None,
    stack: contextlib.AsyncExitStack,
    client: BatchClient | None,
    on_warning: Callable[[str], None] | None,
) -> Wiring:
    """What every pass of this job shares: its settings, rejects file and batch access."""
    writer = RejectsWriter(rejects) if rejects is not None else None
    if writer is not None:
        stack.callback(writer.close)

    def run_tag(teacher: Teacher) -> str:  # names this job's batches, found again on rerun
        return fingerprint(task, teacher.identity, _input_name(job.input), str(job.store_path().resolve()))

    return Wiring(
        task,
        store,
        job.label_settings(),
        rejects=writer,
        on_warning=on_warning,
        total=lambda: _row_total(job),
        batch=job.batch,
        api_key=job.api_key,
        client=client,
        run_tag=run_tag,
        stack=stack,
    )


async def _finish(
    job: Job,
    task: Task,
    summary: RunSummary,
    identity: Mapping[str, Any],
    store: Store,
    rejects: Path | None,
    warnings: list[str],
    planner: Planner | MultiPlanner | None = None,
) -> JobResult:
    """Export (unless answers are pending or the run was interrupted: a dataset is never
    written from a half-collected job) and say what happened."""
    report = None
    if job.out is not None and summary.outcome not in ("pending", "interrupted"):
        report = await asyncio.to_thread(_export, job, task, identity, store, planner)
        summary.exported = report.exported
        if not report.exported:
            summary.export_removed = {name: n for name, n in report.filtered.items() if n}
        summary.verification = report.verification
    elif job.export.verify is not None and summary.outcome not in ("pending", "interrupted"):
        summary.verification = await asyncio.to_thread(
            verify_stored, task, identity, job.rows(task), store, job.export, planner, job.verifier(task)
        )
    return JobResult(
        summary,
        report,
        job.store_path(),
        rejects if rejects is not None and rejects.exists() else None,
        warnings,
    )


def _row_total(job: Job) -> int | None:
    """How many rows the input holds, for the progress bar (None: unknown or not shown)."""
    if job.progress is False:
        return None
    if not isinstance(job.input, str | os.PathLike):
        return len(job.input)
    with contextlib.suppress(Exception):
        total = count_rows(job.input, format=job.input_format, delimiter=job.delimiter, split=job.input_split)
        if total is not None and job.limit is not None:
            total = min(total, job.limit)
        return total
    return None


def verify_stored(
    task: Task,
    identity: Mapping[str, Any],
    rows: Any,
    store: Store,
    opts: ExportOptions,
    planner: Any = None,
    verifier: Verifier | None = None,
) -> dict[str, Any]:
    """Check every stored answer of these rows (verdicts stored, those already stored
    read) and give the pass rates: what a run without --out reports. `verifier` (closed
    here) replaces the one `opts.verify` names."""
    assert opts.verify is not None
    planner = planner or Planner(task, identity, store, failures=False)
    verifier = verifier or Verifier(
        opts.verify, task=task, timeout_s=opts.verify_timeout, judge_calibration=opts.judge_calibration
    )
    with verifier:
        stage = VerifyStage(verifier, store, opts.keep)
        for planned in planner.plan_rows(rows, 512):
            stage.check(
                [
                    (i.row.data, i.key, i.completion)
                    for i in planned
                    if i.variant == 0 and i.completion is not None and i.key is not None
                ]
            )
    return {"spec": opts.verify, "keep": str(opts.keep), **stage.rates.to_dict()}


def export_job(job: Job) -> ExportReport:
    """Export from the store only: no request is sent."""
    if job.out is None:
        raise ConfigError("export needs --out DIR")
    task = job.load_task()
    setup = setup_for(job)
    teachers = setup.make_teachers(job.teacher_for)
    job.check_out(note="nothing was written")
    check_verifier(job, task)
    check_first_rows(job.rows(task), job.export_fields())
    with Store(job.store_path()) as store, contextlib.ExitStack() as stack:
        gate = _gate(job, task, setup, store, stack, None)
        return _export(
            job, task, setup.answering(teachers), store, setup.planner(task, teachers, store, gate)
        )


def _export(
    job: Job, task: Task, identity: Mapping[str, Any], store: Store, planner: Planner | MultiPlanner | None
) -> ExportReport:
    """The export, read through the calibration the options and the gold rows decide
    (labeler/gold_calibration.py; the gold rows are a first pass over the input). Imported
    here: it brings numpy, which labeling alone never needs."""
    from labeler.gold_calibration import resolve as resolve_calibration

    opts = resolve_calibration(
        task, identity, lambda: job.rows(task), store, job.export, single_teacher=planner is None
    )
    assert job.out is not None  # export_job refuses a job without one
    verifier = job.verifier(task) if opts.verify is not None else None
    return export_to(task, identity, job.export_rows(task), store, Path(job.out), opts, planner, verifier)


def _spool_stdin(job: Job) -> Path | None:
    """stdin can be read once, but a run reads its input twice (label, then export):
    stream it to a file under LABELER_HOME first."""
    if not isinstance(job.input, str | os.PathLike) or str(job.input) != "-":
        return None
    import shutil
    import sys

    default_home().mkdir(parents=True, exist_ok=True)
    raw = sys.stdin.buffer
    head = raw.read(1 << 16)
    fmt = job.input_format or ("jsonl" if head.lstrip()[:1] in (b"{", b"") else "csv")
    path = default_home() / f"stdin-{os.getpid()}.{fmt}"
    with open(path, "wb") as f:
        f.write(head)
        shutil.copyfileobj(raw, f, 1 << 20)
    job.input = path
    return path


def _unspool(job: Job, spooled: Path | None) -> None:
    if spooled is not None:
        spooled.unlink(missing_ok=True)
        job.input = "-"


def _input_name(source: Any) -> str:
    """The input as a batch run names it in its tag: a file by its absolute path, a Hub
    dataset by its spec (which is no path on this machine)."""
    return str(source) if is_hub(source) else str(Path(str(source)).resolve())


def _limited(it: Iterator[Row | Reject], n: int) -> Iterator[Row | Reject]:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item
