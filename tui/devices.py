"""What llama.cpp itself sees: the built binary's `--list-devices`, matched to the detected GPUs.

After a build, `check_devices(plan)` runs `<out_link>/bin/llama-server --list-devices` with the
launch's environment (a timeout, no shell) and `evaluate()` reads the answer:

- Vulkan has no environment mask the wizard can trust (GGML_VK_VISIBLE_DEVICES counts raw
  Vulkan devices, llvmpipe and duplicate drivers included), so the chosen GPUs are matched to
  llama.cpp's `VulkanN` entries (name, the RADV chip name against the gfx target, memory, the
  `uma` flag for an iGPU) and the launch says `--device Vulkan1,Vulkan0` in the plan's GPU order,
  the order `-ts` is written in. Two identical cards of which only some are chosen cannot be
  told apart (the listing has no PCI address): that is said, with the list, and no --device is
  given.
- ROCm and CUDA are masked by the plan's environment (ROCR_VISIBLE_DEVICES,
  CUDA_VISIBLE_DEVICES), so their listing must be exactly the chosen GPUs in the mask's order:
  none (no /dev/kfd access, no driver), fewer, or more (the mask is not working: an iGPU shows up)
  is a problem, reported with its fix before the launch.
- The CPU build lists no device ("(none)"): expected for `default`.

The answer's format is common/arg.cpp's `common_print_available_devices` (llama.cpp 0c1e570):
`  NAME: DESCRIPTION (TOTAL MiB, FREE MiB free)` after `Available devices:`, or `  (none)`.
Recorded answers: tests/fixtures/llamacpp/list-devices (README names their sources).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llama_wizard.detect.model import Gpu

if TYPE_CHECKING:
    from llama_wizard.detect.model import Inventory
    from llama_wizard.nix.recommend import BuildChoice
    from llama_wizard.tui.plan import Plan


class BuiltFor(Protocol):
    """What reading an answer needs: the build and the machine it is for (a Plan, or one host
    of a cluster plan)."""

    @property
    def build(self) -> BuildChoice: ...

    @property
    def inventory(self) -> Inventory: ...

PROGRAMS = ("llama-server", "llama-cli")
DEFAULT_TIMEOUT = 30.0  # a ROCm or Vulkan runtime's first start can take seconds
MIB = 1 << 20
# The backend names llama.cpp gives its GPU devices, per flake backend.
BACKEND_PREFIX = {"vulkan": "Vulkan", "rocm": "ROCm", "cuda": "CUDA"}
NOT_GPUS = ("BLAS", "CPU", "RPC", "ACCEL")

_HEADER = re.compile(r"^Available devices:\s*$")
_ENTRY = re.compile(
    r"^\s+(?P<name>[A-Za-z][A-Za-z_]*?(?P<index>\d*)):\s+(?P<description>.*?)"
    r"(?:\s+\((?P<total>\d+)\s+MiB,\s+(?P<free>\d+)\s+MiB\s+free\))?\s*$"
)
# Verbose lines printed while the backends start (stderr), which say more about each device.
_VULKAN_LINE = re.compile(r"ggml_vulkan:\s+(\d+)\s+=\s+(.+?)\s+\|\s+uma:\s+([01])")
_CUDA_FOUND = re.compile(r"found\s+\d+\s+(ROCm|CUDA)\s+devices")
_CUDA_DEVICE = re.compile(r"^\s*Device\s+(\d+):\s+(.+?),\s+(.*)$")
_GFX = re.compile(r"\b(gfx[0-9a-f]+)\b")
_CC = re.compile(r"compute capability\s+(\d+\.\d+)")
_RADV = re.compile(r"\(RADV\s+([A-Z0-9_]+)\)")
# Mesa's RADV chip names by gfx target (radv_physical_device.c: "%s (RADV %s)"); newer chips are
# called GFX<target> (RADV GFX1201), older ones by family.
RADV_FAMILIES: dict[str, tuple[str, ...]] = {
    "gfx803": ("POLARIS10", "POLARIS11", "POLARIS12", "FIJI", "TONGA", "VEGAM"),
    "gfx900": ("VEGA10",),
    "gfx902": ("RAVEN", "RAVEN2"),
    "gfx904": ("VEGA12",),
    "gfx906": ("VEGA20",),
    "gfx908": ("ARCTURUS", "MI100"),
    "gfx90a": ("ALDEBARAN", "MI200"),
    "gfx90c": ("RENOIR", "GREEN_SARDINE", "LUCIENNE"),
    "gfx942": ("GFX940", "MI300"),
    "gfx1010": ("NAVI10",),
    "gfx1011": ("NAVI12",),
    "gfx1012": ("NAVI14",),
    "gfx1030": ("NAVI21", "SIENNA_CICHLID"),
    "gfx1031": ("NAVI22", "NAVY_FLOUNDER"),
    "gfx1032": ("NAVI23", "DIMGREY_CAVEFISH"),
    "gfx1033": ("VANGOGH",),
    "gfx1034": ("NAVI24", "BEIGE_GOBY"),
    "gfx1035": ("REMBRANDT", "YELLOW_CARP"),
    "gfx1036": ("RAPHAEL_MENDOCINO", "GFX1036"),
    "gfx1100": ("NAVI31",),
    "gfx1101": ("NAVI32",),
    "gfx1102": ("NAVI33",),
    "gfx1103": ("PHOENIX", "GFX1103_R1", "GFX1103_R2", "HAWK_POINT"),
}
_VENDOR_WORDS = {"amd": "amd", "radeon": "amd", "ryzen": "amd", "nvidia": "nvidia",
                 "geforce": "nvidia", "intel": "intel", "apple": "apple"}  # fmt: skip
_FILLER = {"amd", "nvidia", "intel", "ati", "corporation", "inc", "tm", "r", "graphics", "gpu",
           "radv", "the", "with", "w"}  # fmt: skip
MEMORY_TOLERANCE = 0.06  # drivers keep a little VRAM back; a card of another size is far off


@dataclass(frozen=True)
class ListedDevice:
    """One entry of `--list-devices`: `Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31) (24560
    MiB, 23000 MiB free)`, with what the start-up lines said of it."""

    name: str  # Vulkan0, ROCm1, CUDA0, BLAS, MTL0
    description: str
    total_mib: int | None = None
    free_mib: int | None = None
    integrated: bool | None = None  # Vulkan's `uma: 1`
    gfx_target: str | None = None  # ROCm's `Device 0: ..., gfx1100 (0x1100)`
    compute_capability: str | None = None  # CUDA's `Device 0: ..., compute capability 8.6`

    @property
    def backend(self) -> str:
        return re.sub(r"\d+$", "", self.name)

    @property
    def is_gpu(self) -> bool:
        return self.backend not in NOT_GPUS and (self.total_mib is None or self.total_mib > 0)

    @property
    def radv_chip(self) -> str | None:
        found = _RADV.search(self.description)
        return found.group(1) if found else None

    def line(self) -> str:
        """As llama.cpp prints it."""
        memory = (
            f" ({self.total_mib} MiB, {self.free_mib} MiB free)"
            if self.total_mib is not None
            else ""
        )
        return f"{self.name}: {self.description}{memory}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "total_mib": self.total_mib,
            "free_mib": self.free_mib,
            "integrated": self.integrated,
            "gfx_target": self.gfx_target,
            "compute_capability": self.compute_capability,
        }


@dataclass(frozen=True)
class Listing:
    """What `--list-devices` said: its entries (None: no `Available devices:` at all, the
    program failed before listing), and the start-up lines that tell why a backend found
    nothing (`ggml_cuda_init: failed to initialize ROCm: ...`)."""

    devices: list[ListedDevice] | None
    failures: list[str] = field(default_factory=list)


def parse_list_devices(text: str) -> Listing:
    """Read a `--list-devices` answer (stdout and stderr together, in any order)."""
    lines = text.splitlines()
    extras: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    cuda_kind: str | None = None
    for line in lines:
        vulkan = _VULKAN_LINE.search(line)
        if vulkan:
            extras.setdefault(f"Vulkan{vulkan.group(1)}", {})["integrated"] = vulkan.group(3) == "1"
        found = _CUDA_FOUND.search(line)
        if found:
            cuda_kind = found.group(1)
        device = _CUDA_DEVICE.match(line)
        if device and cuda_kind:
            details = extras.setdefault(f"{cuda_kind}{device.group(1)}", {})
            gfx, cc = _GFX.search(device.group(3)), _CC.search(device.group(3))
            if gfx:
                details["gfx_target"] = gfx.group(1)
            if cc:
                details["compute_capability"] = cc.group(1)
        lowered = line.lower()
        if ("failed to initialize" in lowered or "no rocm-capable" in lowered
                or "no cuda-capable" in lowered or "cuda driver version is insufficient" in lowered
                or "error while loading shared libraries" in lowered):  # fmt: skip
            failures.append(line.strip())
    start = next((i for i, line in enumerate(lines) if _HEADER.match(line)), None)
    if start is None:
        return Listing(None, failures)
    devices: list[ListedDevice] = []
    for line in lines[start + 1 :]:
        if line.strip() == "(none)":
            break
        entry = _ENTRY.match(line)
        if entry is None:
            break  # the list ends where llama.cpp's other output (or nothing) begins
        name = entry.group("name")
        total, free = entry.group("total"), entry.group("free")
        devices.append(
            ListedDevice(
                name=name,
                description=entry.group("description").strip(),
                total_mib=int(total) if total is not None else None,
                free_mib=int(free) if free is not None else None,
                **extras.get(name, {}),
            )
        )
    return Listing(devices, failures)


# --- matching ----------------------------------------------------------------------------------


def _words(text: str) -> set[str]:
    text = re.sub(r"\((?:tm|r)\)", " ", text.lower())
    return set(re.findall(r"[a-z0-9]+", text)) - _FILLER


def _model_words(text: str) -> set[str]:
    """The words that name a model (they hold a digit: 7900, xtx is not one, mi50, h100, a770)."""
    return {word for word in _words(text) if any(c.isdigit() for c in word)}


def _vendors(text: str) -> set[str]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    return {vendor for word, vendor in _VENDOR_WORDS.items() if word in words}


def _chip_agrees(gpu: Gpu, chip: str) -> bool | None:
    """Whether RADV's chip name is this GPU's gfx target (None: nothing to compare)."""
    if not gpu.gfx_target:
        return None
    gfx = gpu.gfx_target.lower()
    if chip.replace("_", "") == "GFX" + gfx[3:].upper():
        return True
    names = RADV_FAMILIES.get(gfx)
    if names is None:
        return None
    return chip in names


def match_score(gpu: Gpu, device: ListedDevice) -> int | None:
    """How well a listed device fits a detected GPU; None when it cannot be that GPU (another
    vendor, another chip, a memory size far off for a card with its own VRAM)."""
    description = re.sub(r"\(RADV [A-Z0-9_]+\)", " ", device.description)
    listed_vendors = _vendors(description)
    if listed_vendors and gpu.vendor not in listed_vendors:
        return None
    score = 0
    chip = device.radv_chip
    if chip is not None:
        agrees = _chip_agrees(gpu, chip)
        if agrees is False:
            return None
        if agrees:
            score += 4
    if device.gfx_target and gpu.gfx_target:
        if device.gfx_target.lower() != gpu.gfx_target.lower():
            return None
        score += 4
    if device.compute_capability and gpu.compute_capability:
        if device.compute_capability != gpu.compute_capability:
            return None
        score += 1
    ours, theirs = _model_words(gpu.name), _model_words(description)
    if ours and theirs:
        if ours & theirs:
            score += 2 + (3 if ours == theirs else 0)
        elif chip is None:
            return None  # another model of the same vendor (RTX 3080 vs RTX 4090)
    if device.integrated is not None:
        if device.integrated != gpu.integrated:
            return None
        score += 1
    if device.total_mib and gpu.vram_total_bytes and not gpu.integrated:
        ours_mib = gpu.vram_total_bytes / MIB
        close = abs(device.total_mib - ours_mib) <= max(ours_mib * MEMORY_TOLERANCE, 512)
        if not close:
            return None
        score += 2
    return score if score >= 2 else None


@dataclass(frozen=True)
class DeviceProblem:
    code: str
    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "fix": self.fix}


@dataclass
class DeviceMatch:
    gpu: int  # the inventory index
    gpu_name: str
    device: str | None  # VulkanN / ROCmN / CUDAN; None: not found or ambiguous
    candidates: list[str] = field(default_factory=list)  # when ambiguous

    def to_json(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "gpu_name": self.gpu_name, "device": self.device,
                "candidates": self.candidates}  # fmt: skip


@dataclass
class DeviceCheck:
    """llama.cpp's own list of devices, beside the plan: matched GPUs, the `--device` argument a
    Vulkan launch needs, and what is wrong (with the fix) before anything is launched."""

    backend: str
    argv: list[str]
    devices: list[ListedDevice]
    matches: list[DeviceMatch] = field(default_factory=list)
    device_arg: str | None = None
    problems: list[DeviceProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def listing(self) -> list[str]:
        """llama.cpp's list as it printed it (for showing beside a problem)."""
        return [d.line() for d in self.devices] or ["(none)"]

    def summary(self) -> str:
        """One line for every face."""
        if self.problems:
            return f"llama.cpp's devices: {self.problems[0].message}"
        if self.device_arg:
            return f"llama.cpp's devices: --device {self.device_arg} for the chosen GPUs."
        return f"llama.cpp's devices: {self.notes[0] if self.notes else 'as planned.'}"

    def lines(self) -> list[str]:
        """What plain mode and `run` print: each problem and its fix (or the summary), the
        notes, and llama.cpp's list."""
        said = [f"⚠ llama.cpp's devices: {p.message} {p.fix}" for p in self.problems]
        if not said:
            said.append(self.summary())
        said += [f"note: {note}" for note in self.notes if note not in said[0]]
        said += ["llama.cpp lists:", *(f"  {line}" for line in self.listing())]
        return said

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "argv": self.argv,
            "ok": self.ok,
            "devices": [d.to_json() for d in self.devices],
            "matches": [m.to_json() for m in self.matches],
            "device_arg": self.device_arg,
            "problems": [p.to_json() for p in self.problems],
            "notes": self.notes,
        }


