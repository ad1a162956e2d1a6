"""How many parameters a model has, for what the file size alone cannot say: its quality rank
(tui/ranking.py) and the multiplications a token costs (models/speed.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llama_wizard.models.arch import ModelArch
    from llama_wizard.models.source import ModelSource

# Bits per weight of the common llama.cpp quants, over the whole file (llama.cpp's quantize
# table for Llama-3-8B, rounded): only used to count a model's parameters when neither a Q8_0
# or 16/32-bit file (exact) nor the architecture tells.
NOMINAL_BPW = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_1": 6.0,
    "Q5_K_M": 5.7,
    "Q5_K_S": 5.55,
    "Q5_0": 5.5,
    "Q4_1": 5.0,
    "Q4_K_M": 4.85,
    "UD-Q4_K_XL": 4.85,
    "Q4_K_S": 4.6,
    "Q4_0": 4.55,
    "IQ4_NL": 4.5,
    "IQ4_XS": 4.3,
    "MXFP4": 4.25,
    "Q3_K_L": 4.3,
    "Q3_K_M": 3.9,
    "IQ3_M": 3.7,
    "Q3_K_S": 3.5,
    "IQ3_XXS": 3.1,
    "Q2_K": 3.0,
    "IQ2_M": 2.7,
    "IQ2_XS": 2.3,
}
EXACT_BPW = ("Q8_0", "F16", "BF16", "F32")


def layer_params(arch: ModelArch) -> tuple[int, int]:
    """(all, experts) parameters of one repeating layer, from the architecture numbers."""
    n_kv = max(arch.n_head_kv) if arch.n_head_kv else 0
    attention = arch.n_embd * (
        arch.n_head * arch.key_length * 1
        + n_kv * arch.key_length
        + n_kv * arch.value_length
        + arch.n_head * arch.value_length
    )
    if arch.is_moe:
        experts = 3 * arch.n_expert * arch.n_embd * arch.n_ff_exp
        router = arch.n_embd * arch.n_expert
        return attention + experts + router, experts
    return attention + 3 * arch.n_embd * arch.n_ff, 0


def model_params(source: ModelSource) -> float:
    """The model's parameters (all of them, every expert counted): from the architecture when it
    names the feed-forward sizes (the same answer whichever quants the source lists), else from
    a file whose bits per weight are exact (Q8_0, F16, BF16, F32), else from the nominal bits of
    its largest quant."""
    arch = source.arch
    if arch.n_ff or (arch.is_moe and arch.n_ff_exp):
        embeddings = arch.n_vocab * arch.n_embd * (1 if arch.tied_embeddings else 2)
        return float(arch.n_layer * layer_params(arch)[0] + embeddings)
    candidates = source.candidates
    for candidate in candidates:
        bpw = NOMINAL_BPW.get(candidate.quant.upper())
        if candidate.quant.upper() in EXACT_BPW and bpw and candidate.file_bytes:
            return candidate.file_bytes * 8 / bpw
    if not candidates:
        return 0.0
    largest = max(candidates, key=lambda c: c.file_bytes)
    return largest.file_bytes * 8 / NOMINAL_BPW.get(largest.quant.upper(), 4.5)
