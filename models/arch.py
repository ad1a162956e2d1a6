"""The architecture numbers the memory estimate needs, from a GGUF header or the catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from llama_wizard.models.errors import GgufError
from llama_wizard.models.gguf_header import ArrayInfo

# Where llama.cpp hard-codes the sliding-window layer pattern instead of reading it from the file
# (src/llama-model.cpp `set_swa_pattern(n)`: layer il is SWA when il % n < n - 1). gemma2 also
# hard-codes its window when the key is missing.
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gpt-oss": 2, "cohere2": 4}
DEFAULT_SWA_WINDOW = {"gemma2": 4096}


@dataclass
class ModelArch:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    # Per layer: KV heads (0 for a layer without attention: recurrent/Mamba layers).
    n_head_kv: list[int]
    key_length: int
    value_length: int
    n_vocab: int
    context_length: int
    # Per layer: does the layer use the sliding window (its KV capped at n_swa + n_ubatch)?
    swa_layers: list[bool] = field(default_factory=list)
    n_swa: int = 0
    key_length_swa: int | None = None
    value_length_swa: int | None = None
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff: int = 0
    n_ff_exp: int = 0
    tied_embeddings: bool = False
    # Recurrent state (Mamba-style layers), per sequence, in f32 elements.
    ssm_conv_kernel: int = 0
    ssm_inner_size: int = 0
    ssm_state_size: int = 0
    ssm_group_count: int = 0

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 1

    @property
    def n_swa_layers(self) -> int:
        return sum(self.swa_layers)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        kv = set(self.n_head_kv)
        document["n_head_kv"] = self.n_head_kv[0] if len(kv) == 1 else self.n_head_kv
        document["swa_layers"] = self.n_swa_layers
        return document


def _get(meta: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = meta.get(key, default)
    return default if value is None else value


def _per_layer(value: Any, n_layer: int, default: int) -> list[int]:
    if value is None:
        return [default] * n_layer
    if isinstance(value, list):
        if len(value) < n_layer:
            value = [*value, *([value[-1] if value else default] * (n_layer - len(value)))]
        return [int(v) for v in value[:n_layer]]
    return [int(value)] * n_layer


def swa_layers_for_pattern(n_layer: int, pattern: int) -> list[bool]:
    """llama.cpp's `set_swa_pattern`: with pattern n, layer il is SWA when il % n < n - 1 (so the
    last of every n is full attention); pattern 0 means all layers SWA."""
    if pattern == 0:
        return [True] * n_layer
    if pattern == 1:
        return [False] * n_layer
    return [il % pattern < pattern - 1 for il in range(n_layer)]


def arch_from_metadata(meta: Mapping[str, Any], what: str = "the model") -> ModelArch:
    arch = _get(meta, "general.architecture")
    if not isinstance(arch, str):
        raise GgufError(
            f"{what} has no general.architecture in its GGUF header.",
            "This is not a llama.cpp model file (a projector or adapter?). Pick the model GGUF.",
        )
    a = arch

    def key(name: str, default: Any = None) -> Any:
        return _get(meta, f"{a}.{name}", default)

    n_layer = key("block_count")
    n_embd = key("embedding_length")
    if not isinstance(n_layer, int) or not isinstance(n_embd, int):
        raise GgufError(
            f"{what} (architecture {arch}) has no {a}.block_count or {a}.embedding_length.",
            "The memory estimate needs them; this GGUF is not a language model llama.cpp runs.",
        )
    head_value = key("attention.head_count", 0)
    heads = _per_layer(head_value, n_layer, 0)
    n_head = max(heads) if heads else 0
    n_head_kv = _per_layer(key("attention.head_count_kv"), n_layer, 0)
    if key("attention.head_count_kv") is None:
        n_head_kv = list(heads)
    head_dim = n_embd // n_head if n_head else 0
    key_length = int(key("attention.key_length", head_dim))
    value_length = int(key("attention.value_length", head_dim))
    kv_lora_rank = key("attention.kv_lora_rank")
    if kv_lora_rank:
        # MLA (DeepSeek-V2/V3, Kimi...): the cache holds the compressed latent, one "head" of
        # kv_lora_rank + rope dims for K and kv_lora_rank for V.
        rope_dims = int(key("rope.dimension_count", 64))
        key_length = int(kv_lora_rank) + rope_dims
        value_length = int(kv_lora_rank)
        n_head_kv = [1 if h else 0 for h in n_head_kv]
    tokens = meta.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens) if isinstance(tokens, (list, ArrayInfo)) else int(key("vocab_size", 0))
    n_swa = int(key("attention.sliding_window", DEFAULT_SWA_WINDOW.get(arch, 0)) or 0)
    pattern_value = key("attention.sliding_window_pattern")
    if isinstance(pattern_value, list):
        swa_layers = [bool(v) for v in pattern_value[:n_layer]]
        swa_layers += [False] * (n_layer - len(swa_layers))
    elif isinstance(pattern_value, int):
        swa_layers = swa_layers_for_pattern(n_layer, pattern_value)
    elif n_swa and arch in SWA_PATTERNS:
        swa_layers = swa_layers_for_pattern(n_layer, SWA_PATTERNS[arch])
    else:
        swa_layers = [False] * n_layer
    if not n_swa:
        swa_layers = [False] * n_layer
    interval = key("full_attention_interval")
    if isinstance(interval, int) and interval > 0 and key("attention.head_count_kv") is not None:
        # Hybrid models (Qwen3-Next): only every interval-th layer has attention.
        n_head_kv = [h if (il + 1) % interval == 0 else 0 for il, h in enumerate(n_head_kv)]
    ff = key("feed_forward_length", 0)
    n_ff = max(_per_layer(ff, n_layer, 0)) if ff else 0
    return ModelArch(
        arch=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        key_length=key_length,
        value_length=value_length,
        n_vocab=n_vocab,
        context_length=int(key("context_length", 0) or 0),
        swa_layers=swa_layers,
        n_swa=n_swa,
        key_length_swa=key("attention.key_length_swa"),
        value_length_swa=key("attention.value_length_swa"),
        n_expert=int(key("expert_count", 0) or 0),
        n_expert_used=int(key("expert_used_count", 0) or 0),
        n_ff=n_ff,
        n_ff_exp=int(key("expert_feed_forward_length", 0) or 0),
        tied_embeddings=False,  # decided from the tensors (no output.weight), see weights.py
        ssm_conv_kernel=int(key("ssm.conv_kernel", 0) or 0),
        ssm_inner_size=int(key("ssm.inner_size", 0) or 0),
        ssm_state_size=int(key("ssm.state_size", 0) or 0),
        ssm_group_count=int(key("ssm.group_count", 0) or 0),
    )


def arch_from_catalogue(entry: Mapping[str, Any]) -> ModelArch:
    """The catalogue's `architecture` object (sourced numbers; see models/data/catalogue.json)."""
    n_layer = int(entry["n_layer"])
    n_head_kv = _per_layer(entry["n_head_kv"], n_layer, 0)
    swa_count = int(entry.get("swa_layers", 0) or 0)
    pattern = entry.get("swa_pattern")
    swa_layers = swa_layers_for_pattern(n_layer, int(pattern)) if pattern else [False] * n_layer
    if swa_count and sum(swa_layers) != swa_count:
        raise ValueError(
            f"swa_pattern {pattern} gives {sum(swa_layers)} SWA layers, the entry says {swa_count}"
        )
    return ModelArch(
        arch=entry["arch"],
        n_layer=n_layer,
        n_embd=int(entry["n_embd"]),
        n_head=int(entry["n_head"]),
        n_head_kv=n_head_kv,
        key_length=int(entry["key_length"]),
        value_length=int(entry.get("value_length", entry["key_length"])),
        n_vocab=int(entry["n_vocab"]),
        context_length=int(entry["context_length"]),
        swa_layers=swa_layers,
        n_swa=int(entry.get("n_swa", 0) or 0),
        n_expert=int(entry.get("n_expert", 0) or 0),
        n_expert_used=int(entry.get("n_expert_used", 0) or 0),
        n_ff=int(entry.get("n_ff", 0) or 0),
        n_ff_exp=int(entry.get("n_ff_exp", 0) or 0),
        tied_embeddings=bool(entry.get("tied_embeddings", False)),
    )
