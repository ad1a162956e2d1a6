import pytest

from llama_wizard.detect.gfx import amd_device, gfx_from_kfd_version, hsa_version, parse_gfx


# Values from gpu-detection.md §3.3 (kernel kfd_device.c kgd2kfd_probe, ollama
# gfxTargetFromKFDVersion): minor and stepping print as one hex digit each.
@pytest.mark.parametrize(
    ("version", "gfx"),
    [
        (90000, "gfx900"),
        (90006, "gfx906"),
        (90010, "gfx90a"),
        (90012, "gfx90c"),
        (90402, "gfx942"),
        (80003, "gfx803"),
        (100300, "gfx1030"),
        (100306, "gfx1036"),
        (110000, "gfx1100"),
        (110003, "gfx1103"),
        (110501, "gfx1151"),
        (120001, "gfx1201"),
    ],
)
def test_kfd_version_decodes_to_gfx_name(version: int, gfx: str) -> None:
    assert gfx_from_kfd_version(version) == gfx


@pytest.mark.parametrize("version", [0, -1, 91600, 90016, 1000000])
def test_kfd_version_that_cannot_be_named_is_none(version: int) -> None:
    assert gfx_from_kfd_version(version) is None


@pytest.mark.parametrize(
    ("gfx", "override"),
    [("gfx906", "9.0.6"), ("gfx90a", "9.0.10"), ("gfx90c", "9.0.12"), ("gfx1030", "10.3.0"),
     ("gfx1100", "11.0.0"), ("gfx1151", "11.5.1")],
)  # fmt: skip
def test_hsa_override_spelling_is_decimal(gfx: str, override: str) -> None:
    # ROCT topology.c parses "%u.%u.%u": gfx90a is 9.0.10, never 9.0.a.
    assert hsa_version(gfx) == override


def test_parse_gfx_accepts_isa_suffix_and_rejects_garbage() -> None:
    assert parse_gfx("gfx906:sramecc+:xnack-") == (9, 0, 6)
    assert parse_gfx("AMD EPYC") is None
    assert parse_gfx("gfx") is None


@pytest.mark.parametrize(
    ("device_id", "gfx", "integrated"),
    [(0x66A1, "gfx906", False), (0x744C, "gfx1100", False), (0x73DF, "gfx1031", False),
     (0x164E, "gfx1036", True), (0x15BF, "gfx1103", True), (0x74A1, "gfx942", False),
     (0x73C3, "gfx1031", False)],
)  # fmt: skip
def test_own_device_table(device_id: int, gfx: str, integrated: bool) -> None:
    row = amd_device(device_id)
    assert row is not None
    assert (row.gfx, row.integrated) == (gfx, integrated)


def test_unknown_device_is_not_guessed() -> None:
    assert amd_device(0x0001) is None
