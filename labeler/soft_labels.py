"""Soft labels and confidence from a teacher's answer.

A student learns more from the teacher's whole distribution over labels than from its
argmax, so every answer becomes a `SoftLabel`: a probability per label (in `LabelSpace`
order), the mass that fell outside the label set, and where the numbers came from.

Soft labels from logprobs
-------------------------
The teacher's answer is a token sequence t0, t1, … with, at each position, the chosen
token's logprob and the provider's top-k alternatives (the chosen token among them).

1. **Answer position.** Leading tokens that carry no label content — empty, whitespace,
   newlines, quotes, backticks, ``**`` — are skipped; the first other token is the answer
   position p0. The distribution read at p0 is therefore *conditional on that lead-in*;
   alternatives at p0 that are themselves filler (the teacher might have opened a quote)
   are counted as ``outside``.
2. **Alternatives.** At p0 take the top-k alternatives (if the provider sent none, the
   chosen token with its logprob; if the chosen token is missing from a non-empty list, it
   is added). Each becomes a probability ``exp(logprob)``. Its string is normalised: leading
   whitespace, byte-BPE / SentencePiece space markers (``Ġ``, ``▁``) and filler characters
   are stripped and, unless the space is case sensitive, it is case-folded. Verbalizers are
   normalised the same way (surrounding whitespace stripped, case-folded).
3. **Matching.** An alternative string ``s`` is consistent with every verbalizer that
   starts with it (``"pos"`` → ``"positive"``, ``"positive"`` → ``"positive"``). Only if no
   verbalizer starts with ``s`` is it matched by *extension*: the longest verbalizer ``v``
   with ``s`` starting with ``v`` followed by a non-alphanumeric character
   (``"positive."``, ``"A)"``, ``"A\\n"``). Verbalizers map to labels; several verbalizers
   (and several alternatives such as ``" Positive"`` and ``"positive"``) of one label
   simply add up.
4. **Outside mass.** An alternative consistent with no label adds its probability to
   ``outside``. So does the mass the top-k list does not cover, ``1 - Σ top-k``: the
   provider did not say where it went, and counting it as a label would invent evidence.
   With this bookkeeping every unit of probability ends either on a label or outside, so
   ``outside = 1 - Σ label mass`` before renormalisation.
5. **Shared prefixes (descent).** If an alternative is consistent with several labels
   (``"card"`` for ``card_arrival``/``card_linking``; ``"New"`` for ``New York``/``New
   Delhi``; ``"A"`` for codes ``A``/``AA``) and it *is* the generated token, its mass is
   split by the conditional distribution at the next position: each alternative there
   extends the path (``"New" + " York"``), is matched again among the labels still
   consistent, and receives ``P(path) · P(t | path)``. This recurses as deep as the labels
   need; at every level the uncovered remainder and non-matching alternatives go to
   ``outside`` (scaled by the path probability). A continuation that ends the word
   (``"\\n"``, ``"."``) completes a verbalizer that equals the path (label ``A`` in
   ``A``/``AA``).
6. **Unresolvable mass.** A shared-prefix alternative that is *not* on the generated path
   has no conditional distribution to descend into, nor does a generated path that stops
   while still shared. Its mass is divided among the consistent labels in proportion to
   the mass they hold from the rest of the answer (equally where they hold none), never
   settled by the labels' order; ``ambiguous`` is set and the source is
   ``logprobs:split``, so filters, exports and reports can tell the approximation from
   an exact reading. `LabelSpace.ambiguity` warns about label sets that will cause this.
   Where the server can score a continuation (labeler/label_scoring.py), the answer
   carries the teacher's next-token alternatives after such a prefix (`Completion.scores`,
   keyed by the answer text up to there): the mass then descends through them exactly as
   along the generated path, recursively, and each label gets its whole probability
   P(t1) · P(t2 | t1) · …; the source is ``logprobs:exact``. Shares below
   `NEGLIGIBLE_MASS` of the label mass (which the soft label is renormalised over) are
   not worth a request: they are divided as above without calling the soft label
   approximate.
7. **Renormalise.** ``probs = mass / Σ mass`` when ``Σ mass > 0``; otherwise all zero.

Completion-mode teachers (a few-shot prefix whose *next* token is the label) produce the
same token structure and use the same function. Without logprobs, a sampled teacher gives
the empirical distribution of its N parsed samples (``outside`` = share of invalid
samples, ``source="samples:N"``), and a single answer gives a one-hot on its parsed label
(``source="none"``: one sample is no distribution, and is not passed off as one).
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labeler.completion import Completion, TokenLogprob
from labeler.confidence import (
    Confidence,
    agreement,
    distribution_measures,
    mean_logprob,
    measure,
    share,
)
from labeler.errors import ConfigError

__all__ = [
    "IGNORE_LABEL",
    "Confidence",
    "LabelNumbers",
    "LabelSpace",
    "SoftLabel",
    "confidence",
    "ensemble_confidence",
    "ensemble_soft_label",
    "is_sampled",
    "label_numbers",
    "parse_label",
    "sampled_soft_label",
    "samples_source",
    "soft_label",
    "token_confidence",
    "unscored_prefixes",
    "verbalized_answer",
    "verbalized_soft_label",
]

# Characters that never carry label content at the start of an answer: whitespace, quotes,
# markdown emphasis and code marks, and the raw space/newline markers of BPE vocabularies.
_FILLER = " \t\r\n\f\v\"'`*“”‘’„«»ĠĊ▁"
# What `parse_label` peels off both ends of an answer before matching.
_WRAP = " \t\r\n\f\v\"'`*“”‘’„«»"
_TRAILING_PUNCT = ".,;:!?)]}>"
_LEADING_PUNCT = "([{<"
# "Label: X", "Answer = X", "Sentiment - X": a short lead-in of words before a separator.
_PREFIX_RE = re.compile(r"^\s*[^\W\d][\w \-]{0,39}?\s*[:=]\s*(?P<rest>\S.*)$")
_FIRST_WORD_RE = re.compile(r"[^\W_]+")
_CACHE_LIMIT = 200_000
_PARSE_MEMO_CHARS = 64  # answers longer than this are parsed afresh every time
_PARSE_MEMO_SIZE = 10_000  # distinct answers remembered (a label task has a handful)
_NO_LABELS: frozenset[int] = frozenset()
_MAJORITY = object()  # `confidence` without a label index: the majority's
SAMPLES_SOURCE = "samples:"
# The source of a logprob soft label in which some mass sat on a token shared by several
# labels that no continuation told apart (module doc, 6): an approximation, said so.
LOGPROBS_SPLIT = "logprobs:split"
# The source of a logprob soft label whose shared prefixes were told apart by scoring
# requests (labeler/label_scoring.py): each label's whole probability, not divided.
LOGPROBS_EXACT = "logprobs:exact"
# The fraction of a soft label's label mass below which a shared prefix is not worth a
# scoring request: whichever way it is divided, no renormalised probability moves by more.
NEGLIGIBLE_MASS = 1e-3
# The hard label of an answer that named no label, where one must be written (an export
# with --keep-invalid): the index PyTorch's cross-entropy and every transformers
# classification head ignore by default.
IGNORE_LABEL = -100


@dataclass(frozen=True)
class LabelSpace:
    """The labels a task can produce and the surface forms the teacher may use for them.

    ``labels`` fixes the export order (the ClassLabel order of the dataset); every
    probability vector in labeler follows it. ``verbalizers`` lets the prompt ask for short
    codes or synonyms while the dataset keeps canonical names; labels without an entry
    answer with their own name.
    """

    labels: tuple[str, ...]
    verbalizers: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    case_sensitive: bool = False
    _norm: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)
    _sorted: tuple[str, ...] = field(init=False, repr=False, compare=False, hash=False)
    _clean: dict[str, frozenset[int]] = field(init=False, repr=False, compare=False, hash=False)
    _cache: dict[str, frozenset[int]] = field(init=False, repr=False, compare=False, hash=False)
    _pieces: dict[str, tuple[str, frozenset[int], int | None]] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _parsed: dict[str, str | None] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        if not labels:
            raise ConfigError("a label space needs at least one label")
        for label in labels:
            if not isinstance(label, str) or not label.strip():
                raise ConfigError(f"label names must be non-empty strings, got {label!r}")
        dupes = sorted(k for k, n in Counter(labels).items() if n > 1)
        if dupes:
            raise ConfigError(f"duplicate label names: {', '.join(dupes)}")
        unknown = sorted(set(self.verbalizers) - set(labels))
        if unknown:
            raise ConfigError(f"verbalizers given for unknown labels: {', '.join(unknown)}")

        verbalizers: dict[str, tuple[str, ...]] = {}
        norm: dict[str, int] = {}
        for index, label in enumerate(labels):
            forms = self.verbalizers.get(label, (label,))
            if isinstance(forms, str):
                forms = (forms,)
            forms = tuple(dict.fromkeys(forms))
            if not forms:
                raise ConfigError(f"label {label!r} has an empty verbalizer list")
            for form in forms:
                if not isinstance(form, str) or not form.strip():
                    raise ConfigError(f"label {label!r}: verbalizers must be non-empty strings, got {form!r}")
                key = self._fold(form.strip())
                other = norm.get(key)
                if other is not None and other != index:
                    raise ConfigError(
                        f"verbalizer {form!r} is used by both {labels[other]!r} and "
                        f"{label!r}; an answer could not be mapped back to one label"
                    )
                norm[key] = index
            verbalizers[label] = forms

        clean: dict[str, set[int]] = {}
        for key, index in norm.items():
            clean.setdefault(_strip_wrapping(key), set()).add(index)

        set_ = object.__setattr__
        set_(self, "labels", labels)
        set_(self, "verbalizers", verbalizers)
        set_(self, "_norm", norm)
        set_(self, "_sorted", tuple(sorted(norm)))
        set_(self, "_clean", {k: frozenset(v) for k, v in clean.items() if k})
        set_(self, "_cache", {})
        set_(self, "_pieces", {})
        set_(self, "_parsed", {})

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, label: str) -> int:
        """Position of ``label`` in export order (ValueError if it is not a label)."""
        return self.labels.index(label)

    def _fold(self, text: str) -> str:
        # casefold is a per-character mapping, so folding tokens one by one and then
        # concatenating equals folding the concatenation; lower() is context-sensitive.
        return text if self.case_sensitive else text.casefold()

    def _match(self, s: str) -> frozenset[int]:
        """Labels a normalised answer prefix ``s`` is consistent with (see module doc, 3)."""
        hit = self._cache.get(s)
        if hit is not None:
            return hit
        found: set[int] = set()
        verbs = self._sorted
        i = bisect_left(verbs, s)
        while i < len(verbs) and verbs[i].startswith(s):
            found.add(self._norm[verbs[i]])
            i += 1
        if not found:
            for end in range(len(s) - 1, 0, -1):
                if not s[end].isalnum():
                    index = self._norm.get(s[:end])
                    if index is not None:
                        found.add(index)
                        break
        result = frozenset(found)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[s] = result
        return result

    def _answer_piece(self, raw: str) -> tuple[str, frozenset[int], int | None]:
        """An alternative at the answer position, normalised (module doc, 2), the labels
        it is consistent with, and that label's index when it is only one. Memoised per
        token string: the same few tokens come back in every answer, and an export reads
        a hundred thousand answers."""
        found = self._pieces.get(raw)
        if found is None:
            piece = self._fold(raw.lstrip(_FILLER))
            hits = self._match(piece) if piece else _NO_LABELS
            found = (piece, hits, next(iter(hits)) if len(hits) == 1 else None)
            if len(self._pieces) >= _CACHE_LIMIT:
                self._pieces.clear()
            self._pieces[raw] = found
        return found

    def ambiguity(self) -> list[str]:
        """The groups of labels whose answers cannot be told apart from their first tokens.

        Soft labels are read from the first answer token. When two labels begin with the
        same word (``card_arrival`` / ``card_linking``) or one surface form is a prefix of
        another (``pos`` / ``positive``), the teacher's first-token alternatives cannot be
        attributed: only the generated path can be resolved, the rest is divided by the
        other evidence and flagged ambiguous. The check is tokenizer-independent and
        therefore works at word level; `ambiguity_warning` turns the groups into one
        message, with a fix where one helps.
        """
        forms: list[tuple[str, str, int]] = []  # (normalised form, its first word, label)
        for index, label in enumerate(self.labels):
            for form in self.verbalizers[label]:
                key = self._fold(form.strip())
                forms.append((key, _first_word(key), index))

        warnings: list[str] = []
        by_word: dict[str, set[int]] = {}
        for _, word, index in forms:
            by_word.setdefault(word, set()).add(index)
        for word, members in sorted(by_word.items()):
            if len(members) > 1:
                names = [self.labels[i] for i in sorted(members)]
                warnings.append(f"{_short_list(names)} begin with the same word {word!r}")

        # A whole surface form that prefixes another ("pos" / "positive", "A" / "AB") always
        # has a first word that prefixes the other's first word, so one check covers both.
        words = sorted(by_word)
        for word_a in words:
            for word_b in words:
                if word_b == word_a or not word_b.startswith(word_a):
                    continue
                names_a = [self.labels[i] for i in sorted(by_word[word_a])]
                names_b = [self.labels[i] for i in sorted(by_word[word_b] - by_word[word_a])]
                if not names_b:
                    continue
                warnings.append(
                    f"{word_a!r} is a prefix of {word_b!r} ({_short_list(names_a)} / {_short_list(names_b)})"
                )
        return warnings

    def ambiguity_warning(self, groups_shown: int = 40, *, completion: bool = False) -> str | None:
        """One warning for the whole label set (None when every label is distinct at its
        first token): the groups, then a fix only where one helps whatever the teacher's
        tokenizer. Up to 9 labels: digits 1-9; up to 26: letters A-Z; each one token in
        every common vocabulary. A larger set needs two-character codes, and tokenizers
        that split digits (Gemma, SmolLM, Llama) give every such code the same first
        token, which is worse than the names: no codes are suggested then. A completion
        template (`completion`) needs no codes at all: a server that continues its prompt
        scores each label whole (labeler/label_scoring.py), which is the fix given."""
        groups = self.ambiguity()
        if not groups:
            return None
        listed = "; ".join(groups[:groups_shown])
        if len(groups) > groups_shown:
            listed += f"; … +{len(groups) - groups_shown} more"
        head = (
            f"{len(groups)} group(s) of labels cannot be told apart by their first answer "
            f"token: {listed}. Their shared mass is divided by the rest of each answer "
            "and marked soft_label_source logprobs:split"
        )
        n = len(self.labels)
        if completion:
            return (
                f"{head}, unless scored: --soft-labels logprobs:exact (the default of "
                "local:… teachers) asks the server for each such label's whole "
                "probability, one one-token request per shared prefix, cached"
            )
        if n > 26:
            return (
                f"{head}; codes would not help {n} labels (two-character codes share "
                "their first token in tokenizers that split digits or letters): check "
                "with labeler eval whether the split costs accuracy"
            )
        style, what = ("digits", "single digits") if n <= 9 else ("letters", "single letters")
        entries = ", ".join(
            f"{json.dumps(k)}: {json.dumps(v)}" for k, v in self.with_codes(style).codes().items()
        )
        return (
            f"{head}. Fix: answer with codes and list them in the prompt; in the template "
            f"write output: labels: {{{entries}}} ({what}, one token each in every common "
            "tokenizer; labeler maps each code back to its label name)"
        )

    def with_codes(self, style: str = "letters") -> LabelSpace:
        """The same labels answered with short codes, so each label is one distinct token.

        Codes never prefix one another: up to 26 labels get ``A``..``Z``, larger sets get
        fixed-width codes (``AA``, ``AB``, …), and ``style="digits"`` gives ``1``..``9`` or
        zero-padded ``01``..``77``. The prompt must list the codes; answers map back to the
        label names.
        """
        n = len(self.labels)
        if style == "letters":
            width = 1
            while 26**width < n:
                width += 1
            codes = [_letters(i, width) for i in range(n)]
        elif style == "digits":
            width = len(str(n))
            codes = [str(i + 1).zfill(width) for i in range(n)]
        else:
            raise ConfigError(f"unknown code style {style!r}; use 'letters' or 'digits'")
        return LabelSpace(
            self.labels,
            {label: (code,) for label, code in zip(self.labels, codes, strict=True)},
            case_sensitive=self.case_sensitive,
        )

    def codes(self) -> dict[str, str]:
        """First verbalizer of each label, for rendering the label list into a prompt."""
        return {label: self.verbalizers[label][0] for label in self.labels}


def _letters(i: int, width: int) -> str:
    out = []
    for _ in range(width):
        i, r = divmod(i, 26)
        out.append(chr(ord("A") + r))
    return "".join(reversed(out))


def _first_word(key: str) -> str:
    m = _FIRST_WORD_RE.match(key)
    return m.group(0) if m else key[:1]


def _short_list(names: list[str], limit: int = 6) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", … +{len(names) - limit} more"


def _strip_wrapping(text: str) -> str:
    """Peel quotes, emphasis, brackets and trailing punctuation until nothing changes."""
    prev = None
    while text != prev:
        prev = text
        text = text.strip(_WRAP).rstrip(_TRAILING_PUNCT).lstrip(_LEADING_PUNCT)
    return text


@dataclass(frozen=True)
class SoftLabel:
    """A teacher's distribution over the labels, plus what it could not place.

    ``probs`` follows `LabelSpace.labels` and sums to 1, or is all zero when no mass fell on
    any label. ``outside`` is the share (before renormalisation) that went to no label: a
    high value means the teacher did not answer in the label vocabulary, which a filter or
    a report should see even though ``probs`` has been renormalised.
    """

    probs: tuple[float, ...]
    outside: float
    # "logprobs" | "logprobs:split" | "logprobs:exact" | "samples:N" | "verbalized" |
    # "ensemble" | "none"
    source: str
    ambiguous: bool = False

    @property
    def valid(self) -> bool:
        return any(p > 0.0 for p in self.probs)

    def argmax(self) -> int | None:
        """Index of the most probable label (first on ties), None when nothing is on a label."""
        if not self.valid:
            return None
        best = max(self.probs)
        return self.probs.index(best)

    def label(self, space: LabelSpace) -> str | None:
        index = self.argmax()
        return None if index is None else space.labels[index]

    def to_dict(self) -> dict[str, object]:
        return {
            "probs": list(self.probs),
            "outside": self.outside,
            "source": self.source,
            "ambiguous": self.ambiguous,
        }


def parse_label(text: str, space: LabelSpace) -> str | None:
    """The hard label an answer names, or None when it names none (see `_parse_label`).

    Memoised per answer text, for short answers only: a label task's answers are a few
    distinct words repeated over every row, while long free-form answers rarely repeat
    and would only fill memory."""
    if len(text) > _PARSE_MEMO_CHARS:
        return _parse_label(text, space)
    memo = space._parsed
    if text in memo:
        return memo[text]
    label = _parse_label(text, space)
    if len(memo) >= _PARSE_MEMO_SIZE:
        memo.clear()
    memo[text] = label
    return label


def _parse_label(text: str, space: LabelSpace) -> str | None:
    """The hard label an answer names, or None when it names none.

    Teachers decorate answers (quotes, ``**bold**``, a trailing period, ``Label: X``, an
    explanation after the label), so matching goes from strict to lenient and stops at the
    first hit: the exact surface form on the first non-empty line; the same with wrapping
    and trailing punctuation peeled off; the part after a ``Label:``-style prefix; and last
    the longest verbalizer the answer starts with at a word boundary.
    """
    line = _first_line(text)
    if line is None:
        return None
    folded = space._fold(line)
    found = _exact(folded, space)
    if found is not None:
        return space.labels[found]
    m = _PREFIX_RE.match(folded.replace("*", "").replace("`", ""))
    rest = m.group("rest") if m else None
    if rest is not None:
        found = _exact(rest, space)
        if found is not None:
            return space.labels[found]
    for candidate in (folded, rest):
        if candidate is not None:
            found = _starts_with(candidate, space)
            if found is not None:
                return space.labels[found]
    return None


def _first_line(text: str) -> str | None:
    for raw in text.splitlines():
        line = raw.strip()
        if _strip_wrapping(line):
            return line
    return None


def _exact(folded: str, space: LabelSpace) -> int | None:
    light = folded.strip(_WRAP)
    index = space._norm.get(light)
    if index is not None:
        return index
    hits = space._clean.get(_strip_wrapping(light))
    if hits is not None and len(hits) == 1:
        return next(iter(hits))
    return None


def _starts_with(folded: str, space: LabelSpace) -> int | None:
    body = folded.lstrip(_WRAP + _LEADING_PUNCT)
    best: tuple[int, int] | None = None  # (length, label)
    for key, index in space._norm.items():
        if best is not None and len(key) <= best[0]:
            continue
        if body.startswith(key) and (len(body) == len(key) or not body[len(key)].isalnum()):
            best = (len(key), index)
    return None if best is None else best[1]


class _Mass:
    __slots__ = ("ambiguous", "labels", "outside", "pending", "resolved", "scored", "unscored")

    def __init__(self, k: int) -> None:
        self.labels = [0.0] * k
        self.outside = 0.0
        self.ambiguous = False
        self.scored = False  # scoring requests were asked for (their answers may be missing)
        self.resolved = False  # a scored continuation told labels apart
        self.pending: list[tuple[frozenset[int], float]] = []
        # (answer text prefix, its mass): where a scoring request would tell them apart
        self.unscored: list[tuple[str, float]] = []

    def split(self, candidates: frozenset[int], mass: float, path: str) -> None:
        """Mass no token tells apart among ``candidates``: divided once the rest is known."""
        self.pending.append((candidates, mass))
        self.unscored.append((path, mass))
        self.ambiguous = True

    def negligible(self) -> float:
        """The share below which a divided prefix cannot move any renormalised
        probability by more than `NEGLIGIBLE_MASS`: that fraction of the label mass."""
        return NEGLIGIBLE_MASS * (sum(self.labels) + sum(m for _, m in self.pending))

    def settle(self) -> None:
        """Divide each unresolvable share among its labels in proportion to the mass they
        hold from the rest of the answer (evenly where they hold none). An even split
        makes ties that only the labels' order in the template would settle; the rest of
        the answer is the only evidence there is of which label the shared token meant."""
        direct = list(self.labels)
        for candidates, mass in self.pending:
            weights = {i: direct[i] for i in candidates}
            total = sum(weights.values())
            for index, w in weights.items():
                self.labels[index] += mass * (w / total if total > 0 else 1 / len(candidates))
        self.pending.clear()


def _alternatives(tok: TokenLogprob) -> list[tuple[str, float]]:
    top, token = tok.top, tok.token
    alts = [(t, math.exp(lp)) for t, lp in top]
    # the chosen token is most often the first alternative: test that before the rest
    if not (top and top[0][0] == token) and not any(t == token for t, _ in top):
        alts.append((token, math.exp(tok.logprob)))
    return alts


def _is_filler(token: str) -> bool:
    return token.strip(_FILLER) == ""


def _continuation(token: str) -> str:
    # Raw BPE vocabularies spell a leading space as Ġ/▁ and a newline as Ċ; inside a
    # multi-token label the space matters ("New" + " York"), so convert instead of strip.
    if token[:1] in ("Ġ", "▁"):
        return " " + token[1:]
    if token[:1] == "Ċ":
        return "\n" + token[1:]
    return token


def _descend(
    tokens: Sequence[TokenLogprob],
    pos: int,
    text: str,
    prefix: str,
    candidates: frozenset[int],
    mass: float,
    space: LabelSpace,
    acc: _Mass,
    scores: Mapping[str, Sequence[tuple[str, float]]] | None,
) -> None:
    """Split ``mass`` (on the generated path ``prefix``, written ``text``) by the
    conditional at ``pos``; past the answer's last token, by a scored continuation."""
    if pos >= len(tokens):
        _descend_scored(text, prefix, candidates, mass, space, acc, scores)
        return
    tok = tokens[pos]
    alts = _alternatives(tok)
    acc.outside += mass * max(0.0, 1.0 - sum(q for _, q in alts))
    for raw, q in alts:
        piece = _continuation(raw)
        path = prefix + space._fold(piece)
        hits = space._match(path) & candidates
        if not hits:
            acc.outside += mass * q
        elif len(hits) == 1:
            acc.labels[next(iter(hits))] += mass * q
        elif raw == tok.token:
            _descend(tokens, pos + 1, text + piece, path, hits, mass * q, space, acc, scores)
        else:
            _descend_scored(text + piece, path, hits, mass * q, space, acc, scores)


