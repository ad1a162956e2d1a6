"""Predicted llama.cpp speed: prompt processing and generation tokens/s for a model, a quant and
a memory split, on the GPUs detection names (models/data/gpu_specs.json) and this host's CPU.

Generation reads every weight a token uses once: the bytes read per token over the memory
bandwidth of wherever they sit bound it. Per token

    t_gen = sum over GPUs (bytes on GPU i / (bandwidth_i x eff_tg[backend]))
          + bytes in RAM / (RAM bandwidth x eff_tg[cpu])

          + layers x c[backend]

with the GPUs one after the other (llama.cpp splits layers: a token passes through each GPU in
turn). For an MoE model only the experts a token uses count (n_expert_used of n_expert), and the
bandwidth term is divided by a further MoE factor (< 1: a token's experts are scattered small
matrices, read less efficiently than a dense layer's; fitted on the MoE points). c[backend] is the
time a layer costs whatever it reads (kernel launches, synchronisation): it is what bounds small
models.

Prompt processing is bound by compute: 2 x active parameters FLOPs per token over the FP16
throughput (x eff_pp[backend]); with weights in RAM and a GPU, llama.cpp copies those weights to
the GPU for each prompt batch (it offloads large batches), so add their bytes over the PCIe
link, per batch of n_ubatch tokens.

The efficiencies, per-layer times and MoE factors are fitted on published llama-bench results
(models/data/speed_calibration.json) through this same function (predict_speed on a TokenCost
built from each row), so what is calibrated is what is shipped; bench/speed_prediction.py prints
the fit and its leave-one-out error. No Textual, no printing:
functions return data."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from llama_wizard.detect.model import Cpu, Gpu
from llama_wizard.models.arch import ModelArch
from llama_wizard.models.params import layer_params
from llama_wizard.models.sizes import GIB
from llama_wizard.models.weights import WeightsLayout

DATA = Path(__file__).resolve().parent / "data"
GPU_SPECS_PATH = DATA / "gpu_specs.json"
CALIBRATION_PATH = DATA / "speed_calibration.json"

# PCIe 4.0 x16 as it is reached in practice (~25 of its 32 GB/s): what copies weights held in
# RAM to the GPU for each prompt batch. Not measured here; a PCIe 3.0 slot halves it.
PCIE_GBS = 25.0
DEFAULT_UBATCH = 512
# Used when no calibration point covers a backend (sycl, opencl...): the median over all
# backends' points is taken instead; these are the last resort if the data file is gone.
FALLBACK_EFFICIENCY = {"tg": 0.5, "pp": 0.3}
# The time a layer takes per generated token whatever it reads (kernel launches and
# synchronisation): used for a backend whose calibration points cannot fit it (fewer than
# MIN_POINTS_FOR_LAYER_FIT generation points), and if the data file is gone.
LAYER_SECONDS_GPU = 20e-6
LAYER_SECONDS_CPU = 40e-6
MIN_POINTS_FOR_LAYER_FIT = 3
# The per-layer times tried when fitting (seconds): 0 to 300 microseconds.
_LAYER_GRID = tuple(i * 5e-6 for i in range(61))
# What measure_ram_bandwidth reads as a share of the RAM's theoretical peak. The CPU points are
# calibrated against the peak (channels x transfer rate x 8 bytes: what a published result's
# machine description gives), while the product measures a multi-threaded numpy copy, which
# counts 2 bytes moved per byte copied although write-allocate makes the memory move 3, and
# which reaches 80-90 % of the peak at best: about 0.6 of the peak. An assumption, not fitted
# (no published CPU result states both); a measured figure is divided by it before use.
COPY_OF_PEAK = 0.6

Source = Literal["predicted", "measured"]


@dataclass(frozen=True)
class Speed:
    """Tokens per second for prompt processing and generation, and where the figures come from:
    `basis` says it in words (the measurement's date and test, or the prediction's numbers)."""

    prompt_tps: float | None
    generation_tps: float | None
    source: Source
    basis: str

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_tps": None if self.prompt_tps is None else round(self.prompt_tps, 1),
            "generation_tps": None
            if self.generation_tps is None
            else round(self.generation_tps, 1),
            "source": self.source,
            "basis": self.basis,
        }


# --- hardware ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bandwidth_gbs: float | None  # None: reads system RAM (an APU), at the host's bandwidth
    fp16_tflops: float
    unified: bool = False
    source: str = ""


@dataclass(frozen=True)
class _SpecRow:
    spec: GpuSpec
    pattern: re.Pattern[str]
    compute_units: int | None
    memory_gib: int | None


@lru_cache(maxsize=1)
def _spec_rows() -> tuple[_SpecRow, ...]:
    document = json.loads(GPU_SPECS_PATH.read_text())
    rows = []
    for row in document["gpus"]:
        spec = GpuSpec(
            name=row["name"],
            bandwidth_gbs=row.get("bandwidth_gbs"),
            fp16_tflops=float(row["fp16_tflops"]),
            unified=bool(row.get("unified", False)),
            source=row.get("source", ""),
        )
        rows.append(
            _SpecRow(
                spec,
                re.compile(row["match"], re.IGNORECASE),
                row.get("compute_units"),
                row.get("memory_gib"),
            )
        )
    return tuple(rows)


def gpu_spec_for_name(
    name: str, *, compute_units: int | None = None, memory_bytes: int | None = None
) -> GpuSpec | None:
    """The spec row for a GPU as detection names it (a product name shared by several cards,
    "RX 7900 XTX / 7900 XT / 7900 GRE", is told apart by memory size or compute units); None
    when the table does not know it."""
    memory_gib = round(memory_bytes / GIB) if memory_bytes else None
    for row in _spec_rows():
        if not row.pattern.search(name):
            continue
        if row.compute_units is not None and row.compute_units != compute_units:
            continue
        if row.memory_gib is not None and row.memory_gib != memory_gib:
            continue
        return row.spec
    return None


def gpu_spec(gpu: Gpu) -> GpuSpec | None:
    return gpu_spec_for_name(
        gpu.name, compute_units=gpu.compute_units, memory_bytes=gpu.vram_total_bytes
    )


@dataclass(frozen=True)
class CpuSpec:
    """The host as the prediction sees it: RAM bandwidth and matrix throughput, with how each
    was found (measured here, or assumed from the CPU's description)."""

    bandwidth_gbs: float
    tflops: float
    basis: str
    measured: bool = False

    @property
    def peak_gbs(self) -> float:
        """The RAM's theoretical peak, which the CPU efficiency is calibrated against: a measured
        copy bandwidth over COPY_OF_PEAK, an assumed figure (already a peak) as it is."""
        return self.bandwidth_gbs / COPY_OF_PEAK if self.measured else self.bandwidth_gbs


# Sustained FP32 FLOPs per core per cycle: two FMA pipes of the widest vector unit.
_FLOPS_PER_CYCLE = (("avx512f", 64), ("avx2", 32), ("neon", 16))
ASSUMED_GHZ = 3.0
# RAM bandwidth when nothing was measured: two DDR4-3200 channels (51.2 GB/s peak) as most
# desktops and small servers have; servers with more channels are faster, laptops slower.
ASSUMED_RAM_GBS = 51.2


def cpu_tflops(cpu: Cpu) -> float:
    per_cycle = next((n for flag, n in _FLOPS_PER_CYCLE if flag in cpu.flags), 16)
    return max(cpu.cores, 1) * per_cycle * ASSUMED_GHZ / 1000


def cpu_spec(cpu: Cpu, ram_gbs: float | None = None, ram_basis: str | None = None) -> CpuSpec:
    """The CPU with a RAM bandwidth: `ram_gbs` when measured (measure_ram_bandwidth), else the
    assumed dual-channel figure, said so in the basis."""
    tflops = cpu_tflops(cpu)
    if ram_gbs:
        return CpuSpec(ram_gbs, tflops, ram_basis or f"RAM {ram_gbs:.0f} GB/s measured", True)
    return CpuSpec(
        ASSUMED_RAM_GBS,
        tflops,
        f"RAM {ASSUMED_RAM_GBS:.0f} GB/s assumed (dual-channel DDR4-3200; not measured)",
    )


def measure_ram_bandwidth(
    seconds: float = 0.2, size_bytes: int = 64 * 1024 * 1024, threads: int | None = None
) -> float:
    """RAM bandwidth in GB/s: `threads` threads (default: one per core, at most 8) each copy a
    buffer larger than their share of any cache for about `seconds` (a copy reads and writes:
    2 x size per pass). numpy lets go of the GIL while it copies, so the threads run at once, as
    llama.cpp's do; one thread alone reads a fraction of what a machine with several memory
    channels delivers."""
    import threading

    import numpy as np

    count = threads or max(1, min(os.cpu_count() or 1, 8))
    ready = threading.Barrier(count + 1, timeout=30)
    moved = [0.0] * count

    def copy(slot: int) -> None:
        try:
            source = np.ones(size_bytes, dtype=np.uint8)
            target = np.empty_like(source)
            np.copyto(target, source)  # fault the pages in before timing
            ready.wait()
        except (MemoryError, threading.BrokenBarrierError):
            ready.abort()  # the others stop waiting; this thread adds nothing
            return
        passes = 0
        start = time.perf_counter()
        while True:
            np.copyto(target, source)
            passes += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and passes >= 2:
                break
        moved[slot] = 2 * size_bytes * passes / elapsed

    workers = [threading.Thread(target=copy, args=(slot,), daemon=True) for slot in range(count)]
    for worker in workers:
        worker.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait()
    for worker in workers:
        worker.join()
    return sum(moved) / 1e9


# --- what a token reads --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenCost:
    """Weight bytes a generated token reads, by where they sit (per GPU, in order, and in host
    RAM), the weights that sit in RAM in all (copied to the GPU per prompt batch), and the
    parameters a token multiplies (2 FLOPs each)."""

    gpu_bytes: tuple[int, ...]
    host_bytes: int
    active_params: float
    host_total_bytes: int = 0
    layers: int = 0
    moe: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(self.gpu_bytes) + self.host_bytes


def token_cost(
    arch: ModelArch,
    layout: WeightsLayout,
    *,
    n_gpus: int = 1,
    n_gpu_layers: int | None = None,
    n_cpu_moe: int = 0,
    fractions: list[float] | None = None,
    params: float | None = None,
) -> TokenCost:
    """Bytes a token reads on each of `n_gpus` GPUs and in RAM, for llama.cpp's split: the last
    `n_gpu_layers` repeating layers on the GPUs (all, and the output layer, when None or more
    than the model has), spread by `fractions` (-ts, in order; even when None), the experts of
    the first `n_cpu_moe` layers in RAM. n_gpus=0: the CPU build, everything in RAM.

    A layer's expert tensors are read only for the n_expert_used experts a token picks; the
    input embedding is one row per token (nothing). `params`: the model's parameters, every
    expert and embedding counted (models/params.model_params), for an architecture that does
    not name its feed-forward sizes (catalogue entries of dense models)."""
    n_layer = arch.n_layer
    used = arch.n_expert_used / arch.n_expert if arch.is_moe and arch.n_expert else 1.0
    ngl = n_layer if n_gpu_layers is None else max(0, min(n_gpu_layers, n_layer))
    if n_gpus <= 0:
        ngl = 0
    fractions = fractions or ([1 / n_gpus] * n_gpus if n_gpus > 0 else [])
    cumulative: list[float] = []
    running = 0.0
    for f in fractions:
        running += f
        cumulative.append(running)
    gpu = [0.0] * max(n_gpus, 0)
    host = 0.0
    host_total = 0
    first_gpu = n_layer - ngl
    for il in range(n_layer):
        experts = layout.layer_experts[il]
        dense = layout.layers[il] - experts
        read_experts = experts * used
        if il < first_gpu:
            host += dense + read_experts
            host_total += layout.layers[il]
            continue
        position = (il - first_gpu) / max(ngl, 1)
        index = next((i for i, c in enumerate(cumulative) if position < c - 1e-9), n_gpus - 1)
        gpu[index] += dense
        if il < n_cpu_moe:
            host += read_experts
            host_total += experts
        else:
            gpu[index] += read_experts
    output = layout.output + layout.other
    if n_gpus > 0 and ngl == n_layer:
        gpu[-1] += output
    else:
        host += output
        host_total += output
    embedding = arch.n_vocab * arch.n_embd
    if params is None:
        params = float(layer_params(arch)[0] * n_layer + embedding)
    else:
        # The input embedding is a lookup, not a product; the output matrix (the same one when
        # tied) multiplies per token.
        params -= 0 if arch.tied_embeddings else embedding
    if arch.is_moe and arch.n_ff_exp:
        expert_params = 3 * arch.n_expert * arch.n_embd * arch.n_ff_exp * n_layer
        params -= expert_params * (1 - used)
    return TokenCost(
        tuple(int(b) for b in gpu), int(host), params, host_total, n_layer, bool(arch.is_moe)
    )


# --- the efficiencies, fitted on published results -----------------------------------------------

# A fitted table: per backend {"tg": generation efficiency, "pp": prompt efficiency, "layer_s":
# seconds a layer costs per generated token}; "*" for backends without points; "moe": the MoE
# factors {"tg", "pp"} that multiply a backend's efficiency for a mixture-of-experts model.
Table = dict[str, dict[str, float]]


@dataclass(frozen=True)
class CalibrationPoint:
    gpu: str
    backend: str
    model: str
    size_gib: float
    params_b: float
    test: str
    value: float
    source: str
    fit: bool = True
    why_not: str = ""
    spec: GpuSpec | None = None
    bandwidth_gbs: float | None = None  # cpu rows: the RAM's theoretical peak (see `ram`)
    tflops: float | None = None
    n_layer: int = 0
    active_params_b: float | None = None  # MoE rows: the parameters a token multiplies

    @property
    def kind(self) -> str:
        return "tg" if self.test.startswith("tg") else "pp"

    @property
    def moe(self) -> bool:
        return self.active_params_b is not None

    def cost(self) -> TokenCost:
        """What a token of this row's model reads and multiplies, as token_cost would say for
        it: the whole file (dense) or its active share (MoE; the file's bits per weight taken as
        even across tensors, which llama-bench's size and params columns allow, no more)."""
        active = self.active_params_b if self.active_params_b is not None else self.params_b
        read = int(self.size_gib * GIB * active / self.params_b)
        on_cpu = self.backend == "cpu"
        return TokenCost(
            () if on_cpu else (read,),
            read if on_cpu else 0,
            active * 1e9,
            0,
            self.n_layer,
            self.moe,
        )

    def hardware(self) -> tuple[list[GpuSpec | None], CpuSpec] | None:
        """The GPU list and host predict_speed needs for this row; None when a figure is
        missing (no spec for the GPU, no bandwidth for a CPU)."""
        if self.backend == "cpu":
            if not self.bandwidth_gbs:
                return None
            peak = CpuSpec(self.bandwidth_gbs, self.tflops or 0.0, "peak", measured=False)
            return [], peak
        if self.spec is None or not self.spec.bandwidth_gbs:
            return None
        return [self.spec], CpuSpec(ASSUMED_RAM_GBS, 1.0, "unused", measured=False)


def load_calibration(path: Path | None = None) -> list[CalibrationPoint]:
    document = json.loads((path or CALIBRATION_PATH).read_text())
    points = []
    for row in document["points"]:
        override = row.get("spec")
        spec = None
        if override:
            spec = GpuSpec(
                row["gpu"],
                override.get("bandwidth_gbs"),
                float(override.get("fp16_tflops", 0)),
                source=override.get("source", ""),
            )
        elif row["backend"] != "cpu":
            spec = gpu_spec_for_name(row["gpu"])
        active = row.get("active_params_b")
        points.append(
            CalibrationPoint(
                gpu=row["gpu"],
                backend=row["backend"],
                model=row["model"],
                size_gib=float(row["size_gib"]),
                params_b=float(row["params_b"]),
                test=row["test"],
                value=float(row["value"]),
                source=row["source"],
                fit=bool(row.get("fit", True)),
                why_not=row.get("why_not", ""),
                spec=spec,
                bandwidth_gbs=row.get("bandwidth_gbs"),
                tflops=row.get("tflops"),
                n_layer=int(row.get("n_layer", 0)),
                active_params_b=None if active is None else float(active),
            )
        )
    return points


_UNIT: Table = {"*": {"tg": 1.0, "pp": 1.0, "layer_s": 0.0}, "moe": {"tg": 1.0, "pp": 1.0}}


def ideal_time(point: CalibrationPoint) -> float | None:
    """Seconds per token at 100 % efficiency with no per-layer cost, through predict_speed
    itself: bytes over bandwidth (generation) or 2 x active params over throughput (prompt)."""
    hardware = point.hardware()
    if hardware is None:
        return None
    gpus, cpu = hardware
    speed = predict_speed(point.cost(), gpus, cpu, point.backend, table=_UNIT)
    rate = speed.generation_tps if point.kind == "tg" else speed.prompt_tps
    return 1 / rate if rate else None


def ideal_rate(point: CalibrationPoint) -> float | None:
    """Tokens/s at 100 % efficiency with no per-layer cost (see ideal_time)."""
    seconds = ideal_time(point)
    return 1 / seconds if seconds else None


def predict_point(point: CalibrationPoint, table: Table) -> float | None:
    """The product's prediction for a calibration row with a fitted table."""
    hardware = point.hardware()
    if hardware is None:
        return None
    gpus, cpu = hardware
    speed = predict_speed(point.cost(), gpus, cpu, point.backend, table=table)
    return speed.generation_tps if point.kind == "tg" else speed.prompt_tps


def _log_error(points: list[tuple[float, float, int]], layer_s: float) -> float | None:
    """Sum of |log(predicted / measured)| over (ideal seconds, measured seconds, layers) with
    the given per-layer time and the efficiency that is then the median; None when the layer
    time alone exceeds a measured time."""
    ratios = []
    for ideal, measured, layers in points:
        rest = measured - layers * layer_s
        if rest <= 0:
            return None
        ratios.append(ideal / rest)
    eff = statistics.median(ratios)
    return sum(
        abs(math.log((ideal / eff + layers * layer_s) / measured))
        for ideal, measured, layers in points
    )


def _fit_layer_seconds(points: list[tuple[float, float, int]], fallback: float) -> float:
    """The per-layer time that best explains `points` (a grid search); `fallback` when there are
    too few points, or too few model sizes, to tell it from the efficiency."""
    if len(points) < MIN_POINTS_FOR_LAYER_FIT or len({round(p[0], 6) for p in points}) < 2:
        return fallback
    scored = [(e, c) for c in _LAYER_GRID if (e := _log_error(points, c)) is not None]
    return min(scored)[1] if scored else fallback


def fit_efficiencies(points: list[CalibrationPoint]) -> Table:
    """Fit the table on the points marked fit (see Table):

    - generation, per backend: the per-layer time c (a grid search minimising the log errors of
      the backend's dense points, when it has MIN_POINTS_FOR_LAYER_FIT of two sizes or more;
      else, for a GPU backend, the one c fitted on every GPU backend's dense points together,
      and LAYER_SECONDS_CPU for the CPU), then the efficiency: the median over its dense points
      of ideal / (measured - layers x c);
    - prompt, per backend: the median of ideal / measured over its dense points;
    - the MoE factors: the median over the MoE points of (their efficiency / their backend's
      dense efficiency), one for generation and one for prompt processing, all backends
      together (too few MoE points to fit per backend).

    Medians, so one odd result moves a figure little. Backends without dense points of a kind
    get the median over all backends."""
    timed: dict[str, dict[str, list[tuple[float, float, int]]]] = {}
    moe: list[tuple[CalibrationPoint, float]] = []
    for point in points:
        ideal = ideal_time(point) if point.fit else None
        if ideal is None:
            continue
        if point.moe:
            moe.append((point, ideal))
            continue
        entry = (ideal, 1 / point.value, point.n_layer)
        timed.setdefault(point.backend, {}).setdefault(point.kind, []).append(entry)
    gpu_tg = [e for b, k in timed.items() if b != "cpu" for e in k.get("tg", [])]
    shared_gpu = _fit_layer_seconds(gpu_tg, LAYER_SECONDS_GPU)
    fitted: Table = {}
    all_tg: list[float] = []
    all_pp: list[float] = []
    for backend, kinds in timed.items():
        fallback = LAYER_SECONDS_CPU if backend == "cpu" else shared_gpu
        tg = kinds.get("tg", [])
        c = _fit_layer_seconds(tg, fallback)
        row: dict[str, float] = {"layer_s": c}
        tg_ratios = [ideal / (t - n * c) for ideal, t, n in tg if t - n * c > 0]
        if tg_ratios:
            row["tg"] = statistics.median(tg_ratios)
            all_tg.extend(tg_ratios)
        pp_ratios = [ideal / t for ideal, t, _n in kinds.get("pp", [])]
        if pp_ratios:
            row["pp"] = statistics.median(pp_ratios)
            all_pp.extend(pp_ratios)
        fitted[backend] = row
    overall = {
        "tg": statistics.median(all_tg) if all_tg else FALLBACK_EFFICIENCY["tg"],
        "pp": statistics.median(all_pp) if all_pp else FALLBACK_EFFICIENCY["pp"],
        "layer_s": shared_gpu,
    }
    fitted["*"] = overall
    for backend, row in fitted.items():
        if backend == "*":
            continue
        row.setdefault("tg", overall["tg"])
        row.setdefault("pp", overall["pp"])
    factors: dict[str, list[float]] = {"tg": [], "pp": []}
    for point, ideal in moe:
        row = fitted.get(point.backend, overall)
        if point.kind == "tg":
            c = row.get("layer_s", LAYER_SECONDS_CPU if point.backend == "cpu" else shared_gpu)
            rest = 1 / point.value - point.n_layer * c
            if rest > 0:
                factors["tg"].append(ideal / rest / row["tg"])
        else:
            factors["pp"].append(ideal * point.value / row["pp"])
    fitted["moe"] = {k: statistics.median(v) if v else 1.0 for k, v in factors.items()}
    return fitted


@lru_cache(maxsize=1)
def efficiencies() -> Table:
    try:
        return fit_efficiencies(load_calibration())
    except (OSError, ValueError, KeyError):
        return {"*": {**FALLBACK_EFFICIENCY, "layer_s": LAYER_SECONDS_GPU}}


def _row(table: Table, backend: str) -> dict[str, float]:
    return table.get(backend, table["*"])


def efficiency(backend: str, kind: str, table: Table | None = None) -> float:
    return _row(table or efficiencies(), backend)[kind]


def layer_seconds(backend: str, table: Table | None = None) -> float:
    row = _row(table or efficiencies(), backend)
    default = LAYER_SECONDS_CPU if backend == "cpu" else LAYER_SECONDS_GPU
    return row.get("layer_s", default)


def moe_factor(kind: str, table: Table | None = None) -> float:
    return (table or efficiencies()).get("moe", {}).get(kind, 1.0)


# --- the prediction ------------------------------------------------------------------------------


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB"


def predict_speed(
    cost: TokenCost,
    gpus: list[GpuSpec | None],
    cpu: CpuSpec,
    backend: str,
    *,
    n_ubatch: int = DEFAULT_UBATCH,
    table: Table | None = None,
) -> Speed:
    """Prompt and generation tokens/s for `cost` on `gpus` (aligned with cost.gpu_bytes; None
    for a GPU the spec table does not know) with `backend` (cuda, rocm, vulkan, metal, cpu).
    A GPU that is not known leaves the figures None, with the basis saying why. `table`: the
    fitted efficiencies (default: fitted on the bundled calibration set)."""
    table = table or efficiencies()
    moe_tg = moe_factor("tg", table) if cost.moe else 1.0
    moe_pp = moe_factor("pp", table) if cost.moe else 1.0
    eff_tg_cpu = efficiency("cpu", "tg", table) * moe_tg
    eff_pp_cpu = efficiency("cpu", "pp", table) * moe_pp
    ram_gbs = cpu.peak_gbs
    prompt_known = True
    gen_time = 0.0
    prompt_time = 0.0
    parts: list[str] = []
    total_bytes = cost.total_bytes or 1
    for spec, read in zip(gpus, cost.gpu_bytes, strict=True):
        if not read:
            continue
        if spec is None:
            return Speed(None, None, "predicted", "no speed: a GPU of this split is not in the "
                         "spec table (models/data/gpu_specs.json)")  # fmt: skip
        bandwidth = spec.bandwidth_gbs or (ram_gbs if spec.unified else None)
        if not bandwidth:
            return Speed(None, None, "predicted", f"no speed: {spec.name}'s bandwidth is unknown")
        eff_tg = efficiency(backend, "tg", table) * moe_tg
        eff_pp = efficiency(backend, "pp", table) * moe_pp
        gen_time += read / (bandwidth * 1e9 * eff_tg)
        share = read / total_bytes
        if spec.fp16_tflops:
            prompt_time += 2 * cost.active_params * share / (spec.fp16_tflops * 1e12 * eff_pp)
        else:
            prompt_known = False
        parts.append(f"{bandwidth:.0f} GB/s × {eff_tg:.2f} over {_gb(read)} ({spec.name})")
    if cost.host_bytes:
        gen_time += cost.host_bytes / (ram_gbs * 1e9 * eff_tg_cpu)
        parts.append(f"{ram_gbs:.0f} GB/s × {eff_tg_cpu:.2f} over "
                     f"{_gb(cost.host_bytes)} in RAM")  # fmt: skip
        known = [s for s in gpus if s is not None]
        if any(cost.gpu_bytes) and known:
            # llama.cpp runs large batches on the GPU: the weights held in RAM cross PCIe once
            # per batch, and their FLOPs run at the GPU's rate.
            prompt_time += cost.host_total_bytes / (PCIE_GBS * 1e9) / max(n_ubatch, 1)
            share = cost.host_bytes / total_bytes
            rate = known[0].fp16_tflops * 1e12 * efficiency(backend, "pp", table) * moe_pp
            prompt_time += 2 * cost.active_params * share / rate
        elif cpu.tflops:
            prompt_time += 2 * cost.active_params / (cpu.tflops * 1e12 * eff_pp_cpu)
    if gen_time <= 0:
        return Speed(None, None, "predicted", "no speed: the model reads no bytes")
    basis = "predicted: " + " + ".join(parts)
    # A token runs about ten kernels per layer whatever their size: for a small model that, not
    # the bytes, is most of the time (fitted per backend; see fit_efficiencies).
    per_layer = layer_seconds(backend, table)
    if cost.layers and per_layer:
        gen_time += cost.layers * per_layer
        basis += f" + {cost.layers} layers × {per_layer * 1e6:.0f} µs"
    basis += " per token"
    if cost.moe and moe_tg != 1.0:
        basis += f" (MoE: efficiency × {moe_tg:.2f})"
    if cost.host_bytes and cpu.measured:
        basis += f"; RAM peak taken as the measured {cpu.bandwidth_gbs:.0f} GB/s ÷ {COPY_OF_PEAK}"
    elif cost.host_bytes:
        basis += f"; {cpu.basis}"
    return Speed(
        1 / prompt_time if prompt_time > 0 and prompt_known else None,
        1 / gen_time,
        "predicted",
        basis,
    )


BACKEND_BY_VENDOR = {"nvidia": "cuda", "amd": "rocm", "intel": "vulkan", "apple": "metal"}


def backend_of(output_backend: str | None, gpus: list[Gpu]) -> str:
    """The llama.cpp backend a build output runs on (the plan's `backend`: cuda, rocm, vulkan,
    metal, cpu), else the GPUs' vendor's usual one; cpu without GPUs."""
    if output_backend:
        name = output_backend.lower()
        for known in ("cuda", "rocm", "vulkan", "metal", "cpu"):
            if known in name:
                return known
    if not gpus:
        return "cpu"
    return BACKEND_BY_VENDOR.get(gpus[0].vendor, "vulkan")


# --- the host's RAM bandwidth, measured once per machine -----------------------------------------


def ram_bandwidth_cached(cache_file: Path, key: str, *, measure: bool = True) -> float | None:
    """This machine's RAM bandwidth (GB/s) from `cache_file` (JSON {key: {"gbs", "at"}}), measured
    (~0.2 s) and stored when missing and `measure`; None when neither. A cache that cannot be
    read is measured again; one that cannot be written is not an error."""
    data: dict[str, Any] = {}
    try:
        loaded = json.loads(cache_file.read_text())
        if isinstance(loaded, dict):
            data = loaded
    except (OSError, ValueError):
        pass
    entry = data.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("gbs"), (int, float)) and entry["gbs"] > 0:
        return float(entry["gbs"])
    if not measure:
        return None
    gbs = measure_ram_bandwidth()
    if not math.isfinite(gbs) or gbs <= 0:
        return None
    data[key] = {"gbs": round(gbs, 2), "at": time.time()}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return gbs
