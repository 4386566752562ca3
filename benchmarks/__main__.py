"""``python -m benchmarks [--quick]``: the speed suite (see benchmarks/speed.py)."""

from benchmarks.speed import main
from labeler.gc_tuning import gc_tuned

# The suite measures what a `labeler` command does, in a process tuned as the CLI tunes it.
with gc_tuned():
    code = main()
raise SystemExit(code)
