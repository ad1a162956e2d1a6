"""The build choice: which flake output fits the detected GPUs, and the environment its binaries
need on this hardware, each decision with a reason a person can read.

Rules from shared/reference/flake.md and gpu-detection.md §4-§11 (sources in nix/targets.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from llama_wizard.detect.errors import ChoiceError
from llama_wizard.detect.model import Gpu, Inventory
from llama_wizard.detect.selection import default_gpus, gpus_by_index, one_mig_instance
from llama_wizard.nix.catalogue import ROCM_BUILDABLE_TARGETS, describe
from llama_wizard.nix.environment import DRIVER_LIB_DIR, NixEnvironment
from llama_wizard.nix.flake import FlakeOutputs, nix_string
from llama_wizard.nix.targets import NotForRocm, RocmTarget, needs_sdma_off, rocm_candidates

ROCM_UNSET = ["HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL"]
MIN_CUDA_CAPABILITY = (5, 0)
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

# ChoiceError moved to detect/errors.py (GPU selection raises it too); it stays importable from
# here, where the CLI and the tests have always found it.
__all__ = [
    "Alternative",
    "BuildChoice",
    "ChoiceError",
    "PlanWarning",
    "nix_system",
    "recommend",
]


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
    # Names this build's result link and build record: the label plus the flake's key, so that
    # a `default` built from one flake is not taken for the `default` of another.
    build_name: str
    env: dict[str, str] = field(default_factory=dict)
    unset_env: list[str] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    rocm_targets: list[str] | None = None
    reasons: list[str] = field(default_factory=list)
    alternatives: list[Alternative] = field(default_factory=list)
    costs: list[str] = field(default_factory=list)
    warnings: list[PlanWarning] = field(default_factory=list)
    recommended_output: str | None = None
    # llama.cpp's RPC backend built in (`.override { useRpc = true; }`): rpc-server on a
    # cluster's workers, `--rpc` on its head (`llama-wizard cluster`).
    use_rpc: bool = False

    @property
    def recommended(self) -> str:
        """The output recommended for these GPUs (this one, unless it was chosen by hand)."""
        return self.recommended_output or self.output

    @property
    def build_label(self) -> str:
        """What a person calls this build: the output, or `rocm-gfxA-gfxB` for `rocm` restricted
        to those targets (two such builds are different results of the same output)."""
        label = self.output
        if self.rocm_targets is not None:
            label = "rocm-" + "-".join(self.rocm_targets)
        return f"{label}-rpc" if self.use_rpc else label


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


@dataclass(frozen=True)
class _Runtime:
    """What a build's binaries need at run time on the chosen GPUs (variables to set and to
    unset), with the reasons and warnings: computed on its own, then placed in a BuildChoice."""

    env: dict[str, str] = field(default_factory=dict)
    unset_env: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    warnings: list[PlanWarning] = field(default_factory=list)


def _rocm_env(inventory: Inventory, gpus: list[Gpu], targets: dict[int, RocmTarget]) -> _Runtime:
    env: dict[str, str] = {}
    reasons: list[str] = []
    warnings: list[PlanWarning] = []
    overrides = {gpu.index: targets[gpu.index].override for gpu in gpus if gpu.index in targets}
    needed = {o for o in overrides.values() if o}
    if len(needed) == 1 and all(overrides.values()):
        value = needed.pop()
        env["HSA_OVERRIDE_GFX_VERSION"] = value
        reasons.append(
            f"HSA_OVERRIDE_GFX_VERSION={value}: "
            + "; ".join(dict.fromkeys(targets[g.index].why for g in gpus if g.index in targets))
        )
    elif needed:
        for gpu in gpus:
            value = overrides.get(gpu.index)
            if not value:
                continue
            if gpu.kfd_node is None:
                warnings.append(
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
            env[f"HSA_OVERRIDE_GFX_VERSION_{gpu.kfd_node}"] = value
            reasons.append(
                f"HSA_OVERRIDE_GFX_VERSION_{gpu.kfd_node}={value} for GPU {gpu.index} only "
                f"(KFD node {gpu.kfd_node}): {targets[gpu.index].why}"
            )
    uuids = [gpu.uuid for gpu in gpus]
    if all(uuids):
        env["ROCR_VISIBLE_DEVICES"] = ",".join(uuid for uuid in uuids if uuid)
        how = "by UUID"
    else:
        ordinals = _kfd_ordinals(inventory)
        env["ROCR_VISIBLE_DEVICES"] = ",".join(
            str(ordinals.get(gpu.index, position)) for position, gpu in enumerate(gpus)
        )
        how = "by KFD ordinal (no UUIDs known)"
    reasons.append(
        f"ROCR_VISIBLE_DEVICES selects GPU {', '.join(str(g.index) for g in gpus)} {how}; "
        "HIP_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES are unset because HIP re-indexes them "
        "after ROCR's mask and reads CUDA's too."
    )
    if any(needs_sdma_off(g.gfx_target, g.pci_device_id) for g in gpus):
        env["HSA_ENABLE_SDMA"] = "0"
        reasons.append("HSA_ENABLE_SDMA=0: Vega 56/64 and GCN APUs hang on SDMA copies.")
    if any(g.integrated for g in gpus):
        env["GGML_CUDA_ENABLE_UNIFIED_MEMORY"] = "1"
        reasons.append(
            "GGML_CUDA_ENABLE_UNIFIED_MEMORY=1: an APU's memory is mostly GTT (system RAM), "
            "which llama.cpp reaches through unified memory."
        )
    return _Runtime(env, list(ROCM_UNSET), reasons, warnings)


# --- the choice ------------------------------------------------------------------------------


def _with_argv(
    choice: BuildChoice, flake: FlakeOutputs, nix_env: NixEnvironment | None, state_dir: Path
) -> BuildChoice:
    """choice with its build name, result link and `nix build` command line."""
    build_name = f"{choice.build_label}-{flake.key}"
    out_link = str(state_dir / "builds" / f"result-{build_name}")
    overrides = []
    if choice.rocm_targets is not None:
        overrides.append(f"rocmGpuTargets = {nix_string(';'.join(choice.rocm_targets))};")
    if choice.use_rpc:
        overrides.append("useRpc = true;")
    if overrides:
        # The package's own options (.devops/nix/package.nix), through getFlake: --impure.
        package = "rocm" if choice.rocm_targets is not None else choice.output
        expression = (
            f"(builtins.getFlake {nix_string(flake.ref)}).packages.{choice.system}"
            f".{nix_attribute(package)}.override {{ {' '.join(overrides)} }}"
        )
        args = ["build", "--impure", "--expr", expression, "--out-link", out_link]
    else:
        args = ["build", f"{flake.ref}#{choice.output}", "--out-link", out_link]
    reasons = list(choice.reasons)
    if nix_env and nix_env.needs_feature_flag:
        reasons.append(
            "Flakes are not enabled in this Nix's configuration, so every nix command gets "
            "`--extra-experimental-features 'nix-command flakes'` (to enable them for good, add "
            "`experimental-features = nix-command flakes` to ~/.config/nix/nix.conf)."
        )
    return replace(
        choice,
        build_name=build_name,
        out_link=out_link,
        build_argv=nix_env.nix_argv(*args) if nix_env else ["nix", *args],
        reasons=reasons,
    )


def nix_attribute(name: str) -> str:
    """An attribute name as a Nix expression writes it (quoted unless a plain identifier)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_'-]*", name):
        return name
    return nix_string(name)


