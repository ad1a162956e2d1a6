"""The Done step's commands, from real plans over the fixture flakes: each as a person would run
it, the NixOS snippet checked by the real Nix parser and evaluator, the file they are saved to."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from llama_wizard.tui.commands import (
    Command,
    CommandsFileExists,
    commands_for,
    docker_output,
    nix_str,
    render_commands,
    save_commands,
    server_spec,
)
from llama_wizard.tui.launch import LaunchSpec, launch_spec
from tests.nix_fixtures import fixture_flake
from tests.test_launch import MI50_UUIDS, build, plan_for

# flake.md, "NixOS Modules": the module's options.
MODULE_OPTIONS = {"enable", "package", "model", "host", "port", "gpuLayers", "contextSize",
                  "parallel", "apiKey", "apiKeyFile", "enableMetrics", "extraArgs",
                  "environment"}  # fmt: skip


@pytest.fixture
def flake(tmp_path: Path) -> str:
    return fixture_flake(tmp_path / "flake", "documented")


@pytest.fixture
def upstream(tmp_path: Path) -> str:
    return fixture_flake(tmp_path / "upstream", "upstream")


def ready(simulated, profile: str, flake: str, **options):
    plan = plan_for(simulated, profile, flake)
    build(plan)
    return plan, launch_spec(plan, **options)


def by_title(commands: list[Command], start: str) -> Command | None:
    return next((c for c in commands if c.title.startswith(start)), None)


def service_config(snippet: str, tmp_path: Path, system: str, output: str) -> dict:
    """Evaluate the snippet's `services.llama-server` with real Nix, its inputs stubbed."""
    path = tmp_path / "snippet.nix"
    path.write_text(snippet)
    parsed = subprocess.run(["nix-instantiate", "--parse", str(path)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert parsed.returncode == 0, parsed.stderr
    expression = f"""
      let
        flake = import {path};
        llama = {{ nixosModules.default = "module"; packages.{system}.{output} = "package"; }};
        nixpkgs = {{ lib.nixosSystem = arguments: arguments; }};
        outputs = flake.outputs {{ self = outputs; inherit nixpkgs; llama-cpp = llama; }};
        system = builtins.head (builtins.attrValues outputs.nixosConfigurations);
      in {{
        inherit (system) system;
        module = builtins.elemAt system.modules 1;
        service = (builtins.elemAt system.modules 2).services.llama-server;
        input = flake.inputs.llama-cpp.url;
      }}
    """
    evaluated = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E",
                                expression], capture_output=True, text=True,
                               check=False)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    return json.loads(evaluated.stdout)


