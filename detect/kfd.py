"""AMD's KFD (ROCm compute) topology: one node per CPU socket and per GPU, under
/sys/class/kfd/kfd/topology/nodes/<N>/properties, all values decimal (gpu-detection.md §3.1)."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field

from llama_wizard.detect.gfx import gfx_from_kfd_version
from llama_wizard.detect.pci import bdf_from_location
from llama_wizard.detect.sysroot import SystemRoot

TOPOLOGY = "/sys/class/kfd/kfd/topology/nodes"


@dataclass
class KfdNode:
    node_id: int
    properties: dict[str, int] = field(default_factory=dict)

    def get(self, key: str) -> int | None:
        return self.properties.get(key)

    @property
    def is_gpu(self) -> bool:
        # CPU nodes have no SIMDs; old APU nodes are CPU and GPU at once (cpu_cores_count > 0
        # and simd_count > 0) and count as GPUs.
        return (self.get("simd_count") or 0) > 0

    @property
    def gfx_target(self) -> str | None:
        version = self.get("gfx_target_version")
        return gfx_from_kfd_version(version) if version else None

    @property
    def bdf(self) -> str | None:
        location = self.get("location_id")
        if not location:
            return None
        return bdf_from_location(self.get("domain") or 0, location)

    @property
    def uuid(self) -> str | None:
        unique_id = self.get("unique_id")
        if not unique_id or unique_id < 0 or unique_id >= 1 << 64:
            return None
        return f"GPU-{unique_id:016x}"

    @property
    def compute_units(self) -> int | None:
        simds, per_cu = self.get("simd_count"), self.get("simd_per_cu")
        if simds and per_cu and per_cu > 0:
            return simds // per_cu
        return None


def parse_properties(text: str) -> dict[str, int]:
    properties: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", parts[0]):
            continue
        try:
            properties[parts[0]] = int(parts[1])
        except ValueError:
            continue
    return properties


def read_nodes(root: SystemRoot) -> list[KfdNode] | None:
    """Every topology node, sorted by node number as a number (`nodes/10` after `nodes/2`,
    pitfall 18). None when the kernel exposes no KFD topology at all."""
    if not root.exists(TOPOLOGY):
        return None
    nodes = []
    for name in root.listdir(TOPOLOGY):
        if not name.isdigit():
            continue
        text = root.read_text(f"{TOPOLOGY}/{name}/properties")
        if text is None:
            continue
        nodes.append(KfdNode(node_id=int(name), properties=parse_properties(text)))
    return sorted(nodes, key=lambda node: node.node_id)


@dataclass(frozen=True)
class KfdAccess:
    """Whether this user can open /dev/kfd, which every ROCm program needs."""

    state: str  # "ok", "missing", "denied"
    group: str | None = None
    detail: str | None = None


def check_access(root: SystemRoot) -> KfdAccess:
    path = root.path("/dev/kfd")
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ENOENT:
            return KfdAccess("missing")
        if error.errno in (errno.EACCES, errno.EPERM):
            return KfdAccess("denied", group=_group_of(root, path), detail=error.strerror)
        return KfdAccess("ok", detail=error.strerror)  # busy or odd: ROCm will say more
    os.close(descriptor)
    return KfdAccess("ok")


def _group_of(root: SystemRoot, path: os.PathLike[str] | str) -> str | None:
    try:
        gid = os.stat(path).st_gid
    except OSError:
        return None
    text = root.read_text("/etc/group") or ""
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2] == str(gid):
            return parts[0]
    if root.is_host:
        try:
            import grp

            return grp.getgrgid(gid).gr_name
        except (KeyError, ImportError):
            return None
    return None
