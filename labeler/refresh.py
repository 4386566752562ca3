"""`labeler refresh CONFIG`: the scheduled job that keeps a labeled dataset up to date.

A cron line runs the same YAML config again and again; each run must be cheap, safe to
overlap, safe to kill and easy to monitor:

- incremental: every answer is cached under a key of the full request (request.py), so
  only new or changed rows are sent; rows that left the input leave the export, because
  an export is rebuilt from the current input (labeler/exports/).
- locked: `fcntl.flock` on OUT/.refresh.lock, with the holder's PID written in it. A
  second refresh while one runs exits at once (code 4). A lock left by a killed run is
  recognised (its PID is gone) and taken over: the kernel drops a dead process's flock,
  and if a child it started kept the descriptor open, the lock file is replaced.
- atomic and versioned: each refresh exports to OUT/versions/<UTC timestamp>/, then
  swaps the OUT/current symlink with one rename. Readers always see a whole export; a
  refresh that fails or is interrupted leaves `current` as it was. The last `keep`
  versions are kept. OUT is the refresh's alone: a folder that holds anything else, or
  lies inside an export or another refresh folder, is refused (labeler/exports/out_folder.py).
- observable: exactly one JSON line on stdout (counts, cost, duration, outcome, version
  path) and an exit code: 0 ok, 3 partial, 4 locked, 1 failed (5 budget and 130
  interrupted, as for `labeler run`).

Config keys (relative paths are relative to the config file, since cron starts jobs in
the home directory)::

    task: sentiment                  # shipped template name or a YAML path
    input: data/reviews.jsonl        # or hf://datasets/NAME[:CONFIG][:SPLIT]
    input_map: {text: sentence}      # template field: input column (--map)
    teacher: openai:gpt-4o-mini
    base_url: null                   # for openai-compatible teachers
    api_key_env: OPENAI_API_KEY      # or api_key_file: secrets/openai.key (mode 0600)
    teacher_options: {timeout: 60}
    store: state/labels.sqlite       # default: $LABELER_HOME/store.sqlite
    out: datasets/reviews            # versions/ and the current symlink go here
    keep: 5
    max_age_days: 30                 # relabel answers older than this
    concurrency: 512                 # a ceiling; also rpm, tpm, max_attempts,
                                     # retry_initial_wait, retry_failed, budget,
                                     # prices (a file), stop_grace,
                                     # request_timeout (seconds per attempt, default 120)
    id_field: id                     # also input_format, delimiter, split
    export: {kind: classification, format: hf, validation_size: 0.1, seed: 0}
                                     # also sft_shape, kd_layout, reasoning, card_license,
                                     # card_endpoint, public, push_to_hub, gold, gold_map,
                                     # teacher_labels, include_awaiting_human,
                                     # calibration: FILE (labeler eval --save-calibration)
    verify: exact:gold               # also verify_timeout, verify_keep (run's --keep),
                                     # judge_calibration: FILE (a judge: step's calibration)
    filters: {min_confidence: 0.8}   # also min_margin, max_entropy, keep_invalid
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from labeler import aio, bounds
from labeler.apikeys import find_secret, key_from_env, read_key_file
from labeler.errors import ConfigError, LabelerError
from labeler.exports.options import ExportOptions
from labeler.exports.out_folder import REFRESH_LOCK, VERSION_RE, check_refresh_out
from labeler.filters import FilterSpec
from labeler.hub_input import is_hub
from labeler.job import Job, run_job
from labeler.option_fields import declared
from labeler.options import EXIT_CODES, OPTIONS, check_values
from labeler.owner import alive as _alive
from labeler.pricing import PriceTable
from labeler.redact import redact
from labeler.teachers import PROVIDERS, base_urls, load
from labeler.teachers.option_check import check_base_url, check_teacher_options
from labeler.yaml_files import YamlTooLarge, load_yaml

LOCK_NAME = REFRESH_LOCK

_REQUIRED = ("task", "input", "teacher", "out")
# The keys only a refresh config has, each with the reason the CLI has no such flag. The
# rest are the options declared once: the labeling options (labeler/options.py) and the
# teacher, input, export and filter options on the fields that hold them
# (labeler/option_fields.py); tests/test_options_declared.py keeps the two in step.
REFRESH_ONLY: dict[str, tuple[tuple[type, ...], str]] = {
    "api_key_env": ((str,), "names the variable holding the key; a shell sets the provider's own"),
    "api_key_file": ((str,), "read when each refresh starts; run's --api-key-file reads it at once"),
    "teacher_options": ((dict,), "the provider client's options: a mapping, which no flag spells"),
    "keep": ((int,), "how many published versions stay; a run writes one export"),
    "prices": ((str,), "a price table file, as run's --prices (which also takes --price overrides)"),
}
# The keys that say where a key is (a file, a variable), not the key itself.
_KEY_PLACES = ("api_key_file", "api_key_env")
# Sections of the config holding the options declared on these classes.
SECTIONS: dict[str, type] = {"export": ExportOptions, "filters": FilterSpec}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    **{key: types for key, (types, _) in REFRESH_ONLY.items()},
    **{o.key: o.config_types() for o in declared(Job) if o.in_refresh},
    **dict.fromkeys(SECTIONS, dict),
    **{o.refresh_key: o.config_types() for o in OPTIONS},
}


class Locked(LabelerError):
    """Another refresh of the same output folder is running."""


@dataclass
class RefreshConfig:
    """A refresh config file, validated, with its paths made absolute."""

    path: Path
    task: str
    input: str
    teacher: str
    out: Path
    api_key_env: str | None = None
    api_key_file: Path | None = None
    teacher_options: dict[str, Any] = field(default_factory=dict)
    # the labeling options by `Job` field name (labeler/options.py): defaults filled in
    options: dict[str, Any] = field(default_factory=lambda: {o.field: o.default for o in OPTIONS})
    prices: Path | None = None
    keep: int = 5
    # the teacher and input options by `Job` field name (store, base_url, id_field, ...)
    inputs: dict[str, Any] = field(default_factory=dict)
    export: ExportOptions = field(default_factory=ExportOptions)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RefreshConfig:
        """Read and check a config; every problem names the file and the key."""
        p = Path(path)
        try:
            raw = load_yaml(p.read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the refresh config: {exc.strerror}") from exc
        except (UnicodeDecodeError, yaml.YAMLError, YamlTooLarge) as exc:
            raise ConfigError(f"{p}: not a valid YAML refresh config: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: a refresh config is a YAML mapping of keys")
        return cls.from_dict(raw, p)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: Path) -> RefreshConfig:
        where = str(path)
        secret = find_secret({k: v for k, v in raw.items() if k not in _KEY_PLACES})
        if secret is not None:
            raise ConfigError(
                f"{where}: {secret}: a key does not belong in a config file; use "
                "api_key_file (a file of mode 0600) or api_key_env"
            )
        unknown = set(raw) - set(_REQUIRED) - set(_OPTIONAL)
        if unknown:
            allowed = ", ".join(sorted((*_REQUIRED, *_OPTIONAL)))
            raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}' (allowed: {allowed})")
        for key in _REQUIRED:
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise ConfigError(f"{where}: '{key}' is required and must be a string")
        _check_types(raw, _OPTIONAL, where, "")
        bounds.check([(k, v) for k, v in raw.items() if k in bounds.BOUNDS], where)
        check_values({o.key: raw[o.refresh_key] for o in OPTIONS if o.refresh_key in raw}, where)
        base = path.resolve().parent

        def local(value: str) -> Path:
            return base / Path(value).expanduser()

        task = raw["task"]
        if task.endswith((".yaml", ".yml")) or os.sep in task:
            task = str(local(task))
        if raw["input"] == "-":
            raise ConfigError(f"{where}: input: stdin cannot be refreshed; name a file")
        inputs = _declared_values(Job, raw, where, "", local)
        for url in base_urls(inputs.get("base_url")):
            check_base_url(url, f"{where}: base_url")
        provider = raw["teacher"].partition(":")[0]
        if provider in PROVIDERS:  # (a cascade's or ensemble's `teacher` may be a placeholder)
            check_teacher_options(
                load(PROVIDERS[provider].factory),
                raw.get("teacher_options") or {},
                f"{where}: teacher_options",
            )
        keep = raw.get("keep", 5)
        if keep < 1:
            raise ConfigError(f"{where}: keep must be at least 1 (the current version)")
        return cls(
            path=path,
            task=task,
            input=raw["input"] if is_hub(raw["input"]) else str(local(raw["input"])),
            teacher=raw["teacher"],
            out=local(raw["out"]),
            api_key_env=raw.get("api_key_env"),
            api_key_file=local(raw["api_key_file"]) if raw.get("api_key_file") else None,
            teacher_options=dict(raw.get("teacher_options") or {}),
            options={
                o.field: str(local(raw[o.refresh_key]))
                if o.path and isinstance(raw.get(o.refresh_key), str)
                else raw.get(o.refresh_key, o.default)
                for o in OPTIONS
            },
            prices=local(raw["prices"]) if raw.get("prices") else None,
            keep=keep,
            inputs=inputs,
            export=_export_options(raw, where, local),
        )

    @property
    def store(self) -> Path | None:
        """The store the config names (relative to the config file), if it names one."""
        store = self.inputs.get("store")
        return Path(store) if store else None

    def api_key(self) -> str | None:
        """From api_key_file (mode 0600), else api_key_env, else the provider's variable."""
        if self.api_key_file is not None:
            return read_key_file(self.api_key_file)
        if self.api_key_env:
            return key_from_env(self.api_key_env)
        return None

    def lock_path(self) -> Path:
        return self.out / LOCK_NAME

    def job(self, version: Path, max_age_days: float | None = None) -> Job:
        """The `labeler run` this refresh amounts to, exporting into `version`."""
        prices = PriceTable.from_file(self.prices) if self.prices else None
        return Job(
            task=self.task,
            input=self.input,
            teacher=self.teacher,
            out=version,
            api_key=self.api_key(),
            teacher_options=dict(self.teacher_options),
            **{**self.options, **({"max_age_days": max_age_days} if max_age_days is not None else {})},
            prices=prices,
            **self.inputs,
            rejects=self.out / "rejects.jsonl",
            export=self.export,
            progress=False,
        )


