"""GGUF headers written by llama.cpp's own GGUFWriter: our parser against GGUFReader, and the
estimate's KV and weights terms against hand-computed values for several architectures."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_wizard.models.errors import GgufError
from llama_wizard.models.estimate import EstimateOptions, kv_layer_bytes
from llama_wizard.models.gguf_header import NeedMoreBytes, parse_header, read_local
from llama_wizard.models.local import find_local_models
from llama_wizard.models.source import resolve_model
from tests.fixtures.models.gguf_helpers import F16, F32, llama_tensors, write_gguf

N_EMBD, N_HEAD, N_KV, HEAD, N_FF, VOCAB = 64, 8, 2, 8, 96, 300


def _llama(tmp_path: Path, name: str = "tiny-llama-Q8_0.gguf", **kw: object) -> Path:
    meta = {
        "block_count": 4,
        "context_length": 8192,
        "embedding_length": N_EMBD,
        "feed_forward_length": N_FF,
        "attention.head_count": N_HEAD,
        "attention.head_count_kv": N_KV,
    }
    return write_gguf(
        tmp_path / name,
        "llama",
        meta,
        llama_tensors(4, N_EMBD, N_HEAD, N_KV, HEAD, N_FF, VOCAB, **kw),
        VOCAB,
    )


def test_our_parser_reads_what_gguf_reader_reads(tmp_path: Path) -> None:
    path = _llama(tmp_path)
    data = path.read_bytes()
    ours = parse_header(data)
    theirs = read_local(path)
    assert ours.version == theirs.version == 3
    assert ours.tensors == theirs.tensors
    assert ours.data_offset == theirs.data_offset
    assert ours.metadata["llama.attention.head_count_kv"] == N_KV
    assert len(ours.metadata["tokenizer.ggml.tokens"]) == VOCAB
    assert {k: v for k, v in ours.metadata.items()} == theirs.metadata
    with pytest.raises(NeedMoreBytes) as more:
        parse_header(data[: ours.data_offset // 2])
    assert ours.data_offset // 2 < more.value.needed <= ours.data_offset


def test_gqa_llama_kv_and_weights_match_hand_computed_values(tmp_path: Path) -> None:
    source = resolve_model(str(_llama(tmp_path)))
    (candidate,) = source.candidates
    arch, layout = candidate.arch, candidate.layout
    assert (arch.n_layer, arch.n_head, arch.n_head_kv[0], arch.key_length) == (4, 8, 2, 8)
    assert arch.n_vocab == VOCAB and arch.context_length == 8192 and not arch.tied_embeddings
    # KV: 4 layers x 8192 cells x 2 KV heads x (8 + 8) dims x 2 bytes (f16).
    assert sum(kv_layer_bytes(arch, EstimateOptions(ctx=8192))) == 4 * 8192 * 2 * 16 * 2
    # q8_0: 34 bytes per 32 values; 2 heads x 8 dims = 16 values -> rows of one 32-block.
    assert kv_layer_bytes(arch, EstimateOptions(ctx=256, cache_type_k="q8_0"))[0] == 256 * (34 + 32)
    per_layer = 2 * N_EMBD * 4 + 2 * (
        N_EMBD * 64 + 2 * N_EMBD * 16 + N_EMBD * 64 + 3 * N_EMBD * N_FF
    )
    assert layout.layers == [per_layer] * 4
    assert layout.token_embd_host == VOCAB * N_EMBD * 2
    assert layout.output == VOCAB * N_EMBD * 2 + N_EMBD * 4
    assert candidate.quant == "Q8_0"  # from the file name


def test_tied_embeddings_put_token_embd_on_the_gpu_as_output(tmp_path: Path) -> None:
    source = resolve_model(str(_llama(tmp_path, "tied-F16.gguf", tied=True)))
    layout = source.candidates[0].layout
    assert source.arch.tied_embeddings
    assert layout.output == VOCAB * N_EMBD * 2 + N_EMBD * 4
    assert layout.token_embd_host == VOCAB * N_EMBD * 2


def test_gpt_oss_like_sliding_window_and_moe(tmp_path: Path) -> None:
    n_layer, n_expert, ff = 4, 4, 32
    meta = {
        "block_count": n_layer,
        "context_length": 131072,
        "embedding_length": N_EMBD,
        "attention.head_count": N_HEAD,
        "attention.head_count_kv": N_KV,
        "attention.key_length": HEAD,
        "attention.value_length": HEAD,
        "attention.sliding_window": 128,
        "expert_count": n_expert,
        "expert_used_count": 2,
        "expert_feed_forward_length": ff,
    }
    tensors = {"token_embd.weight": ((VOCAB, N_EMBD), F16)}
    for il in range(n_layer):
        p = f"blk.{il}."
        tensors[p + "attn_q.weight"] = ((N_HEAD * HEAD, N_EMBD), F16)
        tensors[p + "attn_k.weight"] = ((N_KV * HEAD, N_EMBD), F16)
        tensors[p + "ffn_gate_inp.weight"] = ((n_expert, N_EMBD), F32)
        tensors[p + "ffn_gate_exps.weight"] = ((n_expert, ff, N_EMBD), F16)
        tensors[p + "ffn_up_exps.weight"] = ((n_expert, ff, N_EMBD), F16)
        tensors[p + "ffn_down_exps.weight"] = ((n_expert, N_EMBD, ff), F16)
    tensors["output.weight"] = ((VOCAB, N_EMBD), F16)
    path = write_gguf(tmp_path / "oss-MXFP4.gguf", "gpt-oss", meta, tensors, VOCAB)
    source = resolve_model(str(path))
    arch, layout = source.arch, source.candidates[0].layout
    assert arch.swa_layers == [True, False, True, False]  # llama.cpp's pattern 2 for gpt-oss
    assert arch.is_moe and arch.n_ff_exp == ff
    kv = kv_layer_bytes(arch, EstimateOptions(ctx=131072))
    row = N_KV * HEAD * 2 * 2
    # SWA layers: pad(128 + 512, 256) = 768 cells; full layers: 131072.
    assert kv == [768 * row, 131072 * row, 768 * row, 131072 * row]
    assert layout.layer_experts == [3 * n_expert * ff * N_EMBD * 2] * n_layer


def test_gemma3_like_pattern_six(tmp_path: Path) -> None:
    meta = {
        "block_count": 12,
        "context_length": 131072,
        "embedding_length": N_EMBD,
        "attention.head_count": N_HEAD,
        "attention.head_count_kv": N_KV,
        "attention.key_length": 16,
        "attention.value_length": 16,
        "attention.sliding_window": 1024,
    }
    tensors = {"token_embd.weight": ((VOCAB, N_EMBD), F16)}
    for il in range(12):
        tensors[f"blk.{il}.attn_k.weight"] = ((N_KV * 16, N_EMBD), F16)
    path = write_gguf(tmp_path / "gemma-Q4_K_M.gguf", "gemma3", meta, tensors, VOCAB)
    source = resolve_model(str(path))
    assert source.arch.n_swa_layers == 10  # layers 5 and 11 are global
    assert source.arch.tied_embeddings
    kv = kv_layer_bytes(source.arch, EstimateOptions(ctx=32768))
    row = N_KV * 16 * 2 * 2
    assert kv[0] == 1536 * row and kv[5] == 32768 * row


def test_per_layer_kv_heads_and_recurrent_layers(tmp_path: Path) -> None:
    meta = {
        "block_count": 4,
        "context_length": 4096,
        "embedding_length": N_EMBD,
        "attention.head_count": N_HEAD,
        "attention.head_count_kv": [0, 2, 0, 4],
        "attention.key_length": HEAD,
        "attention.value_length": HEAD,
        "ssm.conv_kernel": 4,
        "ssm.inner_size": 128,
        "ssm.state_size": 16,
        "ssm.group_count": 1,
    }
    tensors = {
        "token_embd.weight": ((VOCAB, N_EMBD), F16),
        "blk.0.ssm_in.weight": ((8, N_EMBD), F16),
    }
    path = write_gguf(tmp_path / "hybrid-BF16.gguf", "nemotron_h", meta, tensors, VOCAB)
    source = resolve_model(str(path))
    from llama_wizard.models.estimate import recurrent_layer_bytes

    opts = EstimateOptions(ctx=4096)
    assert kv_layer_bytes(source.arch, opts) == [0, 4096 * 2 * 16 * 2, 0, 4096 * 4 * 16 * 2]
    state = 4 * (3 * (128 + 2 * 16) + 16 * 128)
    assert recurrent_layer_bytes(source.arch, opts) == [state, 0, state, 0]


def test_split_local_files_are_read_together(tmp_path: Path) -> None:
    meta = {
        "block_count": 2,
        "context_length": 4096,
        "embedding_length": N_EMBD,
        "attention.head_count": N_HEAD,
        "attention.head_count_kv": N_KV,
    }
    first = {
        "token_embd.weight": ((VOCAB, N_EMBD), F16),
        "blk.0.attn_k.weight": ((16, N_EMBD), F16),
    }
    second = {"blk.1.attn_k.weight": ((16, N_EMBD), F16), "output.weight": ((VOCAB, N_EMBD), F16)}
    write_gguf(tmp_path / "m-Q4_K_M-00001-of-00002.gguf", "llama", meta, first, VOCAB, (0, 2))
    write_gguf(tmp_path / "m-Q4_K_M-00002-of-00002.gguf", "llama", meta, second, 0, (1, 2))
    source = resolve_model(str(tmp_path / "m-Q4_K_M-00001-of-00002.gguf"))
    candidate = source.candidates[0]
    assert len(candidate.files) == 2 and candidate.quant == "Q4_K_M"
    assert candidate.layout.layers == [16 * N_EMBD * 2] * 2
    assert candidate.layout.output == VOCAB * N_EMBD * 2
    (tmp_path / "m-Q4_K_M-00002-of-00002.gguf").unlink()
    with pytest.raises(GgufError, match="missing"):
        resolve_model(str(tmp_path / "m-Q4_K_M-00001-of-00002.gguf"))


def test_truncated_and_non_gguf_local_files_say_what_is_wrong(tmp_path: Path) -> None:
    path = _llama(tmp_path)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(GgufError, match=r"truncated|not a complete"):
        resolve_model(str(truncated))
    html = tmp_path / "page.gguf"
    html.write_bytes(b"<!DOCTYPE html><html>")
    with pytest.raises(GgufError, match="not a GGUF") as error:
        resolve_model(str(html))
    assert "/resolve/" in error.value.fix


def test_local_models_in_llama_and_hf_caches(tmp_path: Path) -> None:
    llama = tmp_path / "llama"
    llama.mkdir()
    _llama(llama, "ggml-org_gemma-3-1b-it-GGUF_gemma-3-1b-it-Q4_K_M.gguf")
    snapshot = tmp_path / "hf" / "models--Qwen--Qwen3-0.6B-GGUF" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    blob = tmp_path / "hf" / "models--Qwen--Qwen3-0.6B-GGUF" / "blobs" / "sha"
    blob.parent.mkdir()
    blob.write_bytes(b"GGUF" + b"\0" * 96)
    (snapshot / "Qwen3-0.6B-Q8_0.gguf").symlink_to(blob)
    (snapshot / "mmproj-F16.gguf").write_bytes(b"GGUF")
    (snapshot / "gone-Q4_0.gguf").symlink_to(tmp_path / "missing")
    found = find_local_models({"LLAMA_CACHE": str(llama), "HF_HUB_CACHE": str(tmp_path / "hf")})
    by_name = {m.path.name: m for m in found}
    assert set(by_name) == {
        "ggml-org_gemma-3-1b-it-GGUF_gemma-3-1b-it-Q4_K_M.gguf",
        "Qwen3-0.6B-Q8_0.gguf",
    }
    assert by_name["Qwen3-0.6B-Q8_0.gguf"].repo == "Qwen/Qwen3-0.6B-GGUF"
    assert by_name["Qwen3-0.6B-Q8_0.gguf"].bytes == 100
    assert by_name["Qwen3-0.6B-Q8_0.gguf"].quant == "Q8_0"
    assert by_name["ggml-org_gemma-3-1b-it-GGUF_gemma-3-1b-it-Q4_K_M.gguf"].cache == "llama.cpp"
