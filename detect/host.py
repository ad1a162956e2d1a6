"""CPU and system memory: psutil and /proc on Linux, sysctl on macOS (where the GPU is the
Apple Silicon SoC and its memory is the system's)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from llama_wizard.detect.model import Cpu, Gpu
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.detect.tools import DEFAULT_TIMEOUT, run_tool

# The instruction sets llama.cpp's CPU backend cares about; /proc/cpuinfo lists ~100 flags.
INTERESTING_FLAGS = (
    "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
    "amx_int8", "amx_bf16", "neon", "asimd", "asimdhp", "asimddp", "sve", "sve2", "i8mm",
)  # fmt: skip


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\n\s*\n", text):
        block = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                block[key.strip().lower()] = value.strip()
        if block:
            blocks.append(block)
    return blocks


def read_cpu(root: SystemRoot) -> Cpu:
    blocks = _cpuinfo_blocks(root.read_text("/proc/cpuinfo") or "")
    processors = [block for block in blocks if "processor" in block]
    model = next(
        (
            block[key]
            for block in blocks
            for key in ("model name", "hardware", "cpu model", "uarch")
            if block.get(key)
        ),
        None,
    )
    flags_text = next(
        (block.get("flags") or block.get("features") for block in processors if block), None
    )
    flags = sorted(set((flags_text or "").split()) & set(INTERESTING_FLAGS))
    cores_seen = {
        (block.get("physical id", "0"), block.get("core id", block.get("processor")))
        for block in processors
    }
    threads = len(processors)
    cores = len(cores_seen)
    if root.is_host:
        threads = _logical_cpus() or threads
        cores = _physical_cores() or cores or threads
    arch = root.read_attr("/proc/sys/kernel/arch")
    if arch is None and root.is_host:
        arch = os.uname().machine  # platform.machine()
    if model is None:
        import platform

        model = platform.processor()
    return Cpu(
        model=model or "unknown CPU",
        arch=arch or "unknown",
        cores=max(cores, 1) if threads else cores,
        threads=threads,
        flags=flags,
    )


def read_memory(root: SystemRoot) -> tuple[int, int]:
    """(total, available) bytes of system RAM."""
    values = {}
    for line in (root.read_text("/proc/meminfo") or "").splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match:
            values[match.group(1)] = int(match.group(2)) * 1024
    total = values.get("MemTotal", 0)
    if root.is_host:
        # psutil.virtual_memory() gives the kernel's MemAvailable as it stands; only for the
        # odd cases (kernels before 3.14, a zero or container-distorted value) load psutil for
        # its estimate.
        available = values.get("MemAvailable", 0)
        if total and 0 < available <= total:
            return total, available
        try:
            import psutil
        except ImportError:  # the probe on a server without it (detect/probe.py)
            estimate = sum(values.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
            return total, min(estimate, total)
        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)
    return total, values.get("MemAvailable", values.get("MemFree", 0))


# psutil.cpu_count() on Linux, without importing psutil (about a third of `detect --json`'s
# start-up): the same sources in the same order, and psutil itself when they say nothing.


def _logical_cpus() -> int | None:
    """psutil.cpu_count(logical=True): the online CPUs."""
    try:
        count = os.sysconf("SC_NPROCESSORS_ONLN")
    except (ValueError, OSError):
        try:
            import psutil
        except ImportError:  # the probe on a server without it (detect/probe.py)
            return os.cpu_count()
        return psutil.cpu_count(logical=True)
    return count if count >= 1 else None


def _physical_cores() -> int | None:
    """psutil.cpu_count(logical=False): distinct sibling sets under /sys, else psutil's
    /proc/cpuinfo count."""
    base = "/sys/devices/system/cpu"
    try:
        names = [n for n in os.listdir(base) if n.startswith("cpu") and n[3:4].isdigit()]
    except OSError:
        names = []
    for leaf in ("core_cpus_list", "thread_siblings_list"):
        siblings = set()
        for name in names:
            try:
                with open(f"{base}/{name}/topology/{leaf}", "rb") as handle:
                    siblings.add(handle.read().strip())
            except OSError:
                continue
        if siblings:
            return len(siblings)
    try:
        import psutil
    except ImportError:  # the probe without psutil: the caller keeps /proc/cpuinfo's count
        return None
    return psutil.cpu_count(logical=False)


def read_macos(
    timeout: float = DEFAULT_TIMEOUT, env: Mapping[str, str] | None = None
) -> tuple[Cpu, int, list[Gpu]]:
    """CPU, memory and (on Apple Silicon) the SoC GPU from `sysctl`."""
    keys = ["machdep.cpu.brand_string", "hw.memsize", "hw.physicalcpu", "hw.logicalcpu",
            "hw.optional.arm64"]  # fmt: skip
    import platform

    result = run_tool(["sysctl", *keys], timeout=timeout, env=env)
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    brand = values.get("machdep.cpu.brand_string") or platform.processor() or "unknown CPU"
    memory = _int(values.get("hw.memsize")) or 0
    arm64 = values.get("hw.optional.arm64") == "1"
    cpu = Cpu(
        model=brand,
        arch="arm64" if arm64 else platform.machine() or "x86_64",
        cores=_int(values.get("hw.physicalcpu")) or 1,
        threads=_int(values.get("hw.logicalcpu")) or 1,
        flags=["neon"] if arm64 else [],
    )
    gpus = []
    if arm64:
        gpus.append(
            Gpu(
                vendor="apple",
                name=f"{brand} GPU" if brand.startswith("Apple") else "Apple Silicon GPU",
                driver="metal",
                integrated=True,
                vram_total_bytes=memory or None,
                memory_usable_bytes=memory or None,
                sources=["sysctl"],
            )
        )
    return cpu, memory, gpus


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
