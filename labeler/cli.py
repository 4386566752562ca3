"""The `labeler` command: parses arguments, calls the library, prints. Nothing else.

Exit codes: 0 everything labeled; 1 a fatal error (bad flag, unreadable input, store);
3 partial (some items failed or were skipped: rerun to retry); 4 another refresh holds
the lock; 5 the budget stopped the run; 6 pending (``run --batch --no-wait``: batches are
still running at the provider; rerun later to collect and export); 7 empty (rows came in
and none was labeled, or the export holds none: the summary says why, in the server's
words); 130 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from labeler import aio, options
from labeler.bounds import BOUNDS
from labeler.cli_options import Group, declared_options, grouped, output_flags
from labeler.errors import CONTEXT_TOO_LONG, ConfigError, LabelerError
from labeler.exports.options import ExportOptions
from labeler.filters import FilterSpec
from labeler.gc_tuning import freeze_setup, gc_tuned
from labeler.job import Job
from labeler.option_fields import field_values
from labeler.redact import redact
from labeler.version import VERSION

EXIT_FATAL = options.exit_code("failed")
EXIT_INTERRUPTED = options.exit_code("interrupted")
EXIT_PENDING = options.exit_code("pending")  # --batch --no-wait: answers still being computed


def _bounded(name: str, kind: type = float) -> click.IntRange | click.FloatRange:
    """The click range of a numeric option, from the bounds `Job` checks too."""
    b = BOUNDS[name]
    if kind is int:
        return click.IntRange(
            min=None if b.low is None else int(b.low),
            max=None if b.high is None else int(b.high),
            min_open=b.low_open,
            max_open=b.high_open,
        )
    return _FiniteRange(min=b.low, max=b.high, min_open=b.low_open, max_open=b.high_open)


class _FiniteRange(click.FloatRange):
    """A float range that refuses NaN and infinities: NaN compares false with both ends of
    any range, so click's own check lets it through."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _OneLineErrors(Group):
    """A bad flag is one line on stderr and exit 1, like every other fatal error (click's
    own answer is three lines and exit 2)."""

    group_class = Group

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **kw: Any,
    ) -> Any:
        if not standalone_mode:
            with gc_tuned():
                return super().main(args, prog_name, complete_var, standalone_mode=False, **kw)
        _leave_objects_to_the_exit()
        try:
            with gc_tuned():
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **kw)
        except _NO_ARGS_IS_HELP as exc:  # a bare `labeler`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"labeler: error: {exc.format_message()}{where}", err=True)
            sys.exit(EXIT_FATAL)
        except click.ClickException as exc:
            click.echo(f"labeler: error: {exc.format_message()}", err=True)
            sys.exit(EXIT_FATAL)
        except click.Abort:
            click.echo("labeler: aborted", err=True)
            sys.exit(EXIT_FATAL)
        sys.exit(rv if isinstance(rv, int) else 0)


_EXIT_HOOK: list[bool] = []


def _leave_objects_to_the_exit() -> None:
    """Freeze every object as the process exits, so that the interpreter's last garbage
    collections do not walk them all: after a large run that walk is a pause the user
    waits out at the end, spent on memory the exit returns anyway. Nothing waits on those collections: the
    store, the export and the rejects file are closed (or flushed per line) explicitly
    before the command returns, and stdout and stderr are flushed by the exit itself."""
    if not _EXIT_HOOK:
        atexit.register(gc.freeze)
        _EXIT_HOOK.append(True)


def _teacher_options(f: Any, *, several: bool = False) -> Any:
    """--teacher (one with a default, or several to compare), then the teacher and input
    options declared on `Job`."""
    teacher = (
        grouped(
            "teacher",
            "--teacher",
            "-t",
            multiple=True,
            required=True,
            metavar="PROVIDER:MODEL[@URL]",
            help="A teacher to compare; give two (-t A -t B).",
        )
        if several
        else grouped(
            "teacher",
            "--teacher",
            "-t",
            default="local:gemma3-270m",
            show_default=True,
            help="PROVIDER:MODEL: openai:gpt-4o-mini, anthropic:claude-haiku-4-5, "
            "openai-compatible:MODEL (with --base-url), local:smollm2-135m.",
        )
    )
    return teacher(declared_options([Job], _bounded, groups=("teacher", "input"))(f))


def _export_options(f: Any) -> Any:
    """--out and the export and filter options, as their fields declare them."""
    return declared_options(
        [Job, ExportOptions, FilterSpec], _bounded, groups=("filter", "export", "output")
    )(f)


@click.group(
    cls=_OneLineErrors,
    examples=[
        "labeler run sentiment reviews.jsonl -t openai:gpt-4o-mini --out ds",
        "labeler estimate sentiment reviews.jsonl -t openai:gpt-4o-mini",
        "labeler run --help",
    ],
)
@click.version_option(version=VERSION, prog_name="labeler")
def main() -> None:
    """Label raw inputs with a teacher LLM into distillation datasets."""


