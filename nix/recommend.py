"""The build choice: which flake output fits the detected GPUs, and the environment its binaries
need on this hardware, each decision with a reason a person can read.

Rules from shared/reference/flake.md and gpu-detection.md §4-§11 (sources in nix/targets.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llama_wizard.detect.errors import ActionableError
from llama_wizard.detect.model import Gpu, Inventory
from llama_wizard.nix.catalogue import ROCM_BUILDABLE_TARGETS, describe
from llama_wizard.nix.environment import DRIVER_LIB_DIR, NixEnvironment
from llama_wizard.nix.flake import FlakeOutputs, nix_string
from llama_wizard.nix.targets import NotForRocm, RocmTarget, needs_sdma_off, rocm_candidates

ROCM_UNSET = ["HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL"]
MIN_CUDA_CAPABILITY = (5, 0)
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


class ChoiceError(ActionableError):
    """A choice the person made that cannot work, with what to do instead."""


@dataclass(frozen=True)
class Alternative:
    output: str
    why_not: str


@dataclass(frozen=True)
class PlanWarning:
    code: str
    message: str
    fix: str


@dataclass
class BuildChoice:
    flake: str
    system: str
    output: str
    backend: str
    build_argv: list[str]
    out_link: str
    env: dict[str, str] = field(default_factory=dict)
    unset_env: list[str] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    rocm_targets: list[str] | None = None
    reasons: list[str] = field(default_factory=list)
    alternatives: list[Alternative] = field(default_factory=list)
    costs: list[str] = field(default_factory=list)
    warnings: list[PlanWarning] = field(default_factory=list)
    recommended_output: str | None = None


def nix_system(inventory: Inventory) -> str:
    arch = _ARCH.get(inventory.cpu.arch.lower(), inventory.cpu.arch.lower())
    os_name = "darwin" if any(g.vendor == "apple" for g in inventory.gpus) else "linux"
    return f"{arch}-{os_name}"


def _capability(gpu: Gpu) -> tuple[int, int] | None:
    if not gpu.compute_capability:
        return None
    major, _, minor = gpu.compute_capability.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return None


def _memory(gpu: Gpu) -> int:
    return gpu.memory_usable_bytes or gpu.vram_total_bytes or 0


# --- choosing the GPUs ------------------------------------------------------------------------


def default_gpus(inventory: Inventory) -> tuple[list[Gpu], list[str]]:
    """The GPUs llama.cpp should use when the person has not said: the discrete ones of the
    vendor with the most memory; integrated GPUs only when nothing else is there."""
    usable = [g for g in inventory.gpus if g.vendor in ("amd", "nvidia", "intel", "apple")]
    notes = []
    discrete = [g for g in usable if not g.integrated]
    if discrete:
        for gpu in usable:
            if gpu.integrated:
                notes.append(
                    f"GPU {gpu.index} ({gpu.name}) is integrated and is masked: llama.cpp would "
                    "split layers onto it next to a discrete GPU and fail (gpu-detection.md "
                    "pitfall 4)."
                )
        usable = discrete
    by_vendor: dict[str, list[Gpu]] = {}
    for gpu in usable:
        by_vendor.setdefault(gpu.vendor, []).append(gpu)
    if not by_vendor:
        return [], notes
    vendor = max(by_vendor, key=lambda v: (sum(_memory(g) for g in by_vendor[v]), -len(v)))
    for other, gpus in by_vendor.items():
        if other != vendor:
            indices = ", ".join(str(g.index) for g in gpus)
            notes.append(
                f"GPU {indices} ({other}) is left out: one build drives one vendor's GPUs, and "
                f"the {vendor} GPUs have more memory. Choose with --gpu to change that."
            )
    return by_vendor[vendor], notes


def _gpus_by_index(inventory: Inventory, indices: list[int]) -> list[Gpu]:
    valid = {g.index: g for g in inventory.gpus}
    unknown = [i for i in indices if i not in valid]
    if unknown:
        listing = ", ".join(f"{g.index} ({g.name})" for g in inventory.gpus) or "none"
        raise ChoiceError(
            f"There is no GPU {', '.join(map(str, unknown))} on this machine.",
            f"Choose from the detected GPUs: {listing} (see `llama-wizard detect`).",
        )
    return [valid[i] for i in dict.fromkeys(indices)]


# --- ROCm ---------------------------------------------------------------------------------------


@dataclass
class _RocmResolution:
    targets: dict[int, RocmTarget]  # GPU index -> the target it runs
    problems: dict[int, str]  # GPU index -> why it cannot run this build


def _resolve_rocm(gpus: list[Gpu], available: set[str]) -> _RocmResolution:
    resolution = _RocmResolution({}, {})
    for gpu in gpus:
        gfx = gpu.gfx_target
        if gfx is None:
            resolution.problems[gpu.index] = f"GPU {gpu.index} has no known gfx target"
            continue
        candidates = rocm_candidates(gfx)
        if isinstance(candidates, NotForRocm):
            resolution.problems[gpu.index] = candidates.why
            continue
        chosen = next((c for c in candidates if c.build_target in available), None)
        if chosen is None:
            options = ", ".join(c.build_target for c in candidates)
            resolution.problems[gpu.index] = (
                f"GPU {gpu.index} ({gfx}) needs a build for {options}, which this build lacks"
            )
        else:
            resolution.targets[gpu.index] = chosen
    return resolution


def _rocm_available(flake: FlakeOutputs) -> set[str]:
    """Every target this flake can build: its per-gfx outputs, and what `rocm` can compile."""
    available = set(flake.rocm_gfx_outputs)
    if flake.has("rocm"):
        available |= set(ROCM_BUILDABLE_TARGETS)
    return available


def _kfd_ordinals(inventory: Inventory) -> dict[int, int]:
    """ROCR's numbering: GPU agents in KFD node order (CPUs not counted)."""
    with_node = sorted(
        (g for g in inventory.gpus if g.kfd_node is not None), key=lambda g: g.kfd_node or 0
    )
    return {gpu.index: ordinal for ordinal, gpu in enumerate(with_node)}