def _no_device_fix(backend: str) -> str:
    if backend == "rocm":
        return (
            "ROCm needs read/write access to /dev/kfd and /dev/dri/renderD*: add yourself to the "
            "render and video groups (`sudo usermod -aG render,video $USER`, then log in again), "
            "and check that the amdgpu driver is loaded (`ls -l /dev/kfd`). In a container, pass "
            "--device /dev/kfd --device /dev/dri."
        )
    if backend == "cuda":
        return (
            "The CUDA build needs NVIDIA's driver and its libcuda.so.1: check `nvidia-smi`; on a "
            "system other than NixOS, Nix's binaries find the driver only through "
            "/run/opengl-driver/lib or nixGL (`nix run --impure github:nix-community/nixGL -- "
            "llama-server ...`)."
        )
    return (
        "The Vulkan build needs a Vulkan driver for the GPU (Mesa's RADV for AMD, NVIDIA's "
        "driver, Mesa's ANV for Intel): check `vulkaninfo --summary`; on a system other than "
        "NixOS, Nix's binaries find the driver only through /run/opengl-driver or nixGL."
    )


def evaluate(plan: BuiltFor, text: str, argv: Sequence[str] = ()) -> DeviceCheck:
    """Match the `--list-devices` answer `text` to the plan's chosen GPUs (pure: no process)."""
    build = plan.build
    listing = parse_list_devices(text)
    devices = listing.devices or []
    check = DeviceCheck(build.backend, list(argv), devices)
    chosen = [g for g in plan.inventory.gpus if g.index in build.gpus]  # the -ts order
    prefix = BACKEND_PREFIX.get(build.backend)
    failure = f" llama.cpp said: {listing.failures[0]}" if listing.failures else ""
    if listing.devices is None:
        check.problems.append(DeviceProblem(
            "no_listing",
            "llama.cpp did not list its devices (no `Available devices:` in its answer)."
            + failure,
            "Run the command shown yourself to see why; rebuild if the binary is broken "
            "(llama-wizard build).",
        ))  # fmt: skip
        return check
    gpus_listed = [d for d in devices if d.is_gpu]
    if prefix is None:
        if not gpus_listed:
            check.notes.append("this CPU build sees no GPU, as expected.")
        else:
            check.notes.append(
                "this build sees " + ", ".join(d.name for d in gpus_listed) + " itself."
            )
        return check
    mine = [d for d in devices if d.backend == prefix]
    if not chosen:
        check.notes.append(f"no GPU is chosen; the {prefix} build sees {len(mine)} device(s).")
        return check
    if not mine:
        check.problems.append(DeviceProblem(
            "no_device",
            f"llama.cpp's {prefix} build sees no GPU, so it would run on the CPU only "
            f"(the plan chose {_named(chosen)}).{failure}",
            _no_device_fix(build.backend),
        ))  # fmt: skip
        return check
    if prefix == "Vulkan":
        _match_vulkan(plan, chosen, mine, check)
    else:
        _match_masked(prefix, chosen, mine, check)
    return check


