"""`judge:TEACHER[:TEMPLATE][@URL]`: a second teacher labels each (input, answer) pair.

A judge is an ordinary label task (``prompts/judge.yaml`` by default) over two fields,
``prompt`` (the request as the answering teacher saw it) and ``response`` (one of its
answers), plus ``row`` (the input row, for a template that wants a reference). Its
labels run from worst to best, so the soft label's expected position, scaled to [0, 1],
is the answer's score: with ``[incorrect, correct]`` the judge's P(correct). An answer
passes when its score is at least one half.

A judge is calibrated like any labeler label: ``labeler eval --judge-gold SPEC`` fits a
temperature of its soft label against a deterministic verifier's verdicts
(labeler/judge_eval.py), and ``--judge-calibration FILE`` reads the soft label through it
before the score is taken. The calibration is part of the judge's identity, so a new one
checks the stored answers again without asking anyone; one fitted for another judge
template, judge teacher or label set is refused.

The judge's answers are asked by a labeling pass of their own (labeler/verify/
judge_pass.py) and stored like any answer, under the judge's own keys; this step only
reads them. So a rerun asks the judge nothing, and an answer the judge has not answered
yet (an export before the pass, a judge request that failed) gets a verdict that is not
stored: the next run that has the judge's answer checks it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from labeler.answer import Answer, read_answer
from labeler.errors import ConfigError, LabelerError
from labeler.inputs import Row
from labeler.plan import CACHED, FAILED, REJECTED, Item, Planner
from labeler.store import Store
from labeler.task import Task, load_task
from labeler.teachers import make_teacher as _default_make_teacher
from labeler.teachers.base import Teacher
from labeler.verify.kinds import ERROR, FAIL, PASS, Step, Verdict

if TYPE_CHECKING:  # numpy comes with it: imported when a calibration is given
    from labeler.calibration import Calibration

DEFAULT_TEMPLATE = "judge"
PASS_SCORE = 0.5
JUDGE_FIELDS = ("prompt", "response", "row")
_URL_MARK = "@http"
NOT_JUDGED = "not judged yet (a run with this --verify asks the judge)"

MakeJudge = Callable[[str, str | None], Teacher]  # (PROVIDER:MODEL, its own URL or None)


@dataclass(frozen=True)
class JudgeSpec:
    """What follows ``judge:``: the teacher, the template, and the judge's own endpoint.

    The template is the last colon-separated piece when there are three or more (a model
    name with a colon in it therefore needs the template named after it)."""

    teacher: str
    template: str = DEFAULT_TEMPLATE
    base_url: str | None = None

    @classmethod
    def parse(cls, argument: str) -> JudgeSpec:
        head, mark, url = argument.partition(_URL_MARK)
        pieces = head.split(":")
        if len(pieces) < 2 or not all(p.strip() for p in pieces):
            raise ConfigError(
                f"--verify judge:{argument}: expected judge:PROVIDER:MODEL[:TEMPLATE][@URL], "
                "e.g. judge:openai:gpt-4o-mini"
            )
        if len(pieces) == 2:
            return cls(head, DEFAULT_TEMPLATE, "http" + url if mark else None)
        return cls(":".join(pieces[:-1]), pieces[-1], "http" + url if mark else None)


def judged_prompt(task: Task, data: Mapping[str, Any]) -> str:
    """The request an answer answers, as the judge reads it: a chat template's system
    prompt and last user turn, or a completion template's prompt."""
    request = task.render(data)
    if request.prompt is not None:
        return request.prompt
    messages = request.messages or ()
    system = [m["content"] for m in messages if m.get("role") == "system"]
    user = [m["content"] for m in messages if m.get("role") == "user"]
    return "\n\n".join([*system, *user[-1:]]).strip()


def judge_data(task: Task, data: Mapping[str, Any], answer: str) -> dict[str, Any]:
    """The judge template's fields for one answer of one row."""
    return {"prompt": judged_prompt(task, data), "response": answer, "row": dict(data)}


