"""Which folders an export may replace: only its own.

An export replaces its whole folder (labeler/exports/folder_swap.py), so whatever else the folder
held would be gone: the user's notes, the input, the store with every paid answer, a
refresh folder's published versions. The rule, applied by every path that exports (the
CLI, `run_job`, `export_job`, `export_dataset`, `refresh`) before anything is paid:

- `out` may be a path that does not exist yet, an empty folder, or a folder labeler wrote
  as an export of the same kind and format, which a rerun replaces (cron reruns the same
  command into the same folder). An export of another kind or format is replaced only
  with `force`: whoever reads `out` expects the columns and files it had.
- never a folder that holds anything an export does not write, the store, the input or
  the rejects file; never a symbolic link (the link would be replaced, not its folder);
  never a refresh folder or anything inside one (only `refresh` writes there), nor a
  folder inside an export or inside an input folder.

An export is recognised by its `labeler_export.json`, which every release has written,
with the kind and format in its `report` (newer ones also at the top level).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from labeler.errors import ExportError

META_FILE = "labeler_export.json"
CARD_FILE = "README.md"
# The refresh layout (labeler/refresh.py): OUT/.refresh.lock, OUT/versions/<stamp>/ and
# OUT/current -> versions/<stamp>.
REFRESH_LOCK = ".refresh.lock"
REFRESH_VERSIONS = "versions"
REFRESH_CURRENT = "current"
VERSION_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z(-\d+)?$")

# What a file browser leaves in any folder it shows (macOS Finder): nothing of the user's.
_BROWSER_FILES = frozenset({".DS_Store"})
# The files `save_to_disk` (and labeler/exports/hf_folder.py) write in a dataset or a split folder.
_HF_SPLIT_FILES = re.compile(r"^(dataset_info\.json|state\.json|data-\d{5}-of-\d{5}\.arrow)$")


def check_out(
    out: Path,
    *,
    kind: str,
    fmt: str,
    force: bool = False,
    holds: Iterable[tuple[str, Path | None]] = (),
    input_folder: Path | None = None,
    note: str = "nothing was written",
) -> None:
    """Refuse an `out` an export may not replace (see the module docstring), with one
    line naming the folder, why, and what to do. `holds` names the paths the job reads or
    writes that must stay outside `out` (the store, the input, the rejects file); `note`
    says what the refusal spared ("nothing was sent")."""
    out = Path(os.path.abspath(out))
    _check_not_in_refresh(out, note)
    if out.is_symlink():
        target = os.path.realpath(out)
        _refuse(
            out,
            f"is a symbolic link (to {target}); an export replaces a folder it wrote, never a link",
            note,
            f"give the folder itself ({target}) as --out",
        )
    real = _real(out)
    for what, path in holds:
        if path is not None and _real(path).is_relative_to(real):
            _refuse(
                out,
                f"holds {what} {path}; an export replaces its whole folder",
                note,
                "choose an --out of its own",
            )
    if input_folder is not None and real.is_relative_to(_real(input_folder)):
        _refuse(
            out,
            f"is inside the input {input_folder}; an export there would become part of the input",
            note,
            "choose an --out outside it",
        )
    for parent in real.parents:
        if (parent / META_FILE).is_file():
            _refuse(
                out,
                f"is inside the labeler export {parent}, which the next export there replaces whole",
                note,
                "choose an --out outside it",
            )
    if not out.is_dir() or _is_empty(out):
        return
    meta = _read_meta(out)
    if meta is None:
        _refuse(
            out,
            f"is not a labeler export (it holds {_first_entry(out)}); an export "
            "replaces its whole folder, and only a folder labeler wrote is replaced",
            note,
            "choose a new or empty --out",
        )
    old_kind, old_fmt = meta
    foreign = next(_foreign_entries(out, old_fmt), None)
    if foreign is not None:
        _refuse(
            out,
            f"holds {foreign}, which no labeler export writes; an export replaces its whole folder",
            note,
            "move it out, or choose another --out",
        )
    if (old_kind, old_fmt) != (kind, fmt) and not force:
        _refuse(
            out,
            f"holds a labeler export of kind '{old_kind}' in {old_fmt}, not '{kind}' in {fmt}",
            note,
            "add --force to replace it, or choose another --out",
        )


def check_refresh_out(out: Path) -> None:
    """Refuse a refresh output folder that is not a refresh folder: one that holds other
    files (a plain export, a project folder) or lies inside a refresh folder or an export.
    A refresh never removes its folder, but it would mix its versions with what is there,
    and a later export there would be refused anyway."""
    out = Path(os.path.abspath(out))
    real = _real(out)
    for parent in real.parents:
        if is_refresh_folder(parent):
            _refuse(
                out,
                f"is inside the refresh folder {parent}",
                "nothing was sent",
                "give a refresh a folder of its own",
            )
        if (parent / META_FILE).is_file():
            _refuse(
                out,
                f"is inside the labeler export {parent}",
                "nothing was sent",
                "give a refresh a folder of its own",
            )
    if not real.is_dir() or _is_empty(real) or is_refresh_folder(real):
        return
    what = (
        "a labeler export"
        if _read_meta(real) is not None
        else f"files that are not a refresh's (it holds {_first_entry(real)})"
    )
    _refuse(
        out,
        f"is not a refresh folder: it holds {what}",
        "nothing was sent",
        "give a refresh a new or empty folder of its own",
    )


def is_refresh_folder(folder: Path) -> bool:
    """A folder `labeler refresh` publishes into: its lock file (made by the first refresh,
    kept ever after), or a `current` link into its versions."""
    if (folder / REFRESH_LOCK).is_file():
        return True
    current = folder / REFRESH_CURRENT
    return current.is_symlink() and os.readlink(current).startswith(f"{REFRESH_VERSIONS}/")


def _check_not_in_refresh(out: Path, note: str) -> None:
    """An export never goes into a refresh folder, except the new version the refresh
    holding its lock is writing (OUT/versions/<stamp>, not yet there)."""
    real = _real(out)
    if is_refresh_folder(real):
        _refuse(
            out,
            "is a refresh folder (labeler refresh publishes its versions there); an "
            "export would replace them all",
            note,
            f"read the dataset at {out / REFRESH_CURRENT}, or choose another --out",
        )
    for parent in real.parents:
        if not is_refresh_folder(parent):
            continue
        if (
            real.parent == parent / REFRESH_VERSIONS
            and VERSION_RE.match(real.name)
            and not real.exists()
            and _lock_holder(parent) == os.getpid()
        ):
            return  # this process's refresh, writing its next version
        _refuse(
            out,
            f"is inside the refresh folder {parent}, whose versions only labeler refresh writes",
            note,
            f"read the dataset at {parent / REFRESH_CURRENT}, or choose another --out",
        )


def _lock_holder(folder: Path) -> int | None:
    try:
        text = (folder / REFRESH_LOCK).read_text("utf-8", "replace").split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def _read_meta(folder: Path) -> tuple[str, str] | None:
    """(kind, format) of the export in `folder`, None if it is not one labeler wrote."""
    try:
        meta: Any = json.loads((folder / META_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    report = meta.get("report") if isinstance(meta, dict) else None
    if not isinstance(report, dict):
        return None
    kind, fmt = meta.get("kind", report.get("kind")), report.get("format")
    if not isinstance(kind, str) or not isinstance(fmt, str):
        return None
    return kind, fmt


def _foreign_entries(folder: Path, fmt: str) -> Iterator[Path]:
    """Paths in an export folder that no export of format `fmt` writes (a split folder of
    an `hf` export holds only the files `save_to_disk` writes)."""
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name in _BROWSER_FILES or (
            name in (META_FILE, CARD_FILE) and entry.is_file() and not entry.is_symlink()
        ):
            continue
        if entry.is_symlink():
            yield entry
        elif fmt == "hf" and entry.is_file():
            if name != "dataset_dict.json" and not _HF_SPLIT_FILES.match(name):
                yield entry
        elif fmt == "hf" and entry.is_dir():
            for inner in sorted(entry.iterdir()):
                if inner.name in _BROWSER_FILES:
                    continue
                if inner.is_symlink() or not inner.is_file() or not _HF_SPLIT_FILES.match(inner.name):
                    yield inner
        elif not (entry.is_file() and name.endswith(f".{fmt}") and not name.startswith(".")):
            yield entry


def _is_empty(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return all(entry.name in _BROWSER_FILES for entry in it)


def _first_entry(folder: Path) -> str:
    names = sorted(os.listdir(folder))
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"{names[0]}{more}"


def _real(path: Path) -> Path:
    """The path with every link and `..` resolved, whether or not it exists yet, so that
    two spellings of one folder compare equal."""
    return Path(os.path.realpath(path))


def _refuse(out: Path, why: str, note: str, advice: str) -> NoReturn:
    raise ExportError(f"{out}: {why}; {note}: {advice}")


__all__ = ["META_FILE", "REFRESH_LOCK", "VERSION_RE", "check_out", "check_refresh_out", "is_refresh_folder"]