def with_rpc(
    choice: BuildChoice, flake: FlakeOutputs, nix_env: NixEnvironment | None, state_dir: Path
) -> BuildChoice:
    """The same build with llama.cpp's RPC backend in it: its own result link and build name
    (`rocm-gfx906-rpc`), built with `.override { useRpc = true; }`."""
    if choice.use_rpc:
        return choice
    reasons = [
        *choice.reasons,
        "Built with llama.cpp's RPC backend (useRpc = true): rpc-server on the workers, "
        "`--rpc` on the head.",
    ]
    return _with_argv(replace(choice, use_rpc=True, reasons=reasons), flake, nix_env, state_dir)


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
    mig_warnings: list[PlanWarning] = []
    if gpu_indices is not None:  # [] is a choice too: the CPU
        gpus, mig_notes = one_mig_instance(gpus_by_index(inventory, gpu_indices))
        notes: list[str] = []
        mig_warnings = [
            PlanWarning(
                "mig_one_instance",
                note,
                "Choose one MIG instance with --gpu, and start one llama-server per instance.",
            )
            for note in mig_notes
        ]
    else:
        gpus, notes = default_gpus(inventory)
    found = _recommend_for(inventory, gpus, flake, system)
    choice = replace(
        found,
        warnings=[*mig_warnings, *found.warnings],
        reasons=[*notes, *found.reasons],
        recommended_output=found.output,
        costs=[*found.costs, *(_gpu_override_costs(gpus) if gpu_indices else [])],
    )
    if output is not None and output != choice.output:
        choice = _output_override(
            inventory, gpus, flake, system=system, recommended=choice, output=output
        )
    choice = _with_argv(choice, flake, nix_env, state_dir)
    warning = _driver_path_warning(choice.backend, nix_env)
    if warning and choice.backend in ("cuda", "vulkan"):
        choice = replace(choice, warnings=[*choice.warnings, warning])
    return choice


