"""Memory other processes hold: the one rule for whether a GPU is planned on its whole memory or
on what is free now.

`auto` (the default) plans on the free memory when other processes hold more than
max(2 GiB, 5 % of the GPU). Less than that is a desktop, the driver's reserve or a monitoring
agent: the recorded RTX 4090 desktop (profile rtx4090) shows 1.9 GiB in use, Xorg, a compositor
and 354 MiB the driver reserves, and the estimate's "tight" band (under 20 % or 1 GiB free)
already warns about that much; planning around it would shrink every verdict for nothing. More
than that is another workload (a second llama-server, a training job), and a model planned on
the whole GPU would fail to load next to it. `total` plans for the whole GPU (after stopping
those processes); `free` always plans on what is free now. An integrated GPU is planned on its
whole memory in `auto`: its "used" figure counts the desktop's GTT mappings of system RAM, which
come and go, and the RAM check covers them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: the command-line parser imports MEMORY_CHOICES from here
    from llama_wizard.detect.model import Gpu

MEMORY_CHOICES = ("auto", "total", "free")
BUSY_FLOOR = 2 << 30
BUSY_SHARE = 0.05


def busy_bytes(gpu: Gpu) -> int | None:
    """What others hold on this GPU now (None: not known)."""
    if gpu.memory_free_bytes is None:
        return None
    return max(gpu.usable_bytes - gpu.memory_free_bytes, 0)


def busy_threshold(gpu: Gpu) -> int:
    return max(BUSY_FLOOR, int(gpu.usable_bytes * BUSY_SHARE))


def held_by_others(gpu: Gpu) -> bool:
    """Whether other processes hold more than a small share (see the module's docstring)."""
    busy = busy_bytes(gpu)
    return busy is not None and busy > busy_threshold(gpu)


def plans_on_free(gpu: Gpu, memory: str = "auto") -> bool:
    """Whether `memory` (auto, total, free) plans this GPU on its free memory."""
    if memory == "free":
        return gpu.memory_free_bytes is not None
    if memory == "total":
        return False
    return not gpu.integrated and held_by_others(gpu)


def planned_bytes(gpu: Gpu, memory: str = "auto") -> int:
    """The memory to plan on for this GPU."""
    if plans_on_free(gpu, memory):
        return gpu.memory_free_bytes or 0
    return gpu.usable_bytes


def users_text(gpu: Gpu, limit: int = 3) -> str:
    """Who holds the memory, for a note: "llama-server (pid 4242, 9.8 GiB), …"; empty when
    nvidia-smi named nobody (another vendor, or processes hidden in other containers)."""
    parts = []
    for process in sorted(gpu.processes, key=lambda p: -(p.get("used_bytes") or 0))[:limit]:
        # A path (nvidia-smi prints the executable's) reads better as its last part.
        name = (process.get("name") or "").rsplit("/", 1)[-1]
        name = name or "a process of another user or container"
        used = process.get("used_bytes")
        size = f", {used / (1 << 30):.1f} GiB" if used else ""
        parts.append(f"{name} (pid {process.get('pid')}{size})")
    more = len(gpu.processes) - limit
    if more > 0:
        parts.append(f"{more} more")
    return ", ".join(parts)


def memory_note(gpu: Gpu, memory: str = "auto") -> str | None:
    """What a person should know about this GPU's memory in use, or None when nothing is
    worth saying."""
    busy = busy_bytes(gpu)
    if busy is None or busy <= (0 if memory == "free" else busy_threshold(gpu)):
        return None
    who = users_text(gpu)
    held = f"Other processes hold {busy / (1 << 30):.1f} GiB of GPU {gpu.index} ({gpu.name})" + (
        f": {who}" if who else ""
    )
    if plans_on_free(gpu, memory):
        return (
            f"{held}. Planned on the {(gpu.memory_free_bytes or 0) / (1 << 30):.1f} GiB free "
            "now; `--memory total` plans for the whole GPU (after stopping them)."
        )
    return (
        f"{held}. Planned for the whole GPU: with them running, even what fits may not load "
        "(`--memory free` plans on what is free now)."
    )
