"""The speed prediction (models/speed.py): GPU specs for every bundled profile, the bytes a token
reads in each split, the prediction's arithmetic, and the calibration against published
llama-bench results (bench/speed_prediction.py)."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from bench import speed_prediction
from llama_wizard.detect.model import Cpu
from llama_wizard.detect.simulate import list_profiles
from llama_wizard.models.arch import arch_from_metadata
from llama_wizard.models.gguf_header import read_local
from llama_wizard.models.sizes import GIB
from llama_wizard.models.speed import (
    COPY_OF_PEAK,
    CpuSpec,
    GpuSpec,
    TokenCost,
    backend_of,
    cpu_spec,
    efficiency,
    fit_efficiencies,
    gpu_spec,
    gpu_spec_for_name,
    ideal_rate,
    layer_seconds,
    load_calibration,
    measure_ram_bandwidth,
    moe_factor,
    predict_point,
    predict_speed,
    ram_bandwidth_cached,
    token_cost,
)
from llama_wizard.models.weights import layout_from_tensors
from llama_wizard.tui.machine import open_machine
from tests.gguf_factory import MOE_SMALL, write_gguf


def _inventory(profile: str):  # type: ignore[no-untyped-def]
    with open_machine(None, profile) as machine:
        return machine.detect()


@pytest.mark.parametrize("profile", list_profiles())
def test_every_bundled_gpu_has_a_spec(profile: str) -> None:
    inventory = _inventory(profile)
    for gpu in inventory.gpus:
        spec = gpu_spec(gpu)
        assert spec is not None, f"{profile}: no spec row for {gpu.name!r}"
        assert spec.fp16_tflops > 0
        assert spec.bandwidth_gbs or spec.unified
        assert spec.source.startswith("https://")


def test_shared_product_names_are_told_apart() -> None:
    name = "AMD Radeon RX 7900 XTX / 7900 XT / 7900 GRE"
    xtx = gpu_spec_for_name(name, memory_bytes=24 * GIB)
    xt = gpu_spec_for_name(name, memory_bytes=20 * GIB)
    gre = gpu_spec_for_name(name, memory_bytes=16 * GIB)
    assert xtx and xt and gre
    assert (xtx.bandwidth_gbs, xt.bandwidth_gbs, gre.bandwidth_gbs) == (960, 800, 576)
    rx6800 = gpu_spec_for_name("AMD Radeon RX 6800 XT", compute_units=60)
    assert rx6800 is not None and rx6800.name == "AMD Radeon RX 6800"
    mi60 = gpu_spec_for_name("AMD Instinct MI60 / MI50", compute_units=64)
    mi50 = gpu_spec_for_name("AMD Instinct MI60 / MI50", compute_units=60)
    assert mi60 and mi50 and mi60.fp16_tflops > mi50.fp16_tflops
    assert gpu_spec_for_name("Apple M2 Ultra GPU") is not None
    assert gpu_spec_for_name("Some GPU nobody has heard of") is None


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = write_gguf(tmp_path_factory.mktemp("speed") / "moe.gguf", MOE_SMALL)
    header = read_local(path)
    arch = arch_from_metadata(header.metadata)
    return arch, layout_from_tensors(arch, header.tensors, path.stat().st_size)


def test_moe_token_reads_only_the_used_experts(moe_model) -> None:  # type: ignore[no-untyped-def]
    arch, layout = moe_model
    cost = token_cost(arch, layout, n_gpus=1)
    experts = layout.experts_total
    assert experts > 0
    unused = experts * (1 - arch.n_expert_used / arch.n_expert)
    whole = layout.gpu_total
    assert cost.host_bytes == 0
    assert cost.gpu_bytes[0] == pytest.approx(whole - unused, abs=arch.n_layer + 1)
    # Experts of the first layer in RAM: what a token reads of them moves to the host.
    offload = token_cost(arch, layout, n_gpus=1, n_cpu_moe=1)
    moved = layout.layer_experts[0] * arch.n_expert_used / arch.n_expert
    assert offload.host_bytes == pytest.approx(moved, abs=2)
    assert offload.total_bytes == pytest.approx(cost.total_bytes, abs=4)
    assert offload.host_total_bytes == layout.layer_experts[0]


def test_hybrid_and_cpu_splits(moe_model) -> None:  # type: ignore[no-untyped-def]
    arch, layout = moe_model
    full = token_cost(arch, layout, n_gpus=2)
    assert all(full.gpu_bytes) and full.host_bytes == 0
    hybrid = token_cost(arch, layout, n_gpus=1, n_gpu_layers=1)
    # The first layer and the output layer stay in RAM (-ngl 1 of 2 offloads the last one).
    assert hybrid.host_bytes > 0 and hybrid.gpu_bytes[0] > 0
    assert hybrid.total_bytes == pytest.approx(full.total_bytes, abs=4)
    cpu = token_cost(arch, layout, n_gpus=0)
    assert cpu.gpu_bytes == () and cpu.host_bytes == pytest.approx(full.total_bytes, abs=4)


def test_prediction_is_the_bandwidth_formula() -> None:
    gpu = GpuSpec("test GPU", 1000.0, 100.0)
    host = CpuSpec(50.0, 1.0, "RAM 50 GB/s measured", True)
    cost_gpu = _cost(gpu_bytes=(4 * 10**9,), host_bytes=0)
    speed = predict_speed(cost_gpu, [gpu], host, "cuda")
    expected = 1000e9 * efficiency("cuda", "tg") / 4e9
    assert speed.generation_tps == pytest.approx(expected)
    assert speed.prompt_tps == pytest.approx(100e12 * efficiency("cuda", "pp") / (2 * 7e9))
    assert speed.source == "predicted"
    assert "1000 GB/s" in speed.basis and "4.0 GB" in speed.basis
    # A quarter of the bytes in RAM: that part at the RAM's bandwidth, which dominates.
    hybrid = predict_speed(_cost(gpu_bytes=(3 * 10**9,), host_bytes=10**9), [gpu], host, "cuda")
    # A measured RAM figure (a copy) is taken as COPY_OF_PEAK of the peak the CPU efficiency is
    # calibrated against.
    assert host.peak_gbs == pytest.approx(50.0 / COPY_OF_PEAK)
    ram = host.peak_gbs * 1e9
    slow = 3e9 / (1000e9 * efficiency("cuda", "tg")) + 1e9 / (ram * efficiency("cpu", "tg"))
    assert hybrid.generation_tps == pytest.approx(1 / slow)
    assert hybrid.generation_tps is not None and speed.generation_tps is not None
    assert hybrid.generation_tps < speed.generation_tps / 2
    assert hybrid.prompt_tps is not None and speed.prompt_tps is not None
    assert hybrid.prompt_tps < speed.prompt_tps
    # An APU reads system RAM: the host's bandwidth.
    apu = GpuSpec("APU", None, 16.0, unified=True)
    shared = predict_speed(cost_gpu, [apu], host, "vulkan")
    assert shared.generation_tps == pytest.approx(ram * efficiency("vulkan", "tg") / 4e9)
    unknown = predict_speed(cost_gpu, [None], host, "cuda")
    assert unknown.generation_tps is None and "spec table" in unknown.basis


def _cost(gpu_bytes: tuple[int, ...], host_bytes: int):  # type: ignore[no-untyped-def]
    from llama_wizard.models.speed import TokenCost

    return TokenCost(gpu_bytes, host_bytes, 7e9, host_bytes)


def test_cpu_spec_says_what_was_assumed() -> None:
    cpu = Cpu("AMD EPYC", "x86_64", 16, 32, ["avx2", "avx512f"])
    assumed = cpu_spec(cpu)
    assert not assumed.measured and "assumed" in assumed.basis
    measured = cpu_spec(cpu, 80.0)
    assert measured.measured and measured.bandwidth_gbs == 80.0
    assert measured.tflops == pytest.approx(16 * 64 * 3.0 / 1000)
    assert backend_of("rocm-gfx906", []) == "rocm"
    assert backend_of(None, []) == "cpu"


def test_ram_bandwidth_is_measured_once_and_cached(tmp_path: Path) -> None:
    gbs = measure_ram_bandwidth(seconds=0.05, size_bytes=32 * 1024 * 1024)
    assert 0.5 < gbs < 2000
    cache = tmp_path / "ram.json"
    first = ram_bandwidth_cached(cache, "machine-a")
    assert first is not None and cache.is_file()
    cache.write_text(cache.read_text().replace(str(round(first, 2)), "123.0"))
    assert ram_bandwidth_cached(cache, "machine-a") == 123.0  # from the cache, not measured
    assert ram_bandwidth_cached(cache, "machine-b", measure=False) is None
    cache.write_text("not json")
    assert ram_bandwidth_cached(cache, "machine-a") not in (None, 123.0)


def test_calibration_points_have_sources_and_specs() -> None:
    points = load_calibration()
    assert len(points) >= 20
    backends = {p.backend for p in points if p.fit}
    assert {"cuda", "rocm", "vulkan", "metal", "cpu"} <= backends
    # MoE models are calibrated too, on a GPU and on a CPU, each with its active parameters.
    moe = [p for p in points if p.fit and p.moe]
    assert {p.backend == "cpu" for p in moe} == {True, False}
    assert all(0 < (p.active_params_b or 0) < p.params_b for p in moe)
    # CPU rows carry the RAM's peak and say where it comes from.
    for point in points:
        if point.backend == "cpu" and point.fit:
            assert point.bandwidth_gbs and point.tflops
    assert all(p.n_layer > 0 for p in points)
    # Every point left out of the fit says why (the CPU's, bound by per-token overhead, too).
    assert all(p.why_not for p in points if not p.fit)
    for point in points:
        assert point.value > 0 and point.size_gib > 0 and point.params_b > 0
        assert re.match(r"(pp|tg)\d*", point.test)
        assert point.source.startswith(("https://", "/work/shared/", "measured on"))
        if point.fit:
            assert ideal_rate(point) is not None, f"no spec for {point.gpu}"


def test_calibration_report_meets_the_fitted_targets() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        errors, _ok = speed_prediction.report(load_calibration())
    text = out.getvalue()
    assert "leave-one-out" in text
    medians = {}
    for kind in ("tg", "pp"):
        line = next(t for t in text.splitlines() if t.strip().startswith(f"{kind} all"))
        numbers = [float(n) for n in re.findall(r"\d+", line.split("|")[0].split("all")[1])]
        medians[kind] = numbers[0]
    # The fitted (in-sample) and the leave-one-out medians meet the targets (README
    # "How close the speed prediction is").
    assert medians["tg"] <= 25
    assert medians["pp"] <= 35
    assert _ok
    assert set(errors) >= {"cuda", "rocm", "metal", "vulkan", "cpu"}
    for group in ("dense-gpu", "moe-gpu", "dense-cpu", "moe-cpu"):
        assert f"tg {group}" in text


def test_calibration_goes_through_the_product_prediction() -> None:
    """What is fitted is what is shipped: a calibration row's prediction is predict_speed on the
    row's TokenCost, per-layer time and MoE factor included."""
    points = load_calibration()
    table = fit_efficiencies(points)
    point = next(p for p in points if p.fit and p.moe and p.kind == "tg" and p.backend != "cpu")
    cost = point.cost()
    assert cost.moe and cost.layers == point.n_layer
    ideal = ideal_rate(point)
    assert ideal is not None
    expected = 1 / (
        1 / (ideal * efficiency(point.backend, "tg", table) * moe_factor("tg", table))
        + point.n_layer * layer_seconds(point.backend, table)
    )
    assert predict_point(point, table) == pytest.approx(expected)
    # The per-layer time is what bounds a small model: more layers, same bytes, slower.
    gpu = GpuSpec("test GPU", 1000.0, 100.0)
    host = CpuSpec(50.0, 1.0, "RAM 50 GB/s measured", True)
    few = predict_speed(TokenCost((10**8,), 0, 1e8, 0, 4), [gpu], host, "cuda")
    many = predict_speed(TokenCost((10**8,), 0, 1e8, 0, 64), [gpu], host, "cuda")
    assert few.generation_tps and many.generation_tps
    assert many.generation_tps < few.generation_tps
    assert "64 layers" in many.basis
    # An MoE cost is read at the MoE factor's efficiency.
    dense = predict_speed(TokenCost((4 * 10**9,), 0, 7e9), [gpu], host, "cuda")
    sparse = predict_speed(TokenCost((4 * 10**9,), 0, 7e9, moe=True), [gpu], host, "cuda")
    assert dense.generation_tps and sparse.generation_tps
    assert sparse.generation_tps == pytest.approx(dense.generation_tps * moe_factor("tg"))
