"""NVIDIA MIG: a partitioned GPU becomes its instances, each a device of its own.

CUDA does not see a GPU in MIG mode, only its instances, and a process enumerates one instance
(NVIDIA MIG user guide, "CUDA device enumeration"); `CUDA_VISIBLE_DEVICES=MIG-<uuid>` picks it.
So the inventory lists each instance with its MIG- UUID and its own memory, from the plain
`nvidia-smi` table's "MIG devices" section, or, where the driver hides that table's details, from
the profile name (detect/nvidia.py profile_memory_bytes)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llama_wizard.detect.model import DetectionWarning, Gpu
from llama_wizard.detect.nvidia import ListedGpu, MigMemory, profile_memory_bytes


def expand(gpus: list[Gpu], smi_data: dict[str, Any]) -> tuple[list[Gpu], list[DetectionWarning]]:
    """`gpus` with every partitioned NVIDIA GPU replaced by its instances (in `-L` order, right
    where the GPU was), and what a person should know about them."""
    enabled: set[str] = smi_data.get("mig_enabled") or set()
    if not enabled:
        return gpus, []
    listing: list[ListedGpu] = smi_data.get("mig_listing") or []
    memory: list[MigMemory] = smi_data.get("mig_memory") or []
    denied: bool = bool(smi_data.get("mig_denied"))
    result: list[Gpu] = []
    warnings: list[DetectionWarning] = []
    guessed: list[str] = []
    for gpu in gpus:
        if gpu.vendor != "nvidia" or gpu.pci_bus_id not in enabled:
            result.append(gpu)
            continue
        gpu.mig_mode = "Enabled"
        listed = next((g for g in listing if gpu.uuid and g.uuid == gpu.uuid), None)
        if listed is None or not listed.migs:
            # CUDA cannot use a partitioned GPU without instances: nothing to plan on it.
            gpu.memory_usable_bytes = 0
            gpu.memory_free_bytes = 0
            result.append(gpu)
            warnings.append(
                DetectionWarning(
                    "mig_no_instances",
                    f"{gpu.name} ({gpu.pci_bus_id}) is in MIG mode but has no MIG instances, "
                    "so CUDA cannot use it.",
                    "Create instances (`sudo nvidia-smi mig -i <gpu> -cgi 1g.10gb -C`; list the "
                    "profiles with `nvidia-smi mig -lgip`) or turn MIG off "
                    "(`sudo nvidia-smi -i <gpu> -mig 0`), then detect again.",
                )
            )
            continue
        rows = {row.device: row for row in memory if row.gpu == listed.index}
        for mig in listed.migs:
            row = rows.get(mig.device)
            total = row.total if row else profile_memory_bytes(mig.profile)
            if row is None:
                guessed.append(mig.uuid)
            instance = replace(
                gpu,
                name=f"{gpu.name} MIG {mig.profile}",
                uuid=mig.uuid,
                vram_total_bytes=total,
                vram_free_bytes=(row.total - row.used) if row else None,
                memory_usable_bytes=None,
                memory_free_bytes=None,
                sources=[*gpu.sources, "nvidia-smi -L"],
                mig_mode="Enabled",
                mig_profile=mig.profile,
                mig_parent_uuid=gpu.uuid,
                mig_device=mig.device,
                mig_gpu_instance=row.gpu_instance if row else None,
                mig_compute_instance=row.compute_instance if row else None,
                processes=[],
            )
            result.append(instance)
    if guessed:
        why = (
            "the driver hides them from this user (Insufficient Permissions)"
            if denied
            else "nvidia-smi's table lists no memory for them"
        )
        warnings.append(
            DetectionWarning(
                "mig_details_hidden",
                f"The memory of {len(guessed)} MIG instance{'s' if len(guessed) > 1 else ''} "
                f"is not known: {why}. Their sizes are estimated from the profile names "
                "(1g.10gb: 9.5 GiB).",
                "Run detection as a user who may read MIG details (root, or with the MIG "
                "capability devices /dev/nvidia-caps passed into the container), or check "
                "`nvidia-smi` yourself.",
            )
        )
    if sum(1 for g in result if g.is_mig_instance) > 1:
        warnings.append(
            DetectionWarning(
                "mig_instances",
                "This GPU is split into MIG instances; a CUDA process uses one instance, so "
                "llama.cpp cannot combine several into one model.",
                "The plan uses one instance (the largest, unless you choose with --gpu); run "
                "one llama-server per instance to use more.",
            )
        )
    return result, warnings
