"""The memory estimate: what llama.cpp will allocate on each GPU for a model, a quant and a
context size, and whether it fits.

Per device d (shared/reference/memory-estimate.md section 0):

    VRAM_d = weights_d + KV_d + compute_d + overhead_d

* weights: the GGUF tensors of the layers on d; the output layer (output.weight, or token_embd
  again for tied embeddings) on the last device; token_embd itself stays in host memory.
* KV: per attention layer, cells x n_head_kv x (key_length x bytes(type_k) + value_length x
  bytes(type_v)); cells = n_ctx padded to 256, or for sliding-window layers
  pad(min(n_ctx, n_swa x n_seq + n_ubatch), 256). SWA layers stay f16 whatever -ctk/-ctv say
  (llama.cpp PR #21277). Recurrent layers hold a fixed f32 state per sequence.
* compute: 4 x n_ubatch x (n_vocab + n_embd) bytes with flash attention (the logits and input of
  one ubatch, in f32), plus the attention score matrix 4 x n_ubatch x n_kv x n_head without it.
  Calibrated against llama.cpp's "compute buffer size" lines in tests/fixtures/models/
  calibration.json: exact for Qwen3-Coder-30B, Qwen3-4B and Llama-3-8B, within +15 % elsewhere.
  Every device that holds layers gets one (the safe side of pipeline-parallel buffers).
* overhead: 576 MiB per device for what llama.cpp's buffer lines do not show: the CUDA/ROCm
  context, BLAS workspaces, the driver (llama.cpp's own breakdown calls 451-456 MiB of an RTX 4090
  "unaccounted", PR #15860; ollama reserves 457 MiB), plus the largest compute-buffer
  under-estimate in the calibration set (59 MiB, gpt-oss-20b at 131072 with --n-cpu-moe), so that
  compute + overhead covers every logged compute buffer plus the unaccounted memory.

Verdicts, against the memory of the chosen devices:

* `no`: some device needs more than it has.
* `tight`: it fits, but less than TIGHT_FRACTION (20 %) of the memory, or less than TIGHT_MIN
  (1 GiB, llama.cpp --fit's default margin), would be left free. The estimate itself is good to
  a few percent, but the compute buffer grows with -ub and server slots, flash attention off adds
  n_ctx x n_head x n_ubatch x 4 bytes, and a desktop or another process takes its share: under a
  fifth of the card free, any of these can tip it over.
* `fits`: otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from llama_wizard.models.arch import ModelArch
from llama_wizard.models.quant import cache_type, tensor_bytes
from llama_wizard.models.sizes import GIB, MIB
from llama_wizard.models.weights import WeightsLayout

DEVICE_OVERHEAD = 576 * MIB
TIGHT_FRACTION = 0.20
TIGHT_MIN = 1 * GIB
KV_PAD = 256
DEFAULT_UBATCH = 512
DEFAULT_CTX = 32768
F16 = cache_type("f16")


def pad(value: int, to: int = KV_PAD) -> int:
    return -(-value // to) * to


@dataclass(frozen=True)
class EstimateOptions:
    ctx: int = DEFAULT_CTX
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    n_ubatch: int = DEFAULT_UBATCH
    # Sequences (llama-server slots) sharing a unified KV cache: the total KV follows n_ctx, the
    # sliding-window part grows with n_seq.
    n_seq: int = 1
    flash_attn: bool = True
    swa_full: bool = False
    overhead_bytes: int = DEVICE_OVERHEAD


@dataclass(frozen=True)
class Device:
    """Memory to fit into: one GPU (or a --vram figure)."""

    name: str
    memory_bytes: int
    index: int | None = None
    free_bytes: int | None = None
    host: bool = False  # system RAM for the CPU build: no GPU driver context to allow for


class MemorySplit:
    """What a device (or all of them) holds: weights + KV cache + compute + overhead, and what
    is left of its memory."""

    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    overhead_bytes: int
    memory_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.overhead_bytes

    @property
    def free_bytes(self) -> int:
        return self.memory_bytes - self.total_bytes


@dataclass
class DevicePlan(MemorySplit):
    name: str
    index: int | None
    memory_bytes: int
    layers: int = 0
    weights_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    overhead_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "memory_bytes": self.memory_bytes,
            "layers": self.layers,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
        }


@dataclass
class Placement:
    devices: list[DevicePlan]
    host_bytes: int
    n_gpu_layers: int
    n_cpu_moe: int

    @property
    def fits(self) -> bool:
        return all(d.free_bytes >= 0 for d in self.devices)

    @property
    def free_bytes(self) -> int:
        return sum(d.free_bytes for d in self.devices)


@dataclass
class Estimate(MemorySplit):
    """One quant at one context size on the chosen devices."""

    quant: str
    ctx: int
    file_bytes: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    overhead_bytes: int
    memory_bytes: int
    verdict: str
    max_ctx: int | None
    devices: list[DevicePlan]
    tensor_split: list[int] | None = None
    n_gpu_layers: int | None = None
    n_cpu_moe: int | None = None
    host_bytes: int | None = None
    host_memory_bytes: int | None = None
    exact: bool = True
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "quant": self.quant,
            "file_bytes": self.file_bytes,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "verdict": self.verdict,
            "max_ctx": self.max_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "n_cpu_moe": self.n_cpu_moe,
            "host_bytes": self.host_bytes,
            "tensor_split": self.tensor_split,
            "exact": self.exact,
            "devices": [d.to_json() for d in self.devices],
            "notes": self.notes,
        }


# --- the terms -----------------------------------------------------------------------------------


def kv_cells(arch: ModelArch, opts: EstimateOptions, layer: int) -> int:
    n_ctx = pad(opts.ctx)
    if arch.swa_layers and arch.swa_layers[layer] and arch.n_swa and not opts.swa_full:
        return min(n_ctx, pad(min(n_ctx, arch.n_swa * opts.n_seq + opts.n_ubatch)))
    return n_ctx


def kv_layer_bytes(arch: ModelArch, opts: EstimateOptions) -> list[int]:
    """KV cache bytes of each layer (0 for layers without attention)."""
    type_k, type_v = cache_type(opts.cache_type_k), cache_type(opts.cache_type_v)
    sizes = []
    for il in range(arch.n_layer):
        heads = arch.n_head_kv[il]
        if not heads:
            sizes.append(0)
            continue
        swa = bool(arch.swa_layers and arch.swa_layers[il] and arch.n_swa and not opts.swa_full)
        k_len = (arch.key_length_swa or arch.key_length) if swa else arch.key_length
        v_len = (arch.value_length_swa or arch.value_length) if swa else arch.value_length
        # Since llama.cpp PR #21277 the SWA cache stays f16 whatever -ctk/-ctv say.
        tk, tv = (F16, F16) if swa else (type_k, type_v)
        cells = kv_cells(arch, opts, il)
        sizes.append(cells * (tensor_bytes(tk, heads * k_len) + tensor_bytes(tv, heads * v_len)))
    return sizes


def recurrent_layer_bytes(arch: ModelArch, opts: EstimateOptions) -> list[int]:
    """Fixed f32 state of recurrent (Mamba-style) layers: (d_conv - 1)(d_inner + 2 n_group
    d_state) + d_state d_inner elements per sequence."""
    if not (arch.ssm_inner_size and arch.ssm_state_size):
        return [0] * arch.n_layer
    d_conv = max(arch.ssm_conv_kernel - 1, 0)
    groups = max(arch.ssm_group_count, 1)
    per_seq = 4 * (
        d_conv * (arch.ssm_inner_size + 2 * groups * arch.ssm_state_size)
        + arch.ssm_state_size * arch.ssm_inner_size
    )
    return [0 if arch.n_head_kv[il] else per_seq * opts.n_seq for il in range(arch.n_layer)]


def compute_bytes(arch: ModelArch, opts: EstimateOptions) -> int:
    """The compute buffer llama.cpp reserves on the device holding the output layer."""
    size = 4 * opts.n_ubatch * (arch.n_vocab + arch.n_embd)
    if not opts.flash_attn:
        size += 4 * opts.n_ubatch * pad(opts.ctx) * arch.n_head
    return size


def host_compute_bytes(arch: ModelArch, opts: EstimateOptions) -> int:
    """The pinned host compute buffer (CUDA_Host/ROCm_Host): 4 x n_ubatch x (n_ctx + n_embd)."""
    return 4 * opts.n_ubatch * (pad(opts.ctx) + arch.n_embd)


# --- placing the layers --------------------------------------------------------------------------


def split_fractions(devices: list[Device], reserve: int) -> list[float]:
    """-ts: each device's share, proportional to the memory it has left for layers."""
    room = [max(d.memory_bytes - reserve, 0) for d in devices]
    total = sum(room)
    if total <= 0:
        return [1 / len(devices)] * len(devices)
    return [r / total for r in room]


