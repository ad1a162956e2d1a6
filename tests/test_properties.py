"""Garbled, truncated and hostile inputs: detection always returns a valid inventory (plus
warnings), never an exception."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_wizard.detect import kfd, nvidia, rocminfo
from llama_wizard.detect.inventory import detect
from llama_wizard.detect.model import Inventory
from llama_wizard.detect.simulate import list_profiles, load_profile, materialize, recorded_output

RECORDED_ROCMINFO = recorded_output("rocminfo__2x_vega20-mi50_gfx906_rocm4.2__rocm-issue-1535.txt")
NVIDIA_ROW = (
    "0, GPU-9a1b2c3d-0000-1111-2222-333344445555, NVIDIA GeForce RTX 4090, 00000000:01:00.0, "
    "580.126.09, 24564, 1583, 22981, 8.9\n"
)
SLOW = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_valid(inventory: Inventory) -> None:
    document = json.loads(json.dumps(inventory.to_json()))
    assert isinstance(document["gpus"], list)
    for index, gpu in enumerate(document["gpus"]):
        assert gpu["index"] == index
        assert gpu["vendor"] in {"amd", "nvidia", "intel", "apple", "other"}
        assert isinstance(gpu["name"], str) and gpu["name"]
        for key in ("vram_total_bytes", "vram_free_bytes", "gtt_total_bytes"):
            assert gpu[key] is None or (isinstance(gpu[key], int) and gpu[key] >= 0)
    bus_ids = [g["pci_bus_id"] for g in document["gpus"] if g["pci_bus_id"]]
    assert bus_ids == sorted(bus_ids), "PCI bus order"
    assert len(set(bus_ids)) == len(bus_ids), "one entry per physical GPU"
    for warning in document["warnings"]:
        assert warning["code"] and warning["message"] and warning["fix"]


@given(st.text())
def test_rocminfo_parser_takes_any_text(text: str) -> None:
    rocminfo.parse(text)


@given(st.integers(min_value=0, max_value=len(RECORDED_ROCMINFO)))
def test_rocminfo_truncated_anywhere(cut: int) -> None:
    for agent in rocminfo.parse(RECORDED_ROCMINFO[:cut]):
        assert agent.device_type == "GPU"


@given(st.text())
def test_nvidia_parser_takes_any_text(text: str) -> None:
    for gpu in nvidia.parse(text):
        assert gpu.bus_id.count(":") == 2


@given(st.integers(min_value=0, max_value=len(NVIDIA_ROW)), st.text(max_size=20))
def test_nvidia_row_truncated_or_spliced(cut: int, junk: str) -> None:
    nvidia.parse(NVIDIA_ROW[:cut] + junk)


@given(st.text())
def test_kfd_properties_parser_takes_any_text(text: str) -> None:
    for key, value in kfd.parse_properties(text).items():
        assert isinstance(key, str) and isinstance(value, int)


SYSFS_TARGETS = [
    "mem_info_vram_total", "mem_info_vram_used", "mem_info_gtt_total", "unique_id", "class",
    "vendor", "device", "revision",
]  # fmt: skip


@SLOW
@given(
    profile_name=st.sampled_from(list_profiles()),
    garbage=st.dictionaries(
        st.sampled_from([*SYSFS_TARGETS, "properties"]), st.binary(max_size=64), max_size=4
    ),
    rocminfo_out=st.one_of(st.none(), st.text(max_size=300), st.just(RECORDED_ROCMINFO[:700])),
    smi_out=st.one_of(st.none(), st.text(max_size=200), st.just(NVIDIA_ROW[:40])),
    rc=st.sampled_from([0, 1, 2, 9, 18, 255]),
)
def test_whole_detection_survives_garbled_machines(
    profile_name: str,
    garbage: dict[str, bytes],
    rocminfo_out: str | None,
    smi_out: str | None,
    rc: int,
) -> None:
    profile = load_profile(profile_name)
    tools = {}
    if rocminfo_out is not None:
        tools["rocminfo"] = [{"stdout": rocminfo_out, "rc": rc}]
    if smi_out is not None:
        tools["nvidia-smi"] = [{"stdout": smi_out, "rc": rc}]
    profile["tools"] = tools
    directory = Path(tempfile.mkdtemp())
    try:
        machine = materialize(profile, directory)
        for name, data in garbage.items():
            for path in machine.root.rglob(name):
                if path.is_file() and not path.is_symlink():
                    path.write_bytes(data)
        assert_valid(detect(machine.root, timeout=5, env=machine.env()))
    finally:
        shutil.rmtree(directory)


@SLOW
@given(st.binary(max_size=200))
def test_unreadable_proc_files(data: bytes) -> None:
    directory = Path(tempfile.mkdtemp())
    try:
        machine = materialize("2x-mi50", directory)
        for name in ("cpuinfo", "meminfo"):
            (machine.root / "proc" / name).write_bytes(data)
        inventory = detect(machine.root, timeout=5, env=machine.env())
        assert_valid(inventory)
        assert inventory.memory_total_bytes >= 0
    finally:
        shutil.rmtree(directory)