def _check_types(
    raw: Mapping[str, Any], spec: Mapping[str, type | tuple[type, ...]], where: str, prefix: str
) -> None:
    for key, kind in spec.items():
        value = raw.get(key)
        if value is None:
            continue
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wrong_bool = isinstance(value, bool) and bool not in kinds  # YAML's yes is no number
        if wrong_bool or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{where}: {prefix}{key} must be {names}, got {value!r}")


def _export_options(raw: Mapping[str, Any], where: str, local: Callable[[str], Path]) -> ExportOptions:
    """The `export:` and `filters:` sections, checked key by key as their fields declare."""
    values = {}
    for section, owner in SECTIONS.items():
        given = raw.get(section) or {}
        spec = {o.key: o.config_types() for o in declared(owner) if o.in_refresh}
        unknown = set(given) - set(spec)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key '{section}.{sorted(unknown)[0]}' (allowed: {', '.join(sorted(spec))})"
            )
        _check_types(given, spec, where, f"{section}.")
        bounds.check([(k, v) for k, v in given.items() if k in bounds.BOUNDS], f"{where}: {section}")
        values[section] = _declared_values(owner, given, where, f"{section}.", local)
    return ExportOptions(filters=FilterSpec(**values["filters"]), **values["export"])


def _declared_values(
    owner: type, given: Mapping[str, Any], where: str, prefix: str, local: Callable[[str], Path]
) -> dict[str, Any]:
    """The fields of `owner` that a config's keys set: a path made relative to the config,
    a value outside its choices refused, each naming the file and the key."""
    out: dict[str, Any] = {}
    for opt in declared(owner):
        value = given.get(opt.key)
        if not opt.in_refresh or not opt.is_set(value):
            continue
        choices = opt.choices()
        if choices is not None and value not in choices:
            raise ConfigError(
                f"{where}: {prefix}{opt.key} must be one of {', '.join(choices)}, got {value!r}"
            )
        if opt.decl.path and isinstance(value, str) and value not in opt.decl.keywords:
            value = str(local(value))
        try:
            out.update(opt.fields(value))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {prefix}{opt.key}: {exc}") from None
    return out