def _descend_scored(
    text: str,
    prefix: str,
    candidates: frozenset[int],
    mass: float,
    space: LabelSpace,
    acc: _Mass,
    scores: Mapping[str, Sequence[tuple[str, float]]] | None,
) -> None:
    """Split ``mass`` on an answer prefix off the generated path (module doc, 6) by the
    teacher's next-token alternatives after it, where a scoring request asked for them;
    else leave it to `_Mass.settle`."""
    alts = scores.get(text) if scores is not None else None
    if alts is None:
        acc.split(candidates, mass, text)
        return
    acc.resolved = True
    alts = [(raw, math.exp(lp)) for raw, lp in alts]
    acc.outside += mass * max(0.0, 1.0 - sum(q for _, q in alts))
    for raw, q in alts:
        piece = _continuation(raw)
        path = prefix + space._fold(piece)
        hits = space._match(path) & candidates
        if not hits or path == prefix:
            # a token that writes nothing ends the text there (llama.cpp's server reports
            # its end-of-text token so): an answer that stops while several labels are
            # still possible names none of them
            acc.outside += mass * q
        elif len(hits) == 1:
            acc.labels[next(iter(hits))] += mass * q
        else:
            _descend_scored(text + piece, path, hits, mass * q, space, acc, scores)


def soft_label(completion: Completion, space: LabelSpace) -> SoftLabel:
    """The teacher's label distribution for one answer (algorithm in the module docstring)."""
    tokens = completion.tokens
    if not tokens:
        if completion.sampled:
            return sampled_soft_label(completion.samples or [], space)
        return _one_hot(parse_label(completion.text, space), space)
    k = len(space.labels)
    acc = _answer_mass(tokens, space, completion.scores)
    if acc is None:
        return SoftLabel((0.0,) * k, 1.0, "logprobs", False)
    mass = acc.labels
    if acc.scored and acc.pending:  # scored: only shares worth a request make it approximate
        least = acc.negligible()
        acc.ambiguous = any(m >= least for _, m in acc.pending)
    if acc.pending:
        acc.settle()
    total = sum(mass)
    probs = tuple([m / total for m in mass]) if total > 0 else (0.0,) * k
    outside = min(1.0, max(0.0, acc.outside))
    if acc.ambiguous:
        source = LOGPROBS_SPLIT
    elif acc.resolved:
        source = LOGPROBS_EXACT
    else:
        source = "logprobs"
    return SoftLabel(probs, outside, source, acc.ambiguous)


