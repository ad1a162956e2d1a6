"""Run modes (gpu, moe-offload, hybrid, cpu): each mode's memory split and flags, `fit` and
`plan` on every bundled profile (a CPU-only machine and an APU among them), and the layer
assignment the estimate assumes checked against real llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wizard.detect.simulate import list_profiles
from llama_wizard.models.buffers import parse_buffers, parse_placement
from llama_wizard.models.choose import LaunchSettings, devices_from_gpus, fit_model
from llama_wizard.models.estimate import (
    MODE_CHOICES,
    MODES,
    OFFLOAD_MARGIN,
    Device,
    EstimateOptions,
    estimate,
    gpu_layer_indices,
    host_margin,
    place,
    ram_verdict,
)
from llama_wizard.models.sizes import GIB, MIB
from llama_wizard.models.source import resolve_model
from llama_wizard.tui.cli.options import RUN_MODES
from tests.gguf_factory import DENSE_SMALL, MOE_SMALL, write_gguf
from tests.helpers import run_cli
from tests.llamacpp import fixture_llamacpp_bin  # noqa: F401
from tests.nix_fixtures import fixture_flake

RECORDED = Path(__file__).resolve().parent / "fixtures" / "llamacpp" / "0c1e570-rpc"
MOE_4 = MOE_SMALL.with_(name="small qwen3moe, 4 layers (synthetic)", layers=4)
DENSE_4 = DENSE_SMALL.with_(name="Qwen3-0.6B-shaped, 4 layers (synthetic)", layers=4)

CATALOGUE_MOE = "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF"
CATALOGUE_DENSE = "Qwen/Qwen3-8B-GGUF"


def _small(tmp_path: Path, spec) -> object:
    return resolve_model(str(write_gguf(tmp_path / f"{spec.layers}-{spec.arch}.gguf", spec)))


def test_the_command_line_offers_the_core_modes() -> None:
    assert RUN_MODES == MODE_CHOICES and MODES == ("gpu", "moe-offload", "hybrid", "cpu")


# --- each mode's memory split ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_splits_every_weight_between_the_gpu_and_ram(mode: str) -> None:
    source = resolve_model(CATALOGUE_MOE, "Q8_0")
    (candidate,) = source.candidates
    arch, layout = candidate.arch, candidate.layout
    devices = [Device("24G", 24 * GIB)]
    opts = EstimateOptions(ctx=8192)
    result = estimate(arch, layout, "Q8_0", opts, devices, host_memory_bytes=96 * GIB, mode=mode)
    full = place(arch, layout, opts, devices)
    if mode == "gpu":  # 32 GB of weights on a 24 GiB card: not all on the GPU
        assert (result.mode, result.verdict) == ("gpu", "no")
        assert result.total_bytes == full.devices[0].total_bytes
        return
    assert result.mode == mode and result.verdict != "no", result.notes
    if mode == "cpu":
        # Everything in RAM, as the CPU build allocates it; the GPU keeps only its overhead.
        assert result.weights_bytes == result.kv_bytes == 0 and result.n_gpu_layers == 0
        assert result.host_bytes >= layout.file_bytes * 0.95
        return
    gpu = result.devices[0]
    assert gpu.free_bytes >= OFFLOAD_MARGIN  # the GPU keeps llama.cpp --fit's margin
    moved = full.devices[0].weights_bytes - gpu.weights_bytes
    if mode == "moe-offload":
        n = result.n_cpu_moe
        assert moved == sum(layout.layer_experts[:n]) and result.n_gpu_layers == arch.n_layer + 1
        assert result.host_bytes == full.host_bytes + moved
    else:
        ngl = result.n_gpu_layers
        in_ram = arch.n_layer + 1 - ngl
        assert moved == sum(layout.layers[:in_ram]) and result.n_cpu_moe is None
        assert gpu.layers == ngl - 1  # the output layer is one of the N


def test_a_forced_mode_that_cannot_apply_says_why(tmp_path: Path) -> None:
    dense = resolve_model(CATALOGUE_DENSE, "Q4_K_M")
    report = fit_model(
        dense, [Device("24G", 24 * GIB)], 8192, host_memory_bytes=64 * GIB,
        settings=LaunchSettings(mode="moe-offload"),
    )  # fmt: skip
    (q4,) = report.quants
    assert q4.verdict == "no" and q4.mode == "moe-offload"
    assert any("mixture-of-experts" in n for n in q4.notes)
    cpu_only = [Device("system RAM (CPU)", 64 * GIB, host=True)]
    forced = fit_model(dense, cpu_only, 8192, settings=LaunchSettings(mode="hybrid"))
    assert forced.quants[0].verdict == "no" and "no GPU" in " ".join(forced.quants[0].notes)
    with pytest.raises(Exception, match="run mode"):
        LaunchSettings(mode="turbo")


def test_ram_keeps_two_gib_or_a_tenth_free() -> None:
    assert host_margin(8 * GIB) == 2 * GIB and host_margin(128 * GIB) == int(12.8 * GIB)
    assert ram_verdict(5 * GIB, 8 * GIB) == "tight"  # 6 GiB usable, 1 GiB left
    assert ram_verdict(int(6.5 * GIB), 8 * GIB) == "no"
    assert ram_verdict(2 * GIB, 8 * GIB) == "fits"
    assert ram_verdict(10**15, None) == "fits"  # unknown RAM is not judged


def test_too_little_ram_for_any_mode_is_no() -> None:
    source = resolve_model(CATALOGUE_MOE, "Q8_0")
    report = fit_model(source, [Device("8G", 8 * GIB)], 8192, host_memory_bytes=16 * GIB)
    (q8,) = report.quants
    assert q8.verdict == "no" and q8.mode == "gpu"
    assert any("system RAM" in note for note in q8.notes)


def test_an_apu_uses_vram_plus_gtt_and_counts_gtt_as_ram() -> None:
    from llama_wizard.detect.inventory import detect
    from llama_wizard.tui.machine import open_machine

    with open_machine(None, "780m-apu") as machine:
        inventory = detect(machine.root, timeout=5, env=machine.env)
    (apu,) = inventory.gpus
    assert apu.integrated
    (device,) = devices_from_gpus([apu])
    assert device.memory_bytes == apu.usable_bytes > apu.vram_total_bytes
    assert device.unified and device.dedicated_bytes == apu.vram_total_bytes
    report = fit_model(
        resolve_model(CATALOGUE_MOE, "Q3_K_M"), [device], 32768,
        host_memory_bytes=inventory.memory_available_bytes,
    )  # fmt: skip
    (q3,) = report.quants
    assert q3.mode == "moe-offload" and q3.verdict != "no"
    # The GTT the model takes is system RAM: counted in the RAM it needs.
    gpu_part = q3.devices[0].total_bytes - apu.vram_total_bytes
    assert q3.host_bytes >= gpu_part


# --- the flags of each mode -------------------------------------------------------------------


def _choice(mode: str, **more: object):
    from llama_wizard.models.choose import ModelChoice

    fields = dict(repo="a/b-GGUF", name="b", quant="Q4_K_M", files=["b.gguf"], ctx=4096,
                  max_ctx=None, verdict="fits", file_bytes=GIB, total_bytes=GIB,
                  memory_bytes=2 * GIB, flags=[], mode=mode)  # fmt: skip
    fields.update(more)
    return ModelChoice(**fields)  # type: ignore[arg-type]


def test_each_mode_has_its_flags() -> None:
    def placement(args: list[str]) -> list[str]:
        return [a for i, a in enumerate(args) if a in ("-ngl", "--n-cpu-moe")
                or (i and args[i - 1] in ("-ngl", "--n-cpu-moe"))]  # fmt: skip

    assert placement(_choice("gpu").launch_args()) == ["-ngl", "99"]
    moe = _choice("moe-offload", n_cpu_moe=12, n_gpu_layers=49)
    assert placement(moe.launch_args()) == ["-ngl", "99", "--n-cpu-moe", "12"]
    hybrid = _choice("hybrid", n_gpu_layers=30)
    assert placement(hybrid.launch_args()) == ["-ngl", "30"]
    assert placement(_choice("cpu", n_gpu_layers=0).launch_args()) == ["-ngl", "0"]


@pytest.mark.parametrize(
    ("profile", "model", "mode", "expected", "absent"),
    [
        ("rtx4090", "Qwen/Qwen3-8B-GGUF:Q4_K_M", None, ["-ngl", "99"], ["--fit", "--n-cpu-moe"]),
        ("rtx4090", "unsloth/Qwen3-30B-A3B-GGUF:Q8_0", None, ["-ngl", "99", "--n-cpu-moe"],
         ["--fit"]),
        ("rtx4090", "Qwen/Qwen3-8B-GGUF:Q4_K_M", "hybrid", ["-ngl"], ["--fit", "--n-cpu-moe"]),
        ("rtx4090", "Qwen/Qwen3-8B-GGUF:Q4_K_M", "cpu", ["-ngl", "0"], ["--fit"]),
        ("no-gpu", "Qwen/Qwen3-8B-GGUF:Q4_K_M", None, [], ["-ngl", "--fit", "--n-cpu-moe"]),
    ],
)  # fmt: skip
def test_the_plan_launches_the_mode(
    tmp_path: Path, profile: str, model: str, mode: str | None, expected: list[str],
    absent: list[str],
) -> None:  # fmt: skip
    flake = fixture_flake(tmp_path / "flake", "documented")
    argv = ["plan", "--simulate", profile, "--flake", flake, "--model", model, "--json"]
    result = run_cli(*argv, *(["--mode", mode] if mode else []))
    assert result.returncode == 0, result.stderr
    planned = json.loads(result.stdout)["model"]
    args = planned["launch_args"]
    for flag in expected:
        assert flag in args, (flag, args)
    for flag in absent:
        assert flag not in args, (flag, args)
    if "-ngl" in expected and len(expected) == 2:
        assert args[args.index("-ngl") + 1] == expected[1]
    if planned["mode"] == "hybrid":
        assert args[args.index("-ngl") + 1] == str(planned["n_gpu_layers"])
    if planned["mode"] == "moe-offload":
        assert args[args.index("--n-cpu-moe") + 1] == str(planned["n_cpu_moe"])
    assert planned["mode"] == (mode or planned["mode"]) and planned["verdict"] != "no"


# --- every bundled profile gets a verdict and a mode ------------------------------------------


def test_fit_gives_every_profile_a_verdict_and_mode() -> None:
    for profile in list_profiles():
        for model in (CATALOGUE_MOE, CATALOGUE_DENSE):
            result = run_cli("fit", model, "--simulate", profile, "--ctx", "8192", "--json")
            assert result.returncode == 0, (profile, result.stderr)
            document = json.loads(result.stdout)
            for row in document["quants"]:
                assert row["mode"] in MODES and row["verdict"] in ("fits", "tight", "no")
                assert {"n_gpu_layers", "n_cpu_moe", "host_bytes", "speed"} <= set(row)
        # Every profile has at least 14 GiB of RAM: an 8B model runs in some mode.
        assert any(row["verdict"] != "no" for row in document["quants"]), profile


def test_plan_gives_every_profile_a_model_with_a_mode(tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "flake", "documented")
    for profile in list_profiles():
        result = run_cli("plan", "--simulate", profile, "--flake", flake, "--json")
        if result.returncode != 0:
            # A machine the flake cannot build for says why (not a model question).
            assert "llama-wizard:" in result.stderr, (profile, result.stderr)
            continue
        model = json.loads(result.stdout)["model"]
        assert model is not None, profile
        assert model["mode"] in MODES and model["verdict"] in ("fits", "tight"), profile


def test_fit_on_a_machine_without_a_gpu_runs_in_ram() -> None:
    result = run_cli("fit", CATALOGUE_DENSE, "--simulate", "no-gpu")
    assert result.returncode == 0, result.stderr
    assert "system RAM (CPU)" in result.stdout and "CPU" in result.stdout
    assert "nothing to fit" not in result.stderr


def test_fit_list_keeps_every_repo_id_whole_at_80_columns() -> None:
    from llama_wizard.models.catalogue import load_catalogue

    result = run_cli("fit", "--list", env={**__import__("os").environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    for model in load_catalogue().models:
        assert model.repo in result.stdout, model.repo


# --- checked against real llama.cpp -----------------------------------------------------------


def _recorded(name: str) -> list[str]:
    return (RECORDED / name).read_text().splitlines()


@pytest.mark.parametrize(
    ("name", "spec", "ngl"), [("rpc-moe-ngl3.txt", MOE_4, 3), ("rpc-dense-ngl2.txt", DENSE_4, 2)]
)
def test_ngl_puts_the_output_and_the_last_layers_on_the_gpu_as_llamacpp_does(
    tmp_path: Path, name: str, spec, ngl: int
) -> None:
    lines = _recorded(name)
    found = parse_placement(lines)
    assert found.offloaded == ngl and found.layers_total == spec.layers + 1
    assert found.output_offloaded
    assert found.layers_on("RPC0") == gpu_layer_indices(spec.layers, ngl)
    assert found.layers_on("CPU") == list(range(spec.layers + 1 - ngl))
    (candidate,) = _small(tmp_path, spec).candidates
    split = place(candidate.arch, candidate.layout, EstimateOptions(ctx=512),
                  [Device("RPC0", 24 * GIB)], n_gpu_layers=ngl)  # fmt: skip
    gpu = split.devices[0]
    assert gpu.layers == ngl - 1
    buffers = parse_buffers(lines)
    rpc = next(b for b in buffers.sizes["model"] if b.startswith("RPC0"))
    assert buffers.sizes["model"][rpc] == pytest.approx(gpu.weights_bytes / MIB, abs=0.01)
    kv = next(b for b in buffers.sizes["KV"] if b.startswith("RPC0"))
    assert buffers.sizes["KV"][kv] == pytest.approx(gpu.kv_bytes / MIB, abs=0.01)


def test_n_cpu_moe_moves_the_experts_of_the_first_layers_as_llamacpp_does(tmp_path: Path) -> None:
    lines = _recorded("rpc-moe-ncmoe2.txt")
    found = parse_placement(lines)
    assert found.offloaded == 5 and found.layers_on("RPC0") == [0, 1, 2, 3, 4]
    assert found.overridden_layers() == [0, 1]
    assert {buft for _, buft in found.overridden.values()} == {"CPU"}
    assert sorted(n.split(".")[2] for n in found.overridden if n.startswith("blk.0.")) == [
        "ffn_down_exps", "ffn_gate_exps", "ffn_up_exps"]  # fmt: skip
    (candidate,) = _small(tmp_path, MOE_4).candidates
    layout = candidate.layout
    split = place(candidate.arch, layout, EstimateOptions(ctx=512), [Device("RPC0", 24 * GIB)],
                  n_cpu_moe=2)  # fmt: skip
    buffers = parse_buffers(lines)
    rpc = next(b for b in buffers.sizes["model"] if b.startswith("RPC0"))
    assert buffers.sizes["model"][rpc] == pytest.approx(split.devices[0].weights_bytes / MIB,
                                                        abs=0.01)  # fmt: skip
    moved = sum(mib for mib, _ in found.overridden.values())
    assert moved == sum(int(e / 3 / MIB) for e in layout.layer_experts[:2]) * 3


def test_the_cpu_build_ignores_ngl_but_applies_n_cpu_moe_recorded() -> None:
    found = parse_placement(_recorded("cpu-moe-ngl2-ncmoe1.txt"))
    assert found.offloaded is None and not found.output_offloaded
    assert found.layers_on("CPU") == [0, 1, 2, 3, 4]
    assert found.overridden_layers() == [0]


def test_the_real_cpu_build_moves_the_first_n_layers_experts(
    tmp_path: Path, llamacpp_bin: Path
) -> None:
    import subprocess

    model = write_gguf(tmp_path / "moe4.gguf", MOE_4)
    argv = [str(llamacpp_bin / "llama-completion"), "-m", str(model), "-n", "1", "-no-cnv",
            "-p", "hi", "-t", "2", "-s", "1", "-v", "-c", "512", "-fit", "off",
            "-ngl", "2", "--n-cpu-moe", "3"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    log = result.stderr.decode("utf-8", errors="replace").splitlines()
    assert result.returncode == 0, "\n".join(log[-20:])
    found = parse_placement(log)
    assert found.overridden_layers() == [0, 1, 2]  # the first N, as place() assumes
    assert found.layers_on("CPU") == list(range(MOE_4.layers + 1))  # no GPU: -ngl ignored
    # This build has the RPC backend (scripts/llamacpp, for the cluster), so llama.cpp counts
    # -ngl 2 as "offloaded 2/5 layers to GPU" with no device to put them on: the per-layer
    # lines above say where they are (the build without RPC printed no such line, as recorded
    # in cpu-moe-ngl2-ncmoe1.txt).
    assert found.offloaded == 2 and found.layers_total == MOE_4.layers + 1


def test_parse_placement_reads_the_older_wording() -> None:
    older = [
        "llm_load_tensors: offloading 32 repeating layers to GPU",
        "llm_load_tensors: offloading non-repeating layers to GPU",
        "llm_load_tensors: offloaded 33/33 layers to GPU",
    ]
    found = parse_placement(older)
    assert (found.offloaded, found.layers_total, found.repeating_offloaded) == (33, 33, 32)
    assert found.output_offloaded