# -- the lock -------------------------------------------------------------------------------


class RefreshLock:
    """An exclusive, non-blocking lock on one output folder, naming its holder.

    flock is the lock; the PID in the file only says who holds it, and which lock a
    killed run left behind. Release empties the file, so a PID found there on a free
    lock is always a run that died holding it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.took_over_from: int | None = None
        self._fd: int | None = None

    def acquire(self) -> RefreshLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, since = _holder(fd)
                if pid is not None and not _alive(pid) and _same_file(fd, self.path):
                    # The run that wrote this PID is gone, yet the lock is held: a process
                    # it started kept the descriptor. A new file is a new, free lock.
                    self.took_over_from = pid
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    os.close(fd)
                    continue
                os.close(fd)
                who = f"pid {pid}, started {since}" if pid is not None else "starting up"
                raise Locked(
                    f"{self.path}: another refresh of {self.path.parent} is running "
                    f"({who}); this one exits without doing anything"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            if not _same_file(fd, self.path):  # replaced between our open and flock
                os.close(fd)
                continue
            pid, _ = _holder(fd)
            if pid is not None and pid != os.getpid() and not _alive(pid):
                self.took_over_from = pid
            stamp = f"{os.getpid()}\n{datetime.now(UTC).isoformat(timespec='seconds')}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, stamp.encode(), 0)
            os.fsync(fd)
            self._fd = fd
            return self
        raise Locked(
            f"{self.path}: the lock file keeps being replaced; is another refresh "
            "starting at the same moment?"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty file: nobody holds it, nobody died holding it
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RefreshLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> tuple[int | None, str | None]:
    text = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    if not text or not text[0].isdigit():
        return None, None
    return int(text[0]), text[1] if len(text) > 1 else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


# -- versions -------------------------------------------------------------------------------


def _new_version(versions: Path) -> Path:
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path, n = versions / name, 0
    while path.exists():
        n += 1
        path = versions / f"{name}-{n}"
    return path


def _point_current(out: Path, version: Path) -> Path:
    """Swap OUT/current to `version` in one rename: readers see the old or the new."""
    link = out / "current"
    tmp = out / f".current.tmp-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(Path("versions") / version.name, tmp)  # relative: OUT can move
        os.replace(tmp, link)
        _fsync_dir(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LabelerError(f"{link}: cannot point it at {version}: {exc.strerror or exc}") from exc
    return link


def _current_version(out: Path) -> Path | None:
    link = out / "current"
    if not link.is_symlink():
        return None
    return (out / os.readlink(link)).resolve()


def _clean_staging(out: Path) -> None:
    """What a killed refresh left: half-written exports and a temporary symlink. Only a
    holder of the lock calls this, so nothing here is still being written."""
    for stale in [*out.glob(".current.tmp-*"), *(out / "versions").glob(".*")]:
        if stale.is_symlink() or stale.is_file():
            stale.unlink(missing_ok=True)
        else:
            shutil.rmtree(stale, ignore_errors=True)


def _prune(versions: Path, keep: int, current: Path) -> list[str]:
    """Drop all but the newest `keep` versions; never the one `current` names."""
    names = sorted(p.name for p in versions.iterdir() if p.is_dir() and VERSION_RE.match(p.name))
    removed = []
    for name in names[:-keep]:
        if (versions / name).resolve() == current.resolve():
            continue
        shutil.rmtree(versions / name, ignore_errors=True)
        removed.append(name)
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the refresh ----------------------------------------------------------------------------


@dataclass
class RefreshResult:
    """What one refresh did; `to_json` is the line cron logs and monitors read."""

    config: str
    outcome: str = "failed"
    started_at: str = ""
    duration_s: float = 0.0
    out: str | None = None
    version: str | None = None  # the export this refresh wrote (None: it wrote none)
    current: str | None = None  # the version OUT/current names after this refresh
    exported: int | None = None
    filtered: dict[str, int] = field(default_factory=dict)  # rows each export filter removed
    kind: str | None = None  # the export's kind (records, classification, sft, kd)
    pruned: list[str] = field(default_factory=list)
    lock_taken_over_from: int | None = None
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.outcome, 1)

    def to_dict(self) -> dict[str, Any]:
        counts = {
            k: self.summary.get(k, 0)
            for k in (
                "rows",
                "labeled",
                "cached",
                "failed",
                "failed_transient",
                "failed_final",
                "rejected",
                "skipped",
                "requests",
                "retries",
                "http_requests",
                "rate_limited",
                "overloaded",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
            )
        }
        return {
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            **counts,
            "cost_usd": self.summary.get("cost_usd", 0.0),
            "failures_by_reason": self.summary.get("failures_by_reason", {}),
            "main_failure": self.summary.get("main_failure"),
            "exported": self.exported,
            "filtered": dict(self.filtered),
            "kind": self.kind,
            "duration_s": round(self.duration_s, 3),
            "started_at": self.started_at,
            "version": self.version,
            "current": self.current,
            "out": self.out,
            "pruned": self.pruned,
            "lock_taken_over_from": self.lock_taken_over_from,
            "error": redact(self.error) if self.error else None,
            "config": self.config,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def refresh(
    config: RefreshConfig | str | os.PathLike[str],
    *,
    max_age_days: float | None = None,
    on_warning: Callable[[str], None] | None = None,
    handle_signals: bool = False,
) -> RefreshResult:
    """Run one refresh; never raises a LabelerError: the result says what happened."""
    start = time.monotonic()
    where = str(config.path if isinstance(config, RefreshConfig) else config)
    result = RefreshResult(where, started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    warn = on_warning or (lambda msg: None)
    try:
        cfg = config if isinstance(config, RefreshConfig) else RefreshConfig.load(config)
        result.out = str(cfg.out)
        check_refresh_out(cfg.out)
        with RefreshLock(cfg.lock_path()) as lock:
            if lock.took_over_from is not None:
                result.lock_taken_over_from = lock.took_over_from
                warn(f"took over {lock.path}, left by pid {lock.took_over_from} which is no longer running")
            _refresh_locked(cfg, result, max_age_days, warn, handle_signals)
    except Locked as exc:
        result.outcome, result.error = "locked", str(exc)
    except KeyboardInterrupt:  # a second SIGINT/SIGTERM: stop at once
        result.outcome, result.error = "interrupted", "interrupted; nothing was published"
    except LabelerError as exc:
        result.outcome, result.error = "failed", str(exc)
    except OSError as exc:  # the output folder cannot be created, locked or written
        where = exc.filename or result.out or result.config  # ENOSPC often names no file
        result.outcome, result.error = "failed", f"{where}: {exc.strerror or exc}"
    finally:
        result.duration_s = time.monotonic() - start
    return result


def _refresh_locked(
    cfg: RefreshConfig,
    result: RefreshResult,
    max_age_days: float | None,
    warn: Callable[[str], None],
    handle_signals: bool,
) -> None:
    versions = cfg.out / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    _clean_staging(cfg.out)
    current = _current_version(cfg.out)
    result.current = str(current) if current else None
    version = _new_version(versions)
    job = cfg.job(version, max_age_days)
    done = aio.run(run_job(job, on_warning=warn, handle_signals=handle_signals))
    result.summary = done.summary.to_dict()
    result.outcome = done.summary.outcome
    if done.export is None:  # interrupted: the export was not written
        return
    if done.summary.outcome == "empty":
        # Nothing came out of it (every row failed, or no row passed the filters): the
        # dataset readers have stays current, and the reason goes in the cron line.
        result.exported, result.error = done.export.exported, done.summary.why_empty()
        shutil.rmtree(version, ignore_errors=True)
        return
    result.version, result.exported = str(version), done.export.exported
    result.filtered, result.kind = dict(done.export.filtered), done.export.kind
    _point_current(cfg.out, version)
    result.current = str(version)
    result.pruned = _prune(versions, cfg.keep, version)
