"""A real transformers `Trainer` run with labeler.student on a labeler `classification` export.

The export comes from a real run against the test teacher over HTTP; the student is a
2-layer BERT with random weights and a word-level tokenizer trained here on the export's
text, so nothing is downloaded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import datasets
import pytest

NEEDS = "labeler.student needs torch and transformers: pip install 'labeler-distill[student]'"
torch = pytest.importorskip("torch", reason=NEEDS)
transformers = pytest.importorskip("transformers", reason=NEEDS)
tokenizers = pytest.importorskip("tokenizers", reason="comes with transformers")

from labeler import Job, run_job  # noqa: E402
from labeler.exports import ExportOptions  # noqa: E402
from labeler.student import DistillationTrainer, SoftLabelCollator  # noqa: E402
from labeler.testing import TeacherServer  # noqa: E402

from conftest import SAMPLES  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """Tiny models run ~7x faster on one thread than on two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def classification_export(server: TeacherServer, tmp_path: Path) -> datasets.Dataset:
    job = Job(
        task="sentiment",
        input=SAMPLES / "reviews.jsonl",
        teacher="openai-compatible:teacher-test",
        base_url=server.url + "/v1",
        store=tmp_path / "store.sqlite",
        out=tmp_path / "export",
        progress=False,
        export=ExportOptions(kind="classification"),
    )
    asyncio.run(run_job(job))
    return datasets.load_from_disk(str(tmp_path / "export"))


def word_tokenizer(texts: list[str]) -> Any:
    model = tokenizers.models.WordLevel(unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, tokenizers.trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def tiny_bert(vocab: int, labels: int) -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=labels,
    )
    return transformers.BertForSequenceClassification(config)


def train(
    ds: datasets.Dataset,
    tok: Any,
    tmp_path: Path,
    *,
    alpha: float,
    epochs: int = 40,
    eval_ds: datasets.Dataset | None = None,
) -> tuple[Any, DistillationTrainer]:
    model = tiny_bert(len(tok), ds.features["label"].num_classes)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / f"run-{alpha}"),
        num_train_epochs=epochs,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        eval_dataset=eval_ds,
        processing_class=tok,
        alpha=alpha,
        temperature=1.0,
    )
    trainer.train()
    return model, trainer


def student_probs(model: Any, tok: Any, ds: datasets.Dataset) -> Any:
    batch = SoftLabelCollator(tok)(list(ds))
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.softmax(logits, -1)


@pytest.mark.slow
def test_trainer_learns_the_teachers_distribution_not_just_its_argmax(
    teacher_server: TeacherServer, tmp_path: Path
) -> None:
    ds = classification_export(teacher_server, tmp_path)
    assert {"id", "text", "label", "soft_label"} <= set(ds.column_names)  # the string id stays in
    tok = word_tokenizer(ds["text"])
    soft = torch.tensor(ds["soft_label"])

    soft_model, _ = train(ds, tok, tmp_path, alpha=1.0)
    hard_model, _ = train(ds, tok, tmp_path, alpha=0.0)

    soft_gap = (student_probs(soft_model, tok, ds) - soft).abs().max(-1).values.mean().item()
    hard_gap = (student_probs(hard_model, tok, ds) - soft).abs().max(-1).values.mean().item()
    # The soft student reproduces the teacher's probabilities; the hard one learns the
    # argmax and drifts towards one-hot, away from them.
    assert soft_gap < 0.05, soft_gap
    assert hard_gap > 2 * soft_gap, (soft_gap, hard_gap)
    agree = (student_probs(soft_model, tok, ds).argmax(-1) == torch.tensor(ds["label"])).float().mean()
    assert agree.item() == 1.0


@pytest.mark.slow
def test_evaluation_skips_rows_without_any_label(teacher_server: TeacherServer, tmp_path: Path) -> None:
    ds = classification_export(teacher_server, tmp_path)
    tok = word_tokenizer(ds["text"])
    rows = [dict(r) for r in ds.select(range(4))]
    rows[0].update(label=-100, soft_label=None)  # an invalid teacher answer
    rows[1].update(soft_label=None)  # a hard label only
    eval_ds = datasets.Dataset.from_list(rows)
    model, trainer = train(ds, tok, tmp_path, alpha=1.0, epochs=1, eval_ds=eval_ds)
    metrics = trainer.evaluate()  # the string id column and the None soft label pass through
    log_p = torch.log(student_probs(model, tok, eval_ds))
    soft = torch.tensor([r["soft_label"] for r in rows[2:]])
    kl = (torch.special.xlogy(soft, soft) - soft * log_p[2:]).sum(-1)
    # row 0 skipped; row 1 falls back to cross-entropy on its hard label; rows 2-3 soft
    expected = (-log_p[1, rows[1]["label"]] + kl.sum()) / 3
    assert metrics["eval_loss"] == pytest.approx(expected.item(), rel=1e-4)