@main.command(
    examples=[
        "labeler run sentiment reviews.jsonl -t openai:gpt-4o-mini --out ds",
        "labeler run topic news.csv -t openai-compatible:qwen3 --base-url http://localhost:8000/v1 "
        "--kind classification --min-confidence 0.8 --out ds",
        "labeler run sentiment reviews.jsonl --cascade openai:gpt-4o-mini,openai:gpt-4o "
        "--escalate-below 0.9 --out ds",
    ]
)
@click.argument("task")
@click.argument("input_path", metavar="INPUT")
@_teacher_options
@_export_options
@options.click_options(_bounded)
@grouped(
    "labeling",
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False),
    help="Price table JSON (default: the shipped one).",
)
@grouped(
    "labeling",
    "--price",
    "price_overrides",
    multiple=True,
    help="MODEL=IN,OUT[,CACHED] in USD per 1M tokens.",
)
@grouped(
    "output",
    "--rejects",
    type=click.Path(dir_okay=False),
    help="Where bad rows go (default: OUT.rejects.jsonl).",
)
@grouped(
    "labeling",
    "--batch",
    is_flag=True,
    help="Use the provider's batch API: half the price, answers within 24 hours. "
    "Resumable: a rerun re-attaches to its batches and never submits twice.",
)
@grouped(
    "labeling",
    "--no-wait",
    is_flag=True,
    help="With --batch: submit, store whatever has finished, and return at once "
    f"(exit {EXIT_PENDING} while answers are pending; for cron).",
)
@grouped(
    "labeling",
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: label on a Ray cluster (pip install 'labeler-distill[ray]'), then export as a local run does.",
)
@grouped(
    "labeling",
    "--ray-address",
    metavar="ADDR",
    help="With --engine ray: the cluster to join (default: RAY_ADDRESS, else a local Ray).",
)
@grouped(
    "labeling",
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --engine ray: labeling actors (each with its own --concurrency).",
)
@grouped("output", "--quiet", "-q", is_flag=True, help="No progress bar.")
@grouped("output", "--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
def run(task: str, input_path: str, **kw: Any) -> None:
    """Label INPUT with TASK (a prompts/ name or a YAML file); export to --out."""
    from labeler.job import run_job

    if kw["engine"] != "ray" and (kw.get("ray_address") or kw["workers"] != 2):
        _fail(LabelerError("--ray-address and --workers go with --engine ray"))
    job = _job(task, input_path, kw)
    try:
        if kw["engine"] == "ray":
            result = _ray_engine().run_ray_job(
                job,
                address=kw.get("ray_address"),
                workers=kw["workers"],
                on_warning=_warn,
                handle_signals=True,
            )
        else:
            freeze_setup()  # the job and the modules run imports: alive for the whole run
            result = aio.run(run_job(job, on_warning=_warn, handle_signals=True))
    except LabelerError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("labeler: interrupted; everything answered so far is stored", err=True)
        sys.exit(EXIT_INTERRUPTED)
    s = result.summary
    if kw["as_json"]:
        from labeler.exports.options import NO_EXPORT

        exported = result.export.outcome() if result.export is not None else NO_EXPORT
        click.echo(
            json.dumps(
                {
                    **s.to_dict(),
                    "store": str(result.store),
                    "out": str(job.out) if job.out else None,
                    **exported,
                }
            )
        )
    else:
        _print_summary(result)
        if job.batch:
            _print_batch_summary(s)
    sys.exit(_exit_code(s.outcome))


@main.command(
    examples=[
        "labeler export sentiment reviews.jsonl -t openai:gpt-4o-mini --out ds --kind classification",
        "labeler export sentiment reviews.jsonl -t openai:gpt-4o-mini --out ds-sft --kind sft "
        "--sft-shape messages --format parquet",
    ]
)
@click.argument("task")
@click.argument("input_path", metavar="INPUT")
@_teacher_options
@_export_options
@options.click_options(_bounded, only=options.CASCADE_KEYS + options.REQUEST_KEYS + options.VERIFY_KEYS)
@grouped("output", "--quiet", "-q", is_flag=True, help="Only the export's path on stdout.")
@grouped(
    "output",
    "--json",
    "as_json",
    is_flag=True,
    help="Print the export's report (exported, filtered, kind...) as one JSON line.",
)
def export(task: str, input_path: str, as_json: bool, **kw: Any) -> None:
    """Export stored answers for INPUT without sending any request."""
    from labeler.job import export_job

    job = _job(task, input_path, kw)
    if job.out is None:
        _fail(LabelerError("export needs --out DIR"))
    try:
        report = export_job(job)
    except LabelerError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    elif kw.get("quiet"):
        click.echo(report.path)
    else:
        _print_export(report)


@main.command(
    examples=[
        "labeler stats",
        "labeler stats --store labels.sqlite --json",
    ]
)
@click.option("--store", type=click.Path(dir_okay=False), help="Store to describe.")
@output_flags(
    json_help="Print the counts as one JSON object.",
    quiet_help="Print nothing: exit 0 if the store can be read, else 1 with the error (for scripts).",
)
def stats(store: str | None, as_json: bool, quiet: bool) -> None:
    """Counts by outcome and by error reason, tokens and cost in a store."""
    from labeler.job import default_store
    from labeler.store import Store
    from labeler.teacher_params import refusals_of

    path = Path(store) if store else default_store()
    try:
        with Store(path, readonly=True) as st:
            data = st.stats()
            data["refused_params"] = refusals_of(st)
    except LabelerError as exc:
        _fail(exc)
    if quiet:
        return
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"store            {data['store']} (schema v{data['schema_version']})")
    click.echo(f"responses        {data['responses']}")
    click.echo(f"failed           {data['failed']}")
    for reason, n in data["failures_by_reason"].items():
        click.echo(f"  {reason:<15}{n}")
    click.echo(f"prompt tokens    {data['prompt_tokens']} ({data['cached_tokens']} cached)")
    click.echo(f"output tokens    {data['completion_tokens']}")
    click.echo(f"cost             {_stored_cost(data)}")
    for r in data["refused_params"]:
        click.echo(f"refused          {r['teacher']}: {r['param']} ({r['message']})")


def _stored_cost(data: dict[str, Any]) -> str:
    """A store's cost in words: "unknown" (never $0) when answers had no price, with what
    the priced ones cost where there are some."""
    unpriced = data["unpriced_responses"]
    if not unpriced:
        return f"${data['cost_usd']:.4f}"
    priced = data["responses"] - unpriced
    if not priced:
        return f"unknown ({unpriced} answers without a price)"
    return (
        f"unknown: ${data['priced_cost_usd']:.4f} for {priced} priced answers, "
        f"{unpriced} answers without a price"
    )


@main.command(
    name="forget-refusals",
    examples=[
        "labeler forget-refusals",
        "labeler forget-refusals --store labels.sqlite -t openai:gpt-4o-mini",
    ],
)
@click.option("--store", type=click.Path(dir_okay=False), help="Store to change.")
@click.option(
    "--teacher", "-t", metavar="PROVIDER:MODEL", help="Only this teacher's (default: every teacher's)."
)
@output_flags(
    json_help="Print what was forgotten as one JSON object on stdout (store, teacher, forgotten).",
    quiet_help="Print nothing but errors.",
)
def forget_refusals(store: str | None, teacher: str | None, as_json: bool, quiet: bool) -> None:
    """Forget which request parameters teachers refused (logprobs, temperature,
    max_tokens), so that the next run sends them again and learns anew."""
    from labeler.job import default_store
    from labeler.store import Store
    from labeler.teacher_params import REFUSED, forget

    path = Path(store) if store else default_store()
    if not path.is_file():
        _fail(ConfigError(f"{path}: no such store (nothing to forget)"))
    try:
        with Store(path) as st:
            dropped = forget(st, teacher)
    except LabelerError as exc:
        _fail(exc)
    refused = [(t, p) for t, p, verdict in dropped if verdict == REFUSED]
    if as_json:
        forgotten = [{"teacher": who, "param": param} for who, param in refused]
        click.echo(json.dumps({"store": str(path), "teacher": teacher, "forgotten": forgotten}))
    if as_json or quiet:
        return
    click.echo(
        f"labeler: forgot {len(refused)} refused parameter(s)"
        + (f" of {teacher}" if teacher else "")
        + f" in {path}",
        err=True,
    )
    for who, param in refused:
        click.echo(f"labeler:   {who}: {param}", err=True)


