"""`plan --verify` and `fit --verify`: llama.cpp's own word on the fit from the command line, with
the real tools: the installed command in a subprocess, the llamacpp fixture flake built with the
real `nix build`, the real llama-fit-params of llama.cpp 0c1e570 (scripts/llamacpp) and the
generated dense GGUF. This machine has no GPU: llama.cpp's CPU build fits into system RAM."""

from __future__ import annotations

import json
import os
from pathlib import Path

from llama_wizard.tui.verify import FIT_PARAMS
from tests.helpers import run_cli
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    fixture_llamacpp_flake,
)
from tests.nix_fixtures import fixture_flake


def json_of(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> dict:
    result = run_cli(*argv, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def host_mib() -> int:
    """Total host memory as llama.cpp's CPU backend sees it."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)


def without_fit_params(env: dict[str, str]) -> dict[str, str]:
    """The environment with no llama-fit-params on PATH (nix and the rest stay)."""
    kept = [d for d in env.get("PATH", "").split(os.pathsep) if not (Path(d) / FIT_PARAMS).exists()]
    return {**env, "PATH": os.pathsep.join(kept)}


def test_plan_verify_asks_the_built_output(llamacpp_flake: str, dense_gguf: Path) -> None:
    plan_args = ("plan", "--flake", llamacpp_flake, "--model", str(dense_gguf), "--ctx", "4096")
    # Before the build: llama.cpp cannot be asked, and the plan still comes (exit 0).
    missing = json_of(*plan_args, "--verify", "--json")["verify"]
    assert missing["error"]["kind"] == "FitParamsMissing", missing
    assert "not built yet" in missing["error"]["message"]
    assert "llama-wizard build" in missing["error"]["fix"]

    built = run_cli("build", "--flake", llamacpp_flake, timeout=600)
    assert built.returncode == 0, built.stderr

    document = json_of(*plan_args, "--verify", "--json")
    verify = document["verify"]
    assert set(verify) == {"verdict", "agreement"}, verify
    verdict, agreement = verify["verdict"], verify["agreement"]
    assert verdict["status"] == "fits", verdict["trace"]
    assert agreement["agree"] is True and agreement["explanation"] is None
    assert verdict["ctx_asked"] == 4096 and verdict["ctx"] == 4096 and verdict["host"] is True
    assert verdict["argv"][0] == str(Path(document["out_link"]).absolute() / "bin" / FIT_PARAMS)
    assert verdict["argv"][1:5] == ["-m", str(dense_gguf), "-c", "4096"]
    assert verdict["summary"].startswith("llama.cpp: fits at 4096 tokens")
    assert verdict["projected_bytes"] > 0 and verdict["available_bytes"] > 0
    assert json_of(*plan_args, "--json")["verify"] is None  # not asked without --verify

    text = run_cli(*plan_args, "--verify", timeout=300)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert verdict["summary"] in lines, text.stdout  # one line, as llama.cpp's answer
    assert "llama.cpp: llama.cpp:" not in text.stdout
    assert "disagree" not in text.stdout and "not asked" not in text.stdout

    # A margin as large as all the RAM (llama.cpp's own LLAMA_ARG_FIT_TARGET): llama.cpp cannot
    # fit it, the estimate says it fits, and the plan says they disagree (still exit 0).
    tight = {**os.environ, "LLAMA_ARG_FIT_TARGET": str(host_mib())}
    disagree = run_cli(*plan_args, "--verify", env=tight, timeout=300)
    assert disagree.returncode == 0, disagree.stderr
    lines = disagree.stdout.splitlines()
    assert any(line.startswith("llama.cpp: cannot fit it") for line in lines), disagree.stdout
    assert any(
        line.startswith("llama.cpp and the estimate disagree: The estimate says ")
        and "llama.cpp cannot fit it" in line
        for line in lines
    ), disagree.stdout
    against = json_of(*plan_args, "--verify", "--json", env=tight)["verify"]
    assert against["verdict"]["status"] == "no" and against["agreement"]["agree"] is False
    assert against["agreement"]["explanation"].startswith("The estimate says")

    # fit --verify without --llamacpp asks the planned build, once built.
    fitted = json_of(
        "fit", str(dense_gguf), "--ctx", "4096", "--verify", "--flake", llamacpp_flake, "--json",
        env=without_fit_params(dict(os.environ)),
    )  # fmt: skip
    assert fitted["verify"]["verdict"]["argv"][0] == verdict["argv"][0]
    assert fitted["verify"]["verdict"]["status"] == "fits"


def test_plan_verify_refuses_a_simulated_machine(tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "flake")
    plan_args = ("plan", "--flake", flake, "--simulate", "rtx4090", "--verify")
    document = json_of(*plan_args, "--json")
    error = document["verify"]["error"]
    assert error["kind"] == "SimulatedMachine", error
    assert "simulated machine" in error["message"] and "--simulate" in error["fix"]
    assert document["output"] == "cuda"  # the plan itself is all there

    text = run_cli(*plan_args)
    assert text.returncode == 0, text.stderr
    assert "llama.cpp not asked: llama.cpp cannot check a simulated machine" in text.stdout
    assert "Run it without --simulate" in text.stdout


def test_fit_verify_with_a_llamacpp_bin_dir(
    llamacpp_bin: Path, dense_gguf: Path, tmp_path: Path
) -> None:
    flake = fixture_flake(tmp_path / "flake")  # planned for the environment only: never built
    fit_args = ("fit", str(dense_gguf), "--ctx", "4096", "--flake", flake, "--verify")
    document = json_of(*fit_args, "--llamacpp", str(llamacpp_bin), "--json")
    verify = document["verify"]
    assert verify["quant"] == "Q8_0" and verify["ctx"] == 4096
    verdict = verify["verdict"]
    assert verdict["status"] == "fits", verdict["trace"]
    assert verdict["argv"][:5] == [str(llamacpp_bin / FIT_PARAMS), "-m", str(dense_gguf),
                                   "-c", "4096"]  # fmt: skip
    assert verify["agreement"]["agree"] is True

    # -fa, -np, -ctk and -ctv are passed on to llama.cpp as asked.
    asked = json_of(
        *fit_args, "--llamacpp", str(llamacpp_bin), "-fa", "off", "-np", "2",
        "-ctk", "q8_0", "--json",
    )["verify"]["verdict"]  # fmt: skip
    argv = asked["argv"]
    for option in (["-fa", "off"], ["-np", "2"], ["-ctk", "q8_0"]):
        assert any(argv[i : i + 2] == option for i in range(len(argv))), argv
    assert "-ctv" not in argv and "-ngl" not in argv
    assert asked["status"] == "fits", asked["trace"]

    text = run_cli(*fit_args, "--llamacpp", str(llamacpp_bin), timeout=300)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert f"Asked {llamacpp_bin / FIT_PARAMS} about Q8_0 at 4096 tokens:" in lines
    assert any(line.startswith("llama.cpp: fits at 4096 tokens") for line in lines), text.stdout


def test_fit_verify_without_any_llama_fit_params(llamacpp_flake: str, dense_gguf: Path) -> None:
    # Not built (a fresh state directory), none on PATH, no --llamacpp: it says how to get one.
    env = without_fit_params(dict(os.environ))
    fit_args = ("fit", str(dense_gguf), "--ctx", "4096", "--flake", llamacpp_flake, "--verify")
    error = json_of(*fit_args, "--json", env=env)["verify"]["error"]
    assert error["kind"] == "FitParamsMissing", error
    assert "not built yet" in error["message"] and "none on PATH" in error["message"]
    assert "llama-wizard build --flake" in error["fix"] and "--llamacpp" in error["fix"]

    text = run_cli(*fit_args, env=env, timeout=300)
    assert text.returncode == 0, text.stderr
    assert f"llama.cpp not asked: There is no {FIT_PARAMS} to ask" in text.stdout
    assert "Q8_0" in text.stdout  # the estimate is all there


def test_fit_verify_refuses_simulated_machines_and_vram_sizes(dense_gguf: Path) -> None:
    simulated = json_of("fit", str(dense_gguf), "--simulate", "rtx4090", "--verify", "--json")
    assert simulated["verify"]["error"]["kind"] == "SimulatedMachine"
    assert "simulated machine" in simulated["verify"]["error"]["message"]
    sized = json_of("fit", str(dense_gguf), "--vram", "24GiB", "--verify", "--json")
    assert "--vram" in sized["verify"]["error"]["message"]
    assert json_of("fit", str(dense_gguf), "--vram", "24GiB", "--json")["verify"] is None
