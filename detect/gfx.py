"""AMD gfx targets: decoding KFD's gfx_target_version, and what we know about each target.

Facts from `shared/reference/gpu-detection.md` §3.3-§5 (kernel `kfd_device.c kgd2kfd_probe()`,
ollama `gfxTargetFromKFDVersion`, ROCT `topology.c`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_GFX_NAME = re.compile(r"^gfx(\d{1,2})([0-9a-f])([0-9a-f])$")


def gfx_from_kfd_version(version: int) -> str | None:
    """90006 -> gfx906, 90010 -> gfx90a, 100300 -> gfx1030. None for CPUs (0) and nonsense.

    The value is major*10000 + minor*100 + stepping in decimal, but the name prints minor and
    stepping as one hex digit each, so a field above 15 cannot be named.
    """
    if version <= 0:
        return None
    major, minor, stepping = version // 10000, (version // 100) % 100, version % 100
    if major > 99 or minor > 0xF or stepping > 0xF:
        return None
    return f"gfx{major}{minor:x}{stepping:x}"


def parse_gfx(name: str) -> tuple[int, int, int] | None:
    """gfx90a -> (9, 0, 10); gfx1103 -> (11, 0, 3). None when it is not a gfx name."""
    match = _GFX_NAME.match(name.strip().lower().split(":")[0])
    if not match:
        return None
    return int(match.group(1)), int(match.group(2), 16), int(match.group(3), 16)


def hsa_version(gfx: str) -> str | None:
    """The HSA_OVERRIDE_GFX_VERSION spelling of a target: all decimal, gfx90a -> 9.0.10."""
    parts = parse_gfx(gfx)
    return None if parts is None else "{}.{}.{}".format(*parts)


def gfx_major(gfx: str) -> int | None:
    parts = parse_gfx(gfx)
    return None if parts is None else parts[0]


@dataclass(frozen=True)
class AmdDevice:
    """One row of our own AMD table: PCI device IDs -> gfx target and a product name."""

    first_id: int
    last_id: int
    gfx: str
    name: str
    integrated: bool = False


# From the gfx table in gpu-detection.md §4 (kernel pciidlist, pci.ids, amdgpu.ids). Single IDs
# with a product name come before the ranges they sit in, so the most specific row wins.
AMD_DEVICES: tuple[AmdDevice, ...] = (
    AmdDevice(0x687F, 0x687F, "gfx900", "AMD Radeon RX Vega 56/64"),
    AmdDevice(0x6860, 0x687F, "gfx900", "AMD Vega 10 (Radeon Vega / Instinct MI25)"),
    AmdDevice(0x15DD, 0x15DD, "gfx902", "AMD Raven Ridge APU (Radeon Vega Graphics)", True),
    AmdDevice(0x15D8, 0x15D8, "gfx902", "AMD Picasso APU (Radeon Vega Graphics)", True),
    AmdDevice(0x69A0, 0x69AF, "gfx904", "AMD Vega 12 (Radeon Pro Vega 20)"),
    AmdDevice(0x66AF, 0x66AF, "gfx906", "AMD Radeon VII"),
    AmdDevice(0x66A1, 0x66A1, "gfx906", "AMD Instinct MI50/MI60 / Radeon Pro VII"),
    AmdDevice(0x66A0, 0x66AF, "gfx906", "AMD Vega 20"),
    AmdDevice(0x738C, 0x738C, "gfx908", "AMD Instinct MI100"),
    AmdDevice(0x738E, 0x738E, "gfx908", "AMD Instinct MI100"),
    AmdDevice(0x7388, 0x7388, "gfx908", "AMD Instinct MI100"),
    AmdDevice(0x740F, 0x740F, "gfx90a", "AMD Instinct MI210"),
    AmdDevice(0x740C, 0x740C, "gfx90a", "AMD Instinct MI250/MI250X"),
    AmdDevice(0x7408, 0x7408, "gfx90a", "AMD Instinct MI250X"),
    AmdDevice(0x7410, 0x7410, "gfx90a", "AMD Instinct MI210 (VF)"),
    AmdDevice(0x1636, 0x1636, "gfx90c", "AMD Renoir APU (Radeon Vega Graphics)", True),
    AmdDevice(0x1638, 0x1638, "gfx90c", "AMD Cezanne APU (Radeon Vega Graphics)", True),
    AmdDevice(0x164C, 0x164C, "gfx90c", "AMD Lucienne APU (Radeon Vega Graphics)", True),
    AmdDevice(0x15E7, 0x15E7, "gfx90c", "AMD Barcelo APU (Radeon Vega Graphics)", True),
    AmdDevice(0x74A0, 0x74A0, "gfx942", "AMD Instinct MI300A"),
    AmdDevice(0x74A1, 0x74A1, "gfx942", "AMD Instinct MI300X"),
    AmdDevice(0x74A2, 0x74A2, "gfx942", "AMD Instinct MI308X"),
    AmdDevice(0x74A5, 0x74A5, "gfx942", "AMD Instinct MI325X"),
    AmdDevice(0x74A0, 0x74BD, "gfx942", "AMD Instinct MI300 series"),
    AmdDevice(0x75A0, 0x75A0, "gfx950", "AMD Instinct MI350X"),
    AmdDevice(0x75A3, 0x75A3, "gfx950", "AMD Instinct MI355X"),
    AmdDevice(0x75A8, 0x75A8, "gfx950", "AMD Instinct MI350 series"),
    AmdDevice(0x731F, 0x731F, "gfx1010", "AMD Radeon RX 5600 XT / 5700 / 5700 XT"),
    AmdDevice(0x7310, 0x731F, "gfx1010", "AMD Navi 10 (Radeon RX 5700 series)"),
    AmdDevice(0x7360, 0x7362, "gfx1011", "AMD Navi 12 (Radeon Pro 5600M / V520)"),
    AmdDevice(0x7340, 0x734F, "gfx1012", "AMD Navi 14 (Radeon RX 5500 series)"),
    AmdDevice(0x73BF, 0x73BF, "gfx1030", "AMD Radeon RX 6800 / 6800 XT / 6900 XT"),
    AmdDevice(0x73A5, 0x73A5, "gfx1030", "AMD Radeon RX 6950 XT"),
    AmdDevice(0x73A3, 0x73A3, "gfx1030", "AMD Radeon PRO W6800"),
    AmdDevice(0x73A1, 0x73A1, "gfx1030", "AMD Radeon PRO V620"),
    AmdDevice(0x73A0, 0x73BF, "gfx1030", "AMD Navi 21 (Radeon RX 6800 series)"),
    AmdDevice(0x73DF, 0x73DF, "gfx1031", "AMD Radeon RX 6700 / 6700 XT / 6750 XT"),
    AmdDevice(0x73C0, 0x73DF, "gfx1031", "AMD Navi 22 (Radeon RX 6700 series)"),
    AmdDevice(0x73FF, 0x73FF, "gfx1032", "AMD Radeon RX 6600 / 6600 XT"),
    AmdDevice(0x73EF, 0x73EF, "gfx1032", "AMD Radeon RX 6650 XT"),
    AmdDevice(0x73E3, 0x73E3, "gfx1032", "AMD Radeon PRO W6600"),
    AmdDevice(0x73F0, 0x73F0, "gfx1102", "AMD Navi 33 (Radeon RX 7600 series)"),
    AmdDevice(0x73E0, 0x73FF, "gfx1032", "AMD Navi 23 (Radeon RX 6600 series)"),
    AmdDevice(0x163F, 0x163F, "gfx1033", "AMD Van Gogh (Steam Deck LCD)", True),
    AmdDevice(0x1435, 0x1435, "gfx1033", "AMD Custom GPU 0932 (Steam Deck OLED)", True),
    AmdDevice(0x743F, 0x743F, "gfx1034", "AMD Radeon RX 6400 / 6500 XT"),
    AmdDevice(0x7422, 0x7422, "gfx1034", "AMD Radeon PRO W6400"),
    AmdDevice(0x7420, 0x743F, "gfx1034", "AMD Navi 24 (Radeon RX 6400 series)"),
    AmdDevice(0x164D, 0x164D, "gfx1035", "AMD Rembrandt APU (Radeon 680M)", True),
    AmdDevice(0x1681, 0x1681, "gfx1035", "AMD Rembrandt APU (Radeon 660M/680M)", True),
    AmdDevice(0x164E, 0x164E, "gfx1036", "AMD Raphael / Granite Ridge (Radeon Graphics)", True),
    AmdDevice(0x13C0, 0x13C0, "gfx1036", "AMD Granite Ridge (Radeon Graphics)", True),
    AmdDevice(0x1506, 0x1506, "gfx1036", "AMD Mendocino (Radeon 610M)", True),
    AmdDevice(0x744C, 0x744C, "gfx1100", "AMD Radeon RX 7900 XTX / 7900 XT / 7900 GRE"),
    AmdDevice(0x7448, 0x7448, "gfx1100", "AMD Radeon PRO W7900"),
    AmdDevice(0x745E, 0x745E, "gfx1100", "AMD Radeon PRO W7800"),
    AmdDevice(0x7449, 0x744B, "gfx1100", "AMD Navi 31 (Radeon PRO W7000 series)"),
    AmdDevice(0x747E, 0x747E, "gfx1101", "AMD Radeon RX 7700 / 7700 XT / 7800 XT"),
    AmdDevice(0x7470, 0x7470, "gfx1101", "AMD Radeon PRO W7700"),
    AmdDevice(0x7460, 0x7461, "gfx1101", "AMD Navi 32 (Radeon PRO V710)"),
    AmdDevice(0x7480, 0x7480, "gfx1102", "AMD Radeon RX 7600 / 7600 XT / 7700S"),
    AmdDevice(0x7489, 0x7489, "gfx1102", "AMD Radeon PRO W7500"),
    AmdDevice(0x7499, 0x7499, "gfx1102", "AMD Radeon PRO W7400"),
    AmdDevice(0x7483, 0x7483, "gfx1102", "AMD Navi 33 (Radeon RX 7600M)"),
    AmdDevice(0x749F, 0x749F, "gfx1102", "AMD Navi 33 (Radeon RX 7600 series)"),
    AmdDevice(0x15BF, 0x15BF, "gfx1103", "AMD Phoenix APU (Radeon 760M/780M)", True),
    AmdDevice(0x15C8, 0x15C8, "gfx1103", "AMD Phoenix2 APU (Radeon 740M)", True),
    AmdDevice(0x1900, 0x1901, "gfx1103", "AMD Hawk Point APU (Radeon 760M/780M)", True),
    AmdDevice(0x150E, 0x150E, "gfx1150", "AMD Strix Point APU (Radeon 880M/890M)", True),
    AmdDevice(0x1586, 0x1586, "gfx1151", "AMD Strix Halo APU (Radeon 8060S)", True),
    AmdDevice(0x1114, 0x1114, "gfx1152", "AMD Krackan Point APU (Radeon 840M/860M)", True),
    AmdDevice(0x7590, 0x7590, "gfx1200", "AMD Radeon RX 9060 / 9060 XT"),
    AmdDevice(0x7550, 0x7550, "gfx1201", "AMD Radeon RX 9070 / 9070 XT / 9070 GRE"),
    AmdDevice(0x7551, 0x7551, "gfx1201", "AMD Radeon AI PRO R9700"),
    AmdDevice(0x67C0, 0x67FF, "gfx803", "AMD Polaris (Radeon RX 470-590)"),
    AmdDevice(0x6980, 0x699F, "gfx803", "AMD Polaris 12 (Radeon RX 550)"),
    AmdDevice(0x7300, 0x7300, "gfx803", "AMD Fiji (Radeon R9 Fury / Nano)"),
)


def amd_device(device_id: int) -> AmdDevice | None:
    for row in AMD_DEVICES:
        if row.first_id <= device_id <= row.last_id:
            return row
    return None
