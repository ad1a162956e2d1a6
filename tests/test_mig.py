"""NVIDIA MIG: a partitioned A100 is detected, planned and fitted as its instances (the a100-mig
profile: recorded `nvidia-smi` table and `-L` of one machine, ssup2/blog-software)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from llama_wizard.detect import nvidia
from llama_wizard.detect.inventory import detect
from llama_wizard.detect.simulate import load_profile, recorded_output
from tests.helpers import run_cli
from tests.nix_fixtures import fixture_flake

MIB = 1 << 20
GIB = 1 << 30
TABLE = "nvidia-smi__a100-sxm4-40gb_mig-4-instances_driver580__ssup2-blog-software.txt"
LISTING = "nvidia-smi-L__8x_a100-sxm4-40gb_gpu0-mig__ssup2-blog-software.txt"
# From the recorded -L: Device N under GPU 0, its profile and MIG- UUID.
INSTANCES = [
    ("4g.20gb", "MIG-c42101f0-a1fa-5b68-8908-7c5c887f28bd", 20096 * MIB, 142 * MIB),
    ("1c.2g.10gb", "MIG-8970491e-16e0-5140-9f8f-d561baa3c186", 9984 * MIB, 71 * MIB),
    ("1c.2g.10gb", "MIG-239565ce-30e3-52d7-8197-5630d3ce21fa", 9984 * MIB, 71 * MIB),
    ("1g.5gb", "MIG-20301a31-77fa-59ec-b0b8-7ef543821f29", 4864 * MIB, 36 * MIB),
]


def test_list_parses_the_instances_under_their_gpu() -> None:
    gpus = nvidia.parse_list(recorded_output(LISTING))
    assert [g.index for g in gpus] == list(range(8))
    assert gpus[0].uuid == "GPU-9e4aeb94-01c0-5173-4811-4ca60f77b3a9"
    assert [(m.profile, m.uuid) for m in gpus[0].migs] == [(p, u) for p, u, _, _ in INSTANCES]
    assert [m.device for m in gpus[0].migs] == [0, 1, 2, 3]
    assert all(not g.migs for g in gpus[1:])


def test_table_gives_each_instance_its_memory() -> None:
    rows = nvidia.parse_mig_table(recorded_output(TABLE))
    assert [(r.gpu, r.gpu_instance, r.compute_instance, r.device) for r in rows] == [
        (0, 2, 0, 0), (0, 3, 0, 1), (0, 3, 1, 2), (0, 9, 0, 3),
    ]  # fmt: skip
    assert [(r.total, r.used) for r in rows] == [(t, u) for _, _, t, u in INSTANCES]
    # The GPU rows above the section (249MiB / 40960MiB) are not instances.
    other = recorded_output("nvidia-smi__rtx3090_driver535__jasongross-gbmi-data.txt")
    assert nvidia.parse_mig_table(other) == []


def test_mig_mode_query_and_profile_sizes() -> None:
    text = recorded_output("nvidia-smi-query-csv__a100-sxm4-40gb-mig_mig-mode__DERIVED.txt")
    [mode] = nvidia.parse_mig_modes(text)
    assert (mode.index, mode.bus_id, mode.mode) == (0, "0000:10:1c.0", "Enabled")
    # A GPU without MIG answers [N/A]; other tools' CSVs (8 fields) are not MIG rows.
    assert nvidia.parse_mig_modes("0, 00000000:01:00.0, [N/A]\n") == []
    assert nvidia.parse_mig_modes(recorded_output(
        "nvidia-smi-query-csv__rtx4090_gpu0_with-compute-cap__DERIVED.txt")) == []  # fmt: skip
    # mig -lgip: 1g.5gb 4.75 GiB, 1g.10gb 9.50 GiB; larger ones a little more than the estimate.
    assert nvidia.profile_memory_bytes("1g.5gb") == 4864 * MIB
    assert nvidia.profile_memory_bytes("1g.10gb") == 9728 * MIB
    assert nvidia.profile_memory_bytes("1c.2g.10gb") == 9728 * MIB
    assert nvidia.profile_memory_bytes("1g.10gb+me") == 9728 * MIB
    assert nvidia.profile_memory_bytes("7g.80gb") < 79 * GIB
    assert nvidia.profile_memory_bytes("nonsense") is None


def test_detect_json_lists_each_instance_as_a_device() -> None:
    result = run_cli("--simulate", "a100-mig", "detect", "--json")
    assert result.returncode == 0, result.stderr
    gpus = json.loads(result.stdout)["gpus"]
    assert [(g["mig_profile"], g["uuid"], g["vram_total_bytes"]) for g in gpus] == [
        (p, u, t) for p, u, t, _ in INSTANCES
    ]
    assert [g["vram_free_bytes"] for g in gpus] == [t - u for _, _, t, u in INSTANCES]
    assert [g["index"] for g in gpus] == [0, 1, 2, 3]
    assert {g["mig_parent_uuid"] for g in gpus} == {"GPU-9e4aeb94-01c0-5173-4811-4ca60f77b3a9"}
    assert all(g["pci_bus_id"] == "0000:10:1c.0" and g["compute_capability"] == "8.0"
               for g in gpus)  # fmt: skip
    # Two compute instances of one GPU instance (GI 3) share its memory.
    assert [(g["mig_gpu_instance"], g["mig_compute_instance"]) for g in gpus] == [
        (2, 0), (3, 0), (3, 1), (9, 0),
    ]  # fmt: skip
    human = run_cli("--simulate", "a100-mig", "detect", env={**os.environ, "COLUMNS": "200"})
    assert human.returncode == 0 and "A100-SXM4-40GB MIG 1g.5gb" in human.stdout


def test_plan_selects_one_instance_by_its_mig_uuid(tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "documented", "documented")
    result = run_cli("plan", "--json", "--simulate", "a100-mig", "--flake", flake)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["output"] == "cuda"
    # The largest instance, alone: a CUDA process enumerates one MIG instance.
    assert document["gpus"] == [0]
    assert document["env"]["CUDA_VISIBLE_DEVICES"] == INSTANCES[0][1]
    assert "GPU-9e4aeb94" not in document["env"]["CUDA_VISIBLE_DEVICES"]
    assert any("cannot combine" in reason for reason in document["reasons"])
    # The person's choice of two instances: the first one, with a warning.
    chosen = run_cli("plan", "--json", "--simulate", "a100-mig", "--flake", flake, "--gpu", "3,1")
    assert chosen.returncode == 0, chosen.stderr
    document = json.loads(chosen.stdout)
    assert document["gpus"] == [3]
    assert document["env"]["CUDA_VISIBLE_DEVICES"] == INSTANCES[3][1]
    warning = next(w for w in document["warnings"] if w["code"] == "mig_one_instance")
    assert "1 (1c.2g.10gb)" in warning["message"] and warning["fix"]


def test_fit_judges_against_the_instance_not_the_whole_gpu() -> None:
    small = run_cli("fit", "Qwen/Qwen3-8B-GGUF", "--simulate", "a100-mig", "--gpu", "3",
                    "--quant", "Q8_0", "--json")  # fmt: skip
    assert small.returncode == 0, small.stderr
    document = json.loads(small.stdout)
    assert document["memory_bytes"] == 4864 * MIB
    (q8,) = document["quants"]
    # 8.7 GB of Q8_0 weights cannot all sit in 4.75 GiB: part of it goes to the RAM.
    assert q8["mode"] != "gpu" and q8["host_bytes"] > 0 and q8["total_bytes"] <= 4864 * MIB
    large = run_cli("fit", "Qwen/Qwen3-8B-GGUF", "--simulate", "a100-mig", "--quant", "Q8_0",
                    "--json")  # fmt: skip
    assert large.returncode == 0, large.stderr
    document = json.loads(large.stdout)
    assert document["memory_bytes"] == 20096 * MIB  # the 4g.20gb instance, not 40 GiB
    assert [d["index"] for d in document["devices"]] == [0]
    (q8,) = document["quants"]
    assert q8["mode"] == "gpu" and q8["verdict"] in ("fits", "tight")
    # Two instances chosen: still one device (one process, one instance).
    both = run_cli("fit", "Qwen/Qwen3-8B-GGUF", "--simulate", "a100-mig", "--gpu", "1,2",
                   "--quant", "Q8_0", "--json")  # fmt: skip
    assert [d["index"] for d in json.loads(both.stdout)["devices"]] == [1]


def _variant(table: dict | None = None, listing: str | None = None) -> dict:
    profile = copy.deepcopy(load_profile("a100-mig"))
    answers = profile["tools"]["nvidia-smi"]
    if table is not None:
        answers[-1] = table
    if listing is not None:
        answers[-2] = {"args_contain": "-L", "stdout": listing, "rc": 0}
    return profile


def test_hidden_mig_details_fall_back_to_the_profile_names(simulated) -> None:
    # DERIVED: the same machine where nvidia-smi's table is refused to this user (as NVML
    # answers "Insufficient Permissions" without access to the MIG capability devices).
    machine = simulated(_variant({"stdout": "", "stderr": "Insufficient Permissions\n", "rc": 4}))
    inventory = detect(machine.root, timeout=5, env=machine.env())
    assert [g.uuid for g in inventory.gpus] == [u for _, u, _, _ in INSTANCES]
    assert [g.vram_total_bytes for g in inventory.gpus] == [
        19 * GIB, 9728 * MIB, 9728 * MIB, 4864 * MIB,
    ]  # fmt: skip
    assert all(g.vram_free_bytes is None for g in inventory.gpus)
    warning = next(w for w in inventory.warnings if w.code == "mig_details_hidden")
    assert "Insufficient Permissions" in warning.message and "4 MIG instances" in warning.message
    assert warning.fix


def test_mig_mode_without_instances_is_not_planned_on(simulated, tmp_path: Path) -> None:
    # DERIVED: the recorded -L with GPU 0's instances removed (MIG on, nothing created).
    listing = "".join(
        line for line in recorded_output(LISTING).splitlines(keepends=True)
        if "MIG " not in line
    )  # fmt: skip
    machine = simulated(_variant(listing=listing))
    inventory = detect(machine.root, timeout=5, env=machine.env())
    [gpu] = inventory.gpus
    assert gpu.mig_mode == "Enabled" and not gpu.is_mig_instance and gpu.usable_bytes == 0
    assert "mig_no_instances" in {w.code for w in inventory.warnings}
    flake = fixture_flake(tmp_path / "documented", "documented")
    result = run_cli("plan", "--json", "--root", str(machine.root), "--flake", flake,
                     env=machine.env())  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["gpus"] == [] and document["backend"] == "cpu"