def _rocm_env(
    inventory: Inventory, gpus: list[Gpu], targets: dict[int, RocmTarget], choice: BuildChoice
) -> None:
    overrides = {gpu.index: targets[gpu.index].override for gpu in gpus if gpu.index in targets}
    needed = {o for o in overrides.values() if o}
    if len(needed) == 1 and all(overrides.values()):
        value = needed.pop()
        choice.env["HSA_OVERRIDE_GFX_VERSION"] = value
        choice.reasons.append(
            f"HSA_OVERRIDE_GFX_VERSION={value}: "
            + "; ".join(dict.fromkeys(targets[g.index].why for g in gpus if g.index in targets))
        )
    elif needed:
        for gpu in gpus:
            value = overrides.get(gpu.index)
            if not value:
                continue
            if gpu.kfd_node is None:
                choice.warnings.append(
                    PlanWarning(
                        "override_without_node",
                        f"GPU {gpu.index} needs HSA_OVERRIDE_GFX_VERSION={value} but its KFD "
                        "node is unknown, so the per-GPU variable cannot be set.",
                        "Check that /sys/class/kfd is readable (or run `rocminfo`), then plan "
                        "again.",
                    )
                )
                continue
            # The suffix is the KFD topology node, CPUs included (ROCT topology.c, pitfall 11).
            choice.env[f"HSA_OVERRIDE_GFX_VERSION_{gpu.kfd_node}"] = value
            choice.reasons.append(
                f"HSA_OVERRIDE_GFX_VERSION_{gpu.kfd_node}={value} for GPU {gpu.index} only "
                f"(KFD node {gpu.kfd_node}): {targets[gpu.index].why}"
            )
    uuids = [gpu.uuid for gpu in gpus]
    if all(uuids):
        choice.env["ROCR_VISIBLE_DEVICES"] = ",".join(uuid for uuid in uuids if uuid)
        how = "by UUID"
    else:
        ordinals = _kfd_ordinals(inventory)
        choice.env["ROCR_VISIBLE_DEVICES"] = ",".join(
            str(ordinals.get(gpu.index, position)) for position, gpu in enumerate(gpus)
        )
        how = "by KFD ordinal (no UUIDs known)"
    choice.reasons.append(
        f"ROCR_VISIBLE_DEVICES selects GPU {', '.join(str(g.index) for g in gpus)} {how}; "
        "HIP_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES are unset because HIP re-indexes them "
        "after ROCR's mask and reads CUDA's too (pitfalls 3 and 15)."
    )
    choice.unset_env = list(ROCM_UNSET)
    if any(needs_sdma_off(g.gfx_target, g.pci_device_id) for g in gpus):
        choice.env["HSA_ENABLE_SDMA"] = "0"
        choice.reasons.append("HSA_ENABLE_SDMA=0: Vega 56/64 and GCN APUs hang on SDMA copies.")
    if any(g.integrated for g in gpus):
        choice.env["GGML_CUDA_ENABLE_UNIFIED_MEMORY"] = "1"
        choice.reasons.append(
            "GGML_CUDA_ENABLE_UNIFIED_MEMORY=1: an APU's memory is mostly GTT (system RAM), "
            "which llama.cpp reaches through unified memory (pitfall 1)."
        )