def unscored_prefixes(completion: Completion, space: LabelSpace) -> list[str]:
    """The answer text prefixes whose mass `soft_label` divides among several labels for
    want of the teacher's next-token alternatives there (a scoring request's prompt is
    the row's prompt followed by one), those that hold at least `NEGLIGIBLE_MASS` of the
    mass on labels (the soft label is renormalised over it)."""
    tokens = completion.tokens
    if not tokens:
        return []
    acc = _answer_mass(tokens, space, completion.scores or {})
    if acc is None:
        return []
    least = acc.negligible()
    return list(dict.fromkeys(path for path, mass in acc.unscored if mass >= least))


def _answer_mass(
    tokens: Sequence[TokenLogprob],
    space: LabelSpace,
    scores: Mapping[str, Sequence[tuple[str, float]]] | None,
) -> _Mass | None:
    """The mass of each label and outside them (module doc, 1-6), None without an answer
    position. `scores` (None: not asked for) tell shared prefixes apart (module doc, 6)."""
    # p0: the first token that is not filler (most often the first token)
    p0 = (
        0
        if tokens[0].token.strip(_FILLER)
        else next((i for i, t in enumerate(tokens) if not _is_filler(t.token)), None)
    )
    if p0 is None:
        return None
    acc = _Mass(len(space.labels))
    acc.scored = scores is not None
    mass = acc.labels
    tok = tokens[p0]
    lead = "".join([_continuation(t.token) for t in tokens[:p0]]) if p0 else ""
    alts = _alternatives(tok)
    acc.outside += max(0.0, 1.0 - sum([q for _, q in alts]))
    for raw, q in alts:
        piece, hits, only = space._answer_piece(raw)
        if only is not None:
            mass[only] += q
        elif not hits:
            acc.outside += q
        elif raw == tok.token:
            _descend(tokens, p0 + 1, lead + _continuation(raw), piece, hits, q, space, acc, scores)
        else:
            _descend_scored(lead + _continuation(raw), piece, hits, q, space, acc, scores)
    return acc