def _memo_key(data: Mapping[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)


def expected_score(probs: Sequence[float]) -> float:
    """The soft label's expected position among labels ordered worst to best, in [0, 1]."""
    total = sum(probs)
    n = len(probs)
    if n < 2 or total <= 0:
        return 0.0
    return sum(p * i for i, p in enumerate(probs)) / (total * (n - 1))


class Judge(Step):
    """Reads the judge's stored answer to (input, answer) and turns its soft label into a
    score; see the module doc."""

    kind = "judge"
    usage = "judge:PROVIDER:MODEL[:TEMPLATE][@URL]"
    whole_answer = True  # a judge reads the answer as written, not what a regex extracted

    def __init__(
        self,
        argument: str | None,
        *,
        task: Task | None = None,
        make_teacher: MakeJudge | None = None,
        judge_calibration: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(argument, **kw)
        spec = JudgeSpec.parse(argument or "")
        where = f"--verify judge:{argument}"
        if task is None:
            raise ConfigError(f"{where}: a judge needs the template whose answers it judges")
        self.spec = spec
        self.answered = task
        try:
            self.task = load_task(spec.template)
        except LabelerError as exc:
            raise ConfigError(f"{where}: judge template {exc}") from None
        space = self.task.label_space
        if space is None or len(space.labels) < 2:
            raise ConfigError(
                f"{where}: judge template {self.task.path} must be a label template with at least "
                "two labels, worst first (e.g. [incorrect, correct])"
            )
        unknown = [f for f in self.task.fields if f not in JUDGE_FIELDS]
        if unknown:
            raise ConfigError(
                f"{where}: judge template {self.task.path} reads field '{unknown[0]}'; a judge "
                f"template has {', '.join(JUDGE_FIELDS)}"
            )
        build = make_teacher or _make_from_environment
        try:
            self.teacher: Teacher = build(spec.teacher, spec.base_url)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        self._planner: Planner | None = None
        self._memo: dict[bytes, Item] = {}
        self.calibration = self._calibration(judge_calibration) if judge_calibration else None

    def _calibration(self, path: str) -> Calibration:
        """The saved calibration at `path`, refused in one line naming the file where it
        was fitted for another judge template, judge teacher or label set."""
        from labeler.calibration import load_calibration

        calibration = load_calibration(path)
        space = self.task.label_space
        assert space is not None
        try:
            calibration.check(self.task.identity, self.teacher.identity, space.labels)
        except ConfigError as exc:
            raise ConfigError(
                f"--judge-calibration {path}: {exc} (this judge is {self.spec.teacher} with "
                f"{self.task.identity}; fit one with labeler eval --judge-gold SPEC "
                "--save-judge-calibration FILE)"
            ) from None
        return calibration

    def identity(self) -> Any:
        """The judge and its template, and the calibration where one is applied (so a new
        one is a new verifier: stored answers are checked again, from the store)."""
        base = [self.kind, self.teacher.identity, self.task.identity]
        if self.calibration is None:
            return base  # the keys of verdicts stored before calibrations existed
        cal = self.calibration
        return [*base, ["calibration", cal.method, cal.temperature, cal.bias]]

    def bind(self, store: Store) -> None:
        """Read the judge's answers from this store (failures too, to say why)."""
        self._planner = Planner(self.task, self.teacher.identity, store, failures=True)
        self._memo = {}

    def rows(self, data: Mapping[str, Any], answers: Iterable[str], row: Row) -> list[Row]:
        """The judge's input rows for one row's answers (what the judge pass labels)."""
        return [
            Row(row.source, row.line, f"{row.id}#{i}", judge_data(self.answered, data, a))
            for i, a in enumerate(answers)
        ]

    def prepare(self, pairs: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        """Look up the judge's answers of many (row, answer) pairs at once: one store
        query per chunk instead of one per answer."""
        if self._planner is None:
            return
        self._memo = {}
        datas = [judge_data(self.answered, row, answer) for row, answer in pairs]
        for start in range(0, len(datas), 256):
            chunk = datas[start : start + 256]
            for data, item in zip(chunk, self._planner.plan(chunk), strict=True):
                self._memo[_memo_key(data)] = item

    def item(self, row: Mapping[str, Any], answer: str) -> Item:
        """The judge's planned item for one answer of one row: its stored answer, its
        failure, or nothing yet (read from the memo `prepare` filled, else the store)."""
        if self._planner is None:
            raise RuntimeError("a judge step reads a store: bind() it first")
        data = judge_data(self.answered, row, answer)
        return self._memo.get(_memo_key(data)) or self._planner.plan([data])[0]

    def check(self, row: Mapping[str, Any], answer: str) -> Verdict:
        item = self.item(row, answer)
        if item.status == CACHED and item.completion is not None:
            return self._verdict(item)
        if item.status == FAILED and item.failure is not None:
            return Verdict(ERROR, detail=f"the judge failed: {item.failure.reason}", settled=False)
        if item.status == REJECTED:
            why = item.error or (item.reject.message() if item.reject else "not rendered")
            return Verdict(
                ERROR, detail=f"the judge template could not render it: {why}"[:200], settled=False
            )
        return Verdict(
            ERROR, detail="not judged yet (a run with this --verify asks the judge)", settled=False
        )

    def _verdict(self, item: Item) -> Verdict:
        assert item.completion is not None
        said = read_answer(self.task, item.completion)
        soft = said.soft
        if soft is None or not soft.valid:
            return Verdict(ERROR, detail=f"the judge named no label: {said.text.strip()[:80]!r}")
        said = self.calibrated(said)
        soft = said.soft
        assert soft is not None
        score = expected_score(soft.probs)
        space = self.task.label_space
        assert space is not None
        label = said.label or soft.label(space)
        conf = said.confidence.max_prob if said.confidence is not None else max(soft.probs)
        how = soft.source
        if self.calibration is not None:
            how += f", calibrated T={self.calibration.temperature:.3f}"
        detail = f"judge: {label} (score {score:.3f}, confidence {conf:.3f}, {how})"
        return Verdict(PASS if score >= PASS_SCORE else FAIL, score=score, detail=detail)

    def calibrated(self, said: Answer) -> Answer:
        """The judge's answer read through its calibration (its soft label, label and
        confidence), or as it is without one."""
        if self.calibration is None:
            return said
        from labeler.calibration import calibrate_answer

        space = self.task.label_space
        assert space is not None
        return calibrate_answer(said, self.calibration, space)


def _make_from_environment(teacher: str, base_url: str | None) -> Teacher:
    """The judge as a library user gets it: its key from the provider's environment."""
    options: dict[str, Any] = {}
    if base_url:
        options["base_url"] = base_url
    return _default_make_teacher(teacher, **options)


__all__ = ["DEFAULT_TEMPLATE", "PASS_SCORE", "Judge", "JudgeSpec", "expected_score", "judge_data"]