def _named(gpus: Sequence[Gpu]) -> str:
    return ", ".join(f"GPU {g.index} ({g.name})" for g in gpus)


def _match_masked(
    prefix: str, chosen: list[Gpu], mine: list[ListedDevice], check: DeviceCheck
) -> None:
    """ROCm/CUDA: the environment's mask leaves exactly the chosen GPUs, in its order."""
    variable = "ROCR_VISIBLE_DEVICES" if prefix == "ROCm" else "CUDA_VISIBLE_DEVICES"
    for position, gpu in enumerate(chosen):
        device = mine[position] if position < len(mine) else None
        fits = device is not None and match_score(gpu, device) is not None
        check.matches.append(DeviceMatch(gpu.index, gpu.name, device.name if fits else None))
    if len(mine) > len(chosen):
        extra = mine[len(chosen) :]
        check.problems.append(DeviceProblem(
            "mask_not_working",
            f"llama.cpp's {prefix} build sees {len(mine)} GPUs, more than the {len(chosen)} "
            f"chosen ({', '.join(d.line() for d in extra)} should be hidden): {variable} is not "
            "working.",
            f"Launch with the plan's environment (`{variable}` as the plan shows it, nothing "
            "resetting it in a wrapper or profile); a GPU left visible that should not be (an "
            "iGPU) can crash or slow the run.",
        ))  # fmt: skip
    elif len(mine) < len(chosen):
        check.problems.append(DeviceProblem(
            "missing_devices",
            f"llama.cpp's {prefix} build sees {len(mine)} of the {len(chosen)} GPUs chosen.",
            f"Check {variable} in the plan against `llama-wizard detect`, and each GPU's "
            "driver; " + _no_device_fix(check.backend),
        ))  # fmt: skip
    else:
        wrong = [(m, d) for m, d in zip(check.matches, mine, strict=False) if m.device is None]
        if wrong:
            check.problems.append(DeviceProblem(
                "unexpected_device",
                f"llama.cpp's {prefix} devices do not look like the GPUs chosen: "
                + "; ".join(f"GPU {m.gpu} ({m.gpu_name}) is listed as {d.line()}"
                            for m, d in wrong) + ".",
                f"Check {variable} in the plan against `llama-wizard detect`.",
            ))  # fmt: skip


