"""Flash attention (-fa on|off|auto) and llama-server's slots (-np N) from the command line, the
plan and the session to the memory estimate (issue 10, observation 7: `fit` had no flash
attention option and always assumed it on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.models.choose import LaunchSettings, backend_for, fit_model
from llama_wizard.models.estimate import Device, EstimateOptions
from llama_wizard.models.sizes import MIB
from llama_wizard.models.source import resolve_model
from llama_wizard.tui import validate
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.plan import make_plan
from llama_wizard.tui.session import Overrides, WizardSession
from tests.gguf_factory import DENSE_SMALL, GPT_OSS_SMALL, write_gguf
from tests.helpers import run_cli
from tests.nix_fixtures import fixture_flake


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "dense.gguf", DENSE_SMALL)


@pytest.fixture(scope="module")
def gpt_oss(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "gpt-oss.gguf", GPT_OSS_SMALL)


def fit_json(*argv: str) -> dict:
    result = run_cli("fit", *argv, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the checks ----------------------------------------------------------------------------------


def test_flash_attention_takes_llama_cpps_spellings() -> None:
    for word, mode in [("on", "on"), ("enabled", "on"), ("true", "on"), ("1", "on"),
                       ("OFF", "off"), ("disabled", "off"), ("false", "off"), ("0", "off"),
                       ("auto", "auto"), ("-1", "auto"), (True, "on"), (False, "off")]:  # fmt: skip
        assert validate.check_flash_attn(word) == mode
    for bad in ("yes", "", None, 2, "onn"):
        with pytest.raises(validate.InvalidValue, match="on, off or auto"):
            validate.check_flash_attn(bad)


def test_server_slots_are_1_to_256() -> None:
    assert validate.check_parallel("4") == 4 and validate.check_parallel(256) == 256
    for bad in (0, -1, 257, "four", True, 1.5):
        with pytest.raises(validate.InvalidValue):
            validate.check_parallel(bad)


# --- fit -----------------------------------------------------------------------------------------


def test_fit_without_flash_attention_estimates_the_kq_matrix(dense: Path) -> None:
    # llama.cpp 0c1e570 allocated 62.01 MiB of compute at 40960 tokens with flash attention and
    # 1378.01 MiB without (tests/test_estimate_vs_llamacpp.py measures it again).
    on = fit_json(str(dense), "--vram", "8GiB", "--ctx", "40960")
    off = fit_json(str(dense), "--vram", "8GiB", "--ctx", "40960", "-fa", "off")
    assert on["flash_attn"] == "auto" and on["flash_attn_enabled"] is True
    assert off["flash_attn"] == "off" and off["flash_attn_enabled"] is False
    assert on["program"] == off["program"] == "llama-completion" and on["n_parallel"] is None
    compute_on, compute_off = (d["quants"][0]["compute_bytes"] / MIB for d in (on, off))
    assert compute_on == pytest.approx(62.01, abs=1)
    assert compute_off == pytest.approx(1378.01, abs=1)
    assert on["quants"][0]["kv_bytes"] == off["quants"][0]["kv_bytes"]
    assert any("grows with the context" in note for note in off["notes"])
    explicit = fit_json(str(dense), "--vram", "8GiB", "--ctx", "40960", "--flash-attn", "on")
    assert explicit["quants"][0]["compute_bytes"] == on["quants"][0]["compute_bytes"]


def test_fit_for_server_slots(gpt_oss: Path) -> None:
    # -np 2 at 8192: two KV streams of 4096 cells, each with its own 768-cell sliding window
    # (llama.cpp 0c1e570: 4.75 MiB), and logits for 2 tokens instead of 512.
    single = fit_json(str(gpt_oss), "--vram", "8GiB", "--ctx", "8192")
    slots = fit_json(str(gpt_oss), "--vram", "8GiB", "--ctx", "8192", "-np", "2")
    assert slots["program"] == "llama-server" and slots["n_parallel"] == 2
    assert slots["quants"][0]["kv_bytes"] == 4.75 * MIB
    assert single["quants"][0]["kv_bytes"] == 4.375 * MIB
    assert any("each of the 2 slots gets 4096 tokens" in note for note in slots["notes"])
    text = run_cli("fit", str(gpt_oss), "--vram", "8GiB", "-np", "2", "-fa", "off")
    assert text.returncode == 0, text.stderr
    assert "flash attention off, llama-server -np 2" in " ".join(text.stdout.split())


def test_fit_refuses_bad_values_and_a_quantized_v_cache_without_flash_attention(
    dense: Path,
) -> None:
    for argv, message in [
        (["-fa", "maybe"], "Flash attention is on, off or auto"),
        (["-np", "0"], "between 1 and 256"),
        (["-fa", "off", "-ctv", "q8_0"], "needs flash attention"),
    ]:
        result = run_cli("fit", str(dense), "--vram", "8GiB", *argv)
        assert result.returncode == 2, result.stdout
        assert message in result.stderr


def test_auto_follows_the_backend_of_the_devices(dense: Path) -> None:
    source = resolve_model(str(dense))
    cpu = fit_model(source, [Device("RAM", 1 << 34, host=True)], 4096, settings=LaunchSettings())
    assert cpu.settings.backend == "cpu" and cpu.options.flash_attn
    assert cpu.options.overhead_bytes == 0
    odd = resolve_model(str(dense))
    odd.arch.key_length = odd.arch.value_length = 160  # no CUDA kernel for 160
    gpu = fit_model(odd, [Device("GPU", 1 << 34)], 4096, settings=LaunchSettings(backend="cuda"))
    assert not gpu.options.flash_attn
    assert backend_for([]) == "cpu"
    # Options given directly (the bench) are taken as they are.
    direct = fit_model(source, [Device("GPU", 1 << 34)], 4096, EstimateOptions(flash_attn=False))
    assert not direct.options.flash_attn and direct.settings.flash_attn == "off"


# --- plan and the session ------------------------------------------------------------------------


def _machine(simulated, profile: str) -> tuple[Machine, object]:
    box = simulated(profile)
    machine = Machine(SystemRoot(box.root), box.env(), simulated=box.name)
    return machine, detect(machine.root, timeout=5, env=machine.env)


def test_plan_carries_flash_attention_and_slots(simulated, tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "documented", "documented")
    machine, inventory = _machine(simulated, "2x-mi50")
    default = make_plan(machine, inventory, flake_ref=flake, ctx=32768)
    off = make_plan(machine, inventory, flake_ref=flake, ctx=32768, flash_attn="off", n_parallel=2)
    assert default.model is not None and off.model is not None
    assert default.model.flash_attn == "auto" and default.model.flash_attn_enabled
    assert off.model.flash_attn == "off" and not off.model.flash_attn_enabled
    assert off.model.n_parallel == 2 and off.model.server_args() == ["-np", "2"]
    assert default.model.server_args() == []
    # -fa off reaches llama.cpp (the GPU build's own `-fa on` is not added over it); -np is for
    # llama-server only, never in the arguments llama-completion gets too.
    args = off.launch_args()
    assert args[args.index("-fa") + 1] == "off" and args.count("-fa") == 1
    assert "-np" not in args
    assert any("Flash attention off" in r for r in off.model.reasons)
    document = off.to_json()["model"]
    assert document["flash_attn"] == "off" and document["n_parallel"] == 2
    assert document["server_args"] == ["-np", "2"]


def test_cli_plan_and_session_take_the_options(simulated, tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "documented", "documented")
    result = run_cli(
        "plan", "--json", "--simulate", "2x-mi50", "--flake", flake, "-fa", "off", "-np", "3"
    )
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)["model"]
    assert model["flash_attn"] == "off" and model["flash_attn_enabled"] is False
    assert model["n_parallel"] == 3
    bad = run_cli("plan", "--simulate", "2x-mi50", "--flake", flake, "-np", "x")
    assert bad.returncode == 2 and "whole number" in bad.stderr
    machine, inventory = _machine(simulated, "2x-mi50")
    session = WizardSession(machine, None, Overrides(flake=flake, flash_attn="off", n_parallel=2))
    session.set_inventory(inventory)
    session.adopt_plan(session.plan_outcome())
    assert session.plan is not None and session.plan.model is not None
    assert session.plan.model.flash_attn == "off" and session.plan.model.n_parallel == 2
    settings = session.launch_settings()
    assert settings == LaunchSettings("off", 2, session.plan.build.backend)
    report = session.fit(resolve_model("Qwen/Qwen3-0.6B-GGUF", "Q8_0"), 40960)
    assert not report.options.flash_attn and report.settings.n_parallel == 2


def test_the_wizard_takes_the_options_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_wizard.tui.cli import build_parser
    from llama_wizard.tui.cli import wizard as wizard_command

    args = build_parser(with_commands=False).parse_args(["--yes", "-fa", "off", "-np", "2"])
    assert args.flash_attn == "off" and args.parallel == 2
    seen: dict = {}
    monkeypatch.setattr("llama_wizard.tui.plain.run_plain", lambda **kw: seen.update(kw) or 0)
    assert wizard_command.run(args) == 0
    overrides = seen["overrides"]
    assert overrides.flash_attn == "off" and overrides.n_parallel == 2
