"""Product names for PCI devices: libdrm's amdgpu.ids, the udev hardware database, pci.ids,
and small tables of our own (for a fresh box that has none of those files)."""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache
from pathlib import Path

from llama_wizard.detect.gfx import amd_device
from llama_wizard.detect.sysroot import SystemRoot

AMD_IDS_PATHS = ("/usr/share/libdrm/amdgpu.ids",)
PCI_IDS_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids")
_BUNDLED_AMD_IDS = Path(__file__).resolve().parent / "data" / "amdgpu.ids"

VENDOR_AMD, VENDOR_NVIDIA, VENDOR_INTEL = 0x1002, 0x10DE, 0x8086

# NVIDIA devices our fixtures and common llama.cpp boxes carry; pci.ids covers the rest when the
# system has it. Names as nvidia-smi prints them.
NVIDIA_DEVICES: dict[int, str] = {
    0x1184: "NVIDIA GeForce GTX 770",
    0x1B06: "NVIDIA GeForce GTX 1080 Ti",
    0x1B80: "NVIDIA GeForce GTX 1080",
    0x1B81: "NVIDIA GeForce GTX 1070",
    0x15F8: "NVIDIA Tesla P100-PCIE-16GB",
    0x1DB6: "NVIDIA Tesla V100-PCIE-32GB",
    0x1DB4: "NVIDIA Tesla V100-PCIE-16GB",
    0x1EB8: "NVIDIA Tesla T4",
    0x2204: "NVIDIA GeForce RTX 3090",
    0x2203: "NVIDIA GeForce RTX 3090 Ti",
    0x2206: "NVIDIA GeForce RTX 3080",
    0x20B0: "NVIDIA A100-SXM4-40GB",
    0x20B2: "NVIDIA A100-SXM4-80GB",
    0x20B5: "NVIDIA A100 80GB PCIe",
    0x20F1: "NVIDIA A100-PCIE-40GB",
    0x2684: "NVIDIA GeForce RTX 4090",
    0x2704: "NVIDIA GeForce RTX 4080",
    0x26B9: "NVIDIA L40S",
    0x2330: "NVIDIA H100 80GB HBM3",
    0x2331: "NVIDIA H100 PCIe",
    0x2335: "NVIDIA H200",
    0x2B85: "NVIDIA GeForce RTX 5090",
}

INTEL_DEVICES: dict[int, str] = {
    0x56A0: "Intel Arc A770",
    0x56A1: "Intel Arc A750",
    0x56A5: "Intel Arc A380",
    0xE20B: "Intel Arc B580",
    0xE20C: "Intel Arc B570",
    0x46A6: "Intel Iris Xe Graphics (Alder Lake)",
    0x46A8: "Intel Iris Xe Graphics (Alder Lake)",
    0x46AA: "Intel Iris Xe Graphics (Alder Lake)",
    0x7D51: "Intel Graphics (Arrow Lake-P)",
    0x7D55: "Intel Arc Graphics (Meteor Lake)",
    0x7DD5: "Intel Graphics (Meteor Lake)",
}
INTEL_DISCRETE_PREFIXES = (0x56, 0xE2)

VENDOR_NAMES = {VENDOR_AMD: "AMD", VENDOR_NVIDIA: "NVIDIA", VENDOR_INTEL: "Intel"}


@lru_cache(maxsize=8)
def _parse_amdgpu_ids(text: str) -> dict[tuple[int, int], str]:
    table: dict[tuple[int, int], str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(",", 2)]
        if len(parts) != 3:
            continue
        try:
            table[(int(parts[0], 16), int(parts[1], 16))] = parts[2]
        except ValueError:
            continue
    return table


def amdgpu_ids_name(root: SystemRoot, device: int, revision: int | None) -> str | None:
    """libdrm's name for this device and revision: the system's copy first, then ours."""
    if revision is None:
        return None
    texts = [root.read_text(path) for path in AMD_IDS_PATHS]
    with contextlib.suppress(OSError):
        texts.append(_BUNDLED_AMD_IDS.read_text())
    for text in texts:
        if text:
            name = _parse_amdgpu_ids(text).get((device, revision))
            if name:
                return name
    return None