def _base(
    flake: FlakeOutputs,
    system: str,
    output: str,
    backend: str,
    gpus: list[Gpu],
    *,
    reasons: list[str],
    runtime: _Runtime | None = None,
    rocm_targets: list[str] | None = None,
) -> BuildChoice:
    """A choice without its command line yet (recommend() adds it last, once the output is
    settled)."""
    runtime = runtime or _Runtime()
    return BuildChoice(
        flake=flake.ref,
        system=system,
        output=output,
        backend=backend,
        build_argv=[],
        out_link="",
        build_name="",
        env=dict(runtime.env),
        unset_env=list(runtime.unset_env),
        gpus=[g.index for g in gpus],
        rocm_targets=rocm_targets,
        reasons=[*reasons, *runtime.reasons],
        warnings=list(runtime.warnings),
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
    return replace(choice, alternatives=_alternatives(choice, flake, gpus))


def _cpu_choice(flake: FlakeOutputs, system: str, gpus: list[Gpu], why: str) -> BuildChoice:
    return _base(flake, system, "default", "cpu", gpus, reasons=[why])


def _vulkan_choice(flake: FlakeOutputs, system: str, gpus: list[Gpu], why: str) -> BuildChoice:
    if not flake.has("vulkan"):
        return _cpu_choice(
            flake,
            system,
            [],
            f"{why} This flake has no `vulkan` output, so llama.cpp runs on the CPU.",
        )
    return _base(
        flake,
        system,
        "vulkan",
        "vulkan",
        gpus,
        reasons=[
            why,
            "Vulkan devices are chosen at launch with `--device VulkanN` from "
            "`llama-server --list-devices`: GGML_VK_VISIBLE_DEVICES counts raw Vulkan devices, "
            "duplicates and llvmpipe included.",
        ],
    )


def _cuda_runtime(gpus: list[Gpu], capable: list[Gpu]) -> _Runtime:
    """CUDA's variables for the `capable` GPUs out of the chosen `gpus`."""
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    uuids = [g.uuid for g in capable]
    nvidia_order = [g.index for g in gpus if g.vendor == "nvidia"]
    if all(uuids):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(u for u in uuids if u)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(nvidia_order.index(g.index)) for g in capable)
    warnings = []
    if any(g.driver != "nvidia" for g in capable):
        warnings.append(
            PlanWarning(
                "nvidia_driver_needed",
                "The CUDA build needs NVIDIA's driver, which is not loaded for every chosen GPU.",
                "Install it first (see the detection warnings), then launch.",
            )
        )
    reasons = [
        "CUDA_DEVICE_ORDER=PCI_BUS_ID and CUDA_VISIBLE_DEVICES by UUID: CUDA's own order is "
        "fastest-first and differs from nvidia-smi's."
    ]
    reasons += [
        f"GPU {g.index} is MIG instance {g.mig_profile} of {g.mig_parent_uuid}: "
        f"CUDA_VISIBLE_DEVICES={g.uuid} selects it (the parent GPU's UUID would leave CUDA to "
        "pick an instance)."
        for g in capable
        if g.is_mig_instance
    ]
    return _Runtime(env=env, reasons=reasons, warnings=warnings)


def _nvidia_choice(flake: FlakeOutputs, system: str, gpus: list[Gpu]) -> BuildChoice:
    capable = [g for g in gpus if (_capability(g) or (99, 0)) >= MIN_CUDA_CAPABILITY]
    old = [g for g in gpus if g not in capable]
    if not capable:
        listing = ", ".join(f"GPU {g.index} is CC {g.compute_capability}" for g in old)
        why = f"llama.cpp's CUDA backend needs compute capability 5.0 or newer and {listing}"
        return _vulkan_choice(flake, system, gpus, f"{why}, so Vulkan it is.")
    if not flake.has("cuda"):
        return _vulkan_choice(flake, system, capable, "This flake has no `cuda` output.")
    names = ", ".join(f"GPU {g.index} (CC {g.compute_capability or '?'})" for g in capable)
    reasons = [f"NVIDIA {names}: the `cuda` output (CUDA needs CC >= 5.0)."]
    reasons += [
        f"GPU {gpu.index} ({gpu.name}, CC {gpu.compute_capability}) is too old for CUDA "
        "builds and is left out."
        for gpu in old
    ]
    runtime = _cuda_runtime(gpus, capable)
    return _base(flake, system, "cuda", "cuda", capable, reasons=reasons, runtime=runtime)


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
    runtime = _rocm_env(inventory, gpus, resolution.targets)
    if len(build_targets) == 1 and flake.has(f"rocm-{build_targets[0]}"):
        output = f"rocm-{build_targets[0]}"
        info = describe(output)
        why = (
            f"`{output}` is this flake's ROCm build for {build_targets[0]}"
            + (f" ({info.description.removeprefix('ROCm build for ')})" if info else "")
            + ": it compiles one GPU architecture instead of every one."
        )
        return _base(flake, system, output, "rocm", gpus, reasons=[why], runtime=runtime)
    full = len(ROCM_BUILDABLE_TARGETS)
    missing = (
        "no per-gfx outputs"
        if not flake.rocm_gfx_outputs
        else (f"no single output for {', '.join(build_targets)}")
    )
    why = (
        f"This flake has {missing}, so the wizard builds `rocm` restricted to "
        f"{';'.join(build_targets)} (`rocm.override {{ rocmGpuTargets = ...; }}`): "
        f"{len(build_targets)} architecture{'s' if len(build_targets) > 1 else ''} instead "
        f"of the {full} that plain `rocm` compiles, roughly {full // len(build_targets)}x "
        "less GPU code to build (and far less memory while compiling)."
    )
    return _base(
        flake,
        system,
        "rocm",
        "rocm",
        gpus,
        reasons=[why],
        runtime=runtime,
        rocm_targets=build_targets,
    )


