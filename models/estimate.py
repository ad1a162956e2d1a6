"""The memory estimate: what llama.cpp will allocate on each GPU for a model, a quant and a
context size, and whether it fits.

Per device d (shared/reference/memory-estimate.md section 0):

    VRAM_d = weights_d + KV_d + compute_d + overhead_d

* weights: the GGUF tensors of the layers on d; the output layer (output.weight, or token_embd
  again for tied embeddings) on the last device; token_embd itself stays in host memory. On the
  CPU build (host-memory devices) every tensor once.
* KV: per attention layer, cells x n_head_kv x (key_length x bytes(type_k) + value_length x
  bytes(type_v)); cells = n_ctx padded to 256, or for sliding-window layers
  pad(min(n_ctx, n_swa x n_seq + n_ubatch), 256) when the sequences share one cache (llama-server's
  automatic 4 slots). With llama-server -np N (no shared cache) there are N streams of
  pad(n_ctx / N) cells, each with its own pad(min(that, n_swa + n_ubatch)) window. SWA layers stay
  f16 whatever -ctk/-ctv say (llama.cpp PR #21277). Recurrent layers hold a fixed f32 state per
  sequence.
* compute: the peak of ggml's graph allocator over llama.cpp's worst-case graph (compute_terms):
  the KQ masks (n_kv x n_tokens, f16 with flash attention, f32 without) plus one layer's
  activations, without flash attention plus the f32 n_head x n_kv x n_tokens score matrix (it
  grows with the context: 1.3 GiB for Qwen3-0.6B at 40960 tokens); or, at the end of the graph,
  the logits: n_vocab x n_ubatch floats for llama-completion, n_vocab x slots for llama-server.
  KV streams (llama-server -np N) split n_kv. Calibrated against llama.cpp 0c1e570's buffer
  lines on the CPU build (bench/estimate_vs_llamacpp.py; README "How close the estimate is"):
  totals within 1.2 % with flash attention on and -0.0 to +1.7 % without, for dense, MoE and
  sliding-window models. Every device that holds layers gets one (the safe side of
  pipeline-parallel buffers).
* overhead: 576 MiB per device for what llama.cpp's buffer lines do not show: the CUDA/ROCm
  context, BLAS workspaces, the driver (llama.cpp's own breakdown calls 451-456 MiB of an RTX 4090
  "unaccounted", PR #15860; ollama reserves 457 MiB), plus the largest compute-buffer
  under-estimate in the calibration set (59 MiB, gpt-oss-20b at 131072 with --n-cpu-moe), so that
  compute + overhead covers every logged compute buffer plus the unaccounted memory.

Verdicts, against the memory of the chosen devices:

* `no`: some device needs more than it has.
* `tight`: it fits, but less than TIGHT_FRACTION (20 %) of the memory, or less than TIGHT_MIN
  (1 GiB, llama.cpp --fit's default margin), would be left free. The estimate itself is good to
  a few percent, but the compute buffer grows with -ub, a launch without the flash attention the
  estimate assumed adds n_ctx x n_head x n_ubatch x 4 bytes, and a desktop or another process
  takes its share: under a fifth of the card free, any of these can tip it over.
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
    # Sequences llama.cpp reserves for (n_seq_max): llama-server's slots (-np), 1 for
    # llama-completion.
    n_seq: int = 1
    # Whether the sequences share one KV cache (llama-server's automatic 4 slots, or -kvu): the
    # total KV follows n_ctx and the sliding-window part grows with n_seq. Otherwise (an explicit
    # -np N) each sequence gets its own stream of pad(n_ctx / N) cells.
    kv_unified: bool = False
    # llama-server reserves logits for one token per slot; llama-completion for a whole ubatch.
    server: bool = False
    flash_attn: bool = True
    swa_full: bool = False
    overhead_bytes: int = DEVICE_OVERHEAD

    @property
    def n_stream(self) -> int:
        """KV streams: one shared cache, or one per sequence."""
        return 1 if self.kv_unified else max(self.n_seq, 1)

    @property
    def n_ctx(self) -> int:
        """The context llama.cpp allocates: padded to 256, and with split streams a multiple of
        the padded per-stream size (llama_context's cparams.n_ctx)."""
        return self.n_ctx_seq * self.n_stream

    @property
    def n_ctx_seq(self) -> int:
        """Cells of one KV stream for a full-attention layer (cparams.n_ctx_seq)."""
        n_ctx = pad(self.ctx)
        if self.n_stream == 1:
            return n_ctx
        return pad(max(n_ctx // self.n_stream, 1))

    @property
    def n_tokens(self) -> int:
        """Tokens of the worst-case graph llama.cpp reserves: min(n_ctx, n_ubatch)."""
        return min(self.n_ctx, self.n_ubatch)

    @property
    def n_outputs(self) -> int:
        """Logit rows of that graph: n_ubatch for llama-completion (n_outputs_max = n_batch),
        one per slot for llama-server (n_outputs_max = n_parallel)."""
        return min(self.n_tokens, max(self.n_seq, 1)) if self.server else self.n_tokens


SERVER_AUTO_SLOTS = 4  # llama-server without -np: 4 slots sharing one KV cache (server.cpp)


def launch_options(
    *,
    flash_attn: bool = True,
    server: bool = False,
    n_parallel: int | None = None,
    **more: Any,
) -> EstimateOptions:
    """The options for what the wizard launches: llama-completion (one sequence), llama-server
    with its automatic slots (4, one shared KV cache: `server` without `n_parallel`), or
    llama-server `-np N` (N slots, each with its own pad(n_ctx / N) cells: llama.cpp's default
    for an explicit -np). `n_parallel` alone means the server."""
    if n_parallel is not None:
        return EstimateOptions(
            flash_attn=flash_attn, server=True, n_seq=n_parallel, kv_unified=False, **more
        )
    if server:
        return EstimateOptions(
            flash_attn=flash_attn, server=True, n_seq=SERVER_AUTO_SLOTS, kv_unified=True, **more
        )
    return EstimateOptions(flash_attn=flash_attn, **more)


FLASH_ATTN_MODES = ("on", "off", "auto")
# Head sizes for which llama.cpp's CUDA/HIP backend has flash-attention kernels (K size, V
# size), ggml-cuda/fattn.cu ggml_cuda_get_best_fattn_kernel at 0c1e570; 192/128 and 320/256 need
# GQA ratios the check below does not model, so they count as unsupported (the safe side).
CUDA_FA_HEAD_SIZES = {(h, h) for h in (40, 64, 72, 80, 96, 112, 128, 256, 512)} | {(576, 512)}


def flash_attn_enabled(mode: str, arch: ModelArch, backend: str | None = None) -> bool:
    """What llama.cpp does with `-fa MODE` for this model on this backend.

    `auto` (llama.cpp's default) turns flash attention on when the backend runs the
    FLASH_ATTN_EXT op for the model's layers on the layers' own device
    (llama_context::resolve_fused_ops at 0c1e570): always on the CPU; on CUDA and ROCm (HIP)
    for the head sizes fattn.cu has kernels for; on Vulkan for head sizes that are a multiple of
    8. A backend that is not known here counts as CUDA's rules (an unsupported head size means
    off, the larger compute buffer). Grok forces it off."""
    if mode not in FLASH_ATTN_MODES:
        raise ValueError(f"flash attention is on, off or auto, not {mode!r}")
    if arch.arch == "grok":
        return False
    if mode != "auto":
        return mode == "on"
    if backend in ("cpu", "metal"):
        return True
    k, v = arch.key_length, arch.value_length
    if backend == "vulkan":
        return k % 8 == 0 and v % 8 == 0
    return (k, v) in CUDA_FA_HEAD_SIZES


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


def is_swa_layer(arch: ModelArch, opts: EstimateOptions, layer: int) -> bool:
    return bool(arch.swa_layers and arch.swa_layers[layer] and arch.n_swa and not opts.swa_full)


def stream_cells(arch: ModelArch, opts: EstimateOptions, swa: bool) -> int:
    """Cells of one KV stream: n_ctx_seq for a full-attention layer; for a sliding-window layer
    pad(min(n_ctx_seq, n_swa x (n_seq when unified, else 1) + n_ubatch), 256)
    (llama_kv_cache_iswa)."""
    size = opts.n_ctx_seq
    if not swa:
        return size
    window = arch.n_swa * (opts.n_seq if opts.kv_unified else 1) + opts.n_ubatch
    return pad(min(size, window))


def kv_cells(arch: ModelArch, opts: EstimateOptions, layer: int) -> int:
    """Cells of one layer's KV cache over all its streams."""
    return stream_cells(arch, opts, is_swa_layer(arch, opts, layer)) * opts.n_stream


def kv_layer_bytes(arch: ModelArch, opts: EstimateOptions) -> list[int]:
    """KV cache bytes of each layer (0 for layers without attention)."""
    type_k, type_v = cache_type(opts.cache_type_k), cache_type(opts.cache_type_v)
    sizes = []
    for il in range(arch.n_layer):
        heads = arch.n_head_kv[il]
        if not heads:
            sizes.append(0)
            continue
        swa = is_swa_layer(arch, opts, il)
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


@dataclass(frozen=True)
class ComputeTerms:
    """The parts of llama.cpp's compute buffer (the worst-case graph it reserves at load:
    n_tokens = min(n_ctx, n_ubatch) tokens, n_outputs logit rows), in bytes.

    ggml's allocator reuses a tensor's memory once its last reader has run, so the buffer is the
    peak of what is alive at once, not the sum of the graph: while the layers run, the KQ masks
    (inputs read by every layer) plus one layer's activations (and, without flash attention,
    its f32 score matrix); at the end, the logits."""

    masks: int  # KQ masks: n_kv x n_tokens, f16 with flash attention, f32 without
    kq: int  # flash attention off: n_head x n_kv x n_tokens f32 scores of the widest layer
    attention: int  # a layer's other attention activations
    ffn: int  # a layer's feed-forward activations
    logits: int  # n_vocab x n_outputs f32
    output: int  # the output norm and what the allocator cannot fit into freed space
    output_buffer: int  # the logits llama.cpp copies out (n_vocab x n_seq f32), host memory

    @property
    def layers(self) -> int:
        return self.masks + max(self.kq + self.attention, self.ffn)

    @property
    def end(self) -> int:
        return self.logits + self.output

    @property
    def total(self) -> int:
        return max(self.layers, self.end) + self.output_buffer


def compute_terms(arch: ModelArch, opts: EstimateOptions) -> ComputeTerms:
    """The compute buffer of the device holding the output layer, term by term.

    Derived from llama.cpp's graph (src/llama-graph.cpp build_attn_mha, build_ffn,
    build_moe_ffn; src/llama-context.cpp sched_reserve) at 0c1e570 and calibrated against its
    "compute buffer size" lines for dense, MoE and sliding-window models on the CPU build
    (bench/estimate_vs_llamacpp.py):

    * masks: one per kind of attention layer (full, sliding-window), n_kv x n_tokens; with KV
      streams (llama-server -np N) each stream has n_kv = its own cells and n_tokens / N rows.
    * kq (flash attention off): n_head x n_kv x n_tokens x 4 bytes, the softmax done in place.
    * per-token activations, f32: attention 3 n_embd + 2 q + (K + V) without flash attention,
      2 n_embd + 2 q + (K + V)/2 with it; dense FFN 2 n_embd + 3 n_ff (gate, up, their
      product; + 2/3 n_ff of fragmentation with more than two layers); MoE FFN
      2 n_embd + 2 q + n_expert_used x 3 n_ff_exp.
    * the end of the graph: logits n_vocab x n_outputs, 2 n_embd per token, and up to twice
      (2 n_embd + q) per token plus the masks that the allocator's free blocks cannot take.
    """
    tokens = opts.n_tokens
    f32 = 4 * tokens  # bytes of one f32 value per token of the reserved graph
    attention_layers = [il for il in range(arch.n_layer) if arch.n_head_kv[il]]
    kinds = {is_swa_layer(arch, opts, il) for il in attention_layers}
    widths = [stream_cells(arch, opts, swa) for swa in sorted(kinds)]
    mask_type = 2 if opts.flash_attn else 4
    # Each stream's mask is n_kv x (n_tokens / n_stream); all streams together n_kv x n_tokens.
    masks = mask_type * tokens * sum(widths)
    kq = 0 if opts.flash_attn or not widths else f32 * arch.n_head * max(widths)
    n_embd = arch.n_embd
    q = arch.n_head * arch.key_length
    n_head_kv = max(arch.n_head_kv, default=0)
    kv = n_head_kv * (arch.key_length + arch.value_length)
    if opts.flash_attn:
        attention = f32 * (2 * n_embd + 2 * q + kv // 2)
    else:
        attention = f32 * (3 * n_embd + 2 * q + kv)
    if arch.is_moe:
        n_ff_exp = arch.n_ff_exp or arch.n_ff or n_embd
        ffn = f32 * (2 * n_embd + 2 * q + max(arch.n_expert_used, 1) * 3 * n_ff_exp)
    else:
        n_ff = arch.n_ff or 4 * n_embd
        # From the third layer on, the allocator's free list keeps a hole of about 2/3 n_ff per
        # token that a dense FFN cannot reuse (measured on 3- to 28-layer Qwen3 shapes).
        hole = 2 * n_ff // 3 if arch.n_layer > 2 else 0
        ffn = f32 * (2 * n_embd + 3 * n_ff + hole)
    spill = f32 * (2 * n_embd + q)
    return ComputeTerms(
        masks=masks,
        kq=kq,
        attention=attention if attention_layers else 0,
        ffn=ffn,
        logits=4 * opts.n_outputs * arch.n_vocab,
        output=f32 * 2 * n_embd + min(masks + spill, 2 * spill),
        output_buffer=4 * arch.n_vocab * max(opts.n_seq, 1),
    )


def compute_bytes(arch: ModelArch, opts: EstimateOptions) -> int:
    """The compute buffer llama.cpp reserves on the device holding the output layer (with the
    small logits output buffer)."""
    return compute_terms(arch, opts).total


def host_compute_bytes(arch: ModelArch, opts: EstimateOptions) -> int:
    """The pinned host compute buffer (CUDA_Host/ROCm_Host): 4 x n_ubatch x (n_ctx + n_embd)."""
    return 4 * opts.n_tokens * (opts.n_ctx + arch.n_embd)


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
    offloaded, experts of the first `n_cpu_moe` layers in host memory.

    On the CPU build (every device is host memory) there is one place: every tensor once (the
    input embedding too, and no second copy of tied embeddings), one compute buffer and no
    pinned host buffer beside it."""
    if devices and all(d.host for d in devices):
        return _place_on_host(arch, layout, opts, devices)
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


def _place_on_host(
    arch: ModelArch, layout: WeightsLayout, opts: EstimateOptions, devices: list[Device]
) -> Placement:
    plans = [DevicePlan(d.name, d.index, d.memory_bytes) for d in devices]
    plan = plans[0]
    output = layout.output - (layout.token_embd_host if arch.tied_embeddings else 0)
    plan.layers = arch.n_layer
    plan.weights_bytes = sum(layout.layers) + output + layout.other + layout.token_embd_host
    plan.kv_bytes = sum(kv_layer_bytes(arch, opts)) + sum(recurrent_layer_bytes(arch, opts))
    plan.compute_bytes = compute_bytes(arch, opts)
    for each in plans:
        each.overhead_bytes = opts.overhead_bytes
    return Placement(plans, 0, arch.n_layer, 0)


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
    if all(d.host for d in devices):
        return result  # the CPU build: nowhere else to put anything
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
