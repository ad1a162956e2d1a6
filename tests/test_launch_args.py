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


def test_a_tight_fit_lets_llamacpp_place_the_layers_itself(flake: str) -> None:
    tight = plan("780m-apu", flake)
    assert tight.model is not None and tight.model.verdict == "tight"
    args = tight.launch_args()
    assert "-ngl" not in args and args[args.index("--fit") + 1] == "on"
    assert "-c" in args  # the chosen context is kept
    roomy = plan("2x-mi50", flake)
    assert roomy.model.verdict == "fits"
    assert "--fit" not in roomy.launch_args() and "-ngl" in roomy.launch_args()


def test_server_slots_go_to_llama_server_only(flake: str) -> None:
    planned = plan("rtx4090", flake, n_parallel=2)
    server = launch_spec(planned, program="llama-server", check_built=False)
    completion = launch_spec(planned, program="llama-completion", check_built=False)
    assert server.args[server.args.index("-np") + 1] == "2"
    assert "-np" not in completion.args


def test_the_done_commands_carry_the_fit_flag_whole(flake: str) -> None:
    from llama_wizard.tui.commands import commands_for

    tight = plan("780m-apu", flake)
    spec = launch_spec(tight, check_built=False)
    texts = "\n".join(c.text for c in commands_for(tight, spec))
    assert "--fit on" in texts


def test_the_nixos_service_leaves_the_layers_to_llamacpps_fit_when_tight(flake: str) -> None:
    from llama_wizard.tui.commands import nixos_command

    tight = plan("780m-apu", flake)
    snippet = nixos_command(tight, launch_spec(tight, check_built=False))
    assert snippet is not None
    assert "gpuLayers = -1;" in snippet.text and '"--fit" "on"' in snippet.text
    roomy = plan("2x-mi50", flake)
    assert "gpuLayers = 99;" in nixos_command(roomy, launch_spec(roomy, check_built=False)).text
