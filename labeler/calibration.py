"""Calibration of a teacher's label distribution, fitted on a little gold.

A small teacher's probabilities are informative but off: too flat (Gemma 3 270M gives
0.75 on average where it is right 88% of the time) or tilted towards one label (SmolLM2
answers "positive" to nearly everything while its probabilities still rank the rows well).
A student trained on those soft labels inherits both faults, and a confidence threshold
read off them means less than it says. Two corrections undo most of it:

* **Temperature** ``T``: ``p' ∝ p^(1/T)``. One number, fitted by likelihood on gold; it
  changes the sharpness, never the argmax or the ranking of rows.
* **Per-label bias** ``b``: ``p' ∝ p · exp(-b)``, i.e. the label prior the teacher brings
  to every input is divided out. ``contextual`` (Zhao et al. 2021) reads ``b`` from the
  teacher itself: the log of its mean distribution on content-free inputs such as "N/A",
  which costs a few requests and no gold. ``bias`` fits ``b`` on gold together with ``T``.
  A bias can change the argmax, so accuracy and the ranking can improve, not only ECE.
* **Batch** (Zhou et al. 2024): ``b`` is the log of the teacher's mean distribution over
  the rows being labeled, ``T = 1``. No gold and no request; it assumes the rows' true
  labels are about evenly spread, so it is applied only when asked (``--calibration
  batch``): on a sample of reviews 82% negative it took accuracy from 92.9% to 79.5%.

The whole map is ``p' = softmax((log max(p, floor) - b) / T)``; a distribution with no
mass on any label stays as it is (it has nothing to correct).

A calibration is a *view*: it is applied when answers are read (eval, export), never
written into the store, so it can be refitted on more gold without relabeling. It is saved
as a small JSON file keyed to the template (``name@version``) and the teacher's identity,
and refuses to be applied to another pairing, where its numbers would mean nothing.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from labeler.answer import Answer
from labeler.confidence import measure
from labeler.errors import ConfigError
from labeler.soft_labels import LabelSpace, SoftLabel

__all__ = [
    "METHODS",
    "Calibration",
    "batch_calibration",
    "calibrate_answer",
    "cross_validated",
    "fit",
    "fit_bias",
    "fit_temperature",
    "load_calibration",
]

METHODS: tuple[str, ...] = ("temperature", "contextual", "bias")
FORMAT = "labeler-calibration/1"
FLOOR = 1e-6  # probability given to a label the teacher's top-k never named
_T_RANGE = (0.02, 50.0)


@dataclass(frozen=True)
class Calibration:
    """``p' = softmax((log max(p, floor) - bias) / temperature)`` for one template × teacher."""

    labels: tuple[str, ...]
    temperature: float = 1.0
    bias: tuple[float, ...] | None = None
    method: str = "temperature"
    template: str = ""
    teacher: Mapping[str, Any] = field(default_factory=dict)
    fitted_rows: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ConfigError(f"calibration temperature must be positive, got {self.temperature}")
        if self.bias is not None and len(self.bias) != len(self.labels):
            raise ConfigError(f"calibration bias has {len(self.bias)} values for {len(self.labels)} labels")
        # A NaN bias turns every soft label into NaNs, which every filter then drops: an
        # export of 0 rows with exit 0.
        if self.bias is not None and not all(math.isfinite(b) for b in self.bias):
            raise ConfigError(f"calibration bias must hold finite numbers, got {list(self.bias)}")

    def apply_probs(self, probs: Sequence[float]) -> tuple[float, ...]:
        """The calibrated distribution; all-zero (no mass on a label) stays all-zero."""
        p = np.asarray(probs, dtype=float)
        if p.shape != (len(self.labels),):
            raise ValueError(f"expected {len(self.labels)} probabilities, got {p.shape}")
        if not (p > 0).any():
            return tuple(float(x) for x in p)
        z = np.log(np.maximum(p, FLOOR))
        if self.bias is not None:
            z = z - np.asarray(self.bias)
        return tuple(float(x) for x in _softmax(z / self.temperature))

    def apply(self, soft: SoftLabel) -> SoftLabel:
        """A soft label with calibrated ``probs``; ``outside`` and the source are kept."""
        return replace(soft, probs=self.apply_probs(soft.probs))

    def check(self, template: str, teacher: Mapping[str, Any], labels: Sequence[str]) -> None:
        """Refuse a calibration fitted for another template, teacher or label set."""
        if self.template and self.template != template:
            raise ConfigError(f"calibration was fitted for template {self.template}, not {template}")
        if self.teacher and dict(self.teacher) != dict(teacher):
            raise ConfigError(
                f"calibration was fitted for teacher {_teacher_name(self.teacher)}, "
                f"not {_teacher_name(teacher)}"
            )
        if tuple(labels) != self.labels:
            raise ConfigError("calibration labels differ from the task's labels")

    def describe(self) -> str:
        """One line for cards and logs."""
        text = f"{self.method}, T={self.temperature:.3f}"
        if self.bias is not None:
            text += ", bias " + ", ".join(
                f"{label}={b:+.2f}" for label, b in zip(self.labels, self.bias, strict=True)
            )
        if self.method == "batch":
            return text + f", the teacher's mean over {self.details.get('rows', 0)} rows, no gold"
        return text + f", fitted on {self.fitted_rows} gold rows"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": self.method,
            "template": self.template,
            "teacher": dict(self.teacher),
            "labels": list(self.labels),
            "temperature": self.temperature,
            "bias": None if self.bias is None else list(self.bias),
            "floor": FLOOR,
            "fitted_rows": self.fitted_rows,
            "details": dict(self.details),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; a damaged or foreign file is an error naming the field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read calibration file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start}), so not a calibration file"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: JSON nested too deeply to be a calibration file") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a labeler calibration file (field 'format' != {FORMAT})")
    try:
        labels = tuple(str(x) for x in raw["labels"])
        bias = raw.get("bias")
        calibration = Calibration(
            labels=labels,
            temperature=float(raw["temperature"]),
            bias=None if bias is None else tuple(float(x) for x in bias),
            method=str(raw.get("method", "temperature")),
            template=str(raw.get("template", "")),
            teacher=dict(raw.get("teacher") or {}),
            fitted_rows=int(raw.get("fitted_rows", 0)),
            details=dict(raw.get("details") or {}),
        )
    except KeyError as exc:
        raise ConfigError(f"{path}: calibration file lacks field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: bad calibration value ({exc})") from exc
    except ConfigError as exc:  # a value out of range: the file is the place to fix it
        raise ConfigError(f"{path}: {exc}") from exc
    return calibration