def test_commands_for_two_mi50s(simulated, flake, tmp_path) -> None:
    plan, spec = ready(simulated, "2x-mi50", flake, prompt="Why is the sky blue?", n_predict=64)
    commands = commands_for(plan, spec)
    titles = [c.title for c in commands]
    assert len(titles) == 6, titles
    build_command, run, server, nixos, docker, shell = commands
    # The build, exactly as the wizard runs it.
    assert shlex.split(build_command.text) == plan.build.build_argv
    assert build_command.language == "sh"
    # The run, with its environment; a POSIX shell word-splits it back to the same thing.
    assert run.text == spec.shell_command()
    words = shlex.split(run.text)
    assert words[:7] == ["env", "-u", "HIP_VISIBLE_DEVICES", "-u", "CUDA_VISIBLE_DEVICES",
                         "-u", "GPU_DEVICE_ORDINAL"]  # fmt: skip
    assert "HSA_OVERRIDE_GFX_VERSION=9.0.6" in words
    assert f"ROCR_VISIBLE_DEVICES={MI50_UUIDS}" in words
    assert words[words.index(spec.binary) + 1 :] == spec.args
    # The server where the person chose (by default this machine only), as flake.md runs it:
    # -ngl 99 -fa on, no prompt.
    server_words = shlex.split(server.text)
    assert spec.binary.replace("llama-completion", "llama-server") in server_words
    assert server_words[-4:] == ["--host", "127.0.0.1", "--port", "8080"]
    assert "-fa" in server_words and "-p" not in server_words and "-no-cnv" not in server_words
    assert "-hf" in server_words
    # NixOS: only the module's options, values as Nix reads them.
    assert nixos.language == "nix"
    evaluated = service_config(nixos.text, tmp_path, plan.build.system, "rocm-gfx906")
    service = evaluated["service"]
    assert set(service) <= MODULE_OPTIONS
    assert evaluated["input"] == flake and evaluated["module"] == "module"
    assert evaluated["system"] == "x86_64-linux"
    assert service["package"] == "package"  # inputs.llama-cpp.packages.<system>.rocm-gfx906
    assert service["enable"] is True and service["host"] == "127.0.0.1" and service["port"] == 8080
    assert service["gpuLayers"] == 99 and service["contextSize"] == plan.model.ctx
    assert service["environment"] == {"HSA_OVERRIDE_GFX_VERSION": "9.0.6",
                                      "ROCR_VISIBLE_DEVICES": MI50_UUIDS}  # fmt: skip
    assert service["extraArgs"][:2] == ["-fa", "on"]
    assert "--jinja" in service["extraArgs"]  # the model's own flag (Qwen3-Coder)
    assert service["model"].startswith("/var/lib/llama-models/")
    assert service["model"].endswith(plan.model.files[0].rsplit("/", 1)[-1])
    assert "~/.cache/llama.cpp" in nixos.text and "llama-wizard fit --local" in nixos.text
    # Docker: the gfx906 image, loaded and run with the GPU devices and the environment.
    assert docker.title == "Docker (docker-rocm-gfx906)"
    nix_build, load, docker_run = docker.text.splitlines()
    assert shlex.split(nix_build) == ["nix", "build", f"{flake}#docker-rocm-gfx906"]
    assert load == "docker load < ./result"
    run_words = shlex.split(docker_run)
    image = run_words.index("llama-cpp-rocm:latest")
    assert run_words[:image] == [
        "docker", "run", "--device=/dev/kfd", "--device=/dev/dri", "--group-add", "video",
        "--group-add", "render", "-p", "127.0.0.1:8080:8080",
        "-e", "HSA_OVERRIDE_GFX_VERSION=9.0.6",
        "-e", f"ROCR_VISIBLE_DEVICES={MI50_UUIDS}",
    ]  # fmt: skip
    # Inside the container it listens on 0.0.0.0 (the published port arrives there); the
    # published port is bound to the chosen host.
    assert run_words[image + 1 :] == ["llama-server", *server_spec(spec, "0.0.0.0").args]
    assert shlex.split(shell.text) == ["nix", "develop", f"{flake}#rocm"]


def test_commands_for_an_rtx4090(simulated, flake, tmp_path) -> None:
    plan, spec = ready(simulated, "rtx4090", flake)
    commands = commands_for(plan, spec)
    assert by_title(commands, "Docker") is None  # no CUDA image in the flake
    assert docker_output(plan) is None
    assert shlex.split(by_title(commands, "Development shell").text)[-1] == f"{flake}#cuda"
    run = shlex.split(by_title(commands, "Run").text)
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in run
    assert any(w.startswith("CUDA_VISIBLE_DEVICES=GPU-") for w in run)
    service = service_config(by_title(commands, "NixOS").text, tmp_path, plan.build.system,
                             "cuda")["service"]  # fmt: skip
    assert service["environment"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert set(service) <= MODULE_OPTIONS


def test_upstream_flake_has_no_module_image_or_shell(simulated, upstream) -> None:
    plan, spec = ready(simulated, "2x-mi50", upstream)
    assert plan.build.rocm_targets == ["gfx906"]
    commands = commands_for(plan, spec)
    assert [c.title.split(" ")[0] for c in commands] == ["Build", "Run", "Serve"]
    assert "--impure" in shlex.split(commands[0].text)  # rocm.override { rocmGpuTargets }


def test_nixos_package_for_a_restricted_rocm_build(simulated, upstream, tmp_path) -> None:
    plan, spec = ready(simulated, "2x-mi50", upstream)
    outputs = dataclasses.replace(plan.flake_outputs, nixos_modules=["default"])
    plan = dataclasses.replace(plan, flake_outputs=outputs)
    snippet = by_title(commands_for(plan, spec), "NixOS").text
    assert 'rocm.override { rocmGpuTargets = "gfx906"; }' in snippet
    # With `override` stubbed to return its argument, the package is exactly the targets.
    path = tmp_path / "snippet.nix"
    path.write_text(snippet)
    expression = f"""
      let
        llama = {{ nixosModules.default = 1; packages.x86_64-linux.rocm.override = a: a; }};
        outputs = (import {path}).outputs {{ nixpkgs.lib.nixosSystem = x: x; llama-cpp = llama; }};
        system = builtins.head (builtins.attrValues outputs.nixosConfigurations);
      in (builtins.elemAt system.modules 2).services.llama-server.package
    """
    evaluated = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E",
                                expression], capture_output=True, text=True,
                               check=False)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout) == {"rocmGpuTargets": "gfx906"}


