"""Small GGUF files that real llama.cpp loads: real architecture metadata, random weights.

Three families, each a `ModelSpec` preset with the real model's shapes plus a small variant for
tests (fewer layers, a tiny vocabulary, fewer experts; everything else — hidden size, heads, KV
heads, head size, feed-forward sizes, RoPE, norms — is the real model's):

- `QWEN3_0_6B` (architecture `qwen3`): Qwen3-0.6B exactly — 28 layers, hidden 1024, 16 heads,
  8 KV heads, head_dim 128, ffn 3072, vocab 151936, context 40960, rope base 1e6, rms eps 1e-6,
  tied embeddings. `DENSE_SMALL` keeps all of that but 2 layers and a 1024-token vocabulary
  (about 35 MB in Q8_0; loads and generates in well under a second on 2 cores).
- `QWEN3_30B_A3B` (architecture `qwen3moe`): Qwen3-30B-A3B's shapes (48 layers, hidden 2048,
  32 heads, 4 KV heads, 128 experts, 8 used, expert ffn 768). `MOE_SMALL` is a *small* qwen3moe
  (hidden 1024, 16 heads, 8 KV heads, head_dim 128, 8 experts with 2 used, expert ffn 768,
  2 layers, 1024 tokens), because even one layer of the real MoE is ~100 MB.
- `GPT_OSS_20B` (architecture `gpt-oss`): gpt-oss-20b's shapes (24 layers alternating sliding
  window 128 / full attention, hidden 2880, 64 heads, 8 KV heads, head_dim 64, 32 experts, 4 used,
  attention sinks, biases, YaRN x32 from 4096). `GPT_OSS_SMALL` keeps the sliding window, sinks,
  biases and YaRN with hidden 640, 8 heads, 2 KV heads, head_dim 64, 8 experts (2 used),
  2 layers (one SWA, one full) and 1024 tokens.

`write_gguf(path, QWEN3_0_6B)` gives a 604.15 MiB file that llama.cpp reports as
`model type = 0.6B`, `model params = 596.05 M`: the real Qwen3-0.6B Q8_0's numbers. The full
MoE and gpt-oss presets describe the real shapes for estimates; writing them takes ~32 GB and
~22 GB (the writer holds every tensor in memory), so tests use the small variants.

Weights are random (Q8_0 blocks with random int8 values, or F16 normals): the text is gibberish
but llama.cpp really loads, allocates and runs every tensor, so memory figures and timings are
real. Norm weights are 1; norms, biases, sinks and router weights are F32 as llama.cpp's own
quantizer leaves them.

Tokenizer: a byte-level BPE (`tokenizer.ggml.model = gpt2`, pre-tokenizer `qwen2` or `gpt-4o`):
the 256 GPT-2 byte tokens (so any text tokenizes), a few hundred merges of common English pairs,
the model family's special tokens, and `[PADn]` filler up to the vocabulary size. A minimal
ChatML (or harmony-like) chat template is included so llama-server answers
`/v1/chat/completions`; it is not the real model's template.

    from tests.gguf_factory import DENSE_SMALL, write_gguf
    write_gguf(tmp_path / "qwen3.gguf", DENSE_SMALL)
    write_gguf(path, QWEN3_0_6B)                     # the full-size shapes (~640 MB)
    write_gguf(path, DENSE_SMALL.with_(layers=4, vocab=4096, dtype="f16"))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, RopeScalingType, TokenType

QK8_0 = 32  # values per Q8_0 block (one f16 scale + 32 int8)
WEIGHT_STD = 0.02


@dataclass(frozen=True)
class ModelSpec:
    """The shapes and metadata of one synthetic model."""

    arch: str  # GGUF general.architecture: qwen3, qwen3moe, gpt-oss
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int  # dense feed-forward size (for MoE: the key's value in the real model)
    vocab: int
    context: int
    rope_base: float
    rms_eps: float
    tied_embeddings: bool = True
    experts: int = 0
    experts_used: int = 0
    expert_ffn: int = 0
    sliding_window: int = 0  # gpt-oss: every other layer (the first of each pair) uses it
    yarn_factor: float = 0.0
    yarn_original_context: int = 0
    dtype: str = "q8_0"  # q8_0 or f16 for the large matrices
    seed: int = 0

    def with_(self, **changes: object) -> ModelSpec:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def is_moe(self) -> bool:
        return self.experts > 0


QWEN3_0_6B = ModelSpec(
    arch="qwen3",
    name="Qwen3-0.6B (synthetic)",
    layers=28,
    hidden=1024,
    heads=16,
    kv_heads=8,
    head_dim=128,
    ffn=3072,
    vocab=151936,
    context=40960,
    rope_base=1_000_000.0,
    rms_eps=1e-6,
)
DENSE_SMALL = QWEN3_0_6B.with_(name="Qwen3-0.6B-shaped, 2 layers (synthetic)", layers=2, vocab=1024)

QWEN3_30B_A3B = ModelSpec(
    arch="qwen3moe",
    name="Qwen3-30B-A3B (synthetic)",
    layers=48,
    hidden=2048,
    heads=32,
    kv_heads=4,
    head_dim=128,
    ffn=6144,
    vocab=151936,
    context=40960,
    rope_base=1_000_000.0,
    rms_eps=1e-6,
    tied_embeddings=False,
    experts=128,
    experts_used=8,
    expert_ffn=768,
)
MOE_SMALL = QWEN3_30B_A3B.with_(
    name="small qwen3moe (synthetic)",
    layers=2,
    hidden=1024,
    heads=16,
    kv_heads=8,
    experts=8,
    experts_used=2,
    vocab=1024,
)

GPT_OSS_20B = ModelSpec(
    arch="gpt-oss",
    name="gpt-oss-20b (synthetic)",
    layers=24,
    hidden=2880,
    heads=64,
    kv_heads=8,
    head_dim=64,
    ffn=2880,
    vocab=201088,
    context=131072,
    rope_base=150_000.0,
    rms_eps=1e-5,
    tied_embeddings=False,
    experts=32,
    experts_used=4,
    expert_ffn=2880,
    sliding_window=128,
    yarn_factor=32.0,
    yarn_original_context=4096,
)
GPT_OSS_SMALL = GPT_OSS_20B.with_(
    name="small gpt-oss (synthetic)",
    layers=2,
    hidden=640,
    heads=8,
    kv_heads=2,
    ffn=640,
    experts=8,
    experts_used=2,
    expert_ffn=640,
    vocab=1024,
)

PRESETS = {
    "qwen3-0.6b": QWEN3_0_6B,
    "dense-small": DENSE_SMALL,
    "qwen3-30b-a3b": QWEN3_30B_A3B,
    "moe-small": MOE_SMALL,
    "gpt-oss-20b": GPT_OSS_20B,
    "gpt-oss-small": GPT_OSS_SMALL,
}


# --- tokenizer ------------------------------------------------------------------------------


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars: dict[int, int] = {b: b for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + n
            n += 1
    return [chr(chars[b]) for b in range(256)]


# Common English letter pairs, merged in this order (their rank).
_PAIR_TEXT = (
    "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou "
    "io le ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns di "
    "fo ho pe ec pr no ct us ac ot il tr ly nc et ut ss so rs un lo wa ge ie wh ee wi em "
    "ad ol rt po we na ul ni ts mo ow pa im mi ai sh ir su id os iv ia am fi ci vi pl ig "
    "tu ev ld ry mp fe bl ab gh ty op wo sa ay ex ke fr oo av ag if ap gr od bo sp rd do "
    "uc bu ei ov by rm ep tt oc fa ef cu rn sc gi da yo cr cl du ga qu ue ff ba ey ls va "
    "um pp ua up lu go ht ru ug ds lt pi rc rr eg au ck ew mu br bi pt ak pu ui rg ib tl "
    "ny ki rk ys ob mm fu ph og ms ye ud mb ip ub oi rl gu dr hr cc tw ft wn nu af hu nn "
    "eo vo rv nf xp gn sm fl iz ok nl my gl aw dd hy"
)


def tokenizer(spec: ModelSpec) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """(tokens, token types, merges, special token ids) for a byte-level BPE of spec.vocab."""
    byte_tokens = _bytes_to_unicode()
    tokens = list(byte_tokens)
    merges: list[str] = []
    seen = set(tokens)
    space = byte_tokens[ord(" ")]  # 'Ġ'
    for letter in "abcdefghijklmnopqrstuvwxyz":
        merges.append(f"{space} {letter}")
        tokens.append(space + letter)
    for pair in _PAIR_TEXT.split():
        if pair not in seen:
            merges.append(f"{pair[0]} {pair[1]}")
            tokens.append(pair)
            seen.add(pair)
    if spec.arch == "gpt-oss":
        specials = [
            "<|startoftext|>",
            "<|endoftext|>",
            "<|return|>",
            "<|constrain|>",
            "<|channel|>",
            "<|start|>",
            "<|end|>",
            "<|message|>",
            "<|call|>",
        ]
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    room = spec.vocab - len(specials)
    if room < len(tokens):
        tokens = tokens[: max(room, 256)]
        merges = [m for m in merges if m.replace(" ", "") in set(tokens)]
    types = [TokenType.NORMAL] * len(tokens)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), room)]
    types += [TokenType.UNUSED] * (room - len(types))
    # gpt-oss's harmony markers are user-defined tokens in the real vocabulary (llama.cpp
    # re-marks them and warns otherwise); the rest are control tokens.
    user_defined = {"<|message|>", "<|start|>", "<|channel|>", "<|constrain|>"}
    ids = {}
    for special in specials:
        ids[special] = len(tokens)
        tokens.append(special)
        types.append(TokenType.USER_DEFINED if special in user_defined else TokenType.CONTROL)
    if len(tokens) != spec.vocab:
        raise ValueError(f"vocab {spec.vocab} is too small for the byte tokens and specials")
    return tokens, [int(t) for t in types], merges, ids


CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
HARMONY_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|start|>' + message['role'] + '<|message|>' + message['content'] + '<|end|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start|>assistant' }}{%- endif %}"
)


# --- tensors --------------------------------------------------------------------------------


def _tensors(spec: ModelSpec) -> Iterator[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape = reversed ggml ne, kind) for every tensor; kind: matrix/norm/f32."""
    h, v = spec.hidden, spec.vocab
    q, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    yield "token_embd.weight", (v, h), "matrix"
    yield "output_norm.weight", (h,), "norm"
    if not spec.tied_embeddings:
        yield "output.weight", (v, h), "matrix"
    for i in range(spec.layers):
        b = f"blk.{i}"
        yield f"{b}.attn_norm.weight", (h,), "norm"
        yield f"{b}.attn_q.weight", (q, h), "matrix"
        yield f"{b}.attn_k.weight", (kv, h), "matrix"
        yield f"{b}.attn_v.weight", (kv, h), "matrix"
        yield f"{b}.attn_output.weight", (h, q), "matrix"
        if spec.arch == "gpt-oss":
            yield f"{b}.attn_q.bias", (q,), "f32"
            yield f"{b}.attn_k.bias", (kv,), "f32"
            yield f"{b}.attn_v.bias", (kv,), "f32"
            yield f"{b}.attn_output.bias", (h,), "f32"
            yield f"{b}.attn_sinks.weight", (spec.heads,), "f32"
            yield f"{b}.post_attention_norm.weight", (h,), "norm"
        else:
            yield f"{b}.attn_q_norm.weight", (spec.head_dim,), "norm"
            yield f"{b}.attn_k_norm.weight", (spec.head_dim,), "norm"
            yield f"{b}.ffn_norm.weight", (h,), "norm"
        if spec.is_moe:
            e, f = spec.experts, spec.expert_ffn
            yield f"{b}.ffn_gate_inp.weight", (e, h), "f32"
            yield f"{b}.ffn_gate_exps.weight", (e, f, h), "matrix"
            yield f"{b}.ffn_up_exps.weight", (e, f, h), "matrix"
            yield f"{b}.ffn_down_exps.weight", (e, h, f), "matrix"
            if spec.arch == "gpt-oss":
                yield f"{b}.ffn_gate_inp.bias", (e,), "f32"
                yield f"{b}.ffn_gate_exps.bias", (e, f), "f32"
                yield f"{b}.ffn_up_exps.bias", (e, f), "f32"
                yield f"{b}.ffn_down_exps.bias", (e, h), "f32"
        else:
            yield f"{b}.ffn_gate.weight", (spec.ffn, h), "matrix"
            yield f"{b}.ffn_up.weight", (spec.ffn, h), "matrix"
            yield f"{b}.ffn_down.weight", (h, spec.ffn), "matrix"