def _match_vulkan(
    plan: BuiltFor, chosen: list[Gpu], mine: list[ListedDevice], check: DeviceCheck
) -> None:
    """Vulkan: find each chosen GPU among llama.cpp's VulkanN entries."""
    everyone = plan.inventory.gpus
    scores = {
        (gpu.index, device.name): score
        for gpu in everyone
        for device in mine
        if (score := match_score(gpu, device)) is not None
    }

    def best(gpu: Gpu) -> list[str]:
        mine_scores = {
            d.name: scores[(gpu.index, d.name)] for d in mine if (gpu.index, d.name) in scores
        }
        if not mine_scores:
            return []
        top = max(mine_scores.values())
        return [name for name, score in mine_scores.items() if score == top]

    taken: set[str] = set()
    ambiguous: list[DeviceMatch] = []
    for gpu in chosen:
        candidates = [name for name in best(gpu) if name not in taken]
        if len(candidates) == 1:
            taken.add(candidates[0])
            check.matches.append(DeviceMatch(gpu.index, gpu.name, candidates[0]))
            continue
        if not candidates:
            check.matches.append(DeviceMatch(gpu.index, gpu.name, None))
            continue
        # Identical cards: every GPU that has these same best candidates. When all of them are
        # chosen, which is which does not matter (same memory: an even -ts split).
        twins = [g for g in everyone if set(best(g)) == set(best(gpu))]
        if all(g.index in plan.build.gpus for g in twins) and len(twins) == len(best(gpu)):
            name = candidates[0]
            taken.add(name)
            check.matches.append(DeviceMatch(gpu.index, gpu.name, name))
            note = (f"{len(twins)} identical GPUs ({gpu.name}) are all chosen: llama.cpp's order "
                    "of them is taken as it lists them.")  # fmt: skip
            if note not in check.notes:
                check.notes.append(note)
            continue
        match = DeviceMatch(gpu.index, gpu.name, None, candidates)
        check.matches.append(match)
        ambiguous.append(match)
    missing = [m for m in check.matches if m.device is None and not m.candidates]
    if missing:
        check.problems.append(DeviceProblem(
            "gpu_not_listed",
            "llama.cpp's Vulkan build does not list "
            + ", ".join(f"GPU {m.gpu} ({m.gpu_name})" for m in missing)
            + ": its devices are " + "; ".join(d.line() for d in mine) + ".",
            _no_device_fix("vulkan")
            + " Or choose the devices yourself: `llama-wizard run -- --device VulkanN`.",
        ))  # fmt: skip
    if ambiguous:
        check.problems.append(DeviceProblem(
            "ambiguous",
            "Which Vulkan device is "
            + ", ".join(f"GPU {m.gpu} ({m.gpu_name})" for m in ambiguous)
            + " cannot be told: " + " or ".join(ambiguous[0].candidates)
            + " (identical cards; llama.cpp's list has no PCI address). Its devices are "
            + "; ".join(d.line() for d in mine) + ".",
            "Choose them yourself: `llama-wizard run -- --device VulkanN` (or choose all the "
            "identical cards with --gpu).",
        ))  # fmt: skip
    if not missing and not ambiguous:
        check.device_arg = ",".join(m.device for m in check.matches if m.device)
        unused = [d for d in mine if d.name not in taken]
        if unused:
            check.notes.append(
                "left out: " + "; ".join(d.line() for d in unused) + " (not chosen)."
            )