@main.command(
    name="merge-stores",
    examples=[
        "labeler merge-stores all.sqlite node1.sqlite node2.sqlite",
        "labeler merge-stores all.sqlite node*.sqlite --json",
    ],
)
@click.argument("dest", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@output_flags(
    json_help="One JSON line: what came from each source.", quiet_help="Nothing on stderr but errors."
)
def merge_stores(dest: str, sources: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """Merge store SOURCES into DEST by key (the per-machine stores of a job run on
    several machines); a newer answer wins, nothing is sent."""
    from labeler.store_merge import merge_stores as merge

    try:
        report = merge(dest, list(sources))
    except LabelerError as exc:
        _fail(exc)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dest": dest,
                    "sources": {
                        source: {
                            "answers": report.answers[source],
                            "failures": report.failures[source],
                            "human_labels": report.human_labels[source],
                        }
                        for source in sources
                    },
                }
            )
        )
        return
    for source in () if quiet else sources:
        click.echo(
            f"labeler: {source}: {report.answers[source]} answers, "
            f"{report.failures[source]} failures, {report.human_labels[source]} review "
            f"decisions merged into {dest}",
            err=True,
        )
        if report.skipped.get(source):
            click.echo(
                f"labeler: warning: {source}: {report.skipped[source]} answers cannot be "
                f"used and were left behind (first: {report.first_skipped[source]})",
                err=True,
            )


@main.command(
    name="eval",
    examples=[
        "labeler eval sentiment reviews.jsonl -t openai:gpt-4o-mini --gold label",
        "labeler eval sentiment reviews.jsonl -t openai:gpt-4o-mini --gold label --calibrate all "
        "--save-calibration cal.json",
        "labeler eval solve problems.jsonl -t openai:gpt-4o-mini --verify judge:openai:gpt-4o "
        "--judge-gold numeric:answer --save-judge-calibration judge-cal.json",
    ],
)
@click.argument("task")
@click.argument("input_path", metavar="INPUT")
@_teacher_options
@click.option(
    "--gold",
    "gold_field",
    help="Input field with the gold label, or `human`: the labels given in `labeler review`.",
)
@click.option(
    "--judge-gold",
    metavar="SPEC",
    help="With --verify judge:...: measure the judge against this deterministic verifier "
    "(numeric:answer, exact:gold, regex:...,exact:gold): its agreement, AUROC and ECE, raw "
    "and with a fitted temperature. Reads stored answers only.",
)
@click.option(
    "--save-judge-calibration",
    type=click.Path(dir_okay=False),
    help="With --judge-gold: save the judge's temperature, for run/export/refresh --judge-calibration.",
)
@click.option("--gold-map", help="Map gold values to labels: 1=World,2=Sports,...")
@click.option(
    "--target-accuracy",
    type=_bounded("target_accuracy"),
    multiple=True,
    help="Report the confidence threshold reaching this accuracy (repeatable).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    help="Write the reliability diagram and coverage curve to this PNG.",
)
@output_flags(json_help="Print the report as JSON.", quiet_help="No hints on stderr.")
@click.option(
    "--calibrate",
    multiple=True,
    type=click.Choice(["temperature", "contextual", "bias", "all"]),
    help="Fit this calibration on the gold rows and score it on rows it did not "
    "see (repeatable). contextual sends 3 content-free requests (cached).",
)
@click.option(
    "--fit-fraction",
    type=_bounded("fit_fraction"),
    help="Fit calibrations on this share of gold rows, score on the rest (default: 5-fold cross-validation).",
)
@click.option(
    "--save-calibration",
    type=click.Path(dir_okay=False),
    help="Save the best --calibrate method (held-out likelihood), fitted on all rows.",
)
@click.option(
    "--calibration",
    "calibration_file",
    type=click.Path(dir_okay=False),
    help="Read the answers through this saved calibration.",
)
@options.click_options(_bounded, only=options.CASCADE_KEYS + options.REQUEST_KEYS + ("verify",))
def eval_(
    task: str,
    input_path: str,
    gold_field: str | None,
    judge_gold: str | None,
    save_judge_calibration: str | None,
    gold_map: str | None,
    target_accuracy: tuple[float, ...],
    plot: str | None,
    as_json: bool,
    calibrate: tuple[str, ...],
    fit_fraction: float | None,
    save_calibration: str | None,
    calibration_file: str | None,
    **kw: Any,
) -> None:
    """Quality of the stored answers against a gold column (no request is sent, except
    the 3 content-free ones --calibrate contextual needs, cached in the store)."""
    from labeler.calibration import METHODS, load_calibration
    from labeler.eval_job import (
        CalibrationOptions,
        evaluate_cascade_job,
        evaluate_job,
        parse_gold_map,
    )

    job = _job(task, input_path, kw)
    if judge_gold is not None or save_judge_calibration is not None:
        _eval_judge(job, judge_gold, save_judge_calibration, as_json)
        return
    if gold_field is None:
        _fail(ConfigError("eval needs --gold FIELD (or --judge-gold SPEC with --verify judge:...)"))
    assert gold_field is not None
    if job.cascade is not None:
        try:
            cascade_report = evaluate_cascade_job(
                job, gold_field, parse_gold_map(gold_map), tuple(target_accuracy) or (0.9, 0.95, 0.99)
            )
        except LabelerError as exc:
            _fail(exc)
        click.echo(json.dumps(cascade_report.to_dict()) if as_json else cascade_report.to_table())
        return
    methods = METHODS if "all" in calibrate else tuple(dict.fromkeys(calibrate))
    try:
        report = evaluate_job(
            job,
            gold_field,
            gold_map=parse_gold_map(gold_map),
            targets=tuple(target_accuracy) or (0.9, 0.95, 0.99),
            calibrate=CalibrationOptions(methods, fit_fraction, save=save_calibration),
            calibration=(load_calibration(calibration_file) if calibration_file else None),
        )
        if plot:
            report.save_plot(plot)
    except LabelerError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(report.to_table())
    if kw.get("quiet"):
        return
    for target, t in report.thresholds.items():
        if t is not None and report.primary == "max_prob":
            via = f"--calibration {calibration_file} " if calibration_file else ""
            click.echo(
                f"labeler: for accuracy {target:g} export with {via}--min-confidence "
                f"{t.threshold:.4f} (keeps {t.coverage:.0%}; accuracy {t.accuracy:.3f}, "
                f"95% lower bound {t.lower_bound:.3f})",
                err=True,
            )
    if plot:
        click.echo(f"labeler: plot written to {plot}", err=True)
    if save_calibration:
        click.echo(
            f"labeler: calibration saved to {save_calibration}; apply it with "
            f"--calibration {save_calibration}",
            err=True,
        )