def _random_q8_0(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random Q8_0 data as raw bytes: shape[:-1] rows of shape[-1]/32 blocks of 34 bytes."""
    *rows, n = shape
    if n % QK8_0:
        raise ValueError(f"Q8_0 needs rows that are a multiple of {QK8_0}: {shape}")
    blocks = n // QK8_0
    quants = rng.integers(-127, 128, size=(*rows, blocks, QK8_0), dtype=np.int8)
    # int8 uniform on [-127, 127] has a standard deviation of ~73.6: scale to WEIGHT_STD.
    scale = np.full((*rows, blocks, 1), WEIGHT_STD / 73.6, dtype=np.float16)
    return np.concatenate([scale.view(np.uint8), quants.view(np.uint8)], axis=-1).reshape(
        *rows, blocks * (2 + QK8_0)
    )


def write_gguf(path: Path | str, spec: ModelSpec = DENSE_SMALL) -> Path:
    """Write `spec` as a GGUF file at `path` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    w = GGUFWriter(str(path), spec.arch)
    w.add_name(spec.name)
    w.add_file_type(LlamaFileType.MOSTLY_Q8_0 if spec.dtype == "q8_0" else LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(2)
    w.add_context_length(spec.context)
    w.add_embedding_length(spec.hidden)
    w.add_block_count(spec.layers)
    w.add_feed_forward_length(spec.ffn)
    w.add_head_count(spec.heads)
    w.add_head_count_kv(spec.kv_heads)
    w.add_key_length(spec.head_dim)
    w.add_value_length(spec.head_dim)
    w.add_rope_freq_base(spec.rope_base)
    w.add_layer_norm_rms_eps(spec.rms_eps)
    if spec.is_moe:
        w.add_expert_count(spec.experts)
        w.add_expert_used_count(spec.experts_used)
        w.add_expert_feed_forward_length(spec.expert_ffn)
    if spec.sliding_window:
        w.add_sliding_window(spec.sliding_window)
    if spec.yarn_factor:
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(spec.yarn_factor)
        w.add_rope_scaling_orig_ctx_len(spec.yarn_original_context)

    tokens, types, merges, ids = tokenizer(spec)
    w.add_tokenizer_model("gpt2")
    if spec.arch == "gpt-oss":
        w.add_tokenizer_pre("gpt-4o")
        w.add_bos_token_id(ids["<|startoftext|>"])
        w.add_eos_token_id(ids["<|return|>"])
        w.add_pad_token_id(ids["<|endoftext|>"])
        w.add_chat_template(HARMONY_TEMPLATE)
    else:
        w.add_tokenizer_pre("qwen2")
        w.add_bos_token_id(ids["<|endoftext|>"])
        w.add_eos_token_id(ids["<|im_end|>"])
        w.add_pad_token_id(ids["<|endoftext|>"])
        w.add_chat_template(CHATML_TEMPLATE)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_add_bos_token(False)

    for name, shape, kind in _tensors(spec):
        if kind == "norm":
            w.add_tensor(name, np.ones(shape, dtype=np.float32))
        elif kind == "f32":
            w.add_tensor(name, (rng.standard_normal(shape) * WEIGHT_STD).astype(np.float32))
        elif spec.dtype == "q8_0":
            w.add_tensor(name, _random_q8_0(rng, shape), raw_dtype=GGMLQuantizationType.Q8_0)
        elif spec.dtype == "f16":
            w.add_tensor(
                name, (rng.standard_normal(shape, dtype=np.float32) * WEIGHT_STD).astype(np.float16)
            )
        else:
            raise ValueError(f"unsupported dtype {spec.dtype!r} (q8_0 or f16)")

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def weight_bytes(spec: ModelSpec) -> int:
    """Bytes of tensor data `write_gguf` writes for `spec` (before GGUF alignment padding)."""
    total = 0
    for _name, shape, kind in _tensors(spec):
        n = int(np.prod(shape))
        if kind in ("norm", "f32"):
            total += 4 * n
        elif spec.dtype == "q8_0":
            total += n // QK8_0 * (2 + QK8_0)
        else:
            total += 2 * n
    return total


if __name__ == "__main__":  # python -m tests.gguf_factory NAME OUT.gguf [layers=N vocab=N ...]
    import sys

    spec = PRESETS[sys.argv[1]]
    overrides = dict(arg.split("=", 1) for arg in sys.argv[3:])
    fields = {f.name: f.type for f in dataclasses.fields(ModelSpec)}
    typed = {k: (v if fields[k] == "str" else float(v) if fields[k] == "float" else int(v))
             for k, v in overrides.items()}  # fmt: skip
    print(write_gguf(sys.argv[2], spec.with_(**typed)))