# --- the choice ------------------------------------------------------------------------------


def _out_link(state_dir: Path, output: str) -> str:
    return str(state_dir / "builds" / f"result-{output}")


def _finish_argv(
    choice: BuildChoice, flake: FlakeOutputs, nix_env: NixEnvironment | None, state_dir: Path
) -> None:
    slug = choice.output
    if choice.rocm_targets is not None:
        slug = "rocm-" + "-".join(choice.rocm_targets)
    choice.out_link = _out_link(state_dir, slug)
    if choice.rocm_targets is not None:
        targets = ";".join(choice.rocm_targets)
        expression = (
            f"(builtins.getFlake {nix_string(flake.ref)}).packages.{choice.system}.rocm"
            f".override {{ rocmGpuTargets = {nix_string(targets)}; }}"
        )
        args = ["build", "--impure", "--expr", expression, "--out-link", choice.out_link]
    else:
        args = ["build", f"{flake.ref}#{choice.output}", "--out-link", choice.out_link]
    choice.build_argv = nix_env.nix_argv(*args) if nix_env else ["nix", *args]
    if nix_env and nix_env.needs_feature_flag:
        choice.reasons.append(
            "Flakes are not enabled in this Nix's configuration, so every nix command gets "
            "`--extra-experimental-features 'nix-command flakes'` (to enable them for good, add "
            "`experimental-features = nix-command flakes` to ~/.config/nix/nix.conf)."
        )


def _driver_path_warning(backend: str, nix_env: NixEnvironment | None) -> PlanWarning | None:
    if nix_env is None or nix_env.is_nixos or nix_env.driver_dir_present:
        return None
    what = "libcuda.so.1" if backend == "cuda" else "the Vulkan ICD files and driver"
    library = "libcuda" if backend == "cuda" else "libvulkan"
    return PlanWarning(
        "driver_path_missing",
        f"This is not NixOS: Nix-built {backend} binaries look for {what} in {DRIVER_LIB_DIR}, "
        f"which does not exist here, so they would fail with 'CUDA driver is a stub library' or "
        "find no GPU (NixOS/nixpkgs#320145).",
        f"Before launching, link the host's driver there: `sudo mkdir -p {DRIVER_LIB_DIR} && "
        f"sudo ln -sf $(ldconfig -p | awk '/{library}/{{print $NF}}') "
        f"{DRIVER_LIB_DIR}/` (redo after a reboot, or add a systemd-tmpfiles rule), or run the "
        "binaries through nixGL.",
    )


