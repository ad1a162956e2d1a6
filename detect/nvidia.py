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


# --- MIG (Multi-Instance GPU) -------------------------------------------------------------------
#
# A partitioned A100/H100 is no GPU to CUDA: a process sees MIG instances, one per process (NVIDIA
# MIG user guide, "CUDA device enumeration"). Three outputs describe them, each recorded in
# detect/profiles/outputs/ (the a100-mig profile): the `mig.mode.current` query field says which
# GPUs are partitioned, `nvidia-smi -L` lists each instance's profile and MIG- UUID under its GPU,
# and the plain `nvidia-smi` table's "MIG devices" section gives each instance's memory.

MIG_MODE_ARGV = [
    "nvidia-smi",
    "--query-gpu=index,pci.bus_id,mig.mode.current",
    "--format=csv,noheader",
]
LIST_ARGV = ["nvidia-smi", "-L"]
TABLE_ARGV = ["nvidia-smi"]
GIB = 1 << 30


@dataclass(frozen=True)
class MigMode:
    index: int
    bus_id: str
    mode: str  # "Enabled" / "Disabled"


def parse_mig_modes(stdout: str) -> list[MigMode]:
    """`index, bus id, mig.mode.current` rows; GPUs without MIG answer [N/A] and are left out."""
    import csv

    modes = []
    for line in stdout.splitlines():
        try:
            rows = list(csv.reader([line.replace("\x00", "")], skipinitialspace=True))
        except csv.Error:
            continue
        if len(rows) != 1 or len(rows[0]) != 3:
            continue
        index_text, bus_text, mode = (_value(cell) for cell in rows[0])
        bus_id = normalize_bdf(bus_text)
        if index_text is None or not index_text.isdigit() or bus_id is None:
            continue
        if mode in ("Enabled", "Disabled"):
            modes.append(MigMode(int(index_text), bus_id, mode))
    return modes


@dataclass(frozen=True)
class ListedMig:
    profile: str
    device: int
    uuid: str


@dataclass
class ListedGpu:
    index: int
    name: str
    uuid: str | None
    migs: list[ListedMig]


_LIST_GPU = re.compile(r"^GPU (\d+): (.+?) \(UUID: ((?:GPU)-[0-9A-Za-z-]+)\)\s*$")
# "  MIG 1g.10gb     Device  0: (UUID: MIG-…)"; drivers before R470 printed the UUID as
# MIG-GPU-<parent>/<gi>/<ci>, which CUDA_VISIBLE_DEVICES takes too.
_LIST_MIG = re.compile(
    r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[0-9A-Za-z/-]+)\)\s*$"
)


def parse_list(stdout: str) -> list[ListedGpu]:
    """`nvidia-smi -L`: each GPU with the MIG instances listed under it."""
    gpus: list[ListedGpu] = []
    for line in stdout.splitlines():
        if match := _LIST_GPU.match(line):
            gpus.append(ListedGpu(int(match.group(1)), match.group(2), match.group(3), []))
        elif (match := _LIST_MIG.match(line)) and gpus:
            gpus[-1].migs.append(
                ListedMig(match.group(1), int(match.group(2)), match.group(3))
            )
    return gpus


@dataclass(frozen=True)
class MigMemory:
    gpu: int
    gpu_instance: int
    compute_instance: int
    device: int
    used: int
    total: int


# The first line of each instance's row in the table's "MIG devices:" section:
# "|  0    2   0   0  |             142MiB / 20096MiB    | 56      0 |  4   0    2    0    0 |"
_TABLE_MIG = re.compile(
    r"^\|\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\|\s+(\d+)MiB\s*/\s*(\d+)MiB\s*\|"
)


def parse_mig_table(stdout: str) -> list[MigMemory]:
    """Each MIG instance's memory from the plain `nvidia-smi` table (its "MIG devices" section;
    the GPU rows above it have no four-number first column, so they never match)."""
    rows = []
    in_section = False
    for line in stdout.splitlines():
        if "MIG devices:" in line:
            in_section = True
            continue
        if "Processes:" in line:
            in_section = False
        if in_section and (match := _TABLE_MIG.match(line)):
            gpu, gi, ci, device, used, total = (int(group) for group in match.groups())
            rows.append(MigMemory(gpu, gi, ci, device, used * MIB, total * MIB))
    return rows


def permission_denied(text: str) -> bool:
    """nvidia-smi's answer where the driver hides MIG details from this user or container."""
    return "Insufficient Permissions" in text or "No permission" in text


_PROFILE = re.compile(r"^(?:\d+c\.)?(\d+)g\.(\d+)gb(?:\+\w+)*$")


def profile_memory_bytes(profile: str) -> int | None:
    """An instance's memory from its profile name alone, for when nvidia-smi hides it: the
    name's "N gb" read as GiB, times 0.95. `nvidia-smi mig -lgip` tables show 1g.5gb = 4.75 GiB
    and 1g.10gb = 9.50 GiB exactly, and larger profiles a little more than this (3g.40gb 39.25,
    7g.80gb 79.00), so the estimate never promises memory the instance lacks."""
    match = _PROFILE.match(profile)
    if match is None:
        return None
    return int(int(match.group(2)) * GIB * 95 // 100)


# --- who uses the GPUs ---------------------------------------------------------------------------

APPS_ARGV = [
    "nvidia-smi",
    "--query-compute-apps=pid,process_name,used_memory,gpu_uuid",
    "--format=csv,noheader,nounits",
]


@dataclass(frozen=True)
class ComputeApp:
    pid: int
    name: str | None
    used: int | None
    gpu_uuid: str


def parse_apps(stdout: str) -> list[ComputeApp]:
    """`--query-compute-apps` rows. A process in another PID namespace (a container) shows no
    name ([N/A] or [Insufficient Permissions]); its memory still counts."""
    import csv

    apps = []
    for line in stdout.splitlines():
        try:
            rows = list(csv.reader([line.replace("\x00", "")], skipinitialspace=True))
        except csv.Error:
            continue
        if len(rows) != 1 or len(rows[0]) != 4:
            continue
        pid_text, name, used, uuid = rows[0]
        pid_value, uuid_value = _value(pid_text), _value(uuid)
        if pid_value is None or not pid_value.isdigit() or uuid_value is None:
            continue
        if not re.fullmatch(r"(GPU|MIG)-[0-9A-Za-z/-]+", uuid_value):
            continue
        apps.append(ComputeApp(int(pid_value), _value(name), _mib(used), uuid_value))
    return apps
