"""Every verifier kind by name, as the spec parser reads them: the checks that read only
the answer and the row (labeler/verify/kinds.py) and the judge, which reads a second
teacher's stored answers (labeler/verify/judge.py)."""

from __future__ import annotations

from labeler.verify.judge import Judge
from labeler.verify.kinds import CHECKS, Step

REGISTRY: dict[str, type[Step]] = {**CHECKS, Judge.kind: Judge}

__all__ = ["REGISTRY"]
