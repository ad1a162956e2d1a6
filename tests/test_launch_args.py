"""The model's launch arguments: given once, what the plan shows is what runs, and a CPU build
gets neither GPU flags nor GPU overhead (issue 10, observations 3 and 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_wizard.models.choose import devices_for, fit_model
from llama_wizard.models.source import resolve_model
from llama_wizard.tui.launch import launch_spec
from llama_wizard.tui.machine import open_machine
from llama_wizard.tui.session import Overrides, WizardSession
from tests.nix_fixtures import fixture_flake


@pytest.fixture(scope="module")
def flake(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fixture_flake(tmp_path_factory.mktemp("flake"))


def plan(profile: str | None, flake: str, **named: object):
    with open_machine(None, profile) as machine:
        session = WizardSession(machine, None, Overrides(flake=flake, **named))  # type: ignore[arg-type]
        return session.make_plan()


def local_gguf(tmp_path: Path) -> str:
    from tests.test_models_gguf import _llama  # a small llama GGUF written with gguf's writer

    return str(_llama(tmp_path))


@pytest.mark.parametrize("profile", ["rtx4090", None])
def test_a_local_model_is_named_once_and_the_plan_shows_what_runs(
    profile: str | None, flake: str, tmp_path: Path
) -> None:
    model = local_gguf(tmp_path)
    planned = plan(profile, flake, model=model)
    spec = launch_spec(planned, check_built=False)
    assert spec.args.count("-m") == 1 and spec.args[spec.args.index("-m") + 1] == model
    assert spec.args[: len(planned.launch_args())] == planned.launch_args()
    assert planned.to_json()["model"]["launch_args"] == planned.launch_args()


def test_a_cpu_build_gets_no_gpu_flags_in_the_plan_either(flake: str) -> None:
    planned = plan(None, flake)
    assert planned.build.backend == "cpu"
    assert "-ngl" not in planned.launch_args() and "-fa" not in planned.launch_args()
    gpu = plan("rtx4090", flake)
    assert gpu.launch_args()[gpu.launch_args().index("-ngl") + 1] == "99"


def test_a_cpu_only_estimate_adds_no_gpu_overhead() -> None:
    with open_machine(None, None) as machine:
        inventory = machine.detect(5)
    devices = devices_for([], inventory)
    assert devices and devices[0].host
    report = fit_model(resolve_model("Qwen/Qwen3-0.6B-GGUF"), devices, 4096)
    assert all(e.overhead_bytes == 0 for e in report.quants)