# --- running it --------------------------------------------------------------------------------


def list_devices_binary(plan: Plan) -> Path | None:
    """The built program that answers `--list-devices`: llama-server, else llama-cli."""
    bin_dir = Path(plan.build.out_link).absolute() / "bin"
    for program in PROGRAMS:
        if (bin_dir / program).is_file():
            return bin_dir / program
    return None


class DeviceCheckFailed(Exception):
    """--list-devices could not be run (not built, cannot start, no answer in time)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def check_devices(
    plan: Plan, env: Mapping[str, str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> DeviceCheck:
    """Run the built binary's `--list-devices` with the launch's environment and match its
    answer to the plan. Raises DeviceCheckFailed when it cannot be asked."""
    from llama_wizard.detect.process import run_bounded
    from llama_wizard.tui.launch import build_environment

    binary = list_devices_binary(plan)
    if binary is None:
        raise DeviceCheckFailed(
            f"{plan.build.output} is not built yet (no llama-server in "
            f"{Path(plan.build.out_link).absolute() / 'bin'}), so llama.cpp cannot be asked "
            "which devices it sees.",
            "Build it first (llama-wizard build).",
        )
    argv = [str(binary), "--list-devices"]
    base = os.environ if env is None else env
    environment = build_environment(base, plan.build.env, plan.build.unset_env)
    try:
        out, err, _status = run_bounded(argv, environment, timeout)
    except OSError as error:
        raise DeviceCheckFailed(
            f"{binary} could not be started: {error.strerror or error}.",
            "Rebuild it (llama-wizard build).",
        ) from None
    except subprocess.TimeoutExpired:
        raise DeviceCheckFailed(
            f"`{' '.join(argv)}` did not answer in {timeout:g} s (it was stopped).",
            "A GPU runtime that hangs on start (a stuck driver, /dev/kfd held) stops the launch "
            "too: check `dmesg` and the GPU's driver, then try again.",
        ) from None
    text = out + "\n" + err
    return evaluate(plan, text, argv)


__all__ = [
    "DeviceCheck",
    "DeviceCheckFailed",
    "DeviceMatch",
    "DeviceProblem",
    "ListedDevice",
    "Listing",
    "check_devices",
    "evaluate",
    "match_score",
    "parse_list_devices",
]
