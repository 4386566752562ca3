"""Distil a `classification` export into a small transformers student: soft vs hard labels.

The same student (same seed, data and schedule) is trained twice with
`labeler.student.DistillationTrainer`: on the teacher's soft labels (``alpha=1``, KL to
``soft_label`` at a temperature) and on its hard labels (``alpha=0``, cross-entropy on
``label``), then both are scored against gold labels the teacher never saw. CPU, minutes.

    pip install 'labeler-distill[student]'
    labeler run sentiment-completion train.jsonl --teacher local:gemma3-270m \\
        --kind classification --out out/sst2-train
    python examples/distill_student.py out/sst2-train gold_test.jsonl --gold-field label

The student's tokenizer is a word-level one trained on the export's text and its weights
are random (``--student bow``: mean of word embeddings, fastText-like; ``--student bert``:
a 2-layer BERT), so nothing is downloaded. Swap in a pretrained checkpoint and its
tokenizer for real work; the trainer and collator stay the same.

Cost, measured on a busy 2-core machine with one torch thread (``--threads 1``): 600
SST-2 validation sentences, 30 epochs, about 12 s per student for ``bow`` and 90 s for
``bert``. With gold labels standing in for the teacher (hard = gold, soft = 0.85/0.15)
and the other 272 sentences as test, hard reached 69.9% (bow) and 66.5% (bert), soft
67.3% and 60.7%: a constant smoothing carries no information, so it cannot help. Soft
labels pay off when they say which rows are uncertain; run this on a real teacher's
export to see whether yours do.

From code (``python -m benchmarks.student`` uses this)::

    from examples.distill_student import train_and_score
    acc = train_and_score("out/sst2-train", gold_rows, soft=True, temperature=2.0, seed=0)
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from labeler.inputs import Row, read_rows
from labeler.student import DistillationTrainer, SoftLabelCollator

STUDENTS = ("bow", "bert")


def load_export(export: str | Path | datasets.Dataset | datasets.DatasetDict) -> datasets.Dataset:
    """The training rows of an export folder (``hf`` format) or of a loaded dataset."""
    ds = datasets.load_from_disk(str(export)) if isinstance(export, str | Path) else export
    return ds["train"] if isinstance(ds, datasets.DatasetDict) else ds


def word_tokenizer(texts: Sequence[str]) -> transformers.PreTrainedTokenizerFast:
    """A lower-cased word-level tokenizer trained on `texts` (offline, in milliseconds)."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


class BagOfWords(torch.nn.Module):
    """Mean of word embeddings → linear: a fastText-like student that learns from a few
    hundred rows, where a randomly initialised transformer barely does."""

    def __init__(self, vocab: int, labels: int, dim: int = 64) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim, padding_idx=0)
        self.out = torch.nn.Linear(dim, labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> dict[str, torch.Tensor]:
        mask = (attention_mask if attention_mask is not None else input_ids.ne(0)).unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return {"logits": self.out(pooled)}


def make_student(kind: str, vocab: int, labels: int) -> torch.nn.Module:
    if kind == "bow":
        return BagOfWords(vocab, labels)
    if kind == "bert":
        config = transformers.BertConfig(
            vocab_size=vocab,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=512,
            num_labels=labels,
        )
        return transformers.BertForSequenceClassification(config)
    raise ValueError(f"student {kind!r}: expected one of {', '.join(STUDENTS)}")


def gold_index(value: Any, names: Sequence[str]) -> int:
    """A gold label given as a name (any case) or as an index in the export's label order."""
    text = str(value).strip()
    folded = {n.lower(): i for i, n in enumerate(names)}
    if text.lower() in folded:
        return folded[text.lower()]
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise ValueError(f"gold label {value!r} is not one of {list(names)}")


def read_gold(
    path: str | Path, *, text_field: str = "text", gold_field: str = "label"
) -> list[dict[str, Any]]:
    """Gold rows from a JSONL/CSV/TSV file, as ``{"text": ..., "label": ...}`` dicts."""
    rows = []
    for item in read_rows(path, required_fields=(text_field, gold_field)):
        if isinstance(item, Row):
            rows.append({"text": str(item.data[text_field]), "label": item.data[gold_field]})
    return rows


def train_and_score(
    export: str | Path | datasets.Dataset | datasets.DatasetDict,
    test_rows: Sequence[Mapping[str, Any]],
    *,
    soft: bool,
    temperature: float = 1.0,
    alpha: float | None = None,
    seed: int = 0,
    student: str = "bow",
    epochs: int = 30,
    batch_size: int = 32,
    learning_rate: float = 5e-3,
    text_field: str = "text",
    gold_field: str = "label",
) -> float:
    """Train a student on the export and return its accuracy on `test_rows`.

    `soft` trains on ``soft_label`` (``alpha`` defaults to 1: soft term only), else on
    the hard ``label`` (``alpha`` 0). Rows the teacher answered with no valid label
    (``label`` < 0 and no soft label) are skipped by the loss. `test_rows` hold
    `text_field` and a gold label (a label name or index) under `gold_field`.
    """
    train_ds = load_export(export)
    names = train_ds.features["label"].names
    if text_field != "text":
        train_ds = train_ds.rename_column(text_field, "text")
    tok = word_tokenizer(train_ds["text"])
    transformers.set_seed(seed)
    model = make_student(student, len(tok), len(names))
    with tempfile.TemporaryDirectory(prefix="labeler-student-") as out:
        args = transformers.TrainingArguments(
            output_dir=out,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=0.0,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            seed=seed,
            data_seed=seed,
            disable_tqdm=True,
        )
        trainer = DistillationTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            processing_class=tok,
            temperature=temperature,
            alpha=alpha if alpha is not None else (1.0 if soft else 0.0),
            max_length=256,
        )
        trainer.train()
    return accuracy(model, tok, test_rows, names, text_field=text_field, gold_field=gold_field)


def accuracy(
    model: torch.nn.Module,
    tok: Any,
    rows: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    *,
    text_field: str = "text",
    gold_field: str = "label",
    batch_size: int = 256,
) -> float:
    collate = SoftLabelCollator(tok, max_length=256)
    gold = [gold_index(r[gold_field], names) for r in rows]
    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = [{"text": r[text_field]} for r in rows[start : start + batch_size]]
            batch = collate(chunk)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            logits = out["logits"] if isinstance(out, Mapping) else out[0]
            predicted = logits.argmax(-1).tolist()
            correct += sum(p == g for p, g in zip(predicted, gold[start : start + batch_size], strict=True))
    return correct / max(len(rows), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export", help="a `labeler ... --kind classification` export folder")
    ap.add_argument("gold", help="held-out gold file (JSONL/CSV/TSV)")
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--gold-field", default="label")
    ap.add_argument("--student", choices=STUDENTS, default="bow")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="KD temperature for the soft student (T > 1 softens, T < 1 sharpens)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (a tiny student on a busy machine runs faster on 1)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gold = read_gold(args.gold, text_field=args.text_field, gold_field=args.gold_field)
    n = len(load_export(args.export))
    print(f"student: {args.student}, {n} teacher-labeled rows, {len(gold)} gold test rows")
    print(f"{'targets':<20}{'accuracy vs gold':>18}")
    for name, soft in (("hard", False), (f"soft T={args.temperature:g}", True)):
        acc = train_and_score(
            args.export,
            gold,
            soft=soft,
            temperature=args.temperature,
            seed=args.seed,
            student=args.student,
            epochs=args.epochs,
        )
        print(f"{name:<20}{acc:>18.4f}")


if __name__ == "__main__":
    main()
