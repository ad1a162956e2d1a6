"""Which ROCm build target an AMD GPU runs, and with which HSA_OVERRIDE_GFX_VERSION.

From the gfx table and its notes in gpu-detection.md §4-§5 and pitfalls 10-13: overrides are
family-based and never cross a major family (cgmb, legacy-rocm-build#1880: "GFX version 10.3.0
and 11.0.0 are not generally compatible"; a wrong one crashed the kernel, rocm-systems#3531).
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_wizard.detect.gfx import gfx_major


@dataclass(frozen=True)
class RocmTarget:
    build_target: str
    override: str | None
    why: str


@dataclass(frozen=True)
class NotForRocm:
    why: str


# Candidates in order of preference: the GPU's own target first where it has one.
_SIBLINGS: dict[str, tuple[RocmTarget, ...]] = {
    "gfx902": (RocmTarget("gfx900", "9.0.0", "GCN5 APUs run gfx900 code with "
               "HSA_OVERRIDE_GFX_VERSION=9.0.0"),),
    "gfx904": (RocmTarget("gfx900", "9.0.0", "Vega 12 runs gfx900 code with 9.0.0 "
               "(untested upstream)"),),
    "gfx90c": (RocmTarget("gfx900", "9.0.0", "Renoir/Cezanne APUs run gfx900 code with 9.0.0 "
               "(ROCm/rocBLAS#1398, legacy-rocm-build#1799)"),),
    "gfx940": (RocmTarget("gfx942", "9.4.2", "pre-production MI300 parts run gfx942 code"),),
    "gfx941": (RocmTarget("gfx942", "9.4.2", "pre-production MI300 parts run gfx942 code"),),
    **{
        gfx: (RocmTarget("gfx1030", "10.3.0", f"RDNA2 {gfx} runs the gfx1030 build with "
              "HSA_OVERRIDE_GFX_VERSION=10.3.0 (legacy-rocm-build#2720, ramalama#1129)"),)
        for gfx in ("gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035")
    },
    **{
        gfx: (RocmTarget("gfx1100", "11.0.0", f"RDNA3 {gfx} runs the gfx1100 build with "
              "HSA_OVERRIDE_GFX_VERSION=11.0.0 (11.0.1 failed where 11.0.0 worked, "
              "AUTOMATIC1111#13534; ROCm/rocBLAS#1536)"),)
        for gfx in ("gfx1101", "gfx1102", "gfx1103")
    },
    "gfx1150": (RocmTarget("gfx1151", "11.5.1", "Strix Point runs a gfx1151 build with "
                "11.5.1 (kyuz0/amd-strix-halo-toolboxes#43)"),),
    "gfx1152": (RocmTarget("gfx1150", "11.5.0", "Krackan Point runs gfx1150 code with "
                "11.5.0 (ggml-org/llama.cpp#19949)"),),
}  # fmt: skip

# Targets that must run their own code: an override is known to crash them.
_NATIVE_ONLY_WHY = {
    "gfx1010": "10.3.0 crashes gfx1010 on recent ROCm (legacy-rocm-build#887, #2527)",
    "gfx1200": "RDNA4 has no safe sibling target",
    "gfx1201": "RDNA4 has no safe sibling target",
    "gfx1151": "wrong overrides such as 12.0.1 can crash the kernel (rocm-systems#3531)",
}


def rocm_candidates(gfx: str) -> tuple[RocmTarget, ...] | NotForRocm:
    major = gfx_major(gfx)
    if major is None:
        return NotForRocm(f"{gfx} is not a gfx target ROCm knows")
    if major < 9:
        return NotForRocm(
            f"{gfx} predates gfx9: ROCm dropped it and runs it about 20x slower than Vulkan "
            "(ramalama#1482)"
        )
    if gfx == "gfx1036":
        return NotForRocm(
            "gfx1036 (the 2-CU Ryzen 7000/9000 iGPU) has no ROCm support; 10.3.0 segfaults on it "
            "(legacy-rocm-build#3015)"
        )
    if gfx == "gfx1011":
        return NotForRocm("gfx1011 (Navi 12) has no ROCm target and no known override")
    if gfx == "gfx906":
        native = RocmTarget(
            gfx,
            "9.0.6",
            "the llama.cpp flake runs MI50s with HSA_OVERRIDE_GFX_VERSION=9.0.6, which they "
            "require: it tells the ROCm runtime the exact GFX ISA version",
        )
    else:
        native = RocmTarget(gfx, None, _NATIVE_ONLY_WHY.get(gfx, f"{gfx} has its own ROCm target"))
    return (native, *_SIBLINGS.get(gfx, ()))


def needs_sdma_off(gfx: str | None, pci_device_id: str | None) -> bool:
    """HSA_ENABLE_SDMA=0: Vega 56/64 (1002:687f, ollama) and GCN APUs (comfyui-rocm-docker#3)."""
    return pci_device_id == "0x687f" or gfx in ("gfx902", "gfx90c")
