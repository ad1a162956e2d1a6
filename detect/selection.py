"""Which of the detected GPUs llama.cpp should use: the default choice, and the person's choice
by index. Both the build choice (nix/) and the model choice (models/) start from these GPUs, so
the rule lives here, below both."""

from __future__ import annotations

from llama_wizard.detect.errors import ChoiceError
from llama_wizard.detect.model import Gpu, Inventory

USABLE_VENDORS = ("amd", "nvidia", "intel", "apple")


def default_gpus(inventory: Inventory) -> tuple[list[Gpu], list[str]]:
    """The GPUs llama.cpp should use when the person has not said: the discrete ones of the
    vendor with the most memory; integrated GPUs only when nothing else is there. The notes say
    why a GPU was left out."""
    usable = [g for g in inventory.gpus if g.vendor in USABLE_VENDORS]
    notes = []
    for gpu in usable:
        if gpu.mig_mode == "Enabled" and not gpu.is_mig_instance:
            notes.append(
                f"GPU {gpu.index} ({gpu.name}) is in MIG mode without instances: CUDA cannot "
                "use it."
            )
    usable = [g for g in usable if g.mig_mode != "Enabled" or g.is_mig_instance]
    discrete = [g for g in usable if not g.integrated]
    if discrete:
        for gpu in usable:
            if gpu.integrated:
                notes.append(
                    f"GPU {gpu.index} ({gpu.name}) is integrated and is masked: llama.cpp would "
                    "split layers onto it next to a discrete GPU and fail."
                )
        usable = discrete
    by_vendor: dict[str, list[Gpu]] = {}
    for gpu in usable:
        by_vendor.setdefault(gpu.vendor, []).append(gpu)
    if not by_vendor:
        return [], notes
    if "nvidia" in by_vendor:
        by_vendor["nvidia"], mig_notes = one_mig_instance(by_vendor["nvidia"], largest=True)
        notes.extend(mig_notes)
    # Ties go to the shorter vendor name, only so that the choice never depends on dict order.
    vendor = max(by_vendor, key=lambda v: (sum(g.usable_bytes for g in by_vendor[v]), -len(v)))
    for other, gpus in by_vendor.items():
        if other != vendor:
            indices = ", ".join(str(g.index) for g in gpus)
            notes.append(
                f"GPU {indices} ({other}) is left out: one build drives one vendor's GPUs, and "
                f"the {vendor} GPUs have more memory. Choose with --gpu to change that."
            )
    return by_vendor[vendor], notes


def gpus_by_index(inventory: Inventory, indices: list[int]) -> list[Gpu]:
    """The GPUs the person named (`--gpu 1,0`), in their order, each once. Raises ChoiceError
    naming the detected GPUs when an index is not one of them."""
    valid = {g.index: g for g in inventory.gpus}
    unknown = [i for i in indices if i not in valid]
    if unknown:
        listing = ", ".join(f"{g.index} ({g.name})" for g in inventory.gpus) or "none"
        raise ChoiceError(
            f"There is no GPU {', '.join(map(str, unknown))} on this machine.",
            f"Choose from the detected GPUs: {listing} (see `llama-wizard detect`).",
        )
    return [valid[i] for i in dict.fromkeys(indices)]


def one_mig_instance(gpus: list[Gpu], *, largest: bool = False) -> tuple[list[Gpu], list[str]]:
    """`gpus` as one CUDA process can use them: a process enumerates one MIG instance and no
    instance next to whole GPUs (NVIDIA MIG user guide, "CUDA device enumeration"). Whole GPUs
    win over instances; of several instances one stays: the largest when `largest` (the default
    choice), else the first the person named. The notes say what was left out and why."""
    instances = [g for g in gpus if g.is_mig_instance]
    if not instances or (len(instances) == 1 and len(gpus) == 1):
        return gpus, []
    whole = [g for g in gpus if not g.is_mig_instance]
    left_out = ", ".join(f"{g.index} ({g.mig_profile})" for g in instances)
    if whole:
        return whole, [
            f"MIG instance{'s' if len(instances) > 1 else ''} {left_out} left out: a CUDA "
            "process cannot use a MIG instance together with whole GPUs."
        ]
    kept = max(instances, key=lambda g: g.usable_bytes) if largest else instances[0]
    others = ", ".join(f"{g.index} ({g.mig_profile})" for g in instances if g is not kept)
    return [kept], [
        f"Using MIG instance {kept.index} ({kept.mig_profile}) only: a CUDA process sees one MIG "
        f"instance, so llama.cpp cannot combine {others} with it into one model. Run one "
        "llama-server per instance to use the others (choose with --gpu)."
    ]
