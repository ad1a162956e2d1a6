import pytest

from llama_wizard.detect.pci import bdf_from_location, normalize_bdf


@pytest.mark.parametrize(
    ("text", "bdf"),
    [
        ("0000:03:00.0", "0000:03:00.0"),
        ("00000000:01:00.0", "0000:01:00.0"),  # nvidia-smi's 8-digit domain
        ("0000000F:01:00.0", "000f:01:00.0"),  # GB10
        ("03:00.0", "0000:03:00.0"),
        ("0000:C1:00.0", "0000:c1:00.0"),
    ],
)
def test_normalize_bdf(text: str, bdf: str) -> None:
    assert normalize_bdf(text) == bdf


@pytest.mark.parametrize("text", ["", None, "GPU-1234", "0000:03:00", "1:2:3:4.5", "[N/A]"])
def test_normalize_rejects_non_addresses(text: str | None) -> None:
    assert normalize_bdf(text) is None


def test_location_id_unpacks_bus_device_function() -> None:
    # rocminfo BDFID 33536 = 0x8300 -> bus 0x83 (ROCm issue 1535's second MI50)
    assert bdf_from_location(0, 33536) == "0000:83:00.0"
    assert bdf_from_location(0, 0x2300) == "0000:23:00.0"
    assert bdf_from_location(1, (0x41 << 8) | (2 << 3) | 1) == "0001:41:02.1"
    assert bdf_from_location(0, 0) is None