def calibrate_answer(answer: Answer, calibration: Calibration, space: LabelSpace) -> Answer:
    """The answer as the calibrated distribution reads it: soft label, label, confidence.

    The label becomes the calibrated argmax (a bias can move it); an answer with no soft
    label or no mass on any label is returned unchanged.
    """
    soft = answer.soft
    if soft is None or not soft.valid:
        return answer
    new = calibration.apply(soft)
    old = answer.confidence
    conf = measure(
        new.probs, mean_logprob=old.mean_logprob if old else None, agreement=old.agreement if old else None
    )
    label = new.label(space)
    return replace(answer, soft=new, confidence=conf, label=label, valid=label is not None)


# -- fitting ----------------------------------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def _log_probs(probs: np.ndarray) -> np.ndarray:
    logs: np.ndarray = np.log(np.maximum(probs, FLOOR))
    return logs


def _nll(logits: np.ndarray, gold: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(gold)), gold]))


def fit_temperature(probs: np.ndarray, gold: np.ndarray, bias: np.ndarray | None = None) -> float:
    """The temperature minimising the gold labels' negative log-likelihood.

    NLL is convex in 1/T, so a golden-section search over log T finds the optimum; it is
    clipped to [0.02, 50] so a gold set the teacher gets all right cannot push T to zero.
    """
    z = _log_probs(probs)
    if bias is not None:
        z = z - bias
    lo, hi = math.log(_T_RANGE[0]), math.log(_T_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return _nll(z / math.exp(log_t), gold)

    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return float(math.exp((a + b) / 2))


def fit_bias(probs: np.ndarray, gold: np.ndarray, ridge: float = 1e-2) -> tuple[float, np.ndarray]:
    """Temperature and per-label bias fitted jointly on gold (Newton's method).

    The model is ``logits = a · log p + c``: a multinomial logistic regression with one
    shared slope and one intercept per label, convex in (a, c). A small ridge on ``c``
    fixes its free constant and keeps rare labels from running away. Returns
    ``(T, b) = (1/a, -c/a)``, the form `Calibration` applies.
    """
    n, k = probs.shape
    x = _log_probs(probs)
    y = np.zeros((n, k))
    y[np.arange(n), gold] = 1.0
    theta = np.zeros(k + 1)
    theta[0] = 1.0

    def objective(t: np.ndarray) -> float:
        return _nll(t[0] * x + t[1:], gold) + 0.5 * ridge * float(t[1:] @ t[1:])

    current = objective(theta)
    for _ in range(100):
        q = _softmax(theta[0] * x + theta[1:])
        r = q - y
        grad = np.empty(k + 1)
        grad[0] = float((r * x).sum()) / n
        grad[1:] = r.sum(axis=0) / n + ridge * theta[1:]
        # Hessian of the mean NLL: J^T (diag q - q q^T) J per row, J = [x_i, I].
        qx = (q * x).sum(axis=1)
        h = np.empty((k + 1, k + 1))
        h[0, 0] = float(((q * x * x).sum(axis=1) - qx**2).sum()) / n
        cross = (q * x - q * qx[:, None]).sum(axis=0) / n
        h[0, 1:] = cross
        h[1:, 0] = cross
        h[1:, 1:] = (np.diag(q.sum(axis=0)) - q.T @ q) / n + ridge * np.eye(k)
        step = np.linalg.solve(h + 1e-9 * np.eye(k + 1), grad)
        scale = 1.0
        while scale > 1e-6:
            candidate = theta - scale * step
            value = objective(candidate)
            if value <= current:
                break
            scale /= 2
        else:
            break
        improvement = current - value
        theta, current = candidate, value
        if improvement < 1e-10:
            break
    slope = float(np.clip(theta[0], 1 / _T_RANGE[1], 1 / _T_RANGE[0]))
    return 1.0 / slope, -theta[1:] / slope


def contextual_bias(content_free: Sequence[Sequence[float]]) -> np.ndarray:
    """Log of the mean distribution the teacher gives content-free inputs ("N/A", "")."""
    valid = [p for p in content_free if any(x > 0 for x in p)]
    if not valid:
        raise ConfigError(
            "contextual calibration: the teacher put no mass on any label for the "
            "content-free inputs; use --calibrate temperature or bias"
        )
    mean = np.mean(np.asarray(valid, dtype=float), axis=0)
    b = _log_probs(mean)
    centred: np.ndarray = b - b.mean()
    return centred


def batch_calibration(
    probs: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[str],
    *,
    template: str = "",
    teacher: Mapping[str, Any] | None = None,
) -> Calibration:
    """The teacher's mean distribution over these rows divided out (T = 1), no gold.

    The prior a teacher brings to every input shows in its mean answer over many inputs;
    rows with no mass on any label carry no prior and are left out of the mean.
    """
    p = np.asarray(probs, dtype=float).reshape(-1, len(labels))
    valid = p[(p > 0).any(axis=1)]
    if len(valid) == 0:
        raise ConfigError("batch calibration: the teacher put no mass on any label for any row")
    mean = (valid / valid.sum(axis=1, keepdims=True)).mean(axis=0)
    b = _log_probs(mean)
    return Calibration(
        labels=tuple(labels),
        bias=tuple(float(x) for x in b - b.mean()),
        method="batch",
        template=template,
        teacher=dict(teacher or {}),
        details={"rows": len(valid), "mean": [float(x) for x in mean]},
    )


def fit(
    method: str,
    probs: Sequence[Sequence[float]] | np.ndarray,
    gold: Sequence[int] | np.ndarray,
    labels: Sequence[str],
    *,
    content_free: Sequence[Sequence[float]] | None = None,
    template: str = "",
    teacher: Mapping[str, Any] | None = None,
) -> Calibration:
    """Fit one calibration ``method`` on rows with a valid soft label and a gold index."""
    if method not in METHODS:
        raise ConfigError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    p = np.asarray(probs, dtype=float).reshape(-1, len(labels))
    g = np.asarray(gold, dtype=int)
    keep = (p > 0).any(axis=1)
    p, g = p[keep], g[keep]
    if len(g) == 0:
        raise ConfigError("calibration needs gold rows whose answers put mass on a label")
    bias: np.ndarray | None = None
    details: dict[str, Any] = {}
    if method == "contextual":
        if content_free is None:
            raise ConfigError("contextual calibration needs the teacher's content-free answers")
        bias = contextual_bias(content_free)
        details["content_free"] = [list(map(float, row)) for row in content_free]
        temperature = fit_temperature(p, g, bias)
    elif method == "bias":
        temperature, bias = fit_bias(p, g)
    else:
        temperature = fit_temperature(p, g)
    return Calibration(
        labels=tuple(labels),
        temperature=temperature,
        bias=None if bias is None else tuple(float(x) for x in bias),
        method=method,
        template=template,
        teacher=dict(teacher or {}),
        fitted_rows=len(g),
        details=details,
    )


def cross_validated(
    fitter: Callable[[np.ndarray, np.ndarray], Calibration],
    probs: Sequence[Sequence[float]] | np.ndarray,
    gold: Sequence[int] | np.ndarray,
    *,
    folds: int = 5,
    fit_fraction: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities of rows the calibration was not fitted on.

    With ``fit_fraction`` one seeded split: fit on that share, return the other rows. Else
    k-fold: each row is calibrated by a fit on the other folds, so every row is scored
    and none by a fit that saw it. Returns ``(calibrated probs, indices of those rows)``.
    """
    p = np.asarray(probs, dtype=float)
    g = np.asarray(gold, dtype=int)
    n = len(g)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    idx = np.asarray(order, dtype=int)
    out = np.zeros_like(p)
    if fit_fraction is not None:
        if not 0.0 < fit_fraction < 1.0:
            raise ConfigError(f"--fit-fraction must lie in (0, 1), got {fit_fraction}")
        cut = round(fit_fraction * n)
        if cut < 1 or cut >= n:
            raise ConfigError(f"--fit-fraction {fit_fraction} leaves no rows to fit or to score")
        fit_idx, score_idx = idx[:cut], np.sort(idx[cut:])
        cal = fitter(p[fit_idx], g[fit_idx])
        out[score_idx] = [cal.apply_probs(row) for row in p[score_idx]]
        return out[score_idx], score_idx
    folds = max(2, min(folds, n))
    for f in range(folds):
        test = idx[f::folds]
        train = np.setdiff1d(idx, test)
        cal = fitter(p[train], g[train])
        out[test] = [cal.apply_probs(row) for row in p[test]]
    return out, np.arange(n)


def _teacher_name(identity: Mapping[str, Any]) -> str:
    return f"{identity.get('provider')}:{identity.get('model')}"
