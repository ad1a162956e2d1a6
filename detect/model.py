"""The inventory's data types: what detection returns to the CLI, the planner and the screens."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Vendor = Literal["amd", "nvidia", "intel", "apple", "other"]


@dataclass
class Gpu:
    """One physical GPU, merged from every source that saw it."""

    vendor: Vendor
    name: str
    index: int = 0
    pci_bus_id: str | None = None
    pci_device_id: str | None = None
    driver: str | None = None
    gfx_target: str | None = None
    kfd_node: int | None = None
    uuid: str | None = None
    compute_capability: str | None = None
    integrated: bool = False
    vram_total_bytes: int | None = None
    vram_free_bytes: int | None = None
    gtt_total_bytes: int | None = None
    sources: list[str] = field(default_factory=list)
    # Beyond the contract's keys: what llama.cpp can really allocate on this device. For an APU
    # that is the BIOS carve-out plus GTT (system RAM the GPU may map), not the carve-out alone.
    memory_usable_bytes: int | None = None
    memory_free_bytes: int | None = None
    compute_units: int | None = None
    driver_version: str | None = None
    # NVIDIA MIG: "Enabled" on a partitioned GPU. A partitioned GPU is listed as its instances,
    # each a device of its own (its MIG- UUID, its memory); the parent stays listed only when it
    # has no instance, and then CUDA cannot use it at all.
    mig_mode: str | None = None
    mig_profile: str | None = None  # "1g.10gb", "1c.2g.10gb": an instance's profile
    mig_parent_uuid: str | None = None
    mig_device: int | None = None  # nvidia-smi's "MIG Dev" / `-L`'s "Device N" under its GPU
    mig_gpu_instance: int | None = None
    mig_compute_instance: int | None = None
    # Who holds this GPU's memory now: [{"pid", "name", "used_bytes"}] (names where visible).
    processes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def usable_bytes(self) -> int:
        """What a GPU offers a model: memory_usable_bytes, what llama.cpp can allocate there (for
        an APU the carve-out plus GTT), not what happens to be free now. Whether to plan around
        what other processes hold now is the caller's choice (detect/memory.py)."""
        if self.memory_usable_bytes is not None:
            return self.memory_usable_bytes
        return self.vram_total_bytes or 0

    @property
    def is_mig_instance(self) -> bool:
        return self.mig_profile is not None

    def add_source(self, source: str) -> None:
        if source not in self.sources:
            self.sources.append(source)


GPU_KEY_ORDER = (
    "index", "vendor", "name", "pci_bus_id", "pci_device_id", "driver", "gfx_target", "kfd_node",
    "uuid", "compute_capability", "integrated", "vram_total_bytes", "vram_free_bytes",
    "gtt_total_bytes", "sources",
)  # fmt: skip


@dataclass
class Cpu:
    model: str
    arch: str
    cores: int
    threads: int
    flags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DetectionWarning:
    """Something a person should know, and what they can do about it."""

    code: str
    message: str
    fix: str


@dataclass
class Inventory:
    gpus: list[Gpu]
    cpu: Cpu
    memory_total_bytes: int
    memory_available_bytes: int
    warnings: list[DetectionWarning] = field(default_factory=list)
    simulated: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The `detect --json` document: the contract's keys first, in the contract's order."""
        document = asdict(self)
        document["gpus"] = [
            {key: gpu[key] for key in GPU_KEY_ORDER} | gpu for gpu in document["gpus"]
        ]
        if self.simulated is None:
            document.pop("simulated")
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Inventory:
        return cls(
            gpus=[Gpu(**gpu) for gpu in document["gpus"]],
            cpu=Cpu(**document["cpu"]),
            memory_total_bytes=document["memory_total_bytes"],
            memory_available_bytes=document["memory_available_bytes"],
            warnings=[DetectionWarning(**w) for w in document.get("warnings", [])],
            simulated=document.get("simulated"),
        )
