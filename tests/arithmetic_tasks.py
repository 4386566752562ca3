"""The free-text task the generation tests share: a template that asks for a worked sum
ending in "Answer: N", as the test server's `ArithmeticResponder` answers it."""

from __future__ import annotations


def solve_template(name: str = "solve", *, max_tokens: int = 64, soft_targets: bool = False) -> str:
    """The template's YAML. `soft_targets` asks a teacher without logprobs for a
    distribution over answers (sampled) even without ``--samples``."""
    return (
        f'name: {name}\nversion: "1"\nmode: chat\n'
        "system: 'Solve the problem. End with a line \"Answer: N\".'\n"
        'user: "{{ question }}"\nfields: [question]\noutput:\n  kind: text\n'
        f"params:\n  temperature: 1.0\n  max_tokens: {max_tokens}\n"
        + ("soft_targets: true\n" if soft_targets else "")
    )
