"""``python -m benchmarks [--quick]``: the speed suite (see benchmarks/speed.py)."""

from benchmarks.speed import main

raise SystemExit(main())