def sampled_soft_label(samples: Sequence[str], space: LabelSpace) -> SoftLabel:
    """Empirical label distribution of n sampled answers, for teachers without logprobs.

    Invalid samples are evidence that the teacher strays from the label set, so their share
    is kept as ``outside`` rather than silently dropped.
    """
    k = len(space.labels)
    counts = [0] * k
    for sample in samples:
        label = parse_label(sample, space)
        if label is not None:
            counts[space.index(label)] += 1
    n = len(samples)
    valid = sum(counts)
    source = samples_source(n)
    if valid == 0:
        return SoftLabel((0.0,) * k, 1.0, source, False)
    probs = tuple(c / valid for c in counts)
    return SoftLabel(probs, (n - valid) / n, source, False)


def samples_source(n: int) -> str:
    """The source of a soft label read from `n` samples: N says how coarse it is (a
    share of 5 answers moves in steps of 0.2)."""
    return f"{SAMPLES_SOURCE}{n}"


def is_sampled(soft: SoftLabel) -> bool:
    return soft.source.startswith(SAMPLES_SOURCE)


VERBALIZED = "verbalized"
_JSON_OBJECT_RE = re.compile(r"\{.*\}", re.DOTALL)


def verbalized_answer(text: str, space: LabelSpace) -> tuple[str | None, SoftLabel]:
    """The label and soft label of an answer that states its confidence as JSON,
    ``{"label": "positive", "confidence": 0.8}`` (a code fence or words around it are
    allowed; a confidence above 1 is read as a percentage).

    The stated label gets the stated probability p and the other labels share 1 - p
    equally: the teacher said how sure it is, not how the rest divides, and an even split
    claims nothing it did not say. A reasoning model's stated confidence tends to be
    better calibrated than a plain model's, and a calibration (labeler/calibration.py)
    fitted on gold corrects the rest. An answer without a usable confidence is read as
    its label's one-hot (source ``none``), as is a plain label answered without JSON."""
    found = _JSON_OBJECT_RE.search(text)
    stated: Any = None
    if found is not None:
        try:
            stated = json.loads(found.group(0))
        except ValueError:
            stated = None
    if not isinstance(stated, dict):  # no statement: the label it names, if any
        label = parse_label(text, space)
        return label, _one_hot(label, space)
    raw_label = stated.get("label")
    label = parse_label(str(raw_label), space) if isinstance(raw_label, str | int) else None
    p = _probability(stated.get("confidence"))
    if label is None or p is None:
        return label, _one_hot(label, space)
    return label, verbalized_soft_label(label, p, space)


