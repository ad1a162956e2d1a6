"""Plain-text formatting of sizes and GPU facts, shared by the CLI, the screens and plain mode.
No Rich and no Textual here: the first screen imports it, and it must stay light."""

from __future__ import annotations

from llama_wizard.detect.model import Gpu

# One formatter of sizes for every face; imported from here by the screens and the CLI.
from llama_wizard.models.sizes import human_bytes

__all__ = ["gpu_architecture", "gpu_free", "gpu_memory", "human_bytes", "short_bus_id"]


def gpu_architecture(gpu: Gpu) -> str:
    if gpu.gfx_target:
        return gpu.gfx_target
    if gpu.compute_capability:
        return f"CC {gpu.compute_capability}"
    return "-"


def gpu_memory(gpu: Gpu) -> str:
    """Total memory llama.cpp can use on the device; an APU's counts its GTT too."""
    if gpu.integrated and gpu.gtt_total_bytes and gpu.memory_usable_bytes:
        return f"{human_bytes(gpu.memory_usable_bytes)} (+GTT)"
    return human_bytes(gpu.memory_usable_bytes or gpu.vram_total_bytes)


def gpu_free(gpu: Gpu) -> str:
    return human_bytes(gpu.memory_free_bytes) if gpu.memory_free_bytes is not None else "?"


def short_bus_id(bus_id: str | None) -> str:
    """03:00.0 for the usual PCI domain 0; the full address otherwise."""
    if not bus_id:
        return "-"
    return bus_id[5:] if bus_id.startswith("0000:") else bus_id