def recommend(
    inventory: Inventory,
    flake: FlakeOutputs,
    nix_env: NixEnvironment | None,
    state_dir: Path,
    *,
    output: str | None = None,
    gpu_indices: list[int] | None = None,
) -> BuildChoice:
    """The recommended build (or the person's `output`/`gpu_indices`, with what they cost)."""
    system = nix_system(inventory)
    if gpu_indices is not None:  # [] is a choice too: the CPU
        gpus, notes = _gpus_by_index(inventory, gpu_indices), []
    else:
        gpus, notes = default_gpus(inventory)
    choice = _recommend_for(inventory, gpus, flake, system)
    choice.reasons = notes + choice.reasons
    choice.recommended_output = choice.output
    if gpu_indices:
        _gpu_override_costs(gpus, choice)
    if output is not None and output != choice.output:
        choice = _apply_output_override(
            inventory, gpus, flake, system=system, recommended=choice, output=output
        )
    _finish_argv(choice, flake, nix_env, state_dir)
    warning = _driver_path_warning(choice.backend, nix_env)
    if warning and choice.backend in ("cuda", "vulkan"):
        choice.warnings.append(warning)
    return choice


def _base(flake: FlakeOutputs, system: str, output: str, backend: str, gpus: list[Gpu]):
    return BuildChoice(
        flake=flake.ref,
        system=system,
        output=output,
        backend=backend,
        build_argv=[],
        out_link="",
        gpus=[g.index for g in gpus],
    )


def _recommend_for(
    inventory: Inventory, gpus: list[Gpu], flake: FlakeOutputs, system: str
) -> BuildChoice:
    vendors = {g.vendor for g in gpus}
    if not gpus:
        choice = _cpu_choice(
            flake,
            system,
            [],
            "No usable GPU was found, so llama.cpp runs on the CPU (`default`, with BLAS).",
        )
    elif vendors == {"apple"}:
        choice = _cpu_choice(
            flake, system, gpus, "macOS: the `default` output uses Metal on Apple Silicon."
        )
    elif vendors == {"nvidia"}:
        choice = _nvidia_choice(flake, system, gpus)
    elif vendors == {"amd"}:
        choice = _amd_choice(inventory, flake, system, gpus)
    elif vendors == {"intel"}:
        choice = _vulkan_choice(
            flake,
            system,
            gpus,
            "Intel GPUs run llama.cpp through Vulkan (ramalama prefers Vulkan for Intel).",
        )
    else:
        choice = _vulkan_choice(
            flake,
            system,
            gpus,
            "GPUs of several vendors were chosen: only the Vulkan build drives them all at once.",
        )
    _add_alternatives(choice, flake, gpus)
    return choice


def _cpu_choice(flake: FlakeOutputs, system: str, gpus: list[Gpu], why: str) -> BuildChoice:
    choice = _base(flake, system, "default", "cpu", gpus)
    choice.reasons.append(why)
    return choice


def _vulkan_choice(flake: FlakeOutputs, system: str, gpus: list[Gpu], why: str) -> BuildChoice:
    if not flake.has("vulkan"):
        return _cpu_choice(
            flake,
            system,
            [],
            f"{why} This flake has no `vulkan` output, so llama.cpp runs on the CPU.",
        )
    choice = _base(flake, system, "vulkan", "vulkan", gpus)
    choice.reasons.append(why)
    choice.reasons.append(
        "Vulkan devices are chosen at launch with `--device VulkanN` from "
        "`llama-server --list-devices`: GGML_VK_VISIBLE_DEVICES counts raw Vulkan devices, "
        "duplicates and llvmpipe included (pitfall 14)."
    )
    return choice


