"""Product names from the files a system has (amdgpu.ids, pci.ids, the udev hwdb) and our own
tables when it has none."""

from pathlib import Path

import pytest

from llama_wizard.detect import pci
from llama_wizard.detect.names import (
    nvidia_compute_capability_from_name,
    pci_ids_name,
    product_name,
)
from llama_wizard.detect.sysroot import SystemRoot


def test_system_amdgpu_ids_wins_over_the_bundled_copy(tmp_path: Path) -> None:
    ids = tmp_path / "usr/share/libdrm/amdgpu.ids"
    ids.parent.mkdir(parents=True)
    ids.write_text("# test\n744C,\tC8,\tAMD Radeon RX 7900 XTX\n")
    root = SystemRoot(tmp_path)
    assert product_name(root, 0x1002, 0x744C, 0xC8) == "AMD Radeon RX 7900 XTX"
    # another revision is not in that file: our own table answers
    assert product_name(root, 0x1002, 0x744C, 0xC0).startswith("AMD Radeon RX 7900 XTX")


def test_bundled_amdgpu_ids_knows_the_mi50_revision(tmp_path: Path) -> None:
    # libdrm: "66A1, 02, AMD Instinct MI60 / MI50" and "66A1, 06, AMD Radeon Pro VII"
    root = SystemRoot(tmp_path)
    assert product_name(root, 0x1002, 0x66A1, 0x02) == "AMD Instinct MI60 / MI50"
    assert product_name(root, 0x1002, 0x66A1, 0x06) == "AMD Radeon Pro VII"


def test_pci_ids_for_devices_in_no_table(tmp_path: Path) -> None:
    ids = tmp_path / "usr/share/misc/pci.ids"
    ids.parent.mkdir(parents=True)
    ids.write_text(
        "# pci.ids\n1d94  Chengdu Haiguang IC Design Co., Ltd.\n\t51b7  Hygon DCU Z100\n"
        "10de  NVIDIA Corporation\n\t1f82  TU117 [GeForce GTX 1650]\n\t\t1043 8 sub\n"
        "C 00  Unclassified device\n"
    )
    root = SystemRoot(tmp_path)
    assert pci_ids_name(root, 0x10DE, 0x1F82) == "TU117 [GeForce GTX 1650]"
    assert product_name(root, 0x1D94, 0x51B7, None) == "PCI vendor 0x1d94 Hygon DCU Z100"
    assert product_name(root, 0x10DE, 0x1F82, None) == "NVIDIA TU117 [GeForce GTX 1650]"


def test_unknown_device_without_any_database(tmp_path: Path) -> None:
    assert product_name(SystemRoot(tmp_path), 0x10DE, 0x9999, None) == "NVIDIA GPU 0x9999"


@pytest.mark.parametrize(
    ("name", "capability"),
    [("GeForce GTX 770", "3.0"), ("NVIDIA GeForce GTX 780", "3.5"),
     ("NVIDIA GeForce GTX 750 Ti", "5.0"), ("Tesla P100-PCIE-16GB", "6.0"),
     ("NVIDIA GeForce GTX 1070", "6.1"), ("Tesla V100-SXM2-32GB", "7.0"),
     ("NVIDIA GeForce RTX 2070", "7.5"), ("NVIDIA A100-SXM4-40GB", "8.0"),
     ("NVIDIA GeForce RTX 3090", "8.6"), ("NVIDIA GeForce RTX 4090", "8.9"),
     ("NVIDIA L40S", "8.9"), ("NVIDIA H100 80GB HBM3", "9.0"),
     ("NVIDIA GeForce RTX 5090", "12.0"), ("Mystery Card", None)],
)  # fmt: skip
def test_compute_capability_from_name(name: str, capability: str | None) -> None:
    # NVIDIA's CUDA GPUs table: Kepler GK104 3.0, GK110 3.5, Maxwell GM107 5.0, ...
    assert nvidia_compute_capability_from_name(name) == capability


def test_udev_and_sysfs_agree_on_this_machine() -> None:
    root = SystemRoot("/")
    through_udev = pci._from_udev(root)
    if through_udev is None:
        pytest.skip("libudev is not available here")
    assert {d.bdf for d in through_udev} == {d.bdf for d in pci._from_sysfs(root)}


def test_accelerator_class_counts_only_for_gpu_vendors() -> None:
    assert pci.is_gpu_class(0x120000, 0x1002)  # MI300X
    assert not pci.is_gpu_class(0x120000, 0x8086)  # an Intel NPU
    assert pci.is_gpu_class(0x030200, 0x10DE)
    assert not pci.is_gpu_class(0x040300, 0x1002)  # the HDMI audio function
