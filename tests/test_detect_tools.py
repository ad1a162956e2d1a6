"""Tools that hang, fail or are missing: detection still answers, on time, with nothing left
running."""

import json
import time

import psutil

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.simulate import load_profile
from llama_wizard.detect.tools import ToolNotFound, ToolTimeout, run_tool


def _leftover_sleepers(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any(marker in part for part in cmdline):
            found.append(process)
    return found


def test_hanging_tool_is_killed_with_its_children(tmp_path) -> None:
    script = tmp_path / "rocminfo"
    # The tool starts a child of its own and waits on it: both must go.
    script.write_text("#!/bin/sh\nsleep 3601 &\nsleep 3602\n")
    script.chmod(0o755)
    started = time.monotonic()
    try:
        run_tool(["rocminfo"], timeout=0.5, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    except ToolTimeout as error:
        assert "0.5 s" in str(error)
    else:
        raise AssertionError("a hanging tool must time out")
    assert time.monotonic() - started < 2.0
    time.sleep(0.2)
    assert _leftover_sleepers("3601") == [] and _leftover_sleepers("3602") == []


def test_missing_tool_is_reported_as_not_found(tmp_path) -> None:
    try:
        run_tool(["nvidia-smi"], env={"PATH": str(tmp_path)})
    except ToolNotFound:
        pass
    else:
        raise AssertionError("expected ToolNotFound")


def test_detection_with_a_hung_rocminfo_finishes_after_the_timeout(simulated) -> None:
    profile = load_profile("2x-mi50")
    profile["tools"]["rocminfo"] = [{"hang": True}]
    machine = simulated(profile)
    started = time.monotonic()
    inventory = detect(machine.root, timeout=1.0, env=machine.env())
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 1.0, elapsed
    assert [w.code for w in inventory.warnings] == ["tool_timeout"]
    assert "rocminfo" in inventory.warnings[0].message
    # sysfs and KFD still answered: both GPUs, with their gfx targets
    assert [g.gfx_target for g in inventory.gpus] == ["gfx906", "gfx906"]
    assert all("rocminfo" not in g.sources for g in inventory.gpus)
    time.sleep(0.2)
    assert _leftover_sleepers("3600") == []


def test_nvidia_smi_without_compute_cap_is_retried(simulated) -> None:
    profile = {
        "name": "old-nvidia",
        "pci": [{"bdf": "0000:01:00.0", "vendor": "0x10de", "device": "0x1184",
                 "class": "0x030000", "driver": "nvidia", "card": 0, "render_minor": 128}],
        "tools": {"nvidia-smi": [
            {"args_contain": "compute_cap",
             "stdout": 'Field "compute_cap" is not a valid field to query.\n\n', "rc": 2},
            {"stdout": "0, GPU-6f1e0c5b-00d3-3a8e-8f2a-0b7a0a9f1c11, GeForce GTX 770, "
                       "00000000:01:00.0, 470.256.02, 1998, 1, 1997\n"},
        ]},
    }  # fmt: skip
    machine = simulated(profile)
    [gpu] = detect(machine.root, env=machine.env()).gpus
    assert gpu.vram_total_bytes == 1998 * 1024 * 1024
    assert gpu.compute_capability == "3.0"  # from the name table: Kepler GK104
    assert gpu.sources == ["sysfs", "nvidia-smi"]


def test_cli_reports_a_hung_tool_as_a_warning(simulated) -> None:
    from tests.helpers import run_cli

    profile = load_profile("2x-mi50")
    profile["tools"]["rocminfo"] = [{"hang": True}]
    machine = simulated(profile)
    result = run_cli("detect", "--json", "--root", str(machine.root), "--timeout", "0.5",
                     env=machine.env())  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [w["code"] for w in document["warnings"]] == ["tool_timeout"]
    assert len(document["gpus"]) == 2