def _eval_judge(job: Any, truth: str | None, save: str | None, as_json: bool) -> None:
    """`labeler eval --judge-gold SPEC`: the judge against a deterministic verifier
    (labeler/judge_eval.py); its own report, nothing sent."""
    from labeler.judge_eval import evaluate_judge_job

    if truth is None:
        _fail(ConfigError("--save-judge-calibration needs --judge-gold SPEC"))
    assert truth is not None
    try:
        report = evaluate_judge_job(job, truth, save=save)
    except LabelerError as exc:
        _fail(exc)
    click.echo(json.dumps(report.to_dict()) if as_json else report.to_table())
    if save:
        click.echo(
            f"labeler: judge calibration saved to {save}; apply it with --judge-calibration {save}",
            err=True,
        )


@main.command(
    examples=[
        "labeler review sentiment reviews.jsonl -t openai:gpt-4o-mini",
        "labeler review sentiment reviews.jsonl -t openai:gpt-4o-mini --port 0 --no-browser",
    ]
)
@click.argument("task")
@click.argument("input_path", metavar="INPUT")
@_teacher_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback needs --allow-remote.",
)
@click.option(
    "--port", type=_bounded("port", int), default=8765, show_default=True, help="0 picks a free port."
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a --host other than 127.0.0.1 (the page can change the store).",
)
@click.option("--reviewer", help="Name recorded with each decision (default: the login name).")
@click.option("--no-browser", is_flag=True, help="Print the URL only; do not open a browser.")
@options.click_options(_bounded, only=options.CASCADE_KEYS + options.REQUEST_KEYS + options.VERIFY_KEYS)
@output_flags(
    json_help="Once serving, print one JSON line on stdout in place of the URL: url, token, "
    "host, port, store and the row counts (rows, reviewed, queued, disagree, missing).",
    quiet_help="No banner on stderr: only the URL (or --json's line) on stdout, then warnings and errors.",
)
def review(
    task: str,
    input_path: str,
    host: str,
    port: int,
    allow_remote: bool,
    reviewer: str | None,
    no_browser: bool,
    **kw: Any,
) -> None:
    """Review stored labels in a local web page, most uncertain first (no request is sent).

    Serves until Ctrl-C. The URL carries the page's token; it is printed on stdout once the
    page is up (with --json, as one JSON line), the counts on stderr (not with -q).
    """
    from labeler.review import review_job

    job = _job(task, input_path, kw)
    if not kw["quiet"]:
        click.echo("labeler: reading the stored answers…", err=True)
    try:
        aio.run(
            review_job(
                job,
                host=host,
                port=port,
                allow_remote=allow_remote,
                reviewer=reviewer,
                on_ready=_review_ready(job, browser=not no_browser, as_json=kw["as_json"], quiet=kw["quiet"]),
                on_warning=_warn,
                handle_signals=True,
            )
        )
    except LabelerError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(LabelerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"))
    except KeyboardInterrupt:
        pass


def _review_ready(job: Any, *, browser: bool, as_json: bool, quiet: bool) -> Any:
    """What `review` does once serving: the banner (stderr), the URL or its JSON line
    (stdout, the one thing a script waits for), then the browser."""
    from urllib.parse import parse_qs, urlsplit

    def ready(url: str, index: Any) -> None:
        if not quiet:
            _review_banner(job, index)
        if index.missing and not index.items:
            _warn(
                "nothing to review: give the task, --teacher and --base-url the run used "
                "(they are part of each answer's key)"
            )
        if as_json:
            parts = urlsplit(url)
            counts = {"rows": len(index.items), "reviewed": index.reviewed, "queued": index.queued}
            counts |= {"disagree": index.disagree, "missing": index.missing}
            line = {"url": url, "token": parse_qs(parts.query)["token"][0], "host": parts.hostname}
            click.echo(json.dumps({**line, "port": parts.port, "store": str(job.store_path()), **counts}))
        else:
            click.echo(url)
        if browser:
            import webbrowser

            webbrowser.open(url)

    return ready


def _review_banner(job: Any, index: Any) -> None:
    click.echo(
        f"labeler: reviewing {len(index.items)} rows ({index.reviewed} reviewed) of "
        f"{job.store_path()}; Ctrl-C stops",
        err=True,
    )
    if index.queued:
        click.echo(f"labeler:   {index.queued} rows queued by the cascade come first", err=True)
    if index.disagree:
        click.echo(
            f"labeler:   {index.disagree} rows the teachers disagree on come "
            f"{'next' if index.queued else 'first'}",
            err=True,
        )
    if index.missing:
        click.echo(f"labeler:   {index.missing} rows have no stored answer yet", err=True)


def _two_teachers(f: Any) -> Any:
    return _teacher_options(f, several=True)


@main.command(
    examples=[
        "labeler compare sentiment reviews.jsonl -t openai:gpt-4o-mini -t anthropic:claude-haiku-4-5",
        "labeler compare sentiment reviews.jsonl -t openai:gpt-4o-mini -t openai:gpt-4o --json",
    ]
)
@click.argument("task")
@click.argument("input_path", metavar="INPUT")
@_two_teachers
@output_flags(json_help="Print the comparison as one JSON line.", quiet_help="No hints on stderr.")
@options.click_options(_bounded, only=options.REQUEST_KEYS)
def compare(task: str, input_path: str, as_json: bool, **kw: Any) -> None:
    """Agreement, Cohen's kappa and label confusion of two teachers on INPUT, from the
    store (nothing is sent): labeler compare TASK INPUT -t A -t B. A teacher is
    PROVIDER:MODEL[@URL]; rows a teacher has not answered are counted, and `labeler run
    TASK INPUT -t TEACHER` labels them."""
    from labeler.compare import compare as compare_teachers

    teachers = list(kw.pop("teacher"))
    kw["teacher"] = teachers[0] if teachers else ""
    job = _job(task, input_path, kw)
    try:
        report = compare_teachers(job, teachers)
    except LabelerError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(report.to_table())
    for side in (report.a, report.b):
        if side.missing and not kw.get("quiet"):
            teacher, mark, url = side.teacher.partition("@http")
            where = f" --base-url http{url}" if mark else ""
            click.echo(
                f"labeler: {side.missing} rows have no answer from {side.teacher}: "
                f"labeler run {task} {input_path} -t {teacher}{where} labels them",
                err=True,
            )


@main.command(
    examples=[
        "labeler templates",
        "labeler templates --json",
    ]
)
@output_flags(
    json_help="One JSON object per template, one a line.",
    quiet_help="Only the names, one a line.",
)
def templates(as_json: bool, quiet: bool) -> None:
    """List the shipped prompt templates."""
    from labeler.task import PROMPTS_DIR, load_task

    for path in sorted(PROMPTS_DIR.glob("*.yaml")):
        if quiet and not as_json:
            click.echo(path.stem)
            continue
        t = load_task(path)
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "name": path.stem,
                        "version": t.version,
                        "mode": t.mode,
                        "output": t.output_kind,
                        "labels": list(t.labels),
                        "fields": list(t.fields),
                        "description": t.description,
                        "path": str(path),
                    }
                )
            )
            continue
        labels = f" [{len(t.labels)} labels]" if t.labels else ""
        click.echo(f"{path.stem:<14} v{t.version} {t.mode:<10} {t.output_kind}{labels}  {t.description}")


