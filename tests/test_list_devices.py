"""llama.cpp's own list of devices (tui/devices.py): recorded `--list-devices` answers read,
matched to the bundled multi-GPU profiles (Vulkan: `--device` in the plan's GPU order; ROCm and
CUDA: the mask checked), and the real CPU build of llama.cpp 0c1e570 asked after a real build.

Fixtures: tests/fixtures/llamacpp/list-devices (README.md names each source; `-DERIVED` files are
built from recorded line formats and the profiles' own numbers)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from llama_wizard.tui.devices import evaluate, parse_list_devices
from llama_wizard.tui.launch import launch_spec
from llama_wizard.tui.machine import open_machine
from llama_wizard.tui.session import Overrides, WizardSession
from tests.helpers import run_cli
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    fixture_llamacpp_flake,
)
from tests.nix_fixtures import fixture_flake

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "llamacpp" / "list-devices"


def answer(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture(scope="module")
def flake(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fixture_flake(tmp_path_factory.mktemp("flake"))


def plan_for(profile: str | None, flake: str, **named: object):
    with open_machine(None, profile) as machine:
        session = WizardSession(machine, None, Overrides(flake=flake, **named))  # type: ignore[arg-type]
        return session.make_plan()


# --- reading every recorded answer -------------------------------------------------------------

# name, description, total MiB, free MiB, and what the start-up lines add, as each file shows it.
EXPECTED = {
    "cpu-0c1e570.txt": [],
    "vulkan-2x-vega-ii-duo-moltenvk.txt": [
        ("Vulkan0", "AMD Radeon Pro Vega II Duo", 32752, 32752, {"integrated": False}),
        ("Vulkan1", "AMD Radeon Pro Vega II Duo", 32752, 32752, {"integrated": False}),
    ],
    "vulkan-rtx4060-laptop-windows.txt": [
        ("Vulkan0", "NVIDIA GeForce RTX 4060 Laptop GPU", 7957, 7189, {"integrated": False}),
    ],
    "cuda-rtx3080ti-rtxpro4000-ollama.txt": [
        ("CUDA0", "NVIDIA GeForce RTX 3080 Ti", 11909, 11650, {"compute_capability": "8.6"}),
        (
            "CUDA1",
            "NVIDIA RTX PRO 4000 Blackwell SFF Edition",
            24026,
            23795,
            {"compute_capability": "12.0"},
        ),
    ],
    "rocm-780m-gfx1103.txt": [
        ("ROCm0", "AMD Radeon Graphics", 20480, 20381, {"gfx_target": "gfx1103"}),
    ],
    "rocm-no-device-DERIVED.txt": [],
    "vulkan-2x-mi50-DERIVED.txt": [
        ("Vulkan0", "AMD Instinct MI60 / MI50 (RADV VEGA20)", 16368, 16354, {}),
        ("Vulkan1", "AMD Instinct MI60 / MI50 (RADV VEGA20)", 16368, 16354, {}),
    ],
    "vulkan-7900xtx-raphael-igpu-DERIVED.txt": [
        (
            "Vulkan0",
            "AMD Ryzen 9 7950X 16-Core Processor (RADV RAPHAEL_MENDOCINO)",
            32150,
            31870,
            {"integrated": True},
        ),
        ("Vulkan1", "AMD Radeon RX 7900 XTX (RADV NAVI31)", 24560, 24320, {"integrated": False}),
    ],
    "vulkan-2x-h100-DERIVED.txt": [
        ("Vulkan0", "NVIDIA H100 80GB HBM3", 81559, 81002, {}),
        ("Vulkan1", "NVIDIA H100 80GB HBM3", 81559, 81002, {}),
    ],
    "rocm-7900xtx-masked-DERIVED.txt": [
        ("ROCm0", "AMD Radeon RX 7900 XTX", 24560, 24320, {"gfx_target": "gfx1100"}),
    ],
    "rocm-7900xtx-igpu-unmasked-DERIVED.txt": [
        ("ROCm0", "AMD Radeon RX 7900 XTX", 24560, 24320, {"gfx_target": "gfx1100"}),
        ("ROCm1", "AMD Radeon Graphics", 32150, 31870, {"gfx_target": "gfx1036"}),
    ],
    "cuda-2x-h100-DERIVED.txt": [
        ("CUDA0", "NVIDIA H100 80GB HBM3", 81559, 81002, {"compute_capability": "9.0"}),
        ("CUDA1", "NVIDIA H100 80GB HBM3", 81559, 81002, {"compute_capability": "9.0"}),
    ],
}


def test_every_fixture_is_expected_and_named_in_the_readme() -> None:
    files = {p.name for p in FIXTURES.glob("*.txt")}
    assert files == set(EXPECTED)
    readme = (FIXTURES / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in files)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recorded_answer_is_read(name: str) -> None:
    listing = parse_list_devices(answer(name))
    assert listing.devices is not None
    got = [
        (d.name, d.description, d.total_mib, d.free_mib, {k: getattr(d, k) for k in extra})
        for d, (*_, extra) in zip(listing.devices, EXPECTED[name], strict=False)
    ]
    assert got == EXPECTED[name]
    assert len(listing.devices) == len(EXPECTED[name])


def test_lines_around_the_list_are_not_devices() -> None:
    # ollama's log: the list, then llama.cpp's `  Device 0: ...` lines (indented too).
    listing = parse_list_devices(answer("cuda-rtx3080ti-rtxpro4000-ollama.txt"))
    assert [d.name for d in listing.devices or []] == ["CUDA0", "CUDA1"]
    # A BLAS entry (macOS, OpenBLAS) is listed with 0 MiB: not a GPU.
    blas = parse_list_devices("Available devices:\n  BLAS: OpenBLAS (0 MiB, 0 MiB free)\n")
    assert [(d.name, d.is_gpu) for d in blas.devices or []] == [("BLAS", False)]
    # No list at all (the program failed before it): None, not "no devices".
    failed = parse_list_devices("error while loading shared libraries: libvulkan.so.1")
    assert failed.devices is None and failed.failures


def test_the_failure_line_of_a_rocm_build_is_kept() -> None:
    listing = parse_list_devices(answer("rocm-no-device-DERIVED.txt"))
    assert listing.devices == []
    assert listing.failures == [
        "ggml_cuda_init: failed to initialize ROCm: no ROCm-capable device is detected"
    ]


# --- Vulkan: matching the chosen GPUs, --device in the plan's order ---------------------------


def test_two_identical_mi50s_both_chosen_get_both_vulkan_devices(flake: str) -> None:
    plan = plan_for("2x-mi50", flake, output="vulkan")
    assert plan.build.backend == "vulkan" and plan.build.gpus == [0, 1]
    check = evaluate(plan, answer("vulkan-2x-mi50-DERIVED.txt"))
    assert check.ok, check.problems
    assert check.device_arg == "Vulkan0,Vulkan1"
    assert any("identical" in note for note in check.notes)
    plan.device_check = check
    args = plan.launch_args()
    assert args[args.index("--device") + 1] == "Vulkan0,Vulkan1"
    if "-ts" in args:  # the split follows the same order of devices
        assert args.index("--device") < args.index("-ts")
    spec = launch_spec(plan, program="llama-server", check_built=False)
    assert spec.args[: len(args)] == args
    assert "--device Vulkan0,Vulkan1" in spec.shell_command()
    assert plan.to_json()["devices"]["device_arg"] == "Vulkan0,Vulkan1"


def test_one_of_two_identical_cards_is_ambiguous_and_the_list_is_shown(flake: str) -> None:
    plan = plan_for("2x-mi50", flake, output="vulkan", gpus=[1])
    check = evaluate(plan, answer("vulkan-2x-mi50-DERIVED.txt"))
    assert check.device_arg is None
    assert [p.code for p in check.problems] == ["ambiguous"]
    problem = check.problems[0]
    assert "Vulkan0 or Vulkan1" in problem.message and "GPU 1" in problem.message
    assert "--device VulkanN" in problem.fix
    assert check.matches[0].candidates == ["Vulkan0", "Vulkan1"]
    lines = check.lines()
    assert "  Vulkan0: AMD Instinct MI60 / MI50 (RADV VEGA20) (16368 MiB, 16354 MiB free)" in lines
    plan.device_check = check
    assert "--device" not in plan.launch_args()  # no guess


def test_the_igpu_listed_first_is_left_out_and_the_order_is_the_plans(flake: str) -> None:
    plan = plan_for("7900xtx-raphael-igpu", flake, output="vulkan")
    assert plan.build.gpus == [0]  # the dGPU only (the iGPU is not chosen by default)
    check = evaluate(plan, answer("vulkan-7900xtx-raphael-igpu-DERIVED.txt"))
    assert check.ok and check.device_arg == "Vulkan1"
    assert any("RAPHAEL_MENDOCINO" in note and "not chosen" in note for note in check.notes)
    # Both chosen: GPU 0 (the 7900 XTX) is Vulkan1, GPU 1 (the iGPU, by its RADV chip name
    # against gfx1036, and uma) is Vulkan0: the plan's order, not Vulkan's.
    both = plan_for("7900xtx-raphael-igpu", flake, output="vulkan", gpus=[0, 1])
    check = evaluate(both, answer("vulkan-7900xtx-raphael-igpu-DERIVED.txt"))
    assert check.ok, check.problems
    assert check.device_arg == "Vulkan1,Vulkan0"
    assert [(m.gpu, m.device) for m in check.matches] == [(0, "Vulkan1"), (1, "Vulkan0")]


def test_two_h100s_on_vulkan(flake: str) -> None:
    plan = plan_for("2x-h100", flake, output="vulkan")
    check = evaluate(plan, answer("vulkan-2x-h100-DERIVED.txt"))
    assert check.ok and check.device_arg == "Vulkan0,Vulkan1"


def test_a_chosen_gpu_missing_from_the_vulkan_list_is_a_problem(flake: str) -> None:
    plan = plan_for("2x-h100", flake, output="vulkan")
    check = evaluate(plan, answer("vulkan-7900xtx-raphael-igpu-DERIVED.txt"))
    assert check.device_arg is None
    assert [p.code for p in check.problems] == ["gpu_not_listed"]
    assert "GPU 0 (NVIDIA H100 80GB HBM3)" in check.problems[0].message
    assert "vulkaninfo" in check.problems[0].fix


# --- ROCm and CUDA: the mask confirmed -----------------------------------------------------------


def test_rocm_sees_exactly_the_masked_gpu(flake: str) -> None:
    plan = plan_for("7900xtx-raphael-igpu", flake)
    assert plan.build.backend == "rocm" and plan.build.gpus == [0]
    check = evaluate(plan, answer("rocm-7900xtx-masked-DERIVED.txt"))
    assert check.ok and check.device_arg is None
    assert [(m.gpu, m.device) for m in check.matches] == [(0, "ROCm0")]
    plan.device_check = check
    assert "--device" not in plan.launch_args()  # ROCR_VISIBLE_DEVICES does it


def test_an_igpu_the_mask_should_hide_is_reported(flake: str) -> None:
    plan = plan_for("7900xtx-raphael-igpu", flake)
    check = evaluate(plan, answer("rocm-7900xtx-igpu-unmasked-DERIVED.txt"))
    assert [p.code for p in check.problems] == ["mask_not_working"]
    assert "ROCR_VISIBLE_DEVICES is not working" in check.problems[0].message
    assert "ROCm1: AMD Radeon Graphics" in check.problems[0].message


def test_a_rocm_build_that_sees_no_gpu_says_render_and_video_groups(flake: str) -> None:
    plan = plan_for("2x-mi50", flake)
    assert plan.build.backend == "rocm"
    check = evaluate(plan, answer("rocm-no-device-DERIVED.txt"))
    assert [p.code for p in check.problems] == ["no_device"]
    problem = check.problems[0]
    assert "no ROCm-capable device is detected" in problem.message
    assert "render and video groups" in problem.fix and "usermod -aG render,video" in problem.fix
    assert check.lines()[0].startswith("⚠ llama.cpp's devices: llama.cpp's ROCm build sees no GPU")


def test_two_h100s_on_cuda(flake: str) -> None:
    plan = plan_for("2x-h100", flake)
    assert plan.build.backend == "cuda"
    check = evaluate(plan, answer("cuda-2x-h100-DERIVED.txt"))
    assert check.ok and [m.device for m in check.matches] == ["CUDA0", "CUDA1"]
    # The other machine's answer (an RTX 3080 Ti and an RTX PRO 4000) is not these GPUs.
    other = evaluate(plan, answer("cuda-rtx3080ti-rtxpro4000-ollama.txt"))
    assert [p.code for p in other.problems] == ["unexpected_device"]


# --- the real CPU build ------------------------------------------------------------------------


def test_the_real_cpu_build_answers_none(llamacpp_bin: Path, flake: str) -> None:
    result = subprocess.run(
        [str(llamacpp_bin / "llama-server"), "--list-devices"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    assert parse_list_devices(text).devices == []
    assert parse_list_devices(text) == parse_list_devices(answer("cpu-0c1e570.txt"))
    # Expected for the default (CPU) output ...
    cpu = evaluate(plan_for(None, flake, output="default"), text)
    assert cpu.ok and cpu.notes == ["this CPU build sees no GPU, as expected."]
    # ... and the mismatch for a GPU output on a machine with GPUs.
    rocm = evaluate(plan_for("2x-mi50", flake), text)
    assert [p.code for p in rocm.problems] == ["no_device"]
    vulkan = evaluate(plan_for("2x-mi50", flake, output="vulkan"), text)
    assert [p.code for p in vulkan.problems] == ["no_device"]
    assert "vulkaninfo" in vulkan.problems[0].fix


def test_run_asks_the_built_binary_before_the_launch(llamacpp_flake: str, dense_gguf: Path) -> None:
    built = run_cli("build", "--flake", llamacpp_flake, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    args = ("run", "--flake", llamacpp_flake, "--model", str(dense_gguf), "-n", "4")
    result = run_cli(*args, "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    names = [e["event"] for e in events]
    assert "devices" in names and names.index("devices") < names.index("started")
    devices = events[names.index("devices")]
    assert devices["backend"] == "cpu" and devices["ok"] is True and devices["devices"] == []
    assert devices["argv"][0].endswith("/bin/llama-server") and devices["argv"][1:] == [
        "--list-devices"
    ]
    assert devices["notes"] == ["this CPU build sees no GPU, as expected."]
    plain = run_cli(*args, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "llama.cpp's devices: this CPU build sees no GPU, as expected." in plain.stderr
    assert "  (none)" in plain.stderr.splitlines()
