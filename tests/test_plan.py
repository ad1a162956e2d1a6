"""The build choice for each fixture machine, over the fixture flakes, with real `nix eval`.
Each expected value comes from the references; the source is in the comment beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.simulate import load_profile
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.nix.recommend import ChoiceError
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.plan import make_plan
from tests.helpers import run_cli
from tests.nix_fixtures import fixture_flake, nix_config_without_flakes


@pytest.fixture
def documented_flake(tmp_path: Path) -> str:
    return fixture_flake(tmp_path / "documented", "documented")


@pytest.fixture
def upstream_flake(tmp_path: Path) -> str:
    return fixture_flake(tmp_path / "upstream", "upstream")


def plan_for(simulated, profile, flake: str, **options):
    box = simulated(profile)
    machine = Machine(SystemRoot(box.root), box.env(), simulated=box.name)
    inventory = detect(machine.root, timeout=5, env=machine.env)
    return make_plan(machine, inventory, flake_ref=flake, **options)


def test_two_mi50s_build_rocm_gfx906(simulated, documented_flake) -> None:
    build = plan_for(simulated, "2x-mi50", documented_flake).build
    # flake.md: "nix build .#rocm-gfx906 # MI50, MI60" and HSA_OVERRIDE_GFX_VERSION=9.0.6
    # "Required for MI50".
    assert build.output == "rocm-gfx906" and build.rocm_targets is None
    assert build.env["HSA_OVERRIDE_GFX_VERSION"] == "9.0.6"
    # Both MI50s by UUID, in PCI order (rocminfo of ROCm issue 1535).
    assert build.env["ROCR_VISIBLE_DEVICES"] == "GPU-4f0a78a172e620fc,GPU-6e5e588172dc76b6"
    assert build.gpus == [0, 1]
    # gpu-detection.md §6: set only ROCR; HIP and CUDA indices are re-indexed after its mask.
    assert {"HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"} <= set(build.unset_env)
    assert build.build_argv[:3] == ["nix", "build", f"{documented_flake}#rocm-gfx906"]
    assert build.build_argv[-2] == "--out-link"
    assert any(a.output == "rocm" for a in build.alternatives)


def test_7900xtx_masks_the_raphael_igpu(simulated, documented_flake) -> None:
    build = plan_for(simulated, "7900xtx-raphael-igpu", documented_flake).build
    # gpu-detection.md pitfall 4: mask gfx1036 iGPUs next to a dGPU; flake.md rocm-gfx1100.
    assert build.output == "rocm-gfx1100"
    assert build.gpus == [0]
    assert build.env["ROCR_VISIBLE_DEVICES"] == "GPU-398a3f843a146602"
    assert "HSA_OVERRIDE_GFX_VERSION" not in build.env
    assert any("masked" in reason for reason in build.reasons)


def test_6700xt_runs_the_gfx1030_build_with_10_3_0(simulated, documented_flake) -> None:
    build = plan_for(simulated, "rx6700xt", documented_flake).build
    # gpu-detection.md §4: gfx1031 -> 10.3.0 (legacy-rocm-build#2720, ramalama#1129).
    assert build.output == "rocm-gfx1030"
    assert build.env["HSA_OVERRIDE_GFX_VERSION"] == "10.3.0"


def test_780m_apu_alone(simulated, documented_flake) -> None:
    build = plan_for(simulated, "780m-apu", documented_flake).build
    # §4: gfx1103 -> 11.0.0 only when the build lacks gfx1103 (this flake has no rocm-gfx1103
    # and nixpkgs does not build it); pitfall 1: APUs need GGML_CUDA_ENABLE_UNIFIED_MEMORY=1.
    assert build.output == "rocm-gfx1100"
    assert build.env["HSA_OVERRIDE_GFX_VERSION"] == "11.0.0"
    assert build.env["GGML_CUDA_ENABLE_UNIFIED_MEMORY"] == "1"
    assert build.gpus == [0]


def test_mi300x(simulated, documented_flake) -> None:
    build = plan_for(simulated, "mi300x", documented_flake).build
    assert build.output == "rocm-gfx942"  # flake.md: rocm-gfx942 for MI300A, MI300X, MI325X
    assert "HSA_OVERRIDE_GFX_VERSION" not in build.env


@pytest.mark.parametrize(("profile", "count"), [("rtx4090", 1), ("2x-h100", 2)])
def test_nvidia_cuda(simulated, documented_flake, profile: str, count: int) -> None:
    plan = plan_for(simulated, profile, documented_flake)
    build = plan.build
    assert build.output == "cuda"
    # gpu-detection.md §6 / pitfall 5: PCI_BUS_ID order and UUIDs.
    assert build.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    uuids = [g.uuid for g in plan.inventory.gpus]
    assert build.env["CUDA_VISIBLE_DEVICES"] == ",".join(uuids)
    assert len(build.gpus) == count
    assert "ROCR_VISIBLE_DEVICES" not in build.env


def test_gtx770_is_not_cuda(simulated, documented_flake) -> None:
    build = plan_for(simulated, "gtx770-old-driver", documented_flake).build
    # ollama docs: CUDA needs compute capability 5.0+; the GTX 770 is 3.0.
    assert build.output == "vulkan"
    assert any("3.0" in reason for reason in build.reasons)


def test_no_gpu_builds_default(simulated, documented_flake) -> None:
    build = plan_for(simulated, "no-gpu", documented_flake).build
    assert build.output == "default" and build.gpus == [] and build.env == {}


def test_intel_arc_uses_vulkan(simulated, documented_flake) -> None:
    assert plan_for(simulated, "intel-arc-a770", documented_flake).build.output == "vulkan"


def test_eight_mi50s_without_uuids_use_kfd_ordinals(simulated, documented_flake) -> None:
    build = plan_for(simulated, "8x-mi50-32gb", documented_flake).build
    assert build.output == "rocm-gfx906"
    assert build.env["ROCR_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"


def test_upstream_flake_builds_rocm_restricted_to_the_target(simulated, upstream_flake) -> None:
    build = plan_for(simulated, "2x-mi50", upstream_flake).build
    # DESIGN.md: for a missing per-gfx output build rocm.override { rocmGpuTargets = "gfxNNN"; }
    assert build.output == "rocm" and build.rocm_targets == ["gfx906"]
    assert "--impure" in build.build_argv and "--expr" in build.build_argv
    expression = build.build_argv[build.build_argv.index("--expr") + 1]
    assert 'rocmGpuTargets = "gfx906"' in expression
    assert any("restricted" in reason and "x" in reason for reason in build.reasons)


def test_restricted_build_really_builds_for_the_targets(simulated, upstream_flake, tmp_path):
    import subprocess

    profile = load_profile("2x-mi50")
    xtx = load_profile("7900xtx-raphael-igpu")
    profile["pci"].append(dict(xtx["pci"][0], bdf="0000:c3:00.0", card=3, render_minor=131))
    node = dict(xtx["kfd"]["nodes"][1], id=3)
    node["properties"] = dict(node["properties"], location_id=0xC300, drm_render_minor=131)
    profile["kfd"]["nodes"].append(node)
    profile["tools"] = {}
    build = plan_for(simulated, profile, upstream_flake).build
    # Several GPU families -> one build with each target (issue 3).
    assert build.rocm_targets == ["gfx906", "gfx1100"]
    argv = [*build.build_argv[:-1], str(tmp_path / "result")]
    subprocess.run(argv, check=True, capture_output=True, env=os.environ)
    assert (tmp_path / "result" / "gpu-targets").read_text().strip() == "gfx906;gfx1100"
    # The MI50s need 9.0.6 and the 7900 XTX nothing: a per-node override, by KFD node number.
    assert "HSA_OVERRIDE_GFX_VERSION" not in build.env
    assert build.env["HSA_OVERRIDE_GFX_VERSION_1"] == "9.0.6"
    assert build.env["HSA_OVERRIDE_GFX_VERSION_2"] == "9.0.6"
    assert "HSA_OVERRIDE_GFX_VERSION_3" not in build.env


def test_mixed_rdna2_gets_a_per_node_override(simulated, documented_flake) -> None:
    profile = load_profile("rx6800-raphael-igpu")
    xt = load_profile("rx6700xt")
    card = dict(xt["pci"][0], bdf="0000:0b:00.0", card=2, render_minor=130)
    profile["pci"].append(card)
    node = dict(xt["kfd"]["nodes"][1], id=3)
    node["properties"] = dict(node["properties"], location_id=0x0B00, drm_render_minor=130)
    profile["kfd"]["nodes"].append(node)
    plan = plan_for(simulated, profile, documented_flake)
    build = plan.build
    # gfx1030 native + gfx1031 via 10.3.0: one rocm-gfx1030 build, the override on node 3 only
    # (gpu-detection.md §5: the suffix is the KFD node id).
    assert build.output == "rocm-gfx1030"
    assert build.env.get("HSA_OVERRIDE_GFX_VERSION_3") == "10.3.0"
    assert "HSA_OVERRIDE_GFX_VERSION" not in build.env
    assert len(build.gpus) == 2  # the Raphael iGPU is masked


def test_amd_on_aarch64_uses_vulkan(simulated, documented_flake) -> None:
    profile = load_profile("rx6700xt")
    profile["arch"] = "aarch64"
    build = plan_for(simulated, profile, documented_flake).build
    assert build.system == "aarch64-linux"
    assert build.output == "vulkan"  # ramalama#2048: no ROCm on arm64


def test_flakes_disabled_adds_the_extra_flag(simulated, documented_flake, monkeypatch) -> None:
    monkeypatch.setenv("NIX_CONFIG", nix_config_without_flakes())
    plan = plan_for(simulated, "2x-mi50", documented_flake)
    assert plan.build.build_argv[:3] == [
        "nix", "--extra-experimental-features", "nix-command flakes",
    ]  # fmt: skip
    assert plan.build.output == "rocm-gfx906"  # the flake was still read, with the flag
    assert any("--extra-experimental-features" in reason for reason in plan.build.reasons)


def test_flake_outputs_are_cached_per_revision(simulated, documented_flake) -> None:
    first = plan_for(simulated, "no-gpu", documented_flake).flake_outputs
    second = plan_for(simulated, "no-gpu", documented_flake).flake_outputs
    assert not first.from_cache and second.from_cache
    flake = Path(documented_flake) / "flake.nix"
    flake.write_text(flake.read_text().replace("fails = ", "fails-too = standIn { variant = "
                                                "\"x\"; }; fails = "))  # fmt: skip
    third = plan_for(simulated, "no-gpu", documented_flake).flake_outputs
    assert not third.from_cache and "fails-too" in third.packages


def test_output_override_says_what_it_costs(simulated, documented_flake) -> None:
    build = plan_for(simulated, "2x-mi50", documented_flake, output="rocm").build
    assert build.output == "rocm" and build.recommended_output == "rocm-gfx906"
    assert any("architectures" in cost for cost in build.costs)
    cuda = plan_for(simulated, "2x-mi50", documented_flake, output="cuda").build
    assert any("No NVIDIA GPU" in cost for cost in cuda.costs)
    wrong = plan_for(simulated, "rx6700xt", documented_flake, output="rocm-gfx1100").build
    assert any("will not run" in cost for cost in wrong.costs)


def test_unknown_output_and_gpu_are_errors_with_a_fix(simulated, documented_flake) -> None:
    with pytest.raises(ChoiceError) as error:
        plan_for(simulated, "2x-mi50", documented_flake, output="rocm-gfx9999")
    assert "rocm-gfx906" in error.value.fix
    with pytest.raises(ChoiceError) as error:
        plan_for(simulated, "2x-mi50", documented_flake, gpu_indices=[5])
    assert "0 (AMD Instinct" in error.value.fix


def test_choosing_the_igpu_by_hand(simulated, documented_flake) -> None:
    build = plan_for(simulated, "7900xtx-raphael-igpu", documented_flake, gpu_indices=[0, 1]).build
    assert any("integrated" in cost for cost in build.costs)


def test_not_nixos_cuda_warns_before_the_build(simulated, documented_flake) -> None:
    plan = plan_for(simulated, "rtx4090", documented_flake)
    [warning] = [w for w in plan.build.warnings if w.code == "driver_path_missing"]
    assert "/run/opengl-driver/lib" in warning.message and "ln -sf" in warning.fix
    profile = load_profile("rtx4090")
    profile["files"]["/etc/NIXOS"] = ""
    nixos = plan_for(simulated, profile, documented_flake)
    assert not [w for w in nixos.build.warnings if w.code == "driver_path_missing"]


def test_cli_plan_json(simulated, documented_flake) -> None:
    result = run_cli("plan", "--json", "--simulate", "2x-mi50", "--flake", documented_flake)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    for key in ("flake", "system", "output", "build_argv", "env", "unset_env", "gpus",
                "reasons", "alternatives"):  # fmt: skip
        assert key in document
    assert document["output"] == "rocm-gfx906"
    assert document["simulated"] == "2x-mi50"
    assert all(set(a) == {"output", "why_not"} for a in document["alternatives"])
    outputs = document["flake_outputs"]
    assert {"llama-cli", "llama-server", "llama-quantize", "llama-embedding"} <= set(
        outputs["apps"]
    )
    assert {"default", "rocm-extra", "cuda-extra"} <= set(outputs["dev_shells"])
    assert outputs["nixos_modules"] == ["default"] and outputs["overlays"] == ["default"]


def test_cli_plan_readable_summary(documented_flake) -> None:
    result = run_cli("plan", "--simulate", "rx6700xt", "--flake", documented_flake)
    assert result.returncode == 0, result.stderr
    assert "rocm-gfx1030" in result.stdout and "HSA_OVERRIDE_GFX_VERSION=10.3.0" in result.stdout
    assert "SIMULATED" in result.stdout


def test_cli_plan_bad_gpu_and_flake(documented_flake, tmp_path) -> None:
    bad_gpu = run_cli("plan", "--simulate", "2x-mi50", "--flake", documented_flake, "--gpu", "7")
    assert bad_gpu.returncode == 1 and "Choose from the detected GPUs" in bad_gpu.stderr
    not_a_list = run_cli("plan", "--gpu", "x")
    assert not_a_list.returncode == 2 and "GPU indices" in not_a_list.stderr
    missing = run_cli("plan", "--simulate", "2x-mi50", "--flake", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "--flake" in missing.stderr


def test_without_nix_the_plan_still_answers(simulated, documented_flake) -> None:
    box = simulated("2x-mi50")
    env = dict(os.environ, PATH=str(box.bin_dir))  # the machine's tools, and no nix
    result = run_cli("plan", "--json", "--root", str(box.root), "--flake", documented_flake,
                     env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    codes = [w["code"] for w in document["warnings"]]
    assert "nix_missing" in codes and "flake_outputs_assumed" in codes
    nix_missing = next(w for w in document["warnings"] if w["code"] == "nix_missing")
    assert "apt install nix-bin" in nix_missing["fix"]
    assert document["output"] == "rocm-gfx906"
    assert document["nix"] is None


def test_default_flake_offline_falls_back_to_upstream_outputs(simulated, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no flake.nix here: the default is upstream llama.cpp
    plan = plan_for(simulated, "2x-mi50", None)
    assert plan.build.flake == "github:ggml-org/llama.cpp"
    if any(w.code == "flake_unreachable" for w in plan.warnings):
        # Offline (CI): upstream's known outputs, so gfx906 is a restricted rocm build.
        assert plan.build.output == "rocm" and plan.build.rocm_targets == ["gfx906"]


def test_default_flake_is_this_directory_when_it_holds_llama(documented_flake, monkeypatch):
    from llama_wizard.nix.flake import default_flake_ref

    monkeypatch.chdir(documented_flake)
    assert default_flake_ref() == documented_flake


def test_catalogue_covers_the_documented_outputs() -> None:
    from llama_wizard.nix.catalogue import CATALOGUE, describe

    packages = {o.name for o in CATALOGUE if o.kind == "package"}
    # flake.md "Packages": default, rocm, nine rocm-gfx*, cuda, vulkan, mpi-*, windows,
    # python-scripts and the docker-rocm* images.
    gfx = ["gfx906", "gfx908", "gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1101", "gfx1200",
           "gfx1201"]  # fmt: skip
    expected = {"default", "rocm", "cuda", "vulkan", "mpi-cpu", "mpi-cuda", "windows",
                "python-scripts", "docker-rocm"} | {f"rocm-{g}" for g in gfx} | {
                f"docker-rocm-{g}" for g in gfx}  # fmt: skip
    assert packages == expected
    assert not describe("mpi-cuda").default_choice and not describe("windows").default_choice
    assert {o.name for o in CATALOGUE if o.kind == "app"} == {
        "llama-cli", "llama-server", "llama-quantize", "llama-embedding"}  # fmt: skip
    assert {o.name for o in CATALOGUE if o.kind == "devShell"} == {
        "default", "default-extra", "rocm", "rocm-extra", "cuda", "cuda-extra"}  # fmt: skip


def test_plan_includes_the_model_that_fits(simulated, documented_flake) -> None:
    plan = plan_for(simulated, "rtx4090", documented_flake)
    model = plan.model
    assert model is not None and model.verdict in ("fits", "tight")
    assert model.total_bytes <= model.memory_bytes
    assert model.launch_args()[:2] == ["-hf", f"{model.repo}:{model.quant}"]
    document = plan.to_json()
    assert document["model"]["quant"] == model.quant


def test_plan_for_a_named_catalogue_model(simulated, documented_flake) -> None:
    plan = plan_for(simulated, "2x-mi50", documented_flake, model="Qwen/Qwen3-0.6B-GGUF",
                    ctx=40960)  # fmt: skip
    assert plan.model.repo == "Qwen/Qwen3-0.6B-GGUF" and plan.model.quant == "Q8_0"
    assert plan.model.ctx == 40960


def test_plan_with_an_unreadable_model_is_an_error(documented_flake, tmp_path) -> None:
    missing = tmp_path / "nope.gguf"
    result = run_cli("plan", "--simulate", "2x-mi50", "--flake", documented_flake, "--model",
                     str(missing))  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