def verbalized_soft_label(label: str, p: float, space: LabelSpace) -> SoftLabel:
    """p on `label`, 1 - p shared equally by the other labels (see `verbalized_answer`)."""
    k = len(space.labels)
    index = space.index(label)
    if k == 1:
        return SoftLabel((1.0,), 0.0, VERBALIZED, False)
    rest = (1.0 - p) / (k - 1)
    return SoftLabel(tuple(p if i == index else rest for i in range(k)), 0.0, VERBALIZED, False)


def _probability(value: Any) -> float | None:
    """A stated confidence as a probability: 0..1, or a percentage up to 100."""
    if isinstance(value, str):
        value = value.strip().rstrip("%")
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    if 1.0 < value <= 100.0:
        value = value / 100.0
    return value if 0.0 <= value <= 1.0 else None


def _one_hot(label: str | None, space: LabelSpace) -> SoftLabel:
    k = len(space.labels)
    if label is None:
        return SoftLabel((0.0,) * k, 1.0, "none", False)
    index = space.index(label)
    return SoftLabel(tuple(1.0 if i == index else 0.0 for i in range(k)), 0.0, "none", False)


def confidence(
    completion: Completion, soft: SoftLabel, label_index: int | object | None = _MAJORITY
) -> Confidence:
    """Confidence measures of one answer, given its soft label and the index of the label
    the row carries (`read_answer` passes it; left out, the majority's, which a sampled
    teacher's answer names: its text is the majority answer)."""
    agreement: float | None = None
    if is_sampled(soft) and completion.samples:
        # A share of valid samples times the valid share 1 - outside is a share of all n;
        # rounding to a whole count keeps the share exact.
        n = len(completion.samples)
        if label_index is _MAJORITY:
            named = round(max(soft.probs) * (1.0 - soft.outside) * n) if soft.valid else 0
        elif isinstance(label_index, int) and soft.valid:
            named = round(soft.probs[label_index] * (1.0 - soft.outside) * n)
        else:
            named = 0
        agreement = share(named, n)
    return measure(soft.probs, soft.valid, mean_logprob=token_confidence(completion), agreement=agreement)


