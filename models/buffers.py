"""The memory llama.cpp says it allocated: its "buffer size" log lines, read back.

llama.cpp (at INFO level: `-lv 4` on builds whose default verbosity hides INFO, such as
0c1e570) prints one line per buffer it allocates:

    load_tensors:   CPU_Mapped model buffer size =    32.96 MiB       (weights, per buffer type)
    llama_kv_cache:        CPU KV buffer size =   320.00 MiB          (one per KV cache: the
                                                                      sliding-window cache apart)
    llama_memory_recurrent:      CUDA0 RS buffer size =   100.50 MiB  (recurrent state)
    llama_context:        CPU  output buffer size =     0.58 MiB      (logits copied out)
    sched_reserve:        CPU compute buffer size =    62.01 MiB      (the worst-case graph)

Older builds name the functions differently (`llm_load_tensors:`, `llama_kv_cache_init:`,
`llama_new_context_with_model:`, `llama_init_from_model:`, `graph_reserve:`) and some leave out
the word "model" (`llm_load_tensors:        CUDA0 buffer size = 4095.05 MiB`); the buffer type
and the kind of buffer are what this reads. A timestamp and level (`0.00.010.286 I `) may come
first. Lines such as `llama_kv_cache: size = 320.00 MiB (...)` or the destructor's
`compute buffer size is ... MiB, matches expectation` are not allocations and are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MIB = 1 << 20

_LINE = re.compile(
    r"(?P<where>[A-Za-z_][\w]*)\s*:\s+(?P<buft>[A-Za-z][\w.+-]*(?:\[[^\]]*\])?)\s+"
    r"(?:(?P<kind>model|KV|RS|compute|output)\s+)?buffer size\s*=\s*(?P<mib>\d+(?:\.\d+)?)\s*MiB"
)
_MODEL_FUNCTIONS = ("load_tensors", "llm_load_tensors")
KINDS = ("model", "KV", "RS", "compute", "output")


@dataclass
class Buffers:
    """Buffer sizes in MiB as printed (two decimals), by kind and then by buffer type (CPU,
    CPU_Mapped, CUDA0, CUDA_Host, ROCm0, RPC0[host:port], ...); a kind printed twice for one
    type (the sliding-window KV cache beside the full one) is summed."""

    sizes: dict[str, dict[str, float]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def add(self, kind: str, buft: str, mib: float) -> None:
        by_type = self.sizes.setdefault(kind, {})
        by_type[buft] = round(by_type.get(buft, 0.0) + mib, 2)

    def mib(self, kind: str) -> float:
        """All buffers of a kind (every buffer type), MiB."""
        return round(sum(self.sizes.get(kind, {}).values()), 2)

    @property
    def model(self) -> float:
        return self.mib("model")

    @property
    def kv(self) -> float:
        """KV cache and recurrent state."""
        return round(self.mib("KV") + self.mib("RS"), 2)

    @property
    def compute(self) -> float:
        return self.mib("compute")

    @property
    def output(self) -> float:
        return self.mib("output")

    @property
    def total(self) -> float:
        return round(self.model + self.kv + self.compute + self.output, 2)

    @property
    def found(self) -> bool:
        return any(self.sizes.get(kind) for kind in KINDS)


def parse_buffers(lines: Iterable[str]) -> Buffers:
    """The buffer sizes of one llama.cpp run's log (stderr, or stdout with 2>&1)."""
    buffers = Buffers()
    for line in lines:
        match = _LINE.search(line)
        if match is None:
            continue
        kind = match["kind"]
        if kind is None:
            if match["where"] not in _MODEL_FUNCTIONS:
                continue
            kind = "model"
        buffers.add(kind, match["buft"], float(match["mib"]))
    return buffers


# --- where llama.cpp put the layers and tensors ---------------------------------------------------
#
# llama.cpp 0c1e570 (src/llama-model.cpp load_tensors, common/arg.cpp) prints, for `-ngl N` on a
# build with a GPU (or RPC) device:
#
#     load_tensors: offloading output layer to GPU           (N > 0: the output layer counts)
#     load_tensors: offloading 3 repeating layers to GPU     (min(N, n_layer) - 1)
#     load_tensors: offloaded 4/5 layers to GPU              (min(N, n_layer + 1) / n_layer + 1)
#
# older builds say `offloading non-repeating layers to GPU` after the repeating count instead;
# and, at debug level (`-v`), one line per layer (the output layer is layer n_layer) and per
# tensor a buffer-type override (`--n-cpu-moe N`, `-ot`) moved:
#
#     load_tensors: layer   0 assigned to device CPU, is_swa = 0
#     tensor blk.0.ffn_gate_exps.weight (6 MiB q8_0) buffer type overridden to CPU
#
# A CPU-only build prints neither offload line (llama_supports_gpu_offload() is false) and
# assigns every layer to the CPU.

_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_REPEATING = re.compile(r"offloading (\d+) repeating layers to GPU")
_OUTPUT = re.compile(r"offloading (?:output|non-repeating) layers? to GPU")
_ASSIGNED = re.compile(r"load_tensors: layer\s+(\d+) assigned to device ([^,\s]+)")
_OVERRIDDEN = re.compile(
    r"tensor (?P<name>\S+) \((?P<mib>\d+) MiB (?P<type>\w+)\) buffer type overridden to "
    r"(?P<buft>\S+)"
)


@dataclass
class LoadPlacement:
    """Where one llama.cpp load put the model: the offload summary, each layer's device (from
    the debug lines; the last one is the output layer) and the tensors whose buffer type an
    override changed, with the MiB printed."""

    offloaded: int | None = None  # "offloaded N/M layers to GPU": N
    layers_total: int | None = None  # ... M (n_layer + 1)
    repeating_offloaded: int | None = None
    output_offloaded: bool = False
    layer_devices: dict[int, str] = field(default_factory=dict)
    overridden: dict[str, tuple[int, str]] = field(default_factory=dict)  # name: (MiB, buft)

    def layers_on(self, device: str) -> list[int]:
        return sorted(i for i, d in self.layer_devices.items() if d == device)

    def overridden_layers(self) -> list[int]:
        """The layers (blk.N) with a tensor moved by an override, in order."""
        found = {int(m[1]) for name in self.overridden if (m := re.match(r"blk\.(\d+)\.", name))}
        return sorted(found)


def parse_placement(lines: Iterable[str]) -> LoadPlacement:
    """The placement of one load. llama-completion and llama-fit-params load twice when --fit
    is on (a dry run, then the real one): the last load's lines win."""
    found = LoadPlacement()
    for line in lines:
        if match := _OFFLOADED.search(line):
            found.offloaded, found.layers_total = int(match[1]), int(match[2])
        elif match := _REPEATING.search(line):
            found.repeating_offloaded = int(match[1])
        elif _OUTPUT.search(line):
            found.output_offloaded = True
        elif match := _ASSIGNED.search(line):
            found.layer_devices[int(match[1])] = match[2]
        elif match := _OVERRIDDEN.search(line):
            found.overridden[match["name"]] = (int(match["mib"]), match["buft"])
    return found