def test_a_local_model_file(simulated, flake, tmp_path) -> None:
    model = tmp_path / "my models" / "Qwen3-0.6B-Q8_0.gguf"
    plan, spec = ready(simulated, "2x-mi50", flake, model_path=str(model))
    commands = commands_for(plan, spec)
    service = service_config(by_title(commands, "NixOS").text, tmp_path, plan.build.system,
                             "rocm-gfx906")["service"]  # fmt: skip
    assert service["model"] == str(model)
    run_words = shlex.split(by_title(commands, "Docker").text.splitlines()[-1])
    assert run_words[run_words.index("-v") + 1] == f"{model.parent}:/models:ro"
    assert run_words[run_words.index("-m") + 1] == "/models/Qwen3-0.6B-Q8_0.gguf"


def test_no_secret_is_ever_written(simulated, flake, tmp_path) -> None:
    plan, spec = ready(simulated, "2x-mi50", flake, extra_args=["--api-key", "sk-live-123"])
    plan.build.env["HF_TOKEN"] = "hf_live_456"
    spec = dataclasses.replace(spec, env={**spec.env, "HF_TOKEN": "hf_live_456"})
    commands = commands_for(plan, spec)
    text = render_commands(commands)
    assert "hf_live_456" not in text and "sk-live-123" not in text and "HF_TOKEN=" not in text
    # They come from the person's shell instead, by name.
    run = by_title(commands, "Run").text
    assert run.endswith('--api-key "${LLAMA_API_KEY}"')
    docker_run = shlex.split(by_title(commands, "Docker").text.splitlines()[-1])
    assert docker_run[docker_run.index("HF_TOKEN") - 1 :][:2] == ["-e", "HF_TOKEN"]
    assert docker_run[docker_run.index("--api-key") + 1] == "${LLAMA_API_KEY}"
    service = service_config(by_title(commands, "NixOS").text, tmp_path, plan.build.system,
                             "rocm-gfx906")["service"]  # fmt: skip
    assert "--api-key" not in service["extraArgs"] and "HF_TOKEN" not in service["environment"]
    assert "apiKeyFile" in by_title(commands, "NixOS").text


@pytest.mark.parametrize(
    "value",
    ["plain", 'quote " and \\ backslash', "${HOME} and $x and $${y}", "new\nline\ttab\r",
     "ünïcødé ✓", "''", "\\${", ""],
)  # fmt: skip
def test_nix_strings_mean_exactly_their_text(value: str) -> None:
    evaluated = subprocess.run(["nix-instantiate", "--eval", "--json", "-E", nix_str(value)],
                               capture_output=True, text=True, check=False)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout) == value


def test_save_commands_never_overwrites_unasked(simulated, flake, tmp_path) -> None:
    plan, spec = ready(simulated, "2x-mi50", flake)
    commands = commands_for(plan, spec)
    path = tmp_path / "llama-commands.sh"
    assert save_commands(commands, path) == path
    text = path.read_text()
    for command in commands:
        assert f"# --- {command.title}" in text
        if command.language == "sh":
            assert command.text in text
    assert "services.llama-server = {" in text
    # The file is valid shell (the Nix snippet is commented out).
    checked = subprocess.run(["/bin/sh", "-n", str(path)], capture_output=True, text=True,
                             check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    path.write_text("mine\n")
    with pytest.raises(CommandsFileExists) as error:
        save_commands(commands, path)
    assert str(path) in error.value.message and error.value.fix
    assert path.read_text() == "mine\n"
    save_commands(commands, path, overwrite=True)
    assert path.read_text() == text


def test_server_spec_swaps_the_prompt_for_host_and_port() -> None:
    spec = LaunchSpec("llama-completion", "/r/bin/llama-completion",
                      ["-hf", "a/b:Q4_K_M", "-ngl", "99", "-fa", "on", "-p", "x", "-n", "5",
                       "-no-cnv", "--temp", "0.2"], {"A": "1"}, ["B"])  # fmt: skip
    server = server_spec(spec)
    assert server.program == "llama-server" and server.binary == "/r/bin/llama-server"
    assert server.args == ["-hf", "a/b:Q4_K_M", "-ngl", "99", "-fa", "on", "--temp", "0.2",
                           "--host", "127.0.0.1", "--port", "8080"]  # fmt: skip
    assert server.env == {"A": "1"} and server.unset_env == ["B"]
