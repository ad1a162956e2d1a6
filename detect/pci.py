"""PCI GPUs from udev (the host) or straight from /sys (a fixture root, or no libudev).

Display class 0x03 covers VGA (0x0300), 3D controllers (0x0302: NVIDIA compute and laptop
GPUs) and "display other" (0x0380: AMD Instinct and some APUs), so filtering on VGA alone would
miss exactly the GPUs llama.cpp users run on (gpu-detection.md §3.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llama_wizard.detect.sysroot import SystemRoot

DISPLAY_CLASSES = (0x0300, 0x0302, 0x0380)
# "Processing accelerator": the MI300X presents itself so (ROCm gpu-operator docs show
# 1002:74b5 as class 0x120000). Only for GPU vendors: Intel's NPUs and Habana's Gaudi use it too.
ACCELERATOR_CLASS = 0x1200
ACCELERATOR_GPU_VENDORS = (0x1002, 0x10DE)


def is_gpu_class(pci_class: int, vendor: int) -> bool:
    """pci_class is the 24-bit class code (0x030000)."""
    base = pci_class >> 8
    return base in DISPLAY_CLASSES or (
        base == ACCELERATOR_CLASS and vendor in ACCELERATOR_GPU_VENDORS
    )


# Framebuffer-only display controllers (server BMCs, hypervisor consoles): never a compute GPU,
# and listing them would shift every index a person types with --gpu.
FRAMEBUFFER_VENDORS = {
    0x1A03: "ASPEED (BMC)",
    0x102B: "Matrox",
    0x1013: "Cirrus Logic",
    0x1234: "QEMU/Bochs",
    0x15AD: "VMware SVGA",
    0x1AF4: "virtio-gpu",
    0x1414: "Hyper-V",
    0x80EE: "VirtualBox",
    0x1B36: "QEMU (Red Hat)",
}

_BDF = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<dev>[0-9a-fA-F]{1,2})\.(?P<fn>[0-7])$"
)


def normalize_bdf(text: str | None) -> str | None:
    """Any PCI address spelling (nvidia-smi's 8-digit domain, upper case, no domain) as sysfs
    writes it: lower-case `dddd:bb:dd.f`. None when it is not a PCI address."""
    if not text:
        return None
    match = _BDF.match(text.strip())
    if not match:
        return None
    domain = int(match.group("domain") or "0", 16)
    if domain > 0xFFFF:
        return None
    return (
        f"{domain:04x}:{int(match.group('bus'), 16):02x}:"
        f"{int(match.group('dev'), 16):02x}.{match.group('fn')}"
    )


def bdf_from_location(domain: int, location_id: int) -> str | None:
    """KFD's location_id (and rocminfo's BDFID) packs bus<<8 | device<<3 | function."""
    if location_id <= 0 or location_id > 0xFFFF or domain < 0 or domain > 0xFFFF:
        return None
    bus, device, function = location_id >> 8, (location_id >> 3) & 0x1F, location_id & 0x7
    return f"{domain:04x}:{bus:02x}:{device:02x}.{function}"


@dataclass
class PciDisplayDevice:
    bdf: str
    vendor: int
    device: int
    pci_class: int
    source: str
    revision: int | None = None
    driver: str | None = None
    card: int | None = None
    render_minor: int | None = None
    vram_total: int | None = None
    vram_used: int | None = None
    gtt_total: int | None = None
    gtt_used: int | None = None
    has_vram_vendor: bool = False
    has_board_info: bool = False
    unique_id: str | None = None
    hwdb_name: str | None = None

    @property
    def device_id(self) -> str:
        return f"0x{self.device:04x}"


def _read_device(root: SystemRoot, sys_path: str, bdf: str, source: str) -> PciDisplayDevice | None:
    pci_class = root.read_int(f"{sys_path}/class", 16)
    vendor = root.read_int(f"{sys_path}/vendor", 16)
    device = root.read_int(f"{sys_path}/device", 16)
    if pci_class is None or vendor is None or device is None:
        return None
    if not is_gpu_class(pci_class, vendor) or vendor in FRAMEBUFFER_VENDORS:
        return None
    found = PciDisplayDevice(
        bdf=bdf,
        vendor=vendor,
        device=device,
        pci_class=pci_class,
        source=source,
        revision=root.read_int(f"{sys_path}/revision", 16),
        driver=root.link_name(f"{sys_path}/driver"),
    )
    for entry in root.listdir(f"{sys_path}/drm"):
        if match := re.fullmatch(r"card(\d+)", entry):
            found.card = int(match.group(1))
        elif match := re.fullmatch(r"renderD(\d+)", entry):
            found.render_minor = int(match.group(1))
    found.vram_total = _positive(root.read_int(f"{sys_path}/mem_info_vram_total"))
    found.vram_used = root.read_int(f"{sys_path}/mem_info_vram_used")
    found.gtt_total = _positive(root.read_int(f"{sys_path}/mem_info_gtt_total"))
    found.gtt_used = root.read_int(f"{sys_path}/mem_info_gtt_used")
    if found.vram_total is None and vendor == 0x8086:
        found.vram_total = _intel_vram(root, sys_path, found.card)
    found.has_vram_vendor = root.exists(f"{sys_path}/mem_info_vram_vendor")
    found.has_board_info = root.exists(f"{sys_path}/board_info")
    unique_id = root.read_attr(f"{sys_path}/unique_id")
    if unique_id and re.fullmatch(r"[0-9a-fA-F]{1,32}", unique_id) and int(unique_id, 16):
        found.unique_id = unique_id.lower()
    return found


def _intel_vram(root: SystemRoot, sys_path: str, card: int | None) -> int | None:
    """An Intel discrete GPU's local memory. The xe driver puts a `tileN` kobject on the PCI
    device with `physical_vram_size_bytes` (torvalds/linux drivers/gpu/drm/xe/xe_tile_sysfs.c:
    kobject_add(..., &dev->kobj, "tile%d") on discrete parts; newer kernels move it under
    tileN/memory/), one per tile, so a multi-tile part sums them. i915 has no such file in
    mainline; Intel's DKMS/backport i915 publishes `lmem_total_bytes` on the DRM card
    (cardN/lmem_total_bytes), and some builds on the device itself. An iGPU has none of these
    and stays None (its memory is system RAM)."""
    tiles = [
        _positive(root.read_int(f"{sys_path}/{tile}/physical_vram_size_bytes"))
        or _positive(root.read_int(f"{sys_path}/{tile}/memory/physical_vram_size_bytes"))
        for tile in sorted(root.listdir(sys_path))
        if re.fullmatch(r"tile\d+", tile)
    ]
    if any(tiles):
        return sum(t for t in tiles if t)
    candidates = [f"{sys_path}/lmem_total_bytes"]
    if card is not None:
        candidates.insert(0, f"{sys_path}/drm/card{card}/lmem_total_bytes")
    for path in candidates:
        if value := _positive(root.read_int(path)):
            return value
    return None


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


def _from_sysfs(root: SystemRoot) -> list[PciDisplayDevice]:
    devices = []
    for name in root.listdir("/sys/bus/pci/devices"):
        bdf = normalize_bdf(name)
        if bdf is None:
            continue
        found = _read_device(root, f"/sys/bus/pci/devices/{name}", bdf, "sysfs")
        if found:
            devices.append(found)
    return devices


def _from_udev(root: SystemRoot) -> list[PciDisplayDevice] | None:
    """The host's devices through libudev, with names from its hardware database. None when
    pyudev or libudev is unavailable, so the caller reads /sys directly."""
    try:
        import pyudev

        context = pyudev.Context()
        udev_devices = list(context.list_devices(subsystem="pci"))
    except Exception:
        return None
    devices = []
    for udev_device in udev_devices:
        try:
            properties = udev_device.properties
            pci_class = int(properties.get("PCI_CLASS", "0"), 16)
            if (pci_class >> 16) not in (0x03, ACCELERATOR_CLASS >> 8):
                continue
            bdf = normalize_bdf(properties.get("PCI_SLOT_NAME") or udev_device.sys_name)
            sys_path = udev_device.sys_path
            hwdb_name = properties.get("ID_MODEL_FROM_DATABASE")
        except Exception:
            continue
        if bdf is None:
            continue
        found = _read_device(root, sys_path, bdf, "udev")
        if found:
            found.hwdb_name = hwdb_name
            devices.append(found)
    return devices


def _any_gpu_class(root: SystemRoot) -> bool:
    """Whether /sys lists any device of a GPU class: libudev enumerates the same tree, so when
    it lists none, loading libudev would find none either."""
    for name in root.listdir("/sys/bus/pci/devices"):
        pci_class = root.read_int(f"/sys/bus/pci/devices/{name}/class", 16)
        if pci_class is None or (pci_class >> 16) in (0x03, ACCELERATOR_CLASS >> 8):
            return True
    return False


def display_devices(root: SystemRoot) -> list[PciDisplayDevice]:
    """Display-class PCI devices in PCI address order. libudev knows only the real machine, so a
    fixture root is always read directly."""
    devices = _from_udev(root) if root.is_host and _any_gpu_class(root) else None
    if devices is None:
        devices = _from_sysfs(root)
    return sorted(devices, key=lambda device: device.bdf)
