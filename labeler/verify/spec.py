"""Reading a `--verify` SPEC: steps separated by commas, each `KIND[:ARGUMENT]`.

A step's argument may itself hold commas (a regex's `{1,3}`, a Python path never does):
quotes protect them as a shell's do (`regex:'a,b (.*)'`), and so does context, because a
shell has usually eaten the quotes before labeler sees them: a comma-separated piece that
does not begin with a known kind belongs to the step before it. So both
`regex:'Answer: (.*)',exact:gold` and `regex:Answer: (\\d{1,3}),numeric:gold` read as two
steps.
"""

from __future__ import annotations

from collections.abc import Collection

from labeler.errors import ConfigError


def split_steps(spec: str, kinds: Collection[str]) -> list[tuple[str, str | None]]:
    """(kind, argument or None) per step, quotes removed; raises ConfigError naming the
    flag for an empty spec, an unclosed quote or an unknown kind."""
    pieces = _split_outside_quotes(spec)
    steps: list[list[str]] = []
    for raw, unquoted in pieces:
        if steps and not _starts_with_kind(raw, kinds):
            steps[-1][0] += "," + raw
            steps[-1][1] += "," + unquoted
            continue
        steps.append([raw, unquoted])
    out: list[tuple[str, str | None]] = []
    for raw, unquoted in steps:
        kind, sep, arg = unquoted.partition(":")
        kind = kind.strip()
        if kind not in kinds:
            raise ConfigError(
                f"--verify '{spec}': unknown kind '{kind or raw}' (expected {', '.join(sorted(kinds))})"
            )
        out.append((kind, arg if sep else None))
    if not out:
        raise ConfigError("--verify needs a spec, e.g. exact:answer or numeric:answer")
    return out


def _starts_with_kind(piece: str, kinds: Collection[str]) -> bool:
    head = piece.strip().lstrip("'\"")
    name, sep, _ = head.partition(":")
    return name in kinds and (bool(sep) or head == name)


def _split_outside_quotes(spec: str) -> list[tuple[str, str]]:
    """Pieces between top-level commas, each as written and with its quotes removed."""
    pieces: list[tuple[str, str]] = []
    raw: list[str] = []
    plain: list[str] = []
    quote: str | None = None
    for ch in spec:
        if quote is not None:
            raw.append(ch)
            if ch == quote:
                quote = None
            else:
                plain.append(ch)
        elif ch in "'\"":
            quote = ch
            raw.append(ch)
        elif ch == ",":
            pieces.append(("".join(raw), "".join(plain)))
            raw, plain = [], []
        else:
            raw.append(ch)
            plain.append(ch)
    if quote is not None:
        raise ConfigError(f"--verify '{spec}': unclosed quote {quote}")
    pieces.append(("".join(raw), "".join(plain)))
    return [p for p in pieces if p[0].strip()]
