"""Apple Silicon: the SoC GPU and its unified memory, from a recorded-style `sysctl`."""

from pathlib import Path

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.sysroot import SystemRoot

# `sysctl machdep.cpu.brand_string hw.memsize hw.physicalcpu hw.logicalcpu hw.optional.arm64`
# as macOS prints it on an M2 Max with 64 GB.
SYSCTL_OUTPUT = """machdep.cpu.brand_string: Apple M2 Max
hw.memsize: 68719476736
hw.physicalcpu: 12
hw.logicalcpu: 12
hw.optional.arm64: 1
"""


def test_apple_silicon_gpu_uses_unified_memory(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "out.txt").write_text(SYSCTL_OUTPUT)
    sysctl = bin_dir / "sysctl"
    sysctl.write_text(f"#!/bin/sh\ncat {tmp_path / 'out.txt'}\n")
    sysctl.chmod(0o755)
    inventory = detect(
        SystemRoot(tmp_path), env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, system="Darwin"
    )
    [gpu] = inventory.gpus
    assert gpu.vendor == "apple" and gpu.integrated
    assert gpu.name == "Apple M2 Max GPU"
    assert gpu.vram_total_bytes == 68719476736
    assert inventory.cpu.model == "Apple M2 Max"
    assert inventory.cpu.arch == "arm64" and inventory.cpu.cores == 12
    assert inventory.memory_total_bytes == 68719476736


def test_macos_without_sysctl_still_answers(tmp_path: Path) -> None:
    inventory = detect(SystemRoot(tmp_path), env={"PATH": str(tmp_path)}, system="Darwin")
    assert inventory.gpus == []