# (label index or None, probs, outside, max_prob, margin, entropy, mean_logprob)
LabelNumbers = tuple[int | None, tuple[float, ...], float, float, float, float, float]


def label_numbers(
    completion: Completion, space: LabelSpace, completion_mode: bool = False
) -> LabelNumbers | None:
    """The numbers `read_answer` derives for an answer with logprobs (its label, soft label
    and confidence), computed without the `SoftLabel`, `Confidence` and `Answer` objects,
    and for an answer from the store without its `TokenLogprob`s (read from the stored
    JSON form, `StoredCompletion.token_rows`): the export reads a hundred thousand answers,
    and those objects cost as much as the arithmetic. Only the common case is read here: a
    first token that is not filler, each of whose alternatives names one label or none.
    Anything else (a label spread over several tokens, an ambiguous alternative, sampled or
    logprob-less answers, an odd stored value) returns None, and the caller reads the
    answer the general way. The numbers are bit for bit those of `soft_label` and
    `confidence`: the same operations on the same values in the same order."""
    rows = getattr(completion, "token_rows", None)
    if rows is not None:  # [[token, logprob, [[alternative, logprob, ...], ...], ...], ...]
        if not rows:
            return None
        try:
            first = rows[0]
            mean = mean_logprob([float(r[1]) for r in rows])
            assert mean is not None  # rows is not empty
            return _label_numbers(
                completion.text, first[0], float(first[1]), first[2], mean, space, completion_mode
            )
        except (TypeError, ValueError, IndexError, AttributeError):
            return None
    tokens = completion.tokens
    if not tokens:
        return None
    tok = tokens[0]
    mean = mean_logprob([t.logprob for t in tokens])
    assert mean is not None  # tokens is not empty
    return _label_numbers(completion.text, tok.token, tok.logprob, tok.top, mean, space, completion_mode)


