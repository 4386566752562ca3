"""Verification of generated answers (`--verify SPEC`): each answer of a row (each
sample, or the one text) gets a verdict that is stored beside it, and `--keep` chooses
which verified answers an export trains on.

Kinds (labeler/verify/kinds.py, one class each in `REGISTRY`): ``exact:FIELD``,
``numeric:FIELD[:TOL]``, ``regex:PATTERN`` (extracts for the steps after it),
``json-schema``, ``python:MODULE:FUNCTION`` (in a worker process with a timeout) and
``judge:TEACHER[:TEMPLATE]`` (a second teacher's label of each answer, labeler/verify/
judge.py, asked by the pass in labeler/verify/judge_pass.py).
"""

from labeler.verify.chain import DEFAULT_TIMEOUT_S, Verifier
from labeler.verify.kinds import Verdict
from labeler.verify.passk import PassRates, pass_at_k
from labeler.verify.registry import REGISTRY
from labeler.verify.stage import Checked, VerifyStage, answers_of, parse_keep, select

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "REGISTRY",
    "Checked",
    "PassRates",
    "Verdict",
    "Verifier",
    "VerifyStage",
    "answers_of",
    "parse_keep",
    "pass_at_k",
    "select",
]
