"""TRL trains on verified answers: a `DPOTrainer` step on the `preference` export and an
`SFTTrainer` step on the verified `sft` export, both read unchanged.

A tiny random-init model and a word-level tokenizer built from the export itself: no hub
downloads. Skipped (with the reason) without the `student` extra.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import datasets
import pytest

from labeler import Job, run_job
from labeler.exports import ExportOptions
from labeler.testing import ArithmeticResponder, ServerConfig, TeacherServer

trl = pytest.importorskip("trl", reason="needs trl: pip install -e '.[student]'")
transformers = pytest.importorskip("transformers", reason="needs transformers: the student extra")
pytest.importorskip("tokenizers", reason="needs tokenizers: the student extra")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`gradient_checkpointing.*is deprecated:FutureWarning"),
    # TRL's DPOTrainer still reads transformers' renamed `is_gradient_checkpointing`
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

END = "<|end|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}" + END + "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TEMPLATE = """\
name: arith
version: "1"
mode: chat
system: 'Solve the problem. End with a line "Answer: N".'
user: "{{ question }}"
fields: [question]
output:
  kind: text
params:
  temperature: 1.0
  max_tokens: 64
soft_targets: true
"""


def _export(tmp_path: Path, kind: str) -> datasets.Dataset:
    template = tmp_path / "arith.yaml"
    template.write_text(TEMPLATE)
    data = tmp_path / "problems.jsonl"
    with data.open("w") as f:
        for i in range(16):
            a, b = 11 + 5 * i, 3 + 2 * i
            f.write(json.dumps({"id": f"p{i}", "question": f"What is {a} + {b}?", "answer": a + b}) + "\n")
    with TeacherServer(ServerConfig(responder=ArithmeticResponder(p_correct=0.5))) as srv:
        asyncio.run(
            run_job(
                Job(
                    task=template,
                    input=data,
                    teacher="anthropic:claude-haiku-4-5",
                    base_url=srv.url,
                    api_key="k",
                    teacher_options={"samples": 4},
                    store=tmp_path / "s.sqlite",
                    out=tmp_path / kind,
                    progress=False,
                    verify="numeric:answer",
                    export=ExportOptions(kind=kind),
                )
            )
        )
    return datasets.load_from_disk(str(tmp_path / kind))


def _tokenizer(texts: list[str]) -> transformers.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    special = ["[UNK]", "[PAD]", END, "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token=END, chat_template=CHAT_TEMPLATE
    )


def _model(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.LlamaForCausalLM:
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
    return transformers.LlamaForCausalLM(config)


def test_dpo_trainer_steps_on_the_preference_export(tmp_path: Path) -> None:
    ds = _export(tmp_path, "preference")
    assert len(ds) >= 4
    tokenizer = _tokenizer(
        [m["content"] for row in ds for m in row["prompt"] + row["chosen"] + row["rejected"]]
    )
    args = trl.DPOConfig(
        output_dir=str(tmp_path / "student"),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
        max_length=256,
    )
    # the reference policy: the same initial weights, frozen (a model built here has no
    # hub path for TRL to load a copy from)
    trainer = trl.DPOTrainer(
        model=_model(tokenizer),
        ref_model=_model(tokenizer),
        args=args,
        processing_class=tokenizer,
        train_dataset=ds.remove_columns(["id", "chosen_sample", "rejected_sample"]),
    )
    first = trainer.train_dataset[0]
    chosen = tokenizer.decode(first["chosen_ids"])
    rejected = tokenizer.decode(first["rejected_ids"])
    # TRL rendered the two answers of one row behind the same prompt
    assert chosen.startswith(ds[0]["chosen"][0]["content"].split()[0])
    assert chosen != rejected and "Answer" in chosen and "Answer" in rejected
    assert "What is" in tokenizer.decode(first["prompt_ids"])
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0


def test_sft_trainer_steps_on_the_verified_sft_export(tmp_path: Path) -> None:
    ds = _export(tmp_path, "sft")
    assert len(ds) > len(set(ds["id"]))  # several verified answers of some rows
    tokenizer = _tokenizer([m["content"] for row in ds for m in row["prompt"] + row["completion"]])
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "student"),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
        max_length=256,
    )
    trainer = trl.SFTTrainer(
        model=_model(tokenizer),
        args=args,
        processing_class=tokenizer,
        train_dataset=ds.remove_columns(["id", "sample"]),
    )
    labels = trainer.data_collator([trainer.train_dataset[0]])["labels"][0].tolist()
    trained = [t for t in labels if t != -100]
    expected = ds[0]["completion"][0]["content"] + END
    assert trained == tokenizer.encode(expected, add_special_tokens=False)
    assert trainer.train().global_step == 2