def _label_numbers(
    text: str,
    token: str,
    logprob: float,
    top: Sequence[Sequence[Any]],
    mean: float,
    space: LabelSpace,
    completion_mode: bool,
) -> LabelNumbers | None:
    if not token.strip(_FILLER):
        return None
    pieces = space._pieces
    k = len(space.labels)
    mass = [0.0] * k
    outside = 0.0
    qs = [math.exp(alt[1]) for alt in top]
    chosen: float | None = None
    if not (top and top[0][0] == token) and not any(alt[0] == token for alt in top):
        chosen = math.exp(logprob)
        qs.append(chosen)
    outside += max(0.0, 1.0 - sum(qs))
    for alt, q in zip(top, qs, strict=False):  # qs may end with the chosen token's
        raw = alt[0]
        if type(raw) is not str:
            return None
        found = pieces.get(raw) or space._answer_piece(raw)
        only = found[2]
        if only is not None:
            mass[only] += q
        elif not found[1]:
            outside += q
        else:
            return None  # a multi-token or ambiguous alternative: the general reading
    if chosen is not None:
        found = pieces.get(token) or space._answer_piece(token)
        if found[2] is not None:
            mass[found[2]] += chosen
        elif not found[1]:
            outside += chosen
        else:
            return None
    total = sum(mass)
    outside = min(1.0, max(0.0, outside))
    if not total > 0:  # no mass on a label: even a completion-mode answer goes by its text
        none = (0.0,) * k
        return (_parsed_index(text, space), none, outside, *distribution_measures(none, valid=False), mean)
    probs = tuple([m / total for m in mass])
    if not max(probs) > 0.0:  # every share rounded away: `soft.valid` is False
        return None
    best, margin, entropy = distribution_measures(probs)
    index = probs.index(best) if completion_mode else _parsed_index(text, space)
    return (index, probs, outside, best, margin, entropy, mean)


