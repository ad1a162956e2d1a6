"""rocminfo's view: the GPU agents the ROCm runtime really sees (gfx name, marketing name, UUID,
memory pools, compute units). Parsed leniently: its layout changed across ROCm 2-7."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llama_wizard.detect.gfx import parse_gfx
from llama_wizard.detect.tools import ToolResult

ROCMINFO_ARGV = ("rocminfo",)
_AGENT_HEADER = re.compile(r"^\s*Agent\s+(\d+)\s*$")
_FIELD = re.compile(r"^(\s*)([A-Za-z][^:]*?):\s*(.*?)\s*$")
_LEADING_INT = re.compile(r"^(\d+)")
GPU_DEVICE_TYPES = {"GPU", "DCU", "HCU"}


@dataclass
class RocmAgent:
    node: int | None = None
    name: str | None = None
    marketing_name: str | None = None
    uuid: str | None = None
    vendor_name: str | None = None
    device_type: str | None = None
    chip_id: int | None = None
    bdfid: int | None = None
    compute_units: int | None = None
    vram_bytes: int | None = None

    @property
    def gfx_target(self) -> str | None:
        if self.name and parse_gfx(self.name):
            return self.name.strip().lower()
        return None


def _leading_int(text: str) -> int | None:
    match = _LEADING_INT.match(text.strip())
    return int(match.group(1)) if match else None


def parse(text: str) -> list[RocmAgent]:
    """All GPU agents in the output, in the order rocminfo lists them."""
    agents: list[RocmAgent] = []
    current: RocmAgent | None = None
    in_pool_segment: str | None = None
    for raw_line in text.splitlines():
        line = raw_line.rstrip()
        if _AGENT_HEADER.match(line):
            current = RocmAgent()
            agents.append(current)
            in_pool_segment = None
            continue
        if current is None:
            continue
        match = _FIELD.match(line)
        if not match:
            continue
        indent, key, value = len(match.group(1)), match.group(2).strip(), match.group(3)
        if indent <= 2:
            _set_agent_field(current, key, value)
        elif key == "Segment":
            in_pool_segment = value
        elif key == "Size" and in_pool_segment is not None:
            if (
                current.vram_bytes is None
                and "GLOBAL" in in_pool_segment
                and "COARSE" in in_pool_segment
            ):
                size_kib = _leading_int(value)
                if size_kib is not None and "KB" in value:
                    current.vram_bytes = size_kib * 1024
            in_pool_segment = None
    return [agent for agent in agents if (agent.device_type or "").upper() in GPU_DEVICE_TYPES]


def _set_agent_field(agent: RocmAgent, key: str, value: str) -> None:
    if key == "Name":
        agent.name = value or None
    elif key == "Marketing Name":
        agent.marketing_name = value or None
    elif key == "Uuid":
        # APUs and old ROCm print "GPU-XX" when the GPU has no unique id.
        agent.uuid = value if re.fullmatch(r"GPU-[0-9a-fA-F]{8,}", value) else None
    elif key == "Vendor Name":
        agent.vendor_name = value or None
    elif key == "Device Type":
        agent.device_type = value or None
    elif key == "Node":
        agent.node = _leading_int(value)
    elif key == "Chip ID":
        agent.chip_id = _leading_int(value)
    elif key == "BDFID":
        agent.bdfid = _leading_int(value)
    elif key == "Compute Unit":
        agent.compute_units = _leading_int(value)


def failure_summary(result: ToolResult) -> str:
    """One line of what rocminfo complained about, for a warning message."""
    for raw_line in result.output.splitlines():
        line = raw_line.strip()
        if line and not line.startswith("="):
            return line[:200]
    return f"exit status {result.returncode}"