@main.command(
    examples=[
        "labeler estimate sentiment reviews.jsonl -t openai:gpt-4o-mini",
        "labeler estimate sentiment reviews.jsonl --cascade openai:gpt-4o-mini,openai:gpt-4o "
        "--escalate-below 0.9 --escalation-rate 0.3",
    ]
)
@click.argument("task")
@click.argument("input_path", metavar="INPUT")
@_teacher_options
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False),
    help="Price table JSON (default: the shipped one).",
)
@click.option("--price", "price_overrides", multiple=True, help="MODEL=IN,OUT[,CACHED] in USD per 1M tokens.")
@output_flags(json_help="Print the estimate as one JSON line.", quiet_help="No notes on stderr.")
@options.click_options(_bounded, only=options.CASCADE_KEYS + options.REQUEST_KEYS + ("verify",))
@click.option(
    "--escalation-rate",
    help="With --cascade and no stored answers to measure it "
    "from: the share of rows each stage passes on (one, or one per stage but the last).",
)
def estimate(task: str, input_path: str, as_json: bool, escalation_rate: str | None, **kw: Any) -> None:
    """Tokens and expected cost of labeling INPUT with TASK; nothing is sent."""
    from labeler.estimate import estimate as estimate_cost
    from labeler.verify.judge_estimate import estimate_judge, judge_specs

    job = _job(task, input_path, kw)
    if job.cascade is not None:
        _estimate_cascade(job, escalation_rate, as_json)
        return
    if escalation_rate:
        _fail(LabelerError("--escalation-rate goes with --cascade (the share of rows each stage passes on)"))
    try:
        loaded = job.load_task()
        est = estimate_cost(
            loaded,
            job.rows(loaded),
            job.teacher,
            job.prices,
            samples=job.samples,
            soft_labels=job.soft_labels,
        )
        judges = [
            (spec, estimate_judge(spec, loaded, job.rows(loaded), est, job.prices))
            for spec in judge_specs(job.export.verify)
        ]
    except LabelerError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({**est.to_dict(), "judges": [j.to_dict() for _, j in judges]}))
        return
    bound = " (upper bound: max_tokens per answer)" if est.output_is_upper_bound else ""
    click.echo(
        f"rows             {est.rows} ({est.requests} distinct requests, "
        f"{est.http_requests} HTTP requests, {est.rejected} rejected)"
    )
    click.echo(
        f"prompt tokens    {est.prompt_tokens} ({est.cached_prompt_tokens} from cache, "
        f"{est.cache_write_tokens} written to it)"
    )
    click.echo(f"output tokens    {est.output_tokens}{bound} (at most {est.max_output_tokens})")
    if est.cost_usd is None:
        click.echo("cost             unknown")
    else:
        click.echo(f"cost             ${est.cost_usd:.4f} expected, ${est.max_cost_usd:.4f} at most")
    click.echo(f"tokenizer        {est.tokenizer}")
    for spec, judged in judges:
        priced = (
            f"${judged.cost_usd:.4f} expected, ${judged.max_cost_usd:.4f} at most, priced as {judged.model}"
            if judged.cost_usd is not None and judged.max_cost_usd is not None
            else f"cost unknown (no price for {judged.model})"
        )
        click.echo(
            f"judge            {spec.teacher}: up to {judged.http_requests} HTTP requests "
            f"({judged.requests} answers), {judged.prompt_tokens} prompt tokens, "
            f"{judged.output_tokens} output tokens; {priced}"
        )
    if judges and est.cost_usd is not None and all(j.cost_usd is not None for _, j in judges):
        total = est.cost_usd + sum(j.cost_usd or 0.0 for _, j in judges)
        worst = (est.max_cost_usd or 0.0) + sum(j.max_cost_usd or 0.0 for _, j in judges)
        click.echo(f"total cost       ${total:.4f} expected, ${worst:.4f} at most (teacher and judge)")
    notes = est.notes + [n for _, j in judges for n in j.notes]
    for note in () if kw.get("quiet") else notes:
        click.echo(f"labeler: {note}", err=True)


