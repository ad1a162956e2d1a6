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

Run modes (`MODES`), the best first; a quant's verdict is that of the best mode it runs in:

* `gpu`: every layer on the GPUs (-ngl 99), judged as above.
* `moe-offload`: the expert tensors of the first N layers in host RAM (--n-cpu-moe N), the
  smallest N that leaves every GPU OFFLOAD_MARGIN free.
* `hybrid`: -ngl N, the largest N that leaves every GPU OFFLOAD_MARGIN free. llama.cpp counts
  the output layer as one of the N (src/llama-model.cpp at 0c1e570: i_gpu_start =
  n_layer + 1 - n_gpu_layers, the output layer is layer n_layer), so -ngl N puts the output layer
  and the last N - 1 repeating layers on the GPUs, the first layers in RAM.
* `cpu`: everything in host RAM (the CPU build; -ngl 0 on a GPU build).

Host RAM is checked in every mode: what llama.cpp keeps in host buffers (the input embedding,
the pinned compute buffer, the layers and experts left in RAM; for an integrated GPU also the
part of its memory beyond the carve-out, which is system RAM) must fit the available RAM minus
host_margin(): 2 GiB or 10 % of it, whichever is more. 1 GiB is what llama.cpp --fit keeps free
of host memory (common/fit.cpp); the rest covers what MemAvailable overstates (page cache that
cannot all be dropped, tmpfs) and what the desktop, the wizard and the page cache of a
memory-mapped model file take while it runs. Within that, the tight rule above applies to RAM
too. `no` only when not even the cpu mode fits in RAM (or in the mode forced).
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
MODES = ("gpu", "moe-offload", "hybrid", "cpu")
MODE_CHOICES = ("auto", *MODES)
# What a GPU keeps free when the estimate chooses how much to put on it (moe-offload, hybrid):
# llama.cpp --fit's default target (-fitt 1024 MiB), beside the per-device overhead above.
OFFLOAD_MARGIN = 1 * GIB
HOST_MARGIN_MIN = 2 * GIB
HOST_MARGIN_FRACTION = 0.10
VERDICT_ORDER = ("fits", "tight", "no")


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
    # An integrated GPU (APU): what it holds beyond its dedicated carve-out (`dedicated_bytes`)
    # is system RAM (GTT), so it counts against the host RAM too.
    unified: bool = False
    dedicated_bytes: int = 0


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
    # The run mode the verdict is for (MODES), and the model's repeating layers (for its label).
    mode: str = "gpu"
    n_layer: int = 0

    @property
    def mode_label(self) -> str:
        """A short label for the mode: "GPU", "MoE→RAM 12", "hybrid 30/49", "CPU"."""
        return mode_label(self.mode, self.n_gpu_layers, self.n_cpu_moe, self.n_layer)

    def to_json(self) -> dict[str, Any]:
        return {
            "quant": self.quant,
            "mode": self.mode,
            "mode_label": self.mode_label,
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
            "host_memory_bytes": self.host_memory_bytes,
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


def gpu_layer_indices(n_layer: int, n_gpu_layers: int) -> list[int]:
    """The layers llama.cpp puts on the GPUs for -ngl N: n_layer + 1 - N .. n_layer, where
    layer n_layer is the output layer (src/llama-model.cpp i_gpu_start at 0c1e570)."""
    ngl = max(0, min(n_gpu_layers, n_layer + 1))
    return list(range(n_layer + 1 - ngl, n_layer + 1))


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
    """Where llama.cpp puts each layer for `-ngl n_gpu_layers` (None: all of them) and
    `--n-cpu-moe n_cpu_moe`.

    llama.cpp counts the output layer as layer n_layer: -ngl N puts layers n_layer + 1 - N ..
    n_layer on the GPUs (src/llama-model.cpp i_gpu_start at 0c1e570), that is the output layer
    and the last N - 1 repeating layers; the first layers stay in host memory. The repeating
    layers on the GPUs are spread by the -ts fractions, in order, the output layer on the last
    GPU. The experts (ffn_{gate,up,down}_exps) of the first `n_cpu_moe` layers stay in host
    memory (common/arg.cpp --n-cpu-moe: a blk.I.ffn_(up|down|gate)_exps override to the CPU
    for I < N). The input embedding always stays in host memory.

    On the CPU build (every device is host memory) there is one place: every tensor once (the
    input embedding too, and no second copy of tied embeddings), one compute buffer and no
    pinned host buffer beside it."""
    if devices and all(d.host for d in devices):
        return _place_on_host(arch, layout, opts, devices)
    n_layer = arch.n_layer
    ngl = n_layer + 1 if n_gpu_layers is None else max(0, min(n_gpu_layers, n_layer + 1))
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
    on_gpus = gpu_layer_indices(n_layer, ngl)
    output_on_gpu = n_layer in on_gpus
    first_gpu = on_gpus[0] if on_gpus else n_layer
    on_gpu = n_layer - first_gpu  # repeating layers on the GPUs
    for il in range(n_layer):
        layer_bytes = layout.layers[il]
        experts = layout.layer_experts[il] if il < n_cpu_moe else 0
        if il < first_gpu:
            host += layer_bytes + kv[il] + rs[il]
            continue
        position = (il - first_gpu) / max(on_gpu, 1)
        index = next((i for i, c in enumerate(cumulative) if position < c - 1e-9), len(plans) - 1)
        plan = plans[index]
        plan.layers += 1
        plan.weights_bytes += layer_bytes - experts
        plan.kv_bytes += kv[il] + rs[il]
        host += experts
    if output_on_gpu:
        plans[-1].weights_bytes += layout.output + layout.other
    else:
        host += layout.output + layout.other
    for plan in plans:
        plan.overhead_bytes = opts.overhead_bytes
        if plan.layers or (plan is plans[-1] and output_on_gpu):
            plan.compute_bytes = compute_bytes(arch, opts)
    return Placement(plans, host, ngl, n_cpu_moe)


def _place_on_host(
    arch: ModelArch, layout: WeightsLayout, opts: EstimateOptions, devices: list[Device]
) -> Placement:
    plans = [DevicePlan(d.name, d.index, d.memory_bytes) for d in devices]
    plan = plans[0]
    plan.layers = arch.n_layer
    plan.weights_bytes = host_weights_bytes(arch, layout)
    plan.kv_bytes = sum(kv_layer_bytes(arch, opts)) + sum(recurrent_layer_bytes(arch, opts))
    plan.compute_bytes = compute_bytes(arch, opts)
    for each in plans:
        each.overhead_bytes = opts.overhead_bytes
    return Placement(plans, 0, arch.n_layer, 0)


def host_weights_bytes(arch: ModelArch, layout: WeightsLayout) -> int:
    """Every tensor once, in host memory (the CPU build): the input embedding too, and tied
    embeddings once."""
    output = layout.output - (layout.token_embd_host if arch.tied_embeddings else 0)
    return sum(layout.layers) + output + layout.other + layout.token_embd_host


def cpu_ram_bytes(arch: ModelArch, layout: WeightsLayout, opts: EstimateOptions) -> int:
    """Host RAM for the cpu mode: what the CPU build allocates (weights, KV cache, compute)."""
    kv = sum(kv_layer_bytes(arch, opts)) + sum(recurrent_layer_bytes(arch, opts))
    return host_weights_bytes(arch, layout) + kv + compute_bytes(arch, opts)


def verdict(free_bytes: int, memory_bytes: int, fits: bool) -> str:
    if not fits:
        return "no"
    if free_bytes < max(TIGHT_MIN, int(TIGHT_FRACTION * memory_bytes)):
        return "tight"
    return "fits"


def worst(*verdicts: str) -> str:
    return max(verdicts, key=VERDICT_ORDER.index)


def host_margin(available_bytes: int) -> int:
    """RAM kept free of a model: 2 GiB or 10 % of the available RAM (module docstring)."""
    return max(HOST_MARGIN_MIN, int(HOST_MARGIN_FRACTION * available_bytes))


def ram_verdict(need_bytes: int, available_bytes: int | None) -> str:
    """Whether `need_bytes` of host RAM fit the available RAM minus host_margin(), with the
    tight rule on what is left; "fits" when the RAM is not known (a --vram figure alone)."""
    if available_bytes is None:
        return "fits"
    usable = available_bytes - host_margin(available_bytes)
    return verdict(usable - need_bytes, usable, need_bytes <= usable)


def ram_need(placement: Placement, devices: list[Device]) -> int:
    """Host RAM a GPU placement takes: its host buffers, plus what an integrated GPU holds
    beyond its carve-out (system RAM mapped as GTT)."""
    shared = sum(
        max(plan.total_bytes - device.dedicated_bytes, 0)
        for plan, device in zip(placement.devices, devices, strict=True)
        if device.unified
    )
    return placement.host_bytes + shared


def mode_label(mode: str, n_gpu_layers: int | None, n_cpu_moe: int | None, n_layer: int) -> str:
    if mode == "moe-offload":
        return f"MoE→RAM {n_cpu_moe}"
    if mode == "hybrid":
        return f"hybrid {n_gpu_layers}/{n_layer + 1}"
    return {"gpu": "GPU", "cpu": "CPU"}.get(mode, mode)


def _leaves_margin(placement: Placement) -> bool:
    return all(d.free_bytes >= OFFLOAD_MARGIN for d in placement.devices)


def _first_true(low: int, high: int, test: Any) -> int | None:
    """The smallest n in [low, high] with test(n), for a test that stays true once true."""
    if low > high or not test(high):
        return None
    while low < high:
        middle = (low + high) // 2
        if test(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _last_true(low: int, high: int, test: Any) -> int | None:
    """The largest n in [low, high] with test(n), for a test that stays true below it."""
    if low > high or not test(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if test(middle):
            low = middle
        else:
            high = middle - 1
    return low


def max_context(
    arch: ModelArch,
    layout: WeightsLayout,
    opts: EstimateOptions,
    devices: list[Device],
    runs: Any = None,
) -> int | None:
    """The largest context (a multiple of 256, up to the training context) at which the model
    still fits fully offloaded (or, with `runs`, at which runs(options) holds), or None when it
    does not fit at 256."""
    limit = arch.context_length or opts.ctx
    low, high = 1, max(limit // KV_PAD, 1)

    def fits(cells: int) -> bool:
        changed = replace(opts, ctx=cells * KV_PAD)
        if runs is not None:
            return bool(runs(changed))
        return place(arch, layout, changed, devices).fits

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


def _estimate_of(
    full: Placement,
    quant: str,
    opts: EstimateOptions,
    layout: WeightsLayout,
    memory: int,
    **rest: Any,
) -> Estimate:
    """An Estimate of a placement: the memory it takes on its devices summed; `rest` says the
    verdict, mode and what differs between the GPU and the CPU-only estimate."""
    return Estimate(
        quant=quant,
        ctx=opts.ctx,
        file_bytes=layout.file_bytes,
        weights_bytes=sum(d.weights_bytes for d in full.devices),
        kv_bytes=sum(d.kv_bytes for d in full.devices),
        compute_bytes=sum(d.compute_bytes for d in full.devices),
        overhead_bytes=sum(d.overhead_bytes for d in full.devices),
        memory_bytes=memory,
        devices=full.devices,
        exact=layout.exact,
        **rest,
    )


@dataclass
class _Run:
    """One mode tried: its placement on the GPUs (None for cpu mode on the CPU build), the RAM
    it needs and its verdict."""

    mode: str
    placement: Placement | None
    ram_bytes: int
    verdict: str
    note: str | None = None


def estimate(
    arch: ModelArch,
    layout: WeightsLayout,
    quant: str,
    opts: EstimateOptions,
    devices: list[Device],
    *,
    host_memory_bytes: int | None = None,
    mode: str = "auto",
) -> Estimate:
    """One quant on these devices, in `mode` (MODE_CHOICES; auto: the best mode it runs in)."""
    if not devices:
        raise ValueError("estimate needs at least one device")
    if mode not in MODE_CHOICES:
        raise ValueError(f"mode is one of {', '.join(MODE_CHOICES)}, not {mode!r}")
    if all(d.host for d in devices):
        return _estimate_on_host(
            arch,
            layout,
            quant,
            opts=opts,
            devices=devices,
            host_memory_bytes=host_memory_bytes,
            mode=mode,
        )
    full = place(arch, layout, opts, devices)
    memory = sum(d.memory_bytes for d in devices)
    fractions = split_fractions(devices, opts.overhead_bytes + compute_bytes(arch, opts))
    result = _estimate_of(
        full,
        quant,
        opts,
        layout,
        memory,
        verdict=verdict(full.free_bytes, memory, full.fits),
        max_ctx=max_context(arch, layout, opts, devices),
        tensor_split=tensor_split_arg(fractions) if len(devices) > 1 else None,
        host_bytes=full.host_bytes,
        host_memory_bytes=host_memory_bytes,
        notes=list(layout.notes),
        mode="gpu",
        n_layer=arch.n_layer,
    )
    gpu_ram = ram_need(full, devices)
    result.verdict = worst(result.verdict, ram_verdict(gpu_ram, host_memory_bytes))
    if result.verdict != "no" and mode in ("auto", "gpu"):
        result.n_gpu_layers = arch.n_layer + 1
        return result
    if mode == "gpu":
        return result
    if mode == "auto" and host_memory_bytes is None:
        # Without the RAM known (a --vram figure alone) no mode that puts part of the model in
        # RAM can be judged: all on the GPUs or nothing.
        return result
    tried = [
        run
        for name in (MODES[1:] if mode == "auto" else (mode,))
        if (
            run := _try_mode(
                name,
                arch,
                layout=layout,
                opts=opts,
                devices=devices,
                host_memory_bytes=host_memory_bytes,
            )
        )
        is not None
    ]
    chosen = next((r for r in tried if r.verdict != "no"), None)
    if chosen is None:
        # Nothing runs: the full placement stays shown, with why each other mode does not.
        result.notes += [r.note for r in tried if r.note]
        if mode != "auto":
            result.mode, result.verdict = mode, "no"
        return result
    return _as_mode(
        result,
        chosen,
        arch=arch,
        layout=layout,
        opts=opts,
        devices=devices,
        host_memory_bytes=host_memory_bytes,
    )


def _try_mode(
    mode: str,
    arch: ModelArch,
    *,
    layout: WeightsLayout,
    opts: EstimateOptions,
    devices: list[Device],
    host_memory_bytes: int | None,
) -> _Run | None:
    """The placement of a mode on GPUs (the smallest --n-cpu-moe / the largest -ngl that leaves
    each GPU OFFLOAD_MARGIN free, else one that fits at all) and its verdict; None for a mode
    that does not apply (moe-offload for a dense model)."""
    n_layer = arch.n_layer
    memory = sum(d.memory_bytes for d in devices)
    if mode == "cpu":
        placement = place(arch, layout, opts, devices, n_gpu_layers=0)
        # The CPU build's figures (every tensor, KV and compute in RAM) instead of the GPU
        # placement's host buffers; an integrated GPU's own share on top.
        need = cpu_ram_bytes(arch, layout, opts) + ram_need(placement, devices)
        need -= placement.host_bytes
        said = ram_verdict(need, host_memory_bytes)
        note = None
        if said == "no":
            note = f"Everything in system RAM (cpu mode) needs {need / GIB:.1f} GiB of RAM" + (
                f", more than the {_usable_text(host_memory_bytes)}." if host_memory_bytes else "."
            )
        return _Run("cpu", placement, need, said, note)
    if mode == "moe-offload":
        if not (arch.is_moe and layout.experts_total):
            return _Run(mode, None, 0, "no", "moe-offload needs a mixture-of-experts model.")

        def moved(n: int) -> Placement:
            return place(arch, layout, opts, devices, n_cpu_moe=n)

        n = _first_true(1, n_layer, lambda k: _leaves_margin(moved(k)))
        if n is None:
            n = _first_true(1, n_layer, lambda k: moved(k).fits)
        if n is None:
            return _Run(
                mode,
                None,
                0,
                "no",
                "Even with every expert in system RAM the rest does not fit the GPU memory.",
            )
        placement = moved(n)
        what = f"--n-cpu-moe {n} (the experts of the first {n} layers in system RAM)"
    else:  # hybrid

        def offloaded(k: int) -> Placement:
            return place(arch, layout, opts, devices, n_gpu_layers=k)

        n = _last_true(1, n_layer, lambda k: _leaves_margin(offloaded(k)))
        if n is None:
            n = _last_true(1, n_layer, lambda k: offloaded(k).fits)
        if n is None:
            return _Run(mode, None, 0, "no", "Not even one layer fits the GPU memory.")
        placement = offloaded(n)
        what = f"-ngl {n} ({n} of {n_layer + 1} layers on the GPUs, the rest in system RAM)"
    need = ram_need(placement, devices)
    gpu = "fits" if _leaves_margin(placement) else verdict(placement.free_bytes, memory, True)
    said = worst(gpu, ram_verdict(need, host_memory_bytes))
    note = None
    if said == "no":
        note = f"{what} would fit the GPU memory but needs {need / GIB:.1f} GiB of system RAM, " + (
            f"more than the {_usable_text(host_memory_bytes)}." if host_memory_bytes else "."
        )
    return _Run(mode, placement, need, said, note)


def _usable_text(host_memory_bytes: int | None) -> str:
    if host_memory_bytes is None:
        return "RAM"
    usable = host_memory_bytes - host_margin(host_memory_bytes)
    return (
        f"{usable / GIB:.1f} GiB usable ({host_memory_bytes / GIB:.1f} GiB available less "
        f"{host_margin(host_memory_bytes) / GIB:.1f} GiB kept free)"
    )


def _as_mode(
    result: Estimate,
    run: _Run,
    *,
    arch: ModelArch,
    layout: WeightsLayout,
    opts: EstimateOptions,
    devices: list[Device],
    host_memory_bytes: int | None,
) -> Estimate:
    """The estimate for the mode chosen: the GPUs' part of its split, the RAM it needs, and the
    largest context at which the same flags still run."""
    placement = run.placement
    assert placement is not None
    plans = placement.devices
    result.mode = run.mode
    result.verdict = run.verdict
    result.devices = plans
    result.weights_bytes = sum(d.weights_bytes for d in plans)
    result.kv_bytes = sum(d.kv_bytes for d in plans)
    result.compute_bytes = sum(d.compute_bytes for d in plans)
    result.overhead_bytes = sum(d.overhead_bytes for d in plans)
    result.host_bytes = run.ram_bytes
    ngl, n_cpu_moe = placement.n_gpu_layers, placement.n_cpu_moe
    result.n_gpu_layers = ngl if run.mode != "moe-offload" else arch.n_layer + 1
    result.n_cpu_moe = n_cpu_moe or None

    def runs(changed: EstimateOptions) -> bool:
        again = place(arch, layout, changed, devices, n_gpu_layers=ngl, n_cpu_moe=n_cpu_moe)
        if run.mode == "cpu":
            need = cpu_ram_bytes(arch, layout, changed)
            need += ram_need(again, devices) - again.host_bytes
            return ram_verdict(need, host_memory_bytes) != "no"
        return again.fits and ram_verdict(ram_need(again, devices), host_memory_bytes) != "no"

    result.max_ctx = max_context(arch, layout, opts, devices, runs)
    ram = f"{run.ram_bytes / GIB:.1f} GiB of system RAM"
    result.notes.append(
        {
            "moe-offload": f"Does not fit the GPU memory whole; with --n-cpu-moe {n_cpu_moe} the "
            f"experts of the first {n_cpu_moe} layers stay in system RAM ({ram}).",
            "hybrid": f"Does not fit the GPU memory whole; -ngl {ngl} puts {ngl} of "
            f"{arch.n_layer + 1} layers on the GPUs and runs the rest on the CPU ({ram}; slow).",
            "cpu": f"Runs on the CPU, all in system RAM ({ram}; slow).",
        }[run.mode]
    )
    if any(d.unified for d in devices) and run.mode != "cpu":
        result.notes.append(
            "The integrated GPU's memory beyond its carve-out is system RAM: counted in the RAM "
            "needed."
        )
    return result


def _estimate_on_host(
    arch: ModelArch,
    layout: WeightsLayout,
    quant: str,
    *,
    opts: EstimateOptions,
    devices: list[Device],
    host_memory_bytes: int | None,
    mode: str,
) -> Estimate:
    """The CPU build: the devices are the RAM itself, the mode is cpu."""
    full = place(arch, layout, opts, devices)
    memory = sum(d.memory_bytes for d in devices)
    available = memory if host_memory_bytes is None else host_memory_bytes

    def runs(changed: EstimateOptions) -> bool:
        total = place(arch, layout, changed, devices).devices[0].total_bytes
        return ram_verdict(total, available) != "no"

    total = sum(d.total_bytes for d in full.devices)
    said = ram_verdict(total, available)
    notes = list(layout.notes)
    if mode not in ("auto", "cpu"):
        said = "no"
        notes.append(f"There is no GPU to run in {mode} mode: only the CPU (cpu mode).")
    return _estimate_of(
        full,
        quant,
        opts,
        layout,
        memory,
        verdict=said,
        max_ctx=max_context(arch, layout, opts, devices, runs),
        n_gpu_layers=None,
        host_bytes=total,
        host_memory_bytes=available,
        notes=notes,
        mode="cpu" if mode == "auto" else mode,
        n_layer=arch.n_layer,
    )