def _parsed_index(text: str, space: LabelSpace) -> int | None:
    label = parse_label(text, space)
    return None if label is None else space.labels.index(label)


def ensemble_soft_label(softs: Sequence[SoftLabel]) -> SoftLabel:
    """The mean label distribution of a prompt ensemble's answers (one per prompt form).

    A form whose answer named no label has no distribution to average; it adds nothing to
    ``probs`` and counts fully in ``outside`` (the mean of the forms' outside shares), the
    way an invalid sample does for a sampled teacher.
    """
    k = len(softs[0].probs)
    valid = [s for s in softs if s.valid]
    outside = sum(s.outside for s in softs) / len(softs)
    ambiguous = any(s.ambiguous for s in softs)
    if not valid:
        return SoftLabel((0.0,) * k, outside, "ensemble", ambiguous)
    probs = tuple(sum(s.probs[i] for s in valid) / len(valid) for i in range(k))
    return SoftLabel(probs, outside, "ensemble", ambiguous)


def ensemble_confidence(
    softs: Sequence[SoftLabel], confidences: Sequence[Confidence], mean: SoftLabel
) -> Confidence:
    """Confidence of a prompt ensemble: the distribution measures of the mean soft label,
    the mean of the forms' token logprobs, and ``agreement``: the share of all forms,
    invalid ones included, whose answer names the row's label (the mean's argmax), as for
    sampled teachers and teacher ensembles, so a filter or a threshold reads it the same
    way."""
    logprobs = [c.mean_logprob for c in confidences if c.mean_logprob is not None]
    return measure(
        mean.probs,
        mean.valid,
        mean_logprob=mean_logprob(logprobs),
        agreement=agreement([s.argmax() for s in softs], mean.argmax()),
    )


def token_confidence(completion: Completion) -> float | None:
    """Mean token logprob of the answer: the confidence available for free-text tasks."""
    tokens = completion.tokens
    return mean_logprob([t.logprob for t in tokens]) if tokens else None
