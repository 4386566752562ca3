"""TRL's SFTTrainer reads the chat-mode `sft` export unchanged and trains only the answers.

A tiny random-init model and a word-level tokenizer built here from the export itself:
no hub downloads. Skipped (with the reason) without the `student` extra.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import datasets
import pytest

from labeler import Job, run_job
from labeler.exports import ExportOptions
from labeler.testing import ServerConfig, TeacherServer

from conftest import SAMPLES

trl = pytest.importorskip("trl", reason="needs trl: pip install -e '.[student]'")
transformers = pytest.importorskip("transformers", reason="needs transformers: the student extra")
tokenizers = pytest.importorskip("tokenizers", reason="needs tokenizers: the student extra")

pytestmark = [
    pytest.mark.slow,
    # TRL's SFTConfig still sets transformers' renamed `gradient_checkpointing`
    pytest.mark.filterwarnings("ignore:`gradient_checkpointing.*is deprecated:FutureWarning"),
]

END = "<|end|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}" + END + "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tokenizer(ds: datasets.Dataset, extra: tuple[str, ...] = ()) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over the export's own words (and `extra` texts), with a
    chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    special = ["[UNK]", "[PAD]", END, "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = [m["content"] for row in ds for m in row["prompt"] + row["completion"]] + list(extra)
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        eos_token=END,
        chat_template=CHAT_TEMPLATE,
    )


def test_sft_trainer_trains_exactly_the_teachers_answers(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv:
        job = Job(
            task="sentiment",
            input=SAMPLES / "reviews.jsonl",
            teacher="openai-compatible:teacher-test",
            base_url=srv.url + "/v1",
            store=tmp_path / "s.sqlite",
            out=tmp_path / "out",
            progress=False,
            export=ExportOptions(kind="sft"),
        )
        asyncio.run(run_job(job))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    tokenizer = _tokenizer(ds)
    trainer = _trainer(tokenizer, ds, tmp_path)

    answers = {row["id"]: row["completion"][0]["content"] for row in ds}
    for i, row_id in enumerate(ds["id"]):
        batch = trainer.data_collator([trainer.train_dataset[i]])
        labels = batch["labels"][0].tolist()
        trained = [t for t in labels if t != -100]
        expected = tokenizer.encode(answers[row_id] + END, add_special_tokens=False)
        assert trained == expected, (row_id, tokenizer.decode(trained))
    # the few-shot answers sit in the prompt: none of them is trained
    assert sum(1 for t in labels if t != -100) == len(expected)
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0


def _trainer(
    tokenizer: transformers.PreTrainedTokenizerFast, ds: datasets.Dataset, tmp_path: Path
) -> trl.SFTTrainer:
    """A tiny random-init Llama and TRL's SFTTrainer over the export (2 steps on CPU)."""
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    transformers.set_seed(0)
    model = transformers.LlamaForCausalLM(config)
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "student"),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
        max_length=512,
    )
    return trl.SFTTrainer(
        model=model, args=args, train_dataset=ds.remove_columns("id"), processing_class=tokenizer
    )


# A chat template that renders an assistant turn's `reasoning_content` inside <think>, as
# Qwen3's and DeepSeek's do (reduced to this word-level tokenizer's vocabulary).
THINK_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m.get('reasoning_content') %}<think> {{ m['reasoning_content'] }} </think> "
    "{% endif %}{{ m['content'] }}" + END + "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.mark.parametrize("mode", ["inline", "separate"])
def test_sft_trainer_trains_the_teachers_thinking_with_its_answer(tmp_path: Path, mode: str) -> None:
    with TeacherServer(
        ServerConfig(labels=["negative", "positive"], reasoning_field="reasoning_content")
    ) as srv:
        job = Job(
            task="sentiment",
            input=SAMPLES / "reviews.jsonl",
            teacher="openai-compatible:teacher-test",
            base_url=srv.url + "/v1",
            store=tmp_path / "s.sqlite",
            out=tmp_path / "out",
            progress=False,
            export=ExportOptions(kind="sft", reasoning=mode),
        )
        asyncio.run(run_job(job))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    tokenizer = _tokenizer(
        ds,
        extra=(
            *(m.get("reasoning_content") or "" for row in ds for m in row["completion"]),
            "<think> </think>",
        ),
    )
    if mode == "separate":
        tokenizer.chat_template = THINK_TEMPLATE
    trainer = _trainer(tokenizer, ds, tmp_path)
    for i, row in enumerate(ds):
        turn = row["completion"][0]
        trace = turn.get("reasoning_content")
        if mode == "inline":
            assert turn["content"].startswith("<think>\n") and "</think>\n\n" in turn["content"]
            text = turn["content"]
        else:
            assert trace and not turn["content"].startswith("<think>")
            text = f"<think> {trace} </think> {turn['content']}"
        labels = trainer.data_collator([trainer.train_dataset[i]])["labels"][0].tolist()
        trained = [t for t in labels if t != -100]
        # the trained tokens are the thinking and the answer: the student learns to reason
        assert trained == tokenizer.encode(text + END, add_special_tokens=False), row["id"]
        assert len(trained) > 10
    assert trainer.train().global_step == 2
