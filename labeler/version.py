"""The release number, in one place: pyproject.toml reads it from here (a dynamic version)
and `labeler --version` prints it, so the command never asks the installed distribution's
metadata, whose name (`labeler-distill`) is not the package's."""

VERSION = "0.1.0"