@lru_cache(maxsize=8)
def _pci_ids_devices(text: str) -> dict[tuple[int, int], str]:
    table: dict[tuple[int, int], str] = {}
    vendor: int | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("C "):
            break  # the class list follows the vendors
        if not line.startswith("\t"):
            match = re.match(r"([0-9a-fA-F]{4})\s+", line)
            vendor = int(match.group(1), 16) if match else None
        elif vendor is not None and not line.startswith("\t\t"):
            match = re.match(r"\t([0-9a-fA-F]{4})\s+(.+)", line)
            if match:
                table[(vendor, int(match.group(1), 16))] = match.group(2).strip()
    return table


def pci_ids_name(root: SystemRoot, vendor: int, device: int) -> str | None:
    for path in PCI_IDS_PATHS:
        text = root.read_text(path, limit=8 << 20)
        if text:
            name = _pci_ids_devices(text).get((vendor, device))
            if name:
                return name
    return None


def product_name(
    root: SystemRoot,
    vendor: int,
    device: int,
    revision: int | None,
    hwdb_name: str | None = None,
) -> str:
    """The best name we can give without any GPU tool running."""
    if vendor == VENDOR_AMD:
        name = amdgpu_ids_name(root, device, revision)
        if name:
            return name
        row = amd_device(device)
        if row:
            return row.name
    if vendor == VENDOR_NVIDIA and device in NVIDIA_DEVICES:
        return NVIDIA_DEVICES[device]
    if vendor == VENDOR_INTEL and device in INTEL_DEVICES:
        return INTEL_DEVICES[device]
    chip = hwdb_name or pci_ids_name(root, vendor, device)
    vendor_name = VENDOR_NAMES.get(vendor, f"PCI vendor 0x{vendor:04x}")
    if chip:
        return f"{vendor_name} {chip}"
    return f"{vendor_name} GPU 0x{device:04x}"


# CUDA compute capability by product name, for drivers whose nvidia-smi predates `compute_cap`
# (R470 and older; gpu-detection.md pitfall 6). From NVIDIA's CUDA GPUs table.
_NVIDIA_CC_BY_NAME: tuple[tuple[str, str], ...] = (
    (r"RTX (PRO )?50\d\d|RTX PRO \d000 Blackwell", "12.0"),
    (r"\bB200\b|\bGB200\b", "10.0"),
    (r"\bH100\b|\bH200\b|\bGH200\b|\bH800\b", "9.0"),
    (r"RTX 40\d\d|\bL40S?\b|\bL4\b|RTX \d000 Ada", "8.9"),
    (r"RTX 30\d\d|\bA10G?\b|\bA40\b|RTX A\d000|\bA16\b|\bA2\b", "8.6"),
    (r"\bA100\b|\bA30\b|\bA800\b", "8.0"),
    (r"RTX 20\d\d|GTX 16\d\d|Tesla T4|\bT4\b|Quadro RTX|TITAN RTX", "7.5"),
    (r"Tesla V100|\bV100\b|TITAN V\b", "7.0"),
    (r"Tesla P100|\bP100\b", "6.0"),
    (r"GTX 10\d\d|TITAN Xp|TITAN X \(Pascal\)|Tesla P40|Tesla P4\b|Quadro P\d+", "6.1"),
    (r"GTX 9\d\d|TITAN X\b|Tesla M40|Quadro M\d+", "5.2"),
    (r"GTX 750|GTX 745|Quadro K\d+0\b", "5.0"),
    (r"GTX 780|GTX TITAN|Tesla K40|Tesla K20", "3.5"),
    (r"Tesla K80", "3.7"),
    (r"GTX 7[0-7]0|GTX 6\d\d|Tesla K10", "3.0"),
)


def nvidia_compute_capability_from_name(name: str) -> str | None:
    for pattern, capability in _NVIDIA_CC_BY_NAME:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return capability
    return None