@main.group(
    invoke_without_command=True,
    examples=[
        "labeler batches --live",
        "labeler batches --store labels.sqlite --json",
    ],
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False),
    help="Store whose batches to list. Default: $LABELER_HOME/store.sqlite.",
)
@click.option("--live", "live_only", is_flag=True, help="Only batches still running.")
@output_flags(
    json_help="One JSON object per batch, one a line.",
    quiet_help="Only the batch ids, one a line (nothing when there is none).",
)
@click.pass_context
def batches(ctx: click.Context, store: str | None, live_only: bool, as_json: bool, quiet: bool) -> None:
    """Batches submitted by `run --batch`: provider, id, state, counts, age, cost.

    States are as last seen by a run (no request is sent); `labeler run ... --batch
    --no-wait` refreshes them.
    """
    ctx.ensure_object(dict)
    ctx.obj["store"] = store
    if ctx.invoked_subcommand is not None:
        return
    import time

    from labeler.batch import list_batches
    from labeler.job import default_store

    try:
        rows = list_batches(Path(store) if store else default_store(), live_only=live_only)
    except LabelerError as exc:
        _fail(exc)
    if as_json or quiet:
        for row in rows:
            click.echo(json.dumps(row) if as_json else row["id"])
        return
    if not rows:
        click.echo("labeler: no batches in this store", err=True)
        return
    click.echo(
        f"{'provider':<10} {'id':<36} {'state':<22} {'done/total':>12} {'failed':>7} {'age':>6} {'cost':>10}"
    )
    for r in rows:
        c = r["counts"]
        cost = f"${r['cost_usd']:.4f}" if r["cost_usd"] is not None else "-"
        click.echo(
            f"{r['provider']:<10} {r['id']:<36} {r['state'][:22]:<22} "
            f"{c.get('done', 0):>5}/{c.get('total', r['requests']):<6} {c.get('failed', 0):>7} "
            f"{_age(time.time() - r['created_at']):>6} {cost:>10}"
        )
        if r["error"]:
            click.echo(f"{'':<10} {r['error'][:100]}")


@batches.command(
    name="cancel",
    examples=[
        "labeler batches cancel batch_abc123",
        "labeler batches cancel batch_abc123 --store labels.sqlite",
    ],
)
@click.argument("batch_id")
@click.option("--store", type=click.Path(dir_okay=False), help="Store that journaled the batch.")
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False),
    help="Read the API key from this file (mode 0600). Default: the provider's environment variable.",
)
@output_flags(
    json_help="Print the batch's id and state at the provider as one JSON object.",
    quiet_help="Print nothing but errors.",
)
@click.pass_context
def batches_cancel(
    ctx: click.Context, batch_id: str, store: str | None, api_key_file: str | None, as_json: bool, quiet: bool
) -> None:
    """Cancel BATCH_ID at the provider. What it answered is kept; the next run collects it
    and sends the rest again."""
    from labeler.batch import cancel_batch
    from labeler.job import default_store

    store = store or (ctx.obj or {}).get("store")
    try:
        remote = aio.run(
            cancel_batch(Path(store) if store else default_store(), batch_id, _read_key_file(api_key_file))
        )
    except LabelerError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"id": remote.id, "status": remote.status}))
    if as_json or quiet:
        return
    click.echo(
        f"labeler: batch {remote.id} is {remote.status}; rerun the job to collect "
        "its answers and resubmit the rest",
        err=True,
    )


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _print_batch_summary(s: Any) -> None:
    parts = [f"{s.batches_created} submitted ({s.requests} requests)"]
    if s.batches_adopted:
        parts.append(f"{s.batches_adopted} adopted after a crash")
    parts.append(f"{s.batches_collected} collected")
    click.echo(f"labeler: batches: {', '.join(parts)}", err=True)
    if s.pending:
        click.echo(
            f"labeler: {s.pending} rows pending in {len(s.batches_live)} live batch(es) "
            f"({', '.join(s.batches_live[:3])}{'…' if len(s.batches_live) > 3 else ''}); "
            "rerun the same command to collect and export",
            err=True,
        )
    if s.unfinished:
        click.echo(
            f"labeler: {s.unfinished} rows were not attempted by their batch (expired, "
            "cancelled or failed); the next run sends them again",
            err=True,
        )


@main.command(
    examples=[
        "labeler refresh refresh.yaml",
        "labeler refresh refresh.yaml --max-age 30 -q",
    ]
)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--max-age",
    "max_age_days",
    type=_bounded("max_age_days"),
    metavar="DAYS",
    help="Relabel items whose stored answer is older than DAYS (overrides the config's max_age_days).",
)
@output_flags(
    json_help="Only the JSON line, on stdout: no summary line on stderr. The line is printed "
    "without --json too (schedules log it); name --json where a script reads it.",
    quiet_help="Only the JSON line on stdout (errors and warnings still on stderr).",
)
def refresh(config: str, max_age_days: float | None, as_json: bool, quiet: bool) -> None:
    """Scheduled refresh: label what changed in CONFIG's input, publish a new version.

    Writes OUT/versions/<UTC time>/ and swaps the OUT/current symlink to it; prints exactly
    one JSON line on stdout, with or without --json (the record a schedule logs), and a
    summary line on stderr unless --json or -q. Exit: 0 ok, 3 partial, 4 another refresh holds the lock,
    1 failed (current untouched), 5 budget, 7 empty (nothing labeled or exported: current
    untouched), 130 interrupted.
    """
    import traceback

    from labeler.refresh import RefreshResult
    from labeler.refresh import refresh as run_refresh

    try:
        result = run_refresh(config, max_age_days=max_age_days, on_warning=_warn, handle_signals=True)
    except Exception as exc:  # a bug: cron still gets its one JSON line and exit 1
        traceback.print_exc()
        result = RefreshResult(config, error=f"{type(exc).__name__}: {exc}")
    if result.outcome == "locked":
        click.echo(f"labeler: {result.error}", err=True)
    elif result.error:
        click.echo(f"labeler: error: {redact(result.error)}", err=True)
    elif not (quiet or as_json):
        s = result.summary
        click.echo(
            f"labeler: refresh {result.outcome}: {s.get('rows', 0)} rows, "
            f"{s.get('labeled', 0)} labeled, {s.get('cached', 0)} cached, "
            f"{s.get('failed', 0)} failed, {s.get('rejected', 0)} rejected; "
            f"current: {result.current}",
            err=True,
        )
    click.echo(result.to_json())
    sys.exit(result.exit_code)


