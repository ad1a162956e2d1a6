"""Every entry point checks values the same way (tui/validate.py), and the subcommands plan
through the same core as the wizard: the real installed command, in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llama_wizard.tui import validate
from tests.helpers import run_cli
from tests.nix_fixtures import fixture_flake


@pytest.fixture(scope="module")
def flake(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fixture_flake(tmp_path_factory.mktemp("flake"))


@pytest.mark.parametrize("command", [["plan"], ["run"], ["fit", "Qwen/Qwen3-0.6B-GGUF"], []])
@pytest.mark.parametrize("ctx", ["-5", "0", "100", "big", "99999999999"])
def test_a_bad_context_is_refused_everywhere_before_anything_runs(
    command: list[str], ctx: str, flake: str
) -> None:
    extra = ["--yes"] if not command else []
    result = run_cli(*command, *extra, "--ctx", ctx, "--flake", flake, "--simulate", "rtx4090")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # One wording, whatever parses it: the check's own message (plain mode and the wizard's
    # context field show the same, tests/test_plain_flow.py).
    expected = validate.problem(validate.check_ctx, ctx)
    assert expected and "a number of tokens such as" in expected
    assert result.stderr.rstrip().endswith(f"error: argument --ctx: {expected}")


def test_a_context_of_256_is_the_smallest_accepted(flake: str) -> None:
    result = run_cli("plan", "--json", "--ctx", "256", "--flake", flake, "--simulate", "rtx4090")
    assert result.returncode == 0, result.stderr
    assert '"ctx": 256' in result.stdout


def test_a_quant_no_model_has_is_an_error_that_lists_those_that_exist(flake: str) -> None:
    result = run_cli("run", "--quant", "Q9_ZZ", "--flake", flake, "--simulate", "rtx4090")
    assert result.returncode == 1
    assert "Q9_ZZ" in result.stderr and "Q4_K_M" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_quant_the_named_model_lacks_lists_the_models_quants(flake: str) -> None:
    result = run_cli(
        "plan", "--model", "Qwen/Qwen3-0.6B-GGUF", "--quant", "Q4_K_M", "--flake", flake,
        "--simulate", "rtx4090",
    )  # fmt: skip
    assert result.returncode == 1
    assert "has no Q4_K_M" in result.stderr and "Q8_0" in result.stderr


def test_bad_ports_hosts_and_gpu_lists_are_usage_errors(flake: str) -> None:
    for args in (["--port", "0"], ["--port", "70000"], ["--host", "a b"], ["--gpu", "x"]):
        result = run_cli("run", *args, "--flake", flake, "--simulate", "rtx4090")
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_state_dir_that_is_a_file_is_named_with_the_fix(flake: str, tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    env = {**os.environ, "XDG_STATE_HOME": str(blocker)}
    result = run_cli("build", "--flake", flake, "--simulate", "rtx4090", env=env)
    assert result.returncode == 1, result.stderr
    assert str(blocker) in result.stderr and "XDG_STATE_HOME" in result.stderr
    assert "Traceback" not in result.stderr


def test_another_flakes_build_of_the_same_output_is_not_this_ones(
    flake: str, tmp_path: Path
) -> None:
    built = run_cli("build", "--flake", flake, timeout=300)
    assert built.returncode == 0, built.stderr
    other = fixture_flake(tmp_path / "other")
    result = run_cli("run", "--flake", other, "--model", "Qwen/Qwen3-0.6B-GGUF")
    assert result.returncode == 1
    assert "not built yet" in result.stderr and "llama-wizard build" in result.stderr
    same = run_cli("run", "--flake", flake, "--model", "Qwen/Qwen3-0.6B-GGUF", "--json")
    assert '"event": "started"' in same.stdout, same.stderr


def test_a_quant_a_local_file_is_not_is_refused(flake: str, tmp_path: Path) -> None:
    from tests.test_models_gguf import _llama  # a Q8_0 GGUF written with gguf's writer

    model = str(_llama(tmp_path))
    result = run_cli("plan", "--model", model, "--quant", "Q4_K_M", "--flake", flake)
    assert result.returncode == 1, result.stdout
    assert "not Q4_K_M" in result.stderr and "Traceback" not in result.stderr
    same = run_cli("plan", "--json", "--model", model, "--quant", "Q8_0", "--flake", flake)
    assert same.returncode == 0, same.stderr
