"""`labeler --version` prints the package's own version, whatever the distribution is named."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import labeler

REPO = Path(__file__).resolve().parent.parent


def test_version_needs_no_distribution_metadata() -> None:
    """Installed as `labeler-distill`, no distribution is named `labeler`: a version looked
    up in the metadata by the package's name would fail. Here no distribution is found at
    all, as in a checkout run from its folder."""
    code = (
        "import importlib.metadata as md, sys\n"
        "def missing(name):\n"
        "    raise md.PackageNotFoundError(name)\n"
        "md.version = missing\n"
        "from labeler.cli import main\n"
        "sys.argv = ['labeler', '--version']\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"labeler, version {labeler.__version__}"


def test_the_distribution_reads_its_version_from_the_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    assert project["project"]["name"] == "labeler-distill"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "labeler.version.VERSION"}