def _estimate_cascade(job: Any, escalation_rate: str | None, as_json: bool) -> None:
    from labeler.cascade_eval import estimate_cascade
    from labeler.store import Store
    from labeler.verify.judge_estimate import judge_specs

    try:
        rates = None
        if escalation_rate:
            try:
                rates = [float(x) for x in escalation_rate.split(",")]
            except ValueError:
                raise ConfigError(
                    f"--escalation-rate '{escalation_rate}': expected numbers in [0, 1], e.g. 0.3"
                ) from None
        task, spec = job.load_task(), job.cascade_spec()
        with contextlib.ExitStack() as stack:
            store = identities = None
            if job.store_path().exists():
                store = stack.enter_context(Store(job.store_path()))
                identities = [t.identity for t in job.make_stage_teachers(spec)]
            est = estimate_cascade(
                task,
                spec,
                lambda: job.rows(task),
                job.prices,
                identities=identities,
                store=store,
                escalation_rate=rates,
                samples=job.samples,
                soft_labels=job.soft_labels,
                judges=judge_specs(job.export.verify),
            )
    except LabelerError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(est.to_dict()))
        return
    for st in est.stages:
        cost = "unknown" if st["cost_usd"] is None else f"${st['cost_usd']:.4f}"
        rate = (
            f"; passes on {st['escalation_rate']:.1%} ({st['rate_source']})"
            if "escalation_rate" in st
            else ""
        )
        if "judge_requests" in st:
            spent = "unknown" if st["judge_cost_usd"] is None else f"${st['judge_cost_usd']:.4f}"
            rate = f"; judge {st['judge_requests']} requests, {spent}{rate}"
        click.echo(
            f"stage {st['stage']} {st['teacher']:<36} {st['reach']:.1%} of {st['rows']} rows, {cost}{rate}"
        )
    total = "unknown" if est.cost_usd is None else f"${est.cost_usd:.4f}"
    alone = "unknown" if est.last_alone_usd is None else f"${est.last_alone_usd:.4f}"
    click.echo(f"cascade          {total} expected (the last teacher alone: {alone})")


def _job(task: str, input_path: str, kw: dict[str, Any]) -> Any:
    """The `Job` the parsed flags describe: each declared option set from its flag."""
    try:
        export_opts = ExportOptions(
            filters=FilterSpec(**field_values(FilterSpec, kw)), **field_values(ExportOptions, kw)
        )
        return Job(
            task=task,
            input=input_path,
            teacher=kw["teacher"],
            **field_values(Job, kw),
            **{o.field: kw.get(o.key, o.default) for o in options.OPTIONS},
            prices=_prices(kw.get("prices_file"), kw.get("price_overrides") or ()),
            rejects=kw.get("rejects"),
            export=export_opts,
            progress=False if kw.get("quiet") else None,
            batch=bool(kw.get("batch")),
            no_wait=bool(kw.get("no_wait")),
        )
    except LabelerError as exc:
        _fail(exc)


def _prices(path: str | None, overrides: Sequence[str]) -> Any:
    """--prices FILE and --price MODEL=IN,OUT: None (the shipped table) unless given."""
    from labeler.pricing import PriceTable

    if not path and not overrides:
        return None
    prices = PriceTable.from_file(path) if path else PriceTable.default()
    for spec in overrides:
        prices = prices.with_override(spec)
    return prices


def _ray_engine() -> Any:
    try:
        from labeler.ray import engine
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs Ray: pip install 'labeler-distill[ray]' ({exc})") from None
    return engine


def _read_key_file(path: str | None) -> str | None:
    """Keys come from the environment or a file only its owner can read."""
    from labeler.apikeys import read_key_file

    return read_key_file(path) if path else None


_BOUND = {
    "limit": "bound by the rate limit",
    "latency": "bound by latency",
    "errors": "cut by server errors",
    "ceiling": "at the -c ceiling",
}


def _print_summary(result: Any) -> None:
    """What a run did, on stderr: counts, stages, requests, cost, failures and what to do
    about them, where the answers and the export are."""
    s = result.summary
    _print_counts(s)
    _print_stages(s.stages)
    _print_judges(s.judges)
    _print_requests(s)
    _print_failures(s)
    if result.rejects:
        click.echo(f"labeler: rejected rows are in {result.rejects}", err=True)
    click.echo(f"labeler: store {result.store}", err=True)
    if result.export is not None:
        _print_export(result.export)
    if result.export is None and s.verification:
        _print_verification(s.verification)
    if s.outcome == "empty":  # last, where it is read: nothing came out of this run
        click.echo(f"labeler: {redact(s.why_empty())} (exit {_exit_code('empty')})", err=True)


def _print_counts(s: Any) -> None:
    parts = [
        f"{s.rows} rows",
        f"{s.labeled} labeled",
        f"{s.cached} cached",
        f"{s.failed} failed",
        f"{s.rejected} rejected",
    ]
    if s.skipped:
        parts.append(f"{s.skipped} not sent")
    click.echo(
        f"labeler: {', '.join(parts)} in {s.elapsed_s:.1f}s ({s.requests} requests, {s.retries} retries)",
        err=True,
    )


def _print_stages(stages: list[dict[str, Any]]) -> None:
    """A cascade's stages, or an ensemble's members."""
    for st in stages:
        if "awaiting" in st:  # a cascade's last stage: a person
            click.echo(
                f"labeler:   stage {st['stage']} human: {st['rows']} rows queued, "
                f"{st['labeled']} decided, {st['awaiting']} await `labeler review`",
                err=True,
            )
            continue
        which = f"stage {st['stage']}" if "stage" in st else f"member {st['member']}"
        passed = f", {st['escalated']} passed on" if "escalated" in st else ""
        click.echo(
            f"labeler:   {which} {st['teacher']}: {st['rows']} rows, "
            f"{st['labeled']} labeled, {st['cached']} cached, {st['failed']} failed"
            f"{passed}; {_spent(st['cost_usd'])} in {st['elapsed_s']:.1f}s",
            err=True,
        )


def _spent(cost: float | None) -> str:
    """A stage's or a judge's cost in words: "cost unknown" where an answer had no price."""
    return "cost unknown" if cost is None else f"${cost:.4f}"


