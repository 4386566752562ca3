"""In a notebook, label() shows a progress bar without being asked and hands back the run's
summary: a notebook executed by a real Jupyter kernel against the local teacher server."""

from __future__ import annotations

from pathlib import Path

import pytest

from labeler.testing import TeacherServer

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def test_a_notebook_sees_progress_and_reads_the_summary(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    cell = (
        "import labeler\n"
        "rows = [{'id': str(i), 'text': f'review {i}'} for i in range(5)]\n"
        f"ds, summary = labeler.label(rows, 'sentiment', 'openai-compatible:teacher-test',\n"
        f"    base_url={teacher_server.url + '/v1'!r}, store={str(tmp_path / 's.sqlite')!r},\n"
        "    return_summary=True)\n"
        "print('labeled', summary.labeled, 'failed', summary.failed, 'rows', len(ds))\n"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = nb.cells[0].outputs
    stdout = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert "labeled 5 failed 0 rows 5" in stdout, outputs
    assert widgets or "5/5" in stderr, outputs  # the bar: a widget, or tqdm's text without one