def _alternatives(choice: BuildChoice, flake: FlakeOutputs, gpus: list[Gpu]) -> list[Alternative]:
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
        options += [
            Alternative(name, "no usable GPU of its kind was found")
            for name in ("vulkan", "cuda", "rocm")
            if flake.has(name)
        ]
    return options


def _gpu_override_costs(gpus: list[Gpu]) -> list[str]:
    costs = []
    for gpu in gpus:
        if gpu.integrated and any(not g.integrated for g in gpus):
            costs.append(
                f"GPU {gpu.index} is integrated: next to a discrete GPU llama.cpp may split "
                "layers onto it and crash."
            )
        if gpu.vendor == "other":
            costs.append(f"GPU {gpu.index} ({gpu.name}) is not a GPU llama.cpp can use.")
    return costs


def _output_override(
    inventory: Inventory,
    gpus: list[Gpu],
    flake: FlakeOutputs,
    *,
    system: str,
    recommended: BuildChoice,
    output: str,
) -> BuildChoice:
    """The person's `output` instead of the recommended one, with what it costs them."""
    if not flake.has(output):
        close = [
            p for p in flake.packages if output.split("-", maxsplit=1)[0] in p
        ] or flake.packages
        raise ChoiceError(
            f"The flake {flake.ref} has no output `{output}`.",
            f"Its outputs: {', '.join(close)}.",
        )
    info = describe(output)
    backend = info.backend if info else output
    costs = list(recommended.costs)
    if info and not info.default_choice:
        costs.append(f"`{output}` is not a llama.cpp build for running here: {info.description}.")
    if output == "rocm":
        costs.append(
            f"`rocm` builds {len(ROCM_BUILDABLE_TARGETS)} architectures: expect a much longer "
            "build and several times the memory while compiling (users report running out)."
        )
    runtime = _Runtime()
    amd = [g for g in gpus if g.vendor == "amd"]
    if backend == "rocm" and amd:
        available = (
            {output.removeprefix("rocm-")}
            if output.startswith("rocm-")
            else (_rocm_available(flake))
        )
        resolution = _resolve_rocm(amd, available)
        costs += [f"It will not run: {problem}." for problem in resolution.problems.values()]
        if resolution.targets:
            runtime = _rocm_env(
                inventory, [g for g in amd if g.index in resolution.targets], resolution.targets
            )
    elif backend == "cuda":
        nvidia = [g for g in gpus if g.vendor == "nvidia"]
        if not nvidia:
            costs.append("No NVIDIA GPU is chosen: the CUDA build would run on the CPU only.")
        else:
            # Only CUDA's variables: the reasons of the CUDA recommendation are not this choice's.
            cuda = _nvidia_choice(flake, system, nvidia)
            runtime = _Runtime(env=cuda.env, unset_env=cuda.unset_env)
    elif backend == "vulkan" and recommended.backend in ("rocm", "cuda"):
        costs.append(
            f"Vulkan instead of {recommended.backend.upper()}: portable, but usually "
            "slower prompt processing on these GPUs."
        )
    elif backend == "cpu" and gpus:
        costs.append("CPU only: the GPUs sit idle.")
    choice = _base(
        flake,
        system,
        output,
        backend,
        gpus,
        reasons=[f"`{output}` was chosen by hand; the recommendation is `{recommended.output}`."],
        runtime=runtime,
    )
    return replace(
        choice,
        recommended_output=recommended.output,
        alternatives=[
            Alternative(
                recommended.output, "the recommendation: " + " ".join(recommended.reasons[:1])
            )
        ],
        costs=costs,
    )