def _print_judges(judges: list[dict[str, Any]]) -> None:
    """Each --verify judge's own pass."""
    for j in judges:
        click.echo(
            f"labeler:   judge {j['teacher']}: {j['answers']} answers, {j['labeled']} judged, "
            f"{j['cached']} stored, {j['failed']} failed ({j['requests']} requests); "
            f"{_spent(j['cost_usd'])} in {j['elapsed_s']:.1f}s",
            err=True,
        )


def _print_requests(s: Any) -> None:
    """Refused parameters, HTTP answers, the concurrency reached and the cost."""
    if s.refused_params:  # each said once as it was learned; counted here
        click.echo(
            f"labeler: refused by the teacher: {', '.join(s.refused_params)} (those "
            "requests were sent again without them)",
            err=True,
        )
    if s.http_failures or s.http_requests != s.requests:
        answers = ", ".join(
            f"{n} {_HTTP_WORDS.get(reason, reason)}"
            for reason, n in sorted(s.http_failures.items(), key=lambda kv: -kv[1])
        )
        click.echo(
            f"labeler: {s.http_requests} HTTP requests sent" + (f"; answered {answers}" if answers else ""),
            err=True,
        )
    if s.scoring_requests:
        failed = f", {s.scoring_failed} failed (those rows stay approximate)" if s.scoring_failed else ""
        click.echo(
            f"labeler: {s.scoring_requests} scoring requests for labels sharing first tokens{failed}",
            err=True,
        )
    c = s.concurrency
    if c and s.requests:
        click.echo(
            f"labeler: in flight {c['min']}-{c['max']} (median {c['median']}, "
            f"{_BOUND.get(c['bound'], c['bound'])}; ceiling {c['ceiling']})",
            err=True,
        )
    tokens = f"{s.prompt_tokens} prompt, {s.completion_tokens} output, {s.cached_tokens} cached tokens"
    if s.unpriced:
        priced = f"; ${s.cost_usd:.4f} for the priced ones" if s.cost_usd else ""
        click.echo(
            f"labeler: cost unknown: {s.unpriced} paid answers had no price (--price MODEL=IN,OUT){priced} "
            f"({tokens})",
            err=True,
        )
    elif s.cost_usd:
        click.echo(f"labeler: cost ${s.cost_usd:.4f} ({tokens})", err=True)


def _print_failures(s: Any) -> None:
    """Failures by reason in the server's words, and what a rerun would do about them."""
    for reason, n in sorted(s.failures_by_reason.items(), key=lambda kv: -kv[1]):
        said = s.failure_messages.get(reason)  # the server's own words, redacted
        if reason == "context_length":  # the cause a bare HTTP 400 would hide, said plainly
            reason = f"{reason} ({CONTEXT_TOO_LONG})"
            said = said.removeprefix(f"{CONTEXT_TOO_LONG}: ") if said else said
        click.echo(f"labeler:   failed {n} × {reason}" + (f": {said}" if said else ""), err=True)
    if s.failed_transient:
        click.echo(
            f"labeler: {s.failed_transient} failed on transient errors (rate limits, "
            "server errors, timeouts): rerun the same command to send them again",
            err=True,
        )
    if s.failed_final:
        click.echo(
            f"labeler: {s.failed_final} failed finally (the request was refused as it "
            "is): fix the cause, then rerun with --retry-failed",
            err=True,
        )
    if s.budget_stopped:
        click.echo(
            "labeler: the budget stopped new requests; rerun with a higher --budget "
            "to continue (nothing is sent twice)",
            err=True,
        )
    if s.interrupted:
        click.echo("labeler: interrupted; rerun the same command to resume", err=True)


_HTTP_WORDS = {"http_429": "rate-limited (429)", "overloaded": "overloaded (529)"}


def _print_export(report: Any) -> None:
    click.echo(
        f"labeler: exported {report.exported} rows ({report.kind}, {report.format}) to {report.path}",
        err=True,
    )
    for name, n in report.filtered.items():
        if n:
            click.echo(f"labeler:   {n} removed by {name}", err=True)
    if report.missing:
        click.echo(f"labeler:   {report.missing} rows have no stored answer yet", err=True)
    if report.awaiting_human:
        held = "held out" if report.held_for_human else "exported, marked awaiting_human"
        click.echo(
            f"labeler:   {report.awaiting_human} rows await a person (labeler review): {held}", err=True
        )
    if report.verification:
        _print_verification(report.verification)
    if report.unpaired:  # only a kind that pairs answers leaves rows out for want of one
        click.echo(
            f"labeler:   {report.unpaired} rows left out: no verified or no failed answer to pair", err=True
        )
    if report.calibration:
        click.echo(f"labeler:   calibration: {report.calibration}", err=True)
    for warning in report.prior_warnings:
        click.echo(f"labeler: warning: label prior: {warning}", err=True)
    if report.format == "hf":
        click.echo(f'labeler: load it with: datasets.load_from_disk("{report.path}")', err=True)
    else:  # the card's YAML maps each file to its split
        click.echo(f'labeler: load it with: datasets.load_dataset("{report.path}")', err=True)
    click.echo(report.path)


def _print_verification(v: dict[str, Any]) -> None:
    """The pass rates of --verify, in one line (and the checkers' own failures)."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    at_n = f", pass@{v['samples']} {pct(v['pass@N'])}" if v["samples"] > 1 else ""
    click.echo(
        f"labeler: verified {v['answers']} answers of {v['rows']} rows with "
        f"{v['spec']}: pass rate {pct(v['pass_rate'])}, pass@1 {pct(v['pass@1'])}"
        f"{at_n} ({v['checked']} checked, {v['cached']} stored verdicts)",
        err=True,
    )
    broken = {k: n for k, n in v["verdicts"].items() if k in ("error", "timeout")}
    if broken:
        click.echo(
            "labeler:   the checker failed on "
            + ", ".join(f"{n} answers ({k})" for k, n in broken.items())
            + ": those answers count as not passing",
            err=True,
        )


def _warn(message: str) -> None:
    click.echo(f"labeler: warning: {redact(message)}", err=True)


def _fail(exc: BaseException) -> None:
    click.echo(f"labeler: error: {redact(str(exc))}", err=True)
    sys.exit(EXIT_FATAL)


def _exit_code(outcome: str) -> int:
    return options.exit_code(outcome)


if __name__ == "__main__":
    main()
