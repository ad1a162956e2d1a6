"""Helpers that used to be written twice, now written once: what each caller relies on."""

from __future__ import annotations

import pytest

from llama_wizard.detect.errors import ActionableError, ChoiceError
from llama_wizard.detect.model import Cpu, Gpu, Inventory
from llama_wizard.detect.selection import default_gpus, gpus_by_index
from llama_wizard.models.sizes import GIB, MIB, human_bytes
from llama_wizard.nix import recommend
from llama_wizard.tui import format as tui_format


def test_one_human_bytes_for_every_face() -> None:
    assert tui_format.human_bytes is human_bytes
    assert human_bytes(None) == "?"
    assert human_bytes(512) == "512 B"
    assert human_bytes(12 * 1024) == "12 KiB"
    assert human_bytes(int(609.8 * MIB)) == "609.8 MiB"  # the model table's snapshot
    assert human_bytes(int(1.5 * GIB)) == "1.5 GiB"
    assert human_bytes(-2 * GIB) == "-2.0 GiB"  # free memory below zero: a model that won't fit


def test_usable_bytes_is_what_llama_cpp_can_allocate() -> None:
    apu = Gpu("amd", "APU", vram_total_bytes=512 * MIB, memory_usable_bytes=16 * GIB)
    assert apu.usable_bytes == 16 * GIB  # carve-out plus GTT, not the carve-out alone
    assert Gpu("nvidia", "dGPU", vram_total_bytes=24 * GIB).usable_bytes == 24 * GIB
    assert Gpu("other", "unknown").usable_bytes == 0


def test_an_unknown_gpu_index_is_a_choice_error_saying_which() -> None:
    inventory = _inventory(Gpu("nvidia", "RTX 4090", index=0, vram_total_bytes=24 * GIB))
    with pytest.raises(ChoiceError) as raised:
        gpus_by_index(inventory, [0, 3])
    assert "3" in raised.value.message and isinstance(raised.value, ActionableError)


def _inventory(*gpus: Gpu) -> Inventory:
    return Inventory(list(gpus), Cpu("cpu", "x86_64", 8, 16), 64 * GIB, 32 * GIB)


def test_default_gpus_take_the_vendor_with_the_most_memory_and_mask_igpus() -> None:
    inventory = _inventory(
        Gpu("amd", "iGPU", index=0, integrated=True, memory_usable_bytes=32 * GIB),
        Gpu("nvidia", "small", index=1, vram_total_bytes=8 * GIB),
        Gpu("amd", "big", index=2, vram_total_bytes=24 * GIB),
    )
    gpus, notes = default_gpus(inventory)
    assert [g.index for g in gpus] == [2]
    assert "integrated" in notes[0] and "left out" in notes[1]


def test_gpus_by_index_keeps_the_order_given_and_names_the_real_ones() -> None:
    inventory = _inventory(Gpu("amd", "a", index=0), Gpu("amd", "b", index=1))
    assert [g.index for g in gpus_by_index(inventory, [1, 0, 1])] == [1, 0]
    with pytest.raises(ChoiceError) as error:
        gpus_by_index(inventory, [2])
    assert "no GPU 2" in error.value.message and "0 (a), 1 (b)" in error.value.fix


def test_recommend_returns_new_values_and_changes_nothing_it_is_given(tmp_path) -> None:
    import copy

    from llama_wizard.nix.flake import FlakeOutputs

    inventory = _inventory(
        Gpu("amd", "MI50", index=0, gfx_target="gfx906", kfd_node=1, uuid="GPU-a"),
        Gpu("amd", "RX 6600", index=1, gfx_target="gfx1032", kfd_node=2),
    )
    flake = FlakeOutputs("/flake", "x86_64-linux", ["default", "rocm", "vulkan"])
    before = copy.deepcopy((inventory, flake))
    first = recommend.recommend(inventory, flake, None, tmp_path, output="rocm", gpu_indices=[0])
    again = recommend.recommend(inventory, flake, None, tmp_path, output="rocm", gpu_indices=[0])
    assert (inventory, flake) == before
    assert first == again and first is not again and first.env is not again.env
    assert first.build_name == f"rocm-gfx906-{flake.key}"
