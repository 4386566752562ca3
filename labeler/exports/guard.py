"""An export folder that cannot be written is one line naming it, never a traceback.

By the time a run exports, every answer is paid for and in the store; a bad `--out` (under
a regular file, read-only, on a full disk, or a folder that is not an export's own, see
labeler/exports/out_folder.py) must not look like lost work. So the folder is checked before
anything is sent, and a failure while writing says where, and that a rerun with a fixed
path sends nothing again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from labeler.errors import ExportError
from labeler.exports.build import export_dataset
from labeler.exports.options import ExportOptions, ExportReport
from labeler.exports.out_folder import check_out
from labeler.inputs import Reject, Row
from labeler.store import Store
from labeler.task import Task


def check_out_folder(
    out: Path,
    store: Path,
    export: ExportOptions | None = None,
    *,
    reads: Path | None = None,
    rejects: Path | None = None,
    note: str = "nothing was sent",
) -> None:
    """Refuse, before anything is sent, an export folder that cannot be made (under a
    regular file, on a read-only file system or folder) or that an export may not replace
    (labeler/exports/out_folder.py): one holding the store, the input `reads` or the `rejects`
    file, a refresh folder, a folder that is not a previous export of this kind."""
    if out.exists() and not out.is_dir() and not out.is_symlink():
        raise ExportError(
            f"{out}: cannot write the export there: it is a file, not a folder; "
            "nothing was sent: choose another --out and rerun"
        )
    opts = export or ExportOptions()
    check_out(
        out,
        kind=opts.kind,
        fmt=opts.format,
        force=opts.force,
        holds=[("the store", store), ("the input", reads), ("the --rejects file", rejects)],
        input_folder=reads if reads is not None and reads.is_dir() else None,
        note=note,
    )
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        why = f"{parent} is a file, not a folder"
    elif not os.access(parent, os.W_OK):
        why = f"{parent} is not writable (read-only file system or folder)"
    else:
        return
    raise ExportError(
        f"{out}: cannot write the export there: {why}; nothing was sent "
        f"(answers already paid for are safe in the store {store}): fix --out "
        "and rerun"
    )


def export_to(
    task: Task,
    identity: Mapping[str, Any],
    rows: Iterable[Row | Reject],
    store: Store,
    out: Path,
    options: ExportOptions,
    planner: Any = None,
    verifier: Any = None,
) -> ExportReport:
    """`export_dataset`, with a failure to write (disk full, read-only, not a folder) told
    as one line naming the path: the answers are in the store, so a rerun sends nothing."""
    try:
        return export_dataset(task, identity, rows, store, out, options, planner=planner, verifier=verifier)
    except OSError as exc:
        where = exc.filename or out
        # The system's words for the errno: pyarrow's own message wraps them in its own
        # ("Error writing bytes to file. Detail: [errno 28] ...").
        why = os.strerror(exc.errno) if exc.errno else (exc.strerror or exc)
        raise ExportError(
            f"{out}: cannot write the export: {why} ({where}); every answer "
            f"is safe in the store {store.path}: free space or fix --out, then rerun (nothing "
            "is sent again)"
        ) from exc


__all__ = ["check_out_folder", "export_to"]