def tensor_split_arg(fractions: list[float]) -> list[int]:
    """Small integers in the same proportions, for `-ts A,B` (to the nearest 1 %)."""
    parts = [max(round(f * 100), 1) for f in fractions]
    divisor = 0
    for p in parts:
        divisor = math.gcd(divisor, p)
    return [p // divisor for p in parts]


def place(
    arch: ModelArch,
    layout: WeightsLayout,
    opts: EstimateOptions,
    devices: list[Device],
    *,
    n_gpu_layers: int | None = None,
    n_cpu_moe: int = 0,
    fractions: list[float] | None = None,
) -> Placement:
    """Where llama.cpp puts each layer: the last `n_gpu_layers` repeating layers on the GPUs
    (spread by the -ts fractions, in order), the output layer on the last GPU when every layer is
    offloaded, experts of the first `n_cpu_moe` layers in host memory."""
    n_layer = arch.n_layer
    ngl = n_layer if n_gpu_layers is None else max(0, min(n_gpu_layers, n_layer))
    kv = kv_layer_bytes(arch, opts)
    rs = recurrent_layer_bytes(arch, opts)
    fractions = fractions or split_fractions(
        devices, opts.overhead_bytes + compute_bytes(arch, opts)
    )
    cumulative = []
    running = 0.0
    for f in fractions:
        running += f
        cumulative.append(running)
    plans = [DevicePlan(d.name, d.index, d.memory_bytes) for d in devices]
    host = layout.token_embd_host + host_compute_bytes(arch, opts)
    first_gpu = n_layer - ngl
    for il in range(n_layer):
        layer_bytes = layout.layers[il]
        experts = layout.layer_experts[il] if il < n_cpu_moe else 0
        if il < first_gpu:
            host += layer_bytes + kv[il] + rs[il]
            continue
        position = (il - first_gpu) / max(ngl, 1)
        index = next((i for i, c in enumerate(cumulative) if position < c - 1e-9), len(plans) - 1)
        plan = plans[index]
        plan.layers += 1
        plan.weights_bytes += layer_bytes - experts
        plan.kv_bytes += kv[il] + rs[il]
        host += experts
    if ngl == n_layer:
        plans[-1].weights_bytes += layout.output + layout.other
    else:
        host += layout.output + layout.other
    for plan in plans:
        plan.overhead_bytes = opts.overhead_bytes
        if plan.layers or (plan is plans[-1] and ngl == n_layer):
            plan.compute_bytes = compute_bytes(arch, opts)
    return Placement(plans, host, ngl, n_cpu_moe)


def verdict(free_bytes: int, memory_bytes: int, fits: bool) -> str:
    if not fits:
        return "no"
    if free_bytes < max(TIGHT_MIN, int(TIGHT_FRACTION * memory_bytes)):
        return "tight"
    return "fits"


def max_context(
    arch: ModelArch, layout: WeightsLayout, opts: EstimateOptions, devices: list[Device]
) -> int | None:
    """The largest context (a multiple of 256, up to the training context) at which the model
    still fits fully offloaded, or None when it does not fit at 256."""
    limit = arch.context_length or opts.ctx
    low, high = 1, max(limit // KV_PAD, 1)

    def fits(cells: int) -> bool:
        return place(arch, layout, replace(opts, ctx=cells * KV_PAD), devices).fits

    if not fits(low):
        return None
    if fits(high):
        return min(high * KV_PAD, limit) if limit % KV_PAD == 0 else high * KV_PAD
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low * KV_PAD


def estimate(
    arch: ModelArch,
    layout: WeightsLayout,
    quant: str,
    opts: EstimateOptions,
    devices: list[Device],
    *,
    host_memory_bytes: int | None = None,
) -> Estimate:
    if not devices:
        raise ValueError("estimate needs at least one device")
    full = place(arch, layout, opts, devices)
    memory = sum(d.memory_bytes for d in devices)
    fractions = split_fractions(devices, opts.overhead_bytes + compute_bytes(arch, opts))
    result = Estimate(
        quant=quant,
        ctx=opts.ctx,
        file_bytes=layout.file_bytes,
        weights_bytes=sum(d.weights_bytes for d in full.devices),
        kv_bytes=sum(d.kv_bytes for d in full.devices),
        compute_bytes=sum(d.compute_bytes for d in full.devices),
        overhead_bytes=sum(d.overhead_bytes for d in full.devices),
        memory_bytes=memory,
        verdict=verdict(full.free_bytes, memory, full.fits),
        max_ctx=max_context(arch, layout, opts, devices),
        devices=full.devices,
        tensor_split=tensor_split_arg(fractions) if len(devices) > 1 else None,
        host_bytes=full.host_bytes,
        host_memory_bytes=host_memory_bytes,
        exact=layout.exact,
        notes=list(layout.notes),
    )
    if result.verdict != "no":
        result.n_gpu_layers = arch.n_layer + 1
        return result
    if arch.is_moe and layout.experts_total:
        for n in range(1, arch.n_layer + 1):
            moved = place(arch, layout, opts, devices, n_cpu_moe=n)
            if moved.fits:
                if host_memory_bytes is not None and moved.host_bytes > host_memory_bytes:
                    result.notes.append(
                        f"--n-cpu-moe {n} would fit the GPU memory but needs "
                        f"{moved.host_bytes / GIB:.1f} GiB of host RAM, more than the "
                        f"{host_memory_bytes / GIB:.1f} GiB available"
                    )
                    break
                result.n_cpu_moe = n
                result.n_gpu_layers = arch.n_layer + 1
                result.host_bytes = moved.host_bytes
                result.notes.append(
                    f"does not fit in VRAM; with --n-cpu-moe {n} the experts of the first {n} "
                    "layers stay in system RAM"
                )
                return result
    for ngl in range(arch.n_layer - 1, -1, -1):
        partial = place(arch, layout, opts, devices, n_gpu_layers=ngl)
        if partial.fits:
            if host_memory_bytes is not None and partial.host_bytes > host_memory_bytes:
                result.notes.append(
                    "does not fit in VRAM + RAM: a partial offload needs "
                    f"{partial.host_bytes / GIB:.1f} GiB of host RAM"
                )
                break
            if ngl:
                result.n_gpu_layers = ngl
                result.host_bytes = partial.host_bytes
                result.notes.append(
                    f"does not fit in VRAM; -ngl {ngl} offloads {ngl} of {arch.n_layer} layers "
                    "and runs the rest on the CPU (slow)"
                )
            break
    return result
