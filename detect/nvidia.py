"""nvidia-smi's CSV query, and what its failures mean (gpu-detection.md §7, pitfalls 6-8).

Its error text is never taken for data: a row counts only when every field parses."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llama_wizard.detect.pci import normalize_bdf
from llama_wizard.detect.tools import ToolResult

FIELDS = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "driver_version",
    "memory.total",
    "memory.used",
    "memory.free",
    "compute_cap",
)
MIB = 1024 * 1024


def query_argv(with_compute_cap: bool = True) -> list[str]:
    fields = FIELDS if with_compute_cap else FIELDS[:-1]
    return ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


def compute_cap_unsupported(result: ToolResult) -> bool:
    """R470 and older reject the field with exit 2 (invalid argument)."""
    return not result.ok and ("compute_cap" in result.output or result.returncode == 2)


@dataclass
class NvidiaGpu:
    index: int
    bus_id: str
    name: str | None
    uuid: str | None
    driver_version: str | None
    memory_total: int | None
    memory_used: int | None
    memory_free: int | None
    compute_capability: str | None


def _value(text: str) -> str | None:
    text = text.strip()
    if not text or (text.startswith("[") and text.endswith("]")) or text in {"N/A", "Unknown"}:
        return None
    return text


def _mib(text: str) -> int | None:
    value = _value(text)
    if value is None:
        return None
    try:
        number = float(value.split()[0])
    except (ValueError, IndexError):
        return None
    import math

    if number < 0 or math.isnan(number) or number > 1 << 40:
        return None
    return int(number * MIB)


def parse(stdout: str, with_compute_cap: bool = True) -> list[NvidiaGpu]:
    import csv

    width = len(FIELDS) if with_compute_cap else len(FIELDS) - 1
    gpus = []
    for line in stdout.splitlines():
        try:
            rows = list(csv.reader([line.replace("\x00", "")], skipinitialspace=True))
        except csv.Error:
            continue
        if len(rows) != 1 or len(rows[0]) != width:
            continue
        row = rows[0]
        index_text = _value(row[0])
        bus_id = normalize_bdf(_value(row[3]))
        if index_text is None or not index_text.isdigit() or bus_id is None:
            continue
        uuid = _value(row[1])
        if uuid is not None and not re.fullmatch(r"(GPU|MIG)-[0-9A-Za-z-]+", uuid):
            uuid = None
        capability = _value(row[8]) if with_compute_cap else None
        if capability is not None and not re.fullmatch(r"\d{1,2}\.\d{1,2}", capability):
            capability = None
        gpus.append(
            NvidiaGpu(
                index=int(index_text),
                bus_id=bus_id,
                name=_value(row[2]),
                uuid=uuid,
                driver_version=_value(row[4]),
                memory_total=_mib(row[5]),
                memory_used=_mib(row[6]),
                memory_free=_mib(row[7]),
                compute_capability=capability,
            )
        )
    return gpus


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    fix: str


def classify_failure(result: ToolResult) -> Failure:
    text = result.output
    if "couldn't communicate with the NVIDIA driver" in text or result.returncode == 9:
        return Failure(
            "nvidia_driver_not_running",
            "nvidia-smi is installed but cannot talk to the NVIDIA kernel driver "
            "(the module is not loaded, nouveau owns the card, or a kernel update broke it).",
            "Load it with `sudo modprobe nvidia`; if that fails, reinstall the driver for "
            "this kernel (e.g. `sudo apt install --reinstall nvidia-driver`) and reboot.",
        )
    if "version mismatch" in text.lower() or result.returncode == 18:
        return Failure(
            "nvidia_driver_mismatch",
            "The NVIDIA driver libraries were updated but the running kernel module is the old "
            "version (Driver/library version mismatch).",
            "Reboot, or unload and reload the NVIDIA modules "
            "(`sudo rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia && sudo modprobe nvidia`).",
        )
    if "No devices were found" in text or result.returncode == 6:
        return Failure(
            "nvidia_smi_failed",
            "nvidia-smi found no NVIDIA GPU the driver can use.",
            "Check `sudo dmesg | grep -i nvrm` for a GPU that failed to initialise.",
        )
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    detail = f": {first_line[:160]}" if first_line else ""
    return Failure(
        "nvidia_smi_failed",
        f"nvidia-smi failed with exit status {result.returncode}{detail}",
        "Run `nvidia-smi` yourself to see the error; the NVIDIA GPUs are listed from sysfs "
        "without memory figures until it works.",
    )