def _nvidia_choice(flake: FlakeOutputs, system: str, gpus: list[Gpu]) -> BuildChoice:
    capable = [g for g in gpus if (_capability(g) or (99, 0)) >= MIN_CUDA_CAPABILITY]
    old = [g for g in gpus if g not in capable]
    if not capable:
        listing = ", ".join(f"GPU {g.index} is CC {g.compute_capability}" for g in old)
        why = f"llama.cpp's CUDA backend needs compute capability 5.0 or newer and {listing}"
        return _vulkan_choice(flake, system, gpus, f"{why}, so Vulkan it is.")
    if not flake.has("cuda"):
        return _vulkan_choice(flake, system, capable, "This flake has no `cuda` output.")
    choice = _base(flake, system, "cuda", "cuda", capable)
    names = ", ".join(f"GPU {g.index} (CC {g.compute_capability or '?'})" for g in capable)
    choice.reasons.append(f"NVIDIA {names}: the `cuda` output (CUDA needs CC >= 5.0).")
    for gpu in old:
        choice.reasons.append(
            f"GPU {gpu.index} ({gpu.name}, CC {gpu.compute_capability}) is too old for CUDA "
            "builds and is left out."
        )
    choice.env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    uuids = [g.uuid for g in capable]
    nvidia_order = [g.index for g in gpus if g.vendor == "nvidia"]
    if all(uuids):
        choice.env["CUDA_VISIBLE_DEVICES"] = ",".join(u for u in uuids if u)
    else:
        choice.env["CUDA_VISIBLE_DEVICES"] = ",".join(
            str(nvidia_order.index(g.index)) for g in capable
        )
    choice.reasons.append(
        "CUDA_DEVICE_ORDER=PCI_BUS_ID and CUDA_VISIBLE_DEVICES by UUID: CUDA's own order is "
        "fastest-first and differs from nvidia-smi's (pitfall 5)."
    )
    if any(g.driver != "nvidia" for g in capable):
        choice.warnings.append(
            PlanWarning(
                "nvidia_driver_needed",
                "The CUDA build needs NVIDIA's driver, which is not loaded for every chosen GPU.",
                "Install it first (see the detection warnings), then launch.",
            )
        )
    return choice


def _amd_choice(
    inventory: Inventory, flake: FlakeOutputs, system: str, gpus: list[Gpu]
) -> BuildChoice:
    if not system.startswith("x86_64"):
        return _vulkan_choice(
            flake,
            system,
            gpus,
            "ROCm is not available on "
            f"{system.split('-', maxsplit=1)[0]}: Vulkan drives AMD GPUs there "
            "(ramalama#2048).",
        )
    if len(gpus) > 1:
        usable = [g for g in gpus if g.gfx_target != "gfx1036"]
        if usable and len(usable) < len(gpus):
            gpus = usable
    resolution = _resolve_rocm(gpus, _rocm_available(flake))
    if resolution.problems or not resolution.targets:
        why = "; ".join(resolution.problems.values()) or "no ROCm target fits"
        return _vulkan_choice(flake, system, gpus, f"Not ROCm: {why}. Vulkan runs it instead.")
    build_targets = sorted(
        {t.build_target for t in resolution.targets.values()}, key=lambda t: (len(t), t)
    )
    if len(build_targets) == 1 and flake.has(f"rocm-{build_targets[0]}"):
        output = f"rocm-{build_targets[0]}"
        choice = _base(flake, system, output, "rocm", gpus)
        info = describe(output)
        choice.reasons.append(
            f"`{output}` is this flake's ROCm build for {build_targets[0]}"
            + (f" ({info.description.removeprefix('ROCm build for ')})" if info else "")
            + ": it compiles one GPU architecture instead of every one."
        )
    else:
        choice = _base(flake, system, "rocm", "rocm", gpus)
        choice.rocm_targets = build_targets
        full = len(ROCM_BUILDABLE_TARGETS)
        missing = (
            "no per-gfx outputs"
            if not flake.rocm_gfx_outputs
            else (f"no single output for {', '.join(build_targets)}")
        )
        choice.reasons.append(
            f"This flake has {missing}, so the wizard builds `rocm` restricted to "
            f"{';'.join(build_targets)} (`rocm.override {{ rocmGpuTargets = ...; }}`): "
            f"{len(build_targets)} architecture{'s' if len(build_targets) > 1 else ''} instead "
            f"of the {full} that plain `rocm` compiles, roughly {full // len(build_targets)}x "
            "less GPU code to build (and far less memory while compiling)."
        )
    _rocm_env(inventory, gpus, resolution.targets, choice)
    return choice


