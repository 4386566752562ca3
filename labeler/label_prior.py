"""The label-prior check: do the exported labels say each label as often as they should?

A teacher can carry a prior of its own into every answer (a small model that says
"Business" to 55% of a balanced news set). A student trained on those labels learns the
prior too. The exported labels' shares are compared with what the export itself knows of
the truth: the gold rows' shares (``--gold``) and the mean calibrated distribution (the
label shares the calibrated soft labels expect). A strong departure is said in the
summary and the card, naming the label said most too often.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["MIN_ROWS", "THRESHOLD", "prior_warnings", "total_variation"]

# Total variation distance from which a departure is told: 0.15 is e.g. one label of four
# at 40% where 25% was expected. Sampling noise at MIN_ROWS rows stays well below it.
THRESHOLD = 0.15
MIN_ROWS = 20


def total_variation(p: Sequence[float], q: Sequence[float]) -> float:
    """Half the L1 distance between two distributions over the same labels."""
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))


def prior_warnings(
    labels: Sequence[str], counts: Mapping[str, int], references: Mapping[str, Sequence[float]]
) -> list[str]:
    """One sentence per reference the exported label shares depart from strongly."""
    total = sum(counts.get(label, 0) for label in labels)
    if total < MIN_ROWS:
        return []
    shares = [counts.get(label, 0) / total for label in labels]
    out = []
    for name, ref in references.items():
        mass = sum(ref)
        if mass <= 0:
            continue
        expected = [x / mass for x in ref]
        tv = total_variation(shares, expected)
        if tv < THRESHOLD:
            continue
        worst = max(range(len(labels)), key=lambda i: shares[i] - expected[i])
        out.append(
            f"the exported labels depart from {name} (total variation {tv:.2f}): "
            f"'{labels[worst]}' is {shares[worst]:.0%} of exported labels, "
            f"{expected[worst]:.0%} of {name}"
        )
    return out
