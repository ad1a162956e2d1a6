"""The command line as a person uses it: the real installed `llama-wizard`, in a subprocess."""

import json
import os
from pathlib import Path

import psutil
import pytest

from llama_wizard.detect.simulate import list_profiles
from llama_wizard.tui import __version__
from llama_wizard.tui.cli import COMMANDS
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "detect" / "profiles"


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"llama-wizard {__version__}"


def test_help_names_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "detect" in result.stdout and "--simulate" in result.stdout
    detect_help = run_cli("detect", "--help")
    assert "--json" in detect_help.stdout and "--root" in detect_help.stdout


def test_simulate_list_names_and_describes_one_profile_per_line() -> None:
    result = run_cli("--simulate", "list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == list_profiles()
    assert any("mi50" in name for name in names)
    for line, name in zip(lines, names, strict=True):
        description = json.loads(PROFILES.joinpath(f"{name}.json").read_text())["description"]
        assert line.endswith(f"  {description}") and len(line) <= 80, line
    # The descriptions start in one column.
    assert len({line.index(line.split()[1], len(line.split()[0])) for line in lines}) == 1


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_a_root_that_is_no_system_root_is_a_usage_error(kind: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    if kind == "file":
        root.write_text("")
    elif kind == "empty":
        root.mkdir()
    said = {"missing": "there is no such directory", "file": "a file, not a directory",
            "empty": "not a system root"}[kind]  # fmt: skip
    for command in (["detect"], ["detect", "--json"], ["plan"], ["--plain"]):
        result = run_cli(*command, "--root", str(root))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"--root {root}: {said}" in result.stderr and "/sys and /proc" in result.stderr
        assert "Traceback" not in result.stderr and "0 cores" not in result.stdout
    env = dict(os.environ) | {"LLAMA_WIZARD_ROOT": str(root)}
    result = run_cli("detect", env=env)
    assert result.returncode == 2
    assert f"LLAMA_WIZARD_ROOT={root}: {said}" in result.stderr
    assert "Give LLAMA_WIZARD_ROOT a directory" in result.stderr


def test_run_usage_says_where_the_program_arguments_go() -> None:
    result = run_cli("run", "--help")
    assert result.returncode == 0
    usage = result.stdout.split("\n\n", 1)[0]
    assert usage.startswith("usage: llama-wizard run ") and usage.endswith(" [-- ARGS]")
    assert "llama-wizard run -- --temp 0.2" in " ".join(result.stdout.split())


def _synopsis() -> dict[str, str]:
    """README's `## Commands` block: each command's lines (continuations joined), by name."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```", 2)[1]
    lines: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        words = line.split()
        if line.startswith("llama-wizard"):
            current = words[1] if len(words) > 1 and not words[1].startswith("-") else ""
            current = current if current in COMMANDS else ""
            lines[current] = lines.get(current, "") + " " + line
        elif line.startswith(" ") and words:
            lines[current] += " " + line
    return lines


def test_readme_synopsis_lists_every_option_of_every_command() -> None:
    """README's synopsis matches `--help`: every option of each subcommand (either spelling)
    is on that subcommand's lines; the wizard's own on the bare command's; the machine options
    once."""
    import argparse
    import re

    from llama_wizard.tui.cli import build_parser

    synopsis = _synopsis()
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    machine = {"--root", "--simulate", "--timeout"}
    missing = []

    def check(where: str, actions: list[argparse.Action]) -> None:
        text = synopsis.get(where, "")
        for action in actions:
            spellings = [o for o in action.option_strings if o not in ("-h", "--help")]
            if not spellings or set(spellings) & machine or action.help == argparse.SUPPRESS:
                continue
            if not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text) for o in spellings):
                missing.append(f"{where or 'llama-wizard'}: {'/'.join(spellings)}")

    for name in COMMANDS:
        check(name, commands.choices[name]._actions)
    check("", [a for a in parser._actions if a is not commands and "--version" not in
               a.option_strings])  # fmt: skip
    assert missing == [], "README.md's synopsis lacks: " + ", ".join(missing)
    everything = " ".join(synopsis.values())
    for option in sorted(machine):
        assert option in everything
    assert "--version" in everything and "--help" in everything


def test_unknown_profile_says_what_to_do() -> None:
    result = run_cli("detect", "--simulate", "no-such-box")
    assert result.returncode == 2
    assert "--simulate list" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_timeout_is_a_usage_error() -> None:
    result = run_cli("detect", "--timeout", "-1")
    assert result.returncode == 2
    assert "positive" in result.stderr


def test_this_machine_has_no_gpu_and_real_cpu_and_ram() -> None:
    """CI has no GPU: detection must still exit 0 with the machine's real CPU and memory."""
    env = dict(os.environ)
    env.pop("LLAMA_WIZARD_ROOT", None)
    result = run_cli("detect", "--json", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["gpus"] == []
    assert document["cpu"]["threads"] == psutil.cpu_count(logical=True)
    total = psutil.virtual_memory().total
    assert document["memory_total_bytes"] == total
    assert 0 < document["memory_available_bytes"] <= total
    assert "simulated" not in document


def test_simulated_detection_is_marked_everywhere() -> None:
    as_json = json.loads(run_cli("detect", "--json", "--simulate", "2x-mi50").stdout)
    assert as_json["simulated"] == "2x-mi50"
    as_table = run_cli("--simulate", "2x-mi50", "detect")
    assert as_table.returncode == 0
    assert "SIMULATED" in as_table.stdout
    assert "gfx906" in as_table.stdout


def test_root_option_and_environment_variable_agree(simulated) -> None:
    machine = simulated("2x-mi50")
    by_option = run_cli("detect", "--json", "--root", str(machine.root), env=machine.env())
    env = machine.env() | {"LLAMA_WIZARD_ROOT": str(machine.root)}
    by_env = run_cli("detect", "--json", env=env)
    first, second = json.loads(by_option.stdout), json.loads(by_env.stdout)
    assert first["gpus"] == second["gpus"]
    assert len(first["gpus"]) == 2


def test_json_keys_follow_the_contract() -> None:
    document = json.loads(run_cli("detect", "--json", "--simulate", "2x-mi50").stdout)
    assert list(document)[:5] == [
        "gpus", "cpu", "memory_total_bytes", "memory_available_bytes", "warnings",
    ]  # fmt: skip
    contract = ["index", "vendor", "name", "pci_bus_id", "pci_device_id", "driver", "gfx_target",
                "kfd_node", "uuid", "compute_capability", "integrated", "vram_total_bytes",
                "vram_free_bytes", "gtt_total_bytes", "sources"]  # fmt: skip
    for gpu in document["gpus"]:
        assert list(gpu)[: len(contract)] == contract
    assert set(document["cpu"]) == {"model", "arch", "cores", "threads", "flags"}


def test_broken_pipe_is_quiet(simulated) -> None:
    """`llama-wizard detect --json | head -c 10`: a real pipe whose reader goes away early."""
    import subprocess

    from tests.helpers import wizard_executable

    writer = subprocess.Popen(
        [wizard_executable(), "detect", "--json", "--simulate", "2x-mi50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader = subprocess.run(["head", "-c", "10"], stdin=writer.stdout, capture_output=True,
                            check=True)  # fmt: skip
    assert writer.stdout is not None
    writer.stdout.close()  # as a shell does: the writer alone holds the pipe now
    _, errors = writer.communicate(timeout=60)
    assert len(reader.stdout) == 10
    assert b"Traceback" not in errors


PARSE_CASES = [
    [],
    ["--plain"],
    ["--simulate", "2x-mi50"],
    ["--sim", "2x-mi50", "--yes"],
    ["detect", "--json"],
    ["--simulate", "2x-mi50", "detect"],
    ["--simulate=2x-mi50", "detect", "--json", "--timeout", "3"],
    ["--timeout", "-1", "detect"],
    ["--gpu", "0,1", "--model", "fit", "plan", "--json"],
    ["--root", "/tmp", "plan", "--gpu", "1", "--ctx", "4096"],
    ["build", "rocm-gfx906", "--detach"],
    ["run", "--server", "--port", "8081", "--", "--temp", "0.2"],
    ["--flake", "run", "fit", "Qwen/Qwen3-8B-GGUF:Q4_K_M", "--json"],
]


def test_one_subcommand_parser_parses_as_the_whole_one() -> None:
    """`detect --json` builds only detect's parser (start-up time); what it parses must be what
    the whole parser gives, options before the command included."""
    from llama_wizard.tui.cli import build_parser, parser_scope

    assert parser_scope(["detect", "--json"]) == (True, "detect")
    assert parser_scope(["--simulate", "fit", "plan"]) == (True, "plan")
    assert parser_scope(["--plain", "--simulate", "2x-mi50"]) == (False, None)
    assert parser_scope(["-h", "detect"]) == (True, None)
    assert parser_scope(["nonsense"]) == (True, None)
    for argv in PARSE_CASES:
        with_commands, only = parser_scope(argv)
        expected = build_parser().parse_args(argv)
        assert build_parser(with_commands, only).parse_args(argv) == expected, argv


@pytest.mark.parametrize("command", [None, "plan", "run"])
def test_every_choice_on_the_command_line_reaches_the_session(command: str | None) -> None:
    """The wizard and the subcommands map their options to the session's Overrides in one
    place: each option given is there (the wizard once dropped --mode on the way)."""
    from dataclasses import fields

    from llama_wizard.tui.cli import build_parser
    from llama_wizard.tui.cli.options import overrides_from
    from llama_wizard.tui.session import Overrides

    argv = ["--flake", "path:/f", "--gpu", "1", "--model", "owner/repo", "--quant", "Q4_K_M",
            "--ctx", "4096", "--mode", "cpu", "--memory", "free"]  # fmt: skip
    if command != "run":
        argv += ["-fa", "off", "-np", "2"]
    if command is not None:
        argv = [command, *argv, "--output", "vulkan", "--nix-without-build-users"]
    args = build_parser().parse_args(argv)
    overrides = overrides_from(args)
    expected = {"flake": "path:/f", "gpus": [1], "model": "owner/repo", "quant": "Q4_K_M",
                "ctx": 4096, "mode": "cpu", "memory": "free"}  # fmt: skip
    if command != "run":
        expected |= {"flash_attn": "off", "n_parallel": 2}
    if command is not None:
        expected |= {"output": "vulkan", "nix_without_build_users": True}
    for name, value in expected.items():
        assert getattr(overrides, name) == value, name
    unset = {f.name for f in fields(Overrides)} - set(expected)
    for name in unset:
        assert getattr(overrides, name) == getattr(Overrides(), name), name
