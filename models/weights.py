"""Where a model's weight bytes go: per repeating layer (and the MoE expert part of each layer),
the output layer, and the input embedding that llama.cpp keeps in host memory."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llama_wizard.models.arch import ModelArch
from llama_wizard.models.gguf_header import TensorInfo
from llama_wizard.models.params import layer_params
from llama_wizard.models.quant import EMBEDDING_TYPE_FOR_QUANT, tensor_bytes, type_by_name

_LAYER = re.compile(r"^blk\.(\d+)\.")
# The tensors `--n-cpu-moe N` / `--cpu-moe` move to the CPU (common/arg.cpp: blk.N.ffn_(up|down|
# gate)_exps; newer fused gate_up too, and their biases).
_EXPERTS = re.compile(r"^blk\.\d+\.ffn_(?:up|down|gate|gate_up)_(?:exps|chexps)\b")


@dataclass
class WeightsLayout:
    """Bytes of the weights by where llama.cpp puts them at full offload."""

    file_bytes: int
    layers: list[int]
    layer_experts: list[int]
    # output.weight + output_norm (or token_embd again when the embeddings are tied): on the
    # device of the last layer.
    output: int
    # token_embd.weight: always host memory (a CPU_Mapped buffer), never VRAM.
    token_embd_host: int
    # Anything else (rope tables, norms outside layers): counted with the output layer.
    other: int = 0
    exact: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def gpu_total(self) -> int:
        return sum(self.layers) + self.output + self.other

    @property
    def experts_total(self) -> int:
        return sum(self.layer_experts)


def layout_from_tensors(
    arch: ModelArch, tensors: list[TensorInfo], file_bytes: int
) -> WeightsLayout:
    layers = [0] * arch.n_layer
    experts = [0] * arch.n_layer
    output = other = token_embd = 0
    has_output = False
    for tensor in tensors:
        size = tensor.n_bytes
        match = _LAYER.match(tensor.name)
        if match and int(match.group(1)) < arch.n_layer:
            il = int(match.group(1))
            layers[il] += size
            if _EXPERTS.match(tensor.name):
                experts[il] += size
        elif tensor.name == "token_embd.weight":
            token_embd = size
        elif tensor.name.startswith("output"):
            output += size
            has_output = has_output or tensor.name == "output.weight"
        else:
            other += size
    notes = []
    if not has_output:
        # Tied embeddings (Qwen3-0.6B, Gemma 3, Llama 3.2...): llama.cpp uses token_embd as the
        # output matrix, so a copy of it sits on the output device as well.
        output += token_embd
        arch.tied_embeddings = True
        notes.append("tied embeddings: token_embd is also the output matrix on the GPU")
    return WeightsLayout(file_bytes, layers, experts, output, token_embd, other, True, notes)


def layout_from_size(arch: ModelArch, file_bytes: int, quant: str | None) -> WeightsLayout:
    """An estimate of the layout from the file size alone (catalogue entries, Hub listings whose
    header was not read): the input embedding is taken off when the quant's embedding type is
    known, the rest is spread evenly over the layers; for MoE models the expert share of a layer
    follows the parameter counts."""
    notes = ["layout estimated from the file size (no GGUF header read)"]
    embd_type = EMBEDDING_TYPE_FOR_QUANT.get((quant or "").upper())
    token_embd = 0
    if embd_type:
        token_embd = tensor_bytes(type_by_name(embd_type), arch.n_vocab * arch.n_embd)
    else:
        notes.append("embedding type unknown for this quant: the whole file counted as VRAM")
    if arch.tied_embeddings:
        output = token_embd
        layer_total = file_bytes - token_embd
    else:
        output = 0
        layer_total = file_bytes - token_embd
    per_layer = layer_total // arch.n_layer
    layers = [per_layer] * arch.n_layer
    layers[-1] += layer_total - per_layer * arch.n_layer
    experts = [0] * arch.n_layer
    if arch.is_moe and arch.n_ff_exp:
        total_params, expert_params = layer_params(arch)
        experts = [layer * expert_params // total_params for layer in layers]
    return WeightsLayout(file_bytes, layers, experts, output, token_embd, 0, False, notes)
