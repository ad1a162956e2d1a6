"""Every bundled machine, detected for real over its fixture tree and recorded tools, against
what its sources say (tests/fixtures/expected_machines.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.simulate import list_profiles

EXPECTED = json.loads(
    (Path(__file__).resolve().parent / "fixtures" / "expected_machines.json").read_text()
)


def test_every_profile_has_expectations() -> None:
    assert sorted(EXPECTED) == list_profiles()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detection_matches_the_sources(name: str, simulated) -> None:
    expected = EXPECTED[name]
    machine = simulated(name)
    # rocminfo-hangs needs a short limit; everything else must not come near it.
    inventory = detect(machine.root, timeout=2.0, env=machine.env())
    got = [
        {key: getattr(gpu, key) for key in expected_gpu}
        for gpu, expected_gpu in zip(inventory.gpus, expected["gpus"], strict=False)
    ]
    assert got == expected["gpus"]
    assert len(inventory.gpus) == len(expected["gpus"])
    assert sorted({w.code for w in inventory.warnings}) == sorted(expected["warning_codes"])
    for index, gpu in enumerate(inventory.gpus):
        assert gpu.index == index
        assert gpu.name and "0x" not in gpu.name, gpu.name  # a product name, not an ID
    for warning in inventory.warnings:
        assert warning.fix
