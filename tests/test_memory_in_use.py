"""Memory other processes hold (detect/memory.py: auto|total|free) and Intel Arc VRAM from
sysfs. The busy RTX 4090 is the rtx4090 profile with a llama-server running (DERIVED outputs,
marked so in detect/profiles/outputs/)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.memory import held_by_others, memory_note, planned_bytes
from llama_wizard.detect.model import Gpu
from llama_wizard.detect.simulate import load_profile
from tests.helpers import run_cli
from tests.nix_fixtures import fixture_flake

MIB = 1 << 20
GIB = 1 << 30
TOTAL, FREE = 24564 * MIB, 12613 * MIB  # the derived CSV: a llama-server holds 9.8 GiB


def busy_rtx4090() -> dict:
    profile = copy.deepcopy(load_profile("rtx4090"))
    profile["tools"]["nvidia-smi"] = [
        {"args_contain": "query-compute-apps", "rc": 0,
         "stdout_file": "nvidia-smi-query-compute-apps__rtx4090_llama-server-running__DERIVED.txt"},
        {"args_contain": "compute_cap", "rc": 0, "stdout_file":
         "nvidia-smi-query-csv__rtx4090_gpu0_llama-server-running_with-compute-cap__DERIVED.txt"},
        *profile["tools"]["nvidia-smi"],
    ]  # fmt: skip
    return profile


def test_detect_shows_who_holds_the_memory(simulated) -> None:
    machine = simulated(busy_rtx4090())
    [gpu] = detect(machine.root, timeout=5, env=machine.env()).gpus
    assert (gpu.vram_total_bytes, gpu.vram_free_bytes) == (TOTAL, FREE)
    assert gpu.processes == [
        {"pid": 4242, "name": "/nix/store/3x7kq0-llama-cpp-cuda/bin/llama-server",
         "used_bytes": 9478 * MIB},
        {"pid": 5150, "name": None, "used_bytes": 536 * MIB},  # another container's
    ]  # fmt: skip
    result = run_cli("detect", "--json", "--root", str(machine.root), env=machine.env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gpus"][0]["processes"][0]["pid"] == 4242


def test_the_rule_plans_on_free_memory_only_past_a_small_share() -> None:
    def gpu(total: int, free: int, integrated: bool = False) -> Gpu:
        return Gpu("nvidia", "GPU", vram_total_bytes=total, memory_usable_bytes=total,
                   memory_free_bytes=free, integrated=integrated)  # fmt: skip

    desktop = gpu(TOTAL, 22627 * MIB)  # the recorded RTX 4090 desktop: 1.9 GiB in use
    assert not held_by_others(desktop) and planned_bytes(desktop) == TOTAL
    assert memory_note(desktop) is None
    busy = gpu(TOTAL, FREE)
    assert held_by_others(busy)
    assert planned_bytes(busy) == FREE and planned_bytes(busy, "total") == TOTAL
    assert planned_bytes(desktop, "free") == 22627 * MIB
    # On 80 GiB, 3 GiB is under 5 % (4 GiB): still the whole GPU.
    assert not held_by_others(gpu(80 * GIB, 77 * GIB)) and held_by_others(gpu(80 * GIB, 70 * GIB))
    # An APU's "used" is the desktop's GTT: planned on the whole memory unless asked.
    apu = gpu(16 * GIB, 4 * GIB, integrated=True)
    assert planned_bytes(apu) == 16 * GIB and planned_bytes(apu, "free") == 4 * GIB
    assert planned_bytes(gpu(TOTAL, None), "free") == TOTAL  # type: ignore[arg-type]


def test_fit_uses_free_memory_by_default_and_total_on_request(simulated) -> None:
    machine = simulated(busy_rtx4090())
    base = ["fit", "Qwen/Qwen3-8B-GGUF", "--root", str(machine.root), "--quant", "Q8_0"]
    result = run_cli(*base, "--json", env=machine.env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["memory_bytes"] == FREE
    total = run_cli(*base, "--json", "--memory", "total", env=machine.env())
    assert total.returncode == 0, total.stderr
    assert json.loads(total.stdout)["memory_bytes"] == TOTAL
    human = run_cli(*base, env={**machine.env(), "COLUMNS": "300"})
    assert human.returncode == 0, human.stderr
    text = " ".join(human.stdout.split())
    # 11.7 GiB: the two processes, the desktop and the driver's reserve (total - free).
    assert "Other processes hold 11.7 GiB of GPU 0" in text
    assert "llama-server (pid 4242, 9.3 GiB)" in text and "--memory total" in text
    bad = run_cli(*base, "--memory", "half", env=machine.env())
    assert bad.returncode != 0 and "auto" in bad.stderr


def test_plan_warns_and_fits_against_free_memory(simulated, tmp_path: Path) -> None:
    machine = simulated(busy_rtx4090())
    flake = fixture_flake(tmp_path / "documented", "documented")
    argv = ["plan", "--json", "--root", str(machine.root), "--flake", flake,
            "--model", "Qwen/Qwen3-8B-GGUF"]  # fmt: skip
    result = run_cli(*argv, env=machine.env())
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    warning = next(w for w in document["warnings"] if w["code"] == "memory_in_use")
    assert "12.3 GiB free" in warning["message"] and "--memory" in warning["fix"]
    total = json.loads(run_cli(*argv, "--memory", "total", env=machine.env()).stdout)
    assert "Planned for the whole GPU" in next(
        w["message"] for w in total["warnings"] if w["code"] == "memory_in_use"
    )


def test_intel_arc_vram_from_sysfs(simulated) -> None:
    # i915 (Intel's DKMS build): cardN/lmem_total_bytes; the a770 profile's 16 GiB.
    [arc] = detect(simulated("intel-arc-a770").root, timeout=5).gpus
    assert arc.vram_total_bytes == 16 * GIB and arc.usable_bytes == 16 * GIB
    # xe: tileN/physical_vram_size_bytes on the PCI device (a DERIVED variant of the same card).
    profile = copy.deepcopy(load_profile("intel-arc-a770"))
    profile["files"] = {k: v for k, v in profile["files"].items() if "lmem" not in k}
    device = profile["pci"][0]
    device["driver"] = "xe"
    device["attributes"] = {"tile0/physical_vram_size_bytes": str(16 * GIB)}
    [arc] = detect(simulated(profile).root, timeout=5).gpus
    assert arc.driver == "xe" and arc.vram_total_bytes == 16 * GIB
    # Neither file (mainline i915): unknown, not zero.
    device["attributes"] = {}
    [arc] = detect(simulated(profile).root, timeout=5).gpus
    assert arc.vram_total_bytes is None


def test_the_hardware_step_and_plain_mode_say_who_uses_a_gpu(simulated) -> None:
    from llama_wizard.screens.hardware import gpu_label

    machine = simulated(busy_rtx4090())
    [gpu] = detect(machine.root, timeout=5, env=machine.env()).gpus
    label = gpu_label(gpu)
    assert "in use by llama-server (pid 4242, 9.3 GiB)" in label, label
    assert "a process of another user or container (pid 5150" in label
    result = run_cli("--plain", "--yes", "--root", str(machine.root), "--flake", "/nonexistent",
                     env=machine.env())  # fmt: skip
    assert "note: GPU 0's memory is in use by llama-server (pid 4242" in result.stdout, (
        result.stdout[-2000:]
    )
