"""Detection: run every source at once, each time-limited, and merge what they saw into one
entry per physical GPU, keyed by PCI address, in PCI bus order."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llama_wizard.detect import host, kfd
from llama_wizard.detect.gfx import amd_device
from llama_wizard.detect.model import Cpu, DetectionWarning, Gpu, Inventory
from llama_wizard.detect.names import (
    INTEL_DISCRETE_PREFIXES,
    VENDOR_AMD,
    VENDOR_INTEL,
    VENDOR_NVIDIA,
    amdgpu_ids_name,
    nvidia_compute_capability_from_name,
    product_name,
)
from llama_wizard.detect.pci import PciDisplayDevice, bdf_from_location, display_devices
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.detect.tools import (
    DEFAULT_TIMEOUT,
    ToolNotFound,
    ToolResult,
    ToolTimeout,
    run_tool,
)

if TYPE_CHECKING:
    from llama_wizard.detect import nvidia, rocminfo

GIB = 1 << 30
# A source with no subprocess of its own gets this much beyond the tool timeout before detection
# gives up on it (a hung NFS-mounted /sys, say) and reports it as timed out.
GRACE_SECONDS = 2.0
NVIDIA_RUNS = 6


@dataclass
class SourceResult:
    """What one source answered. `data` is None when it had nothing to say."""

    name: str
    data: Any = None
    warnings: list[DetectionWarning] = field(default_factory=list)


def _sysfs_source(root: SystemRoot) -> SourceResult:
    return SourceResult(
        "sysfs",
        {
            "pci": display_devices(root),
            "kfd_nodes": kfd.read_nodes(root),
            "kfd_access": kfd.check_access(root),
        },
    )


def _timeout_warning(tool: str, timeout: float) -> DetectionWarning:
    return DetectionWarning(
        "tool_timeout",
        f"{tool} did not answer within {timeout:g} s and was stopped; its information is "
        "missing below.",
        f"A hung {tool} usually means a wedged GPU or driver: check `sudo dmesg` for GPU "
        f"errors, or run `{tool}` yourself. Raise the limit with --timeout.",
    )


def _rocminfo_source(timeout: float, env: Mapping[str, str] | None) -> SourceResult:
    from llama_wizard.detect import rocminfo  # its parser: only when rocminfo is there

    try:
        result = run_tool(rocminfo.ROCMINFO_ARGV, timeout=timeout, env=env)
    except ToolNotFound:
        return SourceResult("rocminfo")
    except ToolTimeout:
        return SourceResult("rocminfo", warnings=[_timeout_warning("rocminfo", timeout)])
    agents = rocminfo.parse(result.stdout)
    if result.ok:
        return SourceResult("rocminfo", agents)
    warning = DetectionWarning(
        "rocminfo_failed",
        f"rocminfo failed: {rocminfo.failure_summary(result)}",
        "ROCm's runtime cannot reach the GPU; see the /dev/kfd and driver notes, or run "
        "`rocminfo` yourself.",
    )
    return SourceResult("rocminfo", agents or None, [warning])


def _nvidia_source(timeout: float, env: Mapping[str, str] | None) -> SourceResult:
    from llama_wizard.detect import nvidia  # its parser: only when nvidia-smi is there

    try:
        result: ToolResult = run_tool(nvidia.query_argv(), timeout=timeout, env=env)
        with_cap = True
        if nvidia.compute_cap_unsupported(result):
            retry = run_tool(nvidia.query_argv(with_compute_cap=False), timeout=timeout, env=env)
            if retry.ok:
                result, with_cap = retry, False
    except ToolNotFound:
        return SourceResult("nvidia-smi", None)
    except ToolTimeout:
        return SourceResult("nvidia-smi", warnings=[_timeout_warning("nvidia-smi", timeout)])
    if not result.ok:
        failure = nvidia.classify_failure(result)
        return SourceResult(
            "nvidia-smi",
            {"failed": True},
            [DetectionWarning(failure.code, failure.message, failure.fix)],
        )
    data: dict[str, Any] = {"gpus": nvidia.parse(result.stdout, with_cap)}
    try:
        data |= _nvidia_extras(timeout, env)
    except ToolTimeout:  # the GPUs are known; who uses them, or their MIG layout, is missing
        return SourceResult("nvidia-smi", data, [_timeout_warning("nvidia-smi", timeout)])
    return SourceResult("nvidia-smi", data)


def _nvidia_extras(timeout: float, env: Mapping[str, str] | None) -> dict[str, Any]:
    """Who uses the GPUs (--query-compute-apps) and, on partitioned GPUs only, the MIG layout
    (`-L` and the plain table). Drivers without these fields answer an error: nothing to add."""
    from llama_wizard.detect import nvidia

    extras: dict[str, Any] = {}
    apps = run_tool(nvidia.APPS_ARGV, timeout=timeout, env=env)
    if apps.ok:
        extras["apps"] = nvidia.parse_apps(apps.stdout)
    modes = run_tool(nvidia.MIG_MODE_ARGV, timeout=timeout, env=env)
    enabled = [m for m in nvidia.parse_mig_modes(modes.stdout) if m.mode == "Enabled"]
    if not modes.ok or not enabled:
        return extras
    extras["mig_enabled"] = {m.bus_id for m in enabled}
    listing = run_tool(nvidia.LIST_ARGV, timeout=timeout, env=env)
    extras["mig_listing"] = nvidia.parse_list(listing.stdout)
    table = run_tool(nvidia.TABLE_ARGV, timeout=timeout, env=env)
    extras["mig_memory"] = nvidia.parse_mig_table(table.stdout)
    extras["mig_denied"] = nvidia.permission_denied(table.output) or nvidia.permission_denied(
        listing.output
    )
    return extras


def _host_source(root: SystemRoot, system: str, timeout: float, env: Mapping[str, str] | None):
    if system == "Darwin":
        try:
            cpu, memory_total, gpus = host.read_macos(timeout=timeout, env=env)
        except (ToolNotFound, ToolTimeout):
            cpu, memory_total, gpus = host.read_cpu(root), 0, []
        import psutil

        available = int(psutil.virtual_memory().available)
        return SourceResult("host", {"cpu": cpu, "memory": (memory_total, available), "gpus": gpus})
    return SourceResult(
        "host", {"cpu": host.read_cpu(root), "memory": host.read_memory(root), "gpus": []}
    )


def run_sources(
    root: SystemRoot,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    system: str | None = None,
    on_result: Callable[[SourceResult], None] | None = None,
) -> list[SourceResult]:
    """Every source at once; each result is handed to `on_result` as soon as it arrives, so a
    screen can fill in while a slow tool is still running."""
    system = system or os.uname().sysname
    jobs: dict[str, Callable[[], SourceResult]] = {
        "host": lambda: _host_source(root, system, timeout, env),
    }
    if system == "Linux":
        jobs["sysfs"] = lambda: _sysfs_source(root)
        jobs["rocminfo"] = lambda: _rocminfo_source(timeout, env)
        jobs["nvidia-smi"] = lambda: _nvidia_source(timeout, env)
    results: list[SourceResult] = []

    def deliver(result: SourceResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    # A tool that is not on PATH answers "nothing here" at once: no thread for it.
    path = (os.environ if env is None else env).get("PATH")
    for name in ("rocminfo", "nvidia-smi"):
        if name in jobs and shutil.which(name, path=path) is None:
            del jobs[name]
            deliver(SourceResult(name))
    answers: list[tuple[str, SourceResult | BaseException]] = []
    answered = threading.Condition()

    def work(name: str, job: Callable[[], SourceResult]) -> None:
        try:
            answer: SourceResult | BaseException = job()
        except BaseException as error:  # handed to the caller, as a future's result() would
            answer = error
        with answered:
            answers.append((name, answer))
            answered.notify()

    for name, job in jobs.items():
        threading.Thread(target=work, args=(name, job), name=f"detect-{name}", daemon=True).start()
    # nvidia-smi may run up to six times (the compute_cap retry, who uses the GPUs, and on a
    # MIG machine its mode, `-L` and the table), each run with its own limit.
    deadline = NVIDIA_RUNS * timeout + GRACE_SECONDS
    ends = time.monotonic() + deadline
    pending = set(jobs)
    while pending:
        with answered:
            answered.wait_for(lambda: answers, timeout=max(ends - time.monotonic(), 0))
            arrived, answers[:] = list(answers), []
        if not arrived:
            break
        for name, answer in arrived:
            pending.discard(name)
            if isinstance(answer, BaseException):
                raise answer
            deliver(answer)
    for name in jobs:
        if name in pending:
            deliver(SourceResult(name, warnings=[_timeout_warning(name, deadline)]))
    return results


def detect(
    root: SystemRoot | str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    system: str | None = None,
) -> Inventory:
    """The machine's inventory. Never raises for what the machine looks like: anything odd becomes
    a warning with a fix."""
    if not isinstance(root, SystemRoot):
        root = SystemRoot.from_env(root)
    return merge(root, run_sources(root, timeout=timeout, env=env, system=system))


def _entry_from_pci(root: SystemRoot, device: PciDisplayDevice) -> Gpu:
    vendor = {VENDOR_AMD: "amd", VENDOR_NVIDIA: "nvidia", VENDOR_INTEL: "intel"}.get(
        device.vendor, "other"
    )
    gpu = Gpu(
        vendor=vendor,  # type: ignore[arg-type]
        name=product_name(root, device.vendor, device.device, device.revision, device.hwdb_name),
        pci_bus_id=device.bdf,
        pci_device_id=device.device_id,
        driver=device.driver,
        sources=[device.source],
    )
    if vendor == "amd":
        row = amd_device(device.device)
        gpu.gfx_target = row.gfx if row else None
        gpu.vram_total_bytes = device.vram_total
        if device.vram_total is not None and device.vram_used is not None:
            gpu.vram_free_bytes = max(device.vram_total - device.vram_used, 0)
        gpu.gtt_total_bytes = device.gtt_total
        if device.unique_id:
            gpu.uuid = f"GPU-{int(device.unique_id, 16):016x}"
        gpu.integrated = _amd_integrated(device, row.integrated if row else False)
        if gpu.integrated:
            # An APU can use its carve-out plus GTT, system RAM the GPU maps (pitfall 1); free is
            # what neither pool has in use (ollama's removed mem_hip.cpp did the same).
            total = (device.vram_total or 0) + (device.gtt_total or 0)
            used = (device.vram_used or 0) + (device.gtt_used or 0)
            gpu.memory_usable_bytes = total or None
            gpu.memory_free_bytes = max(total - used, 0) if total else None
    elif vendor == "intel":
        gpu.integrated = device.bdf.startswith("0000:00:") and (
            device.device >> 8 not in INTEL_DISCRETE_PREFIXES
        )
        gpu.vram_total_bytes = None if gpu.integrated else device.vram_total
    return gpu


def _amd_integrated(device: PciDisplayDevice, known_apu: bool) -> bool:
    """ollama's rule: a card that reports its VRAM chip vendor or board info is discrete; else
    a small carve-out with a much larger GTT is an APU (gpu-detection.md pitfall 1)."""
    if device.has_vram_vendor or device.has_board_info:
        return False
    vram, gtt = device.vram_total, device.gtt_total
    if vram is not None and gtt is not None:
        return vram <= 4 * GIB and gtt >= 8 * GIB and gtt >= 4 * vram
    return known_apu


def _merge_kfd(
    gpus: dict[str, Gpu], extra: list[Gpu], nodes: list[kfd.KfdNode], pci: list[PciDisplayDevice]
) -> None:
    by_render_minor = {device.render_minor: device.bdf for device in pci if device.render_minor}
    for node in nodes:
        if not node.is_gpu:
            continue
        bdf = node.bdf if node.bdf in gpus else by_render_minor.get(node.get("drm_render_minor"))
        gpu = gpus.get(bdf) if bdf else None
        if gpu is None:
            row = amd_device(node.get("device_id") or 0)
            gpu = Gpu(
                vendor="amd" if node.get("vendor_id") == VENDOR_AMD else "other",
                name=row.name if row else "AMD GPU (KFD only)",
                pci_bus_id=node.bdf,
                pci_device_id=f"0x{node.get('device_id'):04x}" if node.get("device_id") else None,
            )
            extra.append(gpu)
        gpu.kfd_node = node.node_id
        gpu.gfx_target = node.gfx_target or gpu.gfx_target
        gpu.uuid = node.uuid or gpu.uuid
        gpu.compute_units = node.compute_units or gpu.compute_units
        gpu.add_source("kfd")


def _merge_rocminfo(
    gpus: list[Gpu], agents: list[rocminfo.RocmAgent], named_by_libdrm: set[str]
) -> None:
    for agent in agents:
        bdf = bdf_from_location(0, agent.bdfid) if agent.bdfid else None
        gpu = next((g for g in gpus if agent.node is not None and g.kfd_node == agent.node), None)
        gpu = gpu or next((g for g in gpus if bdf and g.pci_bus_id == bdf), None)
        gpu = gpu or next((g for g in gpus if agent.uuid and g.uuid == agent.uuid), None)
        if gpu is None:
            vendor = "amd" if (agent.vendor_name or "").upper() == "AMD" else "other"
            gpu = Gpu(vendor=vendor, name=agent.marketing_name or agent.name or "ROCm GPU")  # type: ignore[arg-type]
            gpu.pci_bus_id = bdf
            if agent.chip_id:
                gpu.pci_device_id = f"0x{agent.chip_id:04x}"
            gpus.append(gpu)
        elif gpu.pci_bus_id not in named_by_libdrm and _is_product_name(agent.marketing_name):
            gpu.name = agent.marketing_name  # type: ignore[assignment]
        if gpu.kfd_node is None:
            gpu.kfd_node = agent.node
        if "kfd" not in gpu.sources:
            gpu.gfx_target = agent.gfx_target or gpu.gfx_target
        gpu.uuid = gpu.uuid or agent.uuid
        gpu.compute_units = gpu.compute_units or agent.compute_units
        gpu.vram_total_bytes = gpu.vram_total_bytes or agent.vram_bytes
        gpu.add_source("rocminfo")


def _is_product_name(name: str | None) -> bool:
    """rocminfo's marketing name is libdrm's product name on a current system, but the bare chip
    name ("Vega 20") on old ones, and empty on some (ROCm issue 2055)."""
    return bool(name) and any(word in name for word in ("Radeon", "Instinct", "AMD "))  # type: ignore[operator]


def _merge_nvidia(gpus: list[Gpu], rows: list[nvidia.NvidiaGpu]) -> None:
    for row in rows:
        gpu = next((g for g in gpus if g.pci_bus_id == row.bus_id), None)
        if gpu is None:
            gpu = Gpu(vendor="nvidia", name=row.name or "NVIDIA GPU", pci_bus_id=row.bus_id)
            gpus.append(gpu)
        gpu.vendor = "nvidia"
        gpu.name = row.name or gpu.name
        gpu.uuid = row.uuid or gpu.uuid
        gpu.driver = gpu.driver or "nvidia"
        gpu.driver_version = row.driver_version
        gpu.compute_capability = row.compute_capability or gpu.compute_capability
        gpu.vram_total_bytes = row.memory_total
        gpu.vram_free_bytes = row.memory_free
        gpu.add_source("nvidia-smi")


def _attach_processes(gpus: list[Gpu], apps: list[nvidia.ComputeApp], root: SystemRoot) -> None:
    """Who holds each GPU's memory (nvidia-smi --query-compute-apps), with the process name
    from /proc/PID/comm where nvidia-smi gives none (another user's process)."""
    by_uuid = {gpu.uuid: gpu for gpu in gpus if gpu.uuid}
    for app in apps:
        gpu = by_uuid.get(app.gpu_uuid)
        if gpu is None:
            continue
        name = app.name or root.read_attr(f"/proc/{app.pid}/comm")
        gpu.processes.append({"pid": app.pid, "name": name, "used_bytes": app.used})


def _finish(gpu: Gpu, memory_total: int) -> None:
    if gpu.vendor == "nvidia" and gpu.compute_capability is None:
        gpu.compute_capability = nvidia_compute_capability_from_name(gpu.name)
    if gpu.mig_mode == "Enabled" and not gpu.is_mig_instance:
        return  # a partitioned GPU without instances: expand() left it nothing to offer
    if gpu.integrated and gpu.vendor == "amd":
        if gpu.memory_usable_bytes is None:
            gpu.memory_usable_bytes = gpu.vram_total_bytes
    elif gpu.integrated and gpu.vram_total_bytes is None and gpu.vendor == "intel":
        gpu.memory_usable_bytes = memory_total or None
    else:
        gpu.memory_usable_bytes = gpu.vram_total_bytes
        gpu.memory_free_bytes = gpu.vram_free_bytes


def merge(root: SystemRoot, results: list[SourceResult]) -> Inventory:
    by_name = {result.name: result for result in results}
    warnings: list[DetectionWarning] = [w for result in results for w in result.warnings]

    host_data = by_name.get("host", SourceResult("host")).data or {}
    cpu: Cpu = host_data.get("cpu") or Cpu(model="unknown CPU", arch="unknown", cores=0, threads=0)
    memory_total, memory_available = host_data.get("memory") or (0, 0)

    sysfs = by_name.get("sysfs", SourceResult("sysfs")).data or {}
    pci: list[PciDisplayDevice] = sysfs.get("pci") or []
    by_bdf = {device.bdf: _entry_from_pci(root, device) for device in pci}
    kfd_only: list[Gpu] = []
    nodes = sysfs.get("kfd_nodes")
    if nodes:
        _merge_kfd(by_bdf, kfd_only, nodes, pci)
    gpus = [*by_bdf.values(), *kfd_only]

    rocm = by_name.get("rocminfo")
    if rocm and isinstance(rocm.data, list):
        named_by_libdrm = {
            device.bdf
            for device in pci
            if device.vendor == VENDOR_AMD and amdgpu_ids_name(root, device.device, device.revision)
        }
        _merge_rocminfo(gpus, rocm.data, named_by_libdrm)
    smi = by_name.get("nvidia-smi")
    smi_data = smi.data if smi else None
    mig_warnings: list[DetectionWarning] = []
    if isinstance(smi_data, dict) and smi_data.get("gpus"):
        _merge_nvidia(gpus, smi_data["gpus"])
        from llama_wizard.detect import mig  # with nvidia's parser: only when nvidia-smi answered

        gpus, mig_warnings = mig.expand(gpus, smi_data)
        _attach_processes(gpus, smi_data.get("apps") or [], root)
    gpus.extend(host_data.get("gpus") or [])

    for gpu in gpus:
        _finish(gpu, memory_total)
    # Stable: a partitioned GPU's instances stay together, in `-L` order.
    gpus.sort(key=lambda g: (g.pci_bus_id is None, g.pci_bus_id or "", g.mig_device or 0))
    for index, gpu in enumerate(gpus):
        gpu.index = index

    warnings.extend(mig_warnings)
    warnings.extend(
        _hardware_warnings(
            gpus,
            pci=pci,
            nodes=nodes,
            access=sysfs.get("kfd_access"),
            smi_data=smi_data,
            sysfs_ran=sysfs != {},
        )
    )
    # One warning per cause: a tool failing because of a problem already explained says nothing new.
    codes = {w.code for w in warnings}
    if codes & {"kfd_missing", "kfd_permission"}:
        warnings = [w for w in warnings if w.code != "rocminfo_failed"]
    if codes & {"nvidia_driver_missing", "nvidia_nouveau"}:
        warnings = [w for w in warnings if w.code != "nvidia_driver_not_running"]
    return Inventory(
        gpus=gpus,
        cpu=cpu,
        memory_total_bytes=memory_total,
        memory_available_bytes=memory_available,
        warnings=_dedupe(warnings),
    )


def _hardware_warnings(
    gpus: list[Gpu],
    *,
    pci: list[PciDisplayDevice],
    nodes: list[kfd.KfdNode] | None,
    access: kfd.KfdAccess | None,
    smi_data: Any,
    sysfs_ran: bool,
) -> list[DetectionWarning]:
    warnings = []
    amd = [g for g in gpus if g.vendor == "amd"]
    amd_bound = [g for g in amd if g.driver == "amdgpu"]
    for device in pci:
        if device.vendor == VENDOR_AMD and device.driver != "amdgpu":
            warnings.append(
                DetectionWarning(
                    "amd_driver_missing",
                    f"The AMD GPU at {device.bdf} is "
                    + (
                        "not bound to any driver"
                        if device.driver is None
                        else f"bound to `{device.driver}`, not `amdgpu`"
                    )
                    + ", so ROCm and Vulkan cannot use it.",
                    "Load the amdgpu driver: `sudo modprobe amdgpu` (check `sudo dmesg | grep "
                    "amdgpu` for firmware errors; Debian needs `firmware-amd-graphics`).",
                )
            )
    gpu_nodes = [node for node in nodes or [] if node.is_gpu]
    if amd_bound and sysfs_ran and not gpu_nodes:
        warnings.append(
            DetectionWarning(
                "kfd_missing",
                "The amdgpu driver is loaded but the kernel exposes no KFD compute interface, so "
                "ROCm cannot see the GPU.",
                "Use a kernel built with CONFIG_HSA_AMD (every distribution kernel is); in a "
                "container pass `--device /dev/kfd --device /dev/dri`.",
            )
        )
    elif amd_bound and access is not None and access.state == "missing":
        warnings.append(
            DetectionWarning(
                "kfd_missing",
                "/dev/kfd does not exist, so ROCm programs cannot reach the GPU.",
                "In a container pass `--device /dev/kfd --device /dev/dri`; on the host "
                "`sudo modprobe amdgpu` and check `ls -l /dev/kfd`.",
            )
        )
    if amd_bound and access is not None and access.state == "denied":
        group = access.group or "render"
        groups = "render,video" if group in ("render", "video") else group
        warnings.append(
            DetectionWarning(
                "kfd_permission",
                f"This user cannot open /dev/kfd (owned by group `{group}`), so ROCm will "
                "report no GPUs.",
                f'Add yourself to the group: `sudo usermod -aG {groups} "$USER"`, then log '
                "out and back in (or run `newgrp "
                f"{group}`).",
            )
        )
    for gpu in gpus:
        if gpu.vendor != "nvidia" or "nvidia-smi" in gpu.sources:
            continue
        if gpu.driver == "nouveau":
            warnings.append(
                DetectionWarning(
                    "nvidia_nouveau",
                    f"{gpu.name} ({gpu.pci_bus_id}) is driven by nouveau, which has no CUDA.",
                    "Install NVIDIA's driver (Debian: `sudo apt install nvidia-driver`, Ubuntu: "
                    "`sudo ubuntu-drivers install`), which blacklists nouveau, then reboot.",
                )
            )
        elif gpu.driver is None:
            warnings.append(
                DetectionWarning(
                    "nvidia_driver_missing",
                    f"{gpu.name} ({gpu.pci_bus_id}) has no driver loaded, so CUDA cannot use it.",
                    "Install NVIDIA's driver (Debian: `sudo apt install nvidia-driver`, Ubuntu: "
                    "`sudo ubuntu-drivers install`) and reboot; check Secure Boot if it is "
                    "installed but not loaded.",
                )
            )
        elif gpu.driver == "nvidia" and smi_data is None:
            warnings.append(
                DetectionWarning(
                    "nvidia_smi_missing",
                    f"{gpu.name} uses the NVIDIA driver but nvidia-smi is not on PATH, so its "
                    "memory and compute capability are unknown.",
                    "Install the driver's utilities (Debian: `nvidia-smi`; Ubuntu: "
                    "`nvidia-utils-<version>`).",
                )
            )
    discrete = [g for g in gpus if not g.integrated and g.vendor in ("amd", "nvidia")]
    for gpu in gpus:
        if gpu.integrated and discrete and gpu.vendor in ("amd", "intel"):
            warnings.append(
                DetectionWarning(
                    "igpu_masked",
                    f"{gpu.name} ({gpu.pci_bus_id}) is an integrated GPU next to a discrete one; "
                    "llama.cpp would split layers onto it and fail, so it will be masked.",
                    f"Nothing to do. To use it anyway, pick it explicitly with --gpu {gpu.index}.",
                )
            )
    return warnings


def _dedupe(warnings: list[DetectionWarning]) -> list[DetectionWarning]:
    seen: set[DetectionWarning] = set()
    unique = []
    for warning in warnings:
        if warning not in seen:
            seen.add(warning)
            unique.append(warning)
    return unique
