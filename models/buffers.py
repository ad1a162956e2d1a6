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
    r"(?P<where>[A-Za-z_][\w]*)\s*:\s+(?P<buft>[A-Za-z][\w.+-]*)\s+"
    r"(?:(?P<kind>model|KV|RS|compute|output)\s+)?buffer size\s*=\s*(?P<mib>\d+(?:\.\d+)?)\s*MiB"
)
_MODEL_FUNCTIONS = ("load_tensors", "llm_load_tensors")
KINDS = ("model", "KV", "RS", "compute", "output")


@dataclass
class Buffers:
    """Buffer sizes in MiB as printed (two decimals), by kind and then by buffer type (CPU,
    CPU_Mapped, CUDA0, CUDA_Host, ROCm0, ...); a kind printed twice for one type (the
    sliding-window KV cache beside the full one) is summed."""

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