def _add_alternatives(choice: BuildChoice, flake: FlakeOutputs, gpus: list[Gpu]) -> None:
    backend = choice.backend
    options: list[Alternative] = []
    if backend == "rocm" and choice.output != "rocm" and flake.has("rocm"):
        options.append(
            Alternative(
                "rocm",
                f"compiles every ROCm architecture "
                f"({len(ROCM_BUILDABLE_TARGETS)}) for the same result: a much "
                "longer build",
            )
        )
    if backend in ("rocm", "cuda") and flake.has("vulkan"):
        options.append(
            Alternative(
                "vulkan",
                "portable, but the vendor backend "
                f"({backend.upper()}) is the one tuned for these GPUs; keep "
                "it as the fallback if that build fails",
            )
        )
    if backend == "vulkan":
        vendors = {g.vendor for g in gpus}
        if "nvidia" in vendors and flake.has("cuda"):
            options.append(
                Alternative(
                    "cuda",
                    "needs compute capability >= 5.0 on every chosen GPU"
                    if len(vendors) == 1
                    else "drives only the NVIDIA GPUs",
                )
            )
        if "amd" in vendors and flake.has("rocm"):
            options.append(Alternative("rocm", "does not support these AMD GPUs (see reasons)"))
    if backend != "cpu" and flake.has("default"):
        options.append(Alternative("default", "CPU only: the GPUs would sit idle"))
    if backend == "cpu" and gpus == []:
        for name in ("vulkan", "cuda", "rocm"):
            if flake.has(name):
                options.append(Alternative(name, "no usable GPU of its kind was found"))
    choice.alternatives = options


def _gpu_override_costs(gpus: list[Gpu], choice: BuildChoice) -> None:
    for gpu in gpus:
        if gpu.integrated and any(not g.integrated for g in gpus):
            choice.costs.append(
                f"GPU {gpu.index} is integrated: next to a discrete GPU llama.cpp may split "
                "layers onto it and crash (pitfall 4)."
            )
        if gpu.vendor == "other":
            choice.costs.append(f"GPU {gpu.index} ({gpu.name}) is not a GPU llama.cpp can use.")


def _apply_output_override(
    inventory: Inventory,
    gpus: list[Gpu],
    flake: FlakeOutputs,
    *,
    system: str,
    recommended: BuildChoice,
    output: str,
) -> BuildChoice:
    if not flake.has(output):
        close = [
            p for p in flake.packages if output.split("-", maxsplit=1)[0] in p
        ] or flake.packages
        raise ChoiceError(
            f"The flake {flake.ref} has no output `{output}`.",
            f"Its outputs: {', '.join(close)}.",
        )
    info = describe(output)
    choice = _base(flake, system, output, info.backend if info else output, gpus)
    choice.reasons = [
        f"`{output}` was chosen by hand; the recommendation is `{recommended.output}`."
    ]
    choice.recommended_output = recommended.output
    choice.alternatives = [
        Alternative(recommended.output, "the recommendation: " + " ".join(recommended.reasons[:1]))
    ]
    costs = list(recommended.costs)
    if info and not info.default_choice:
        costs.append(f"`{output}` is not a llama.cpp build for running here: {info.description}.")
    if output == "rocm":
        costs.append(
            f"`rocm` builds {len(ROCM_BUILDABLE_TARGETS)} architectures: expect a much longer "
            "build and several times the memory while compiling (users report running out)."
        )
    amd = [g for g in gpus if g.vendor == "amd"]
    if choice.backend == "rocm" and amd:
        available = (
            {output.removeprefix("rocm-")}
            if output.startswith("rocm-")
            else (_rocm_available(flake))
        )
        resolution = _resolve_rocm(amd, available)
        for problem in resolution.problems.values():
            costs.append(f"It will not run: {problem}.")
        if resolution.targets:
            _rocm_env(
                inventory,
                [g for g in amd if g.index in resolution.targets],
                resolution.targets,
                choice,
            )
    elif choice.backend == "cuda":
        nvidia = [g for g in gpus if g.vendor == "nvidia"]
        if not nvidia:
            costs.append("No NVIDIA GPU is chosen: the CUDA build would run on the CPU only.")
        else:
            cuda = _nvidia_choice(flake, system, nvidia)
            choice.env, choice.unset_env = cuda.env, cuda.unset_env
    elif choice.backend == "vulkan" and recommended.backend in ("rocm", "cuda"):
        costs.append(
            f"Vulkan instead of {recommended.backend.upper()}: portable, but usually "
            "slower prompt processing on these GPUs."
        )
    elif choice.backend == "cpu" and gpus:
        costs.append("CPU only: the GPUs sit idle.")
    choice.costs = costs
    return choice
