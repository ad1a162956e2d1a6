"""llama.cpp's own word on the fit, for real: the `llama-fit-params` of llama.cpp 0c1e570 built by
scripts/llamacpp (CPU only: it fits into host memory) on the generated dense GGUF; a plan built
with the real `nix build` of the llamacpp fixture flake; the launch flags for a tight fit given
to the real llama-completion. Only the timeout uses a stand-in (a script that sleeps), and the
GPU plan's argv/environment check a stand-in that records what it was given (no GPU build here).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from llama_wizard.models.choose import ModelChoice
from llama_wizard.tui.launch import launch_spec
from llama_wizard.tui.machine import open_machine
from llama_wizard.tui.session import Overrides, WizardSession
from llama_wizard.tui.verify import (
    FIT_PARAMS,
    FitParamsFailed,
    FitParamsMissing,
    FitTimeout,
    ModelNotLocal,
    apply_fit_rule,
    compare,
    has_fit_params,
    memory_args,
    plan_environment,
    verify_fit,
)
from tests.gguf_factory import DENSE_SMALL
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    fixture_llamacpp_flake,
    nix_build,
)
from tests.nix_fixtures import fixture_flake

MIB = 1 << 20
RECORDED_ANSWER = "-c 4096 -ngl -1"  # what the real tool prints for the dense model (test below)


def host_mib() -> int:
    """Total host memory as llama.cpp's CPU backend reports it (ggml-cpu.cpp: sysconf)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // MIB


def choice(repo: str, verdict: str = "fits", ctx: int = 4096, quant: str = "Q8_0") -> ModelChoice:
    return ModelChoice(repo=repo, name="qwen3-dense", quant=quant, files=[repo], ctx=ctx,
                       max_ctx=None, verdict=verdict, file_bytes=35 * MIB,
                       total_bytes=72 * MIB, memory_bytes=20 << 30, flags=[])  # fmt: skip


def plan_on_this_machine(flake: str, profile: str | None = None, **named: object):
    with open_machine(None, profile) as machine:
        session = WizardSession(machine, None, Overrides(flake=flake, **named))  # type: ignore[arg-type]
        return session.make_plan()


# --- the real llama-fit-params ----------------------------------------------------------------


def test_a_model_that_fits(llamacpp_bin: Path, dense_gguf: Path) -> None:
    assert has_fit_params(llamacpp_bin)
    verdict = verify_fit(llamacpp_bin, dense_gguf, 4096)
    assert verdict.status == "fits", verdict.log
    assert verdict.args == RECORDED_ANSWER.split()
    assert verdict.argv[:5] == [str(llamacpp_bin / FIT_PARAMS), "-m", str(dense_gguf), "-c", "4096"]
    assert verdict.host and verdict.available_bytes == host_mib() * MIB
    assert verdict.projected_bytes is not None and 60 * MIB < verdict.projected_bytes < 200 * MIB
    assert verdict.trace()[-1] == RECORDED_ANSWER
    agreement = compare(choice(str(dense_gguf)), verdict)
    assert agreement.agree and agreement.explanation is None
    assert agreement.summary.startswith(
        "llama.cpp agrees that qwen3-dense Q8_0 at 4096 tokens fits"
    )


def test_cannot_fit_when_the_margin_is_all_the_ram(llamacpp_bin: Path, dense_gguf: Path) -> None:
    # A CPU build projects against total host memory; with -c given it can only give up.
    verdict = verify_fit(
        llamacpp_bin, dense_gguf, 4096, extra_args=["--fit-target", str(host_mib())]
    )
    assert verdict.status == "no", verdict.log
    assert verdict.reason == "was unable to fit model into system memory by reducing context"
    assert verdict.returncode == 1 and verdict.margin_bytes == host_mib() * MIB
    disagree = compare(choice(str(dense_gguf), "fits"), verdict)
    assert not disagree.agree
    assert "llama.cpp cannot fit it" in (disagree.explanation or "")
    assert compare(choice(str(dense_gguf), "no"), verdict).agree


def test_llamacpp_reduces_the_context_it_was_left_to_choose(
    llamacpp_bin: Path, dense_gguf: Path
) -> None:
    # No -c: it starts from the training context (40960) and interpolates down to what leaves
    # the margin free: between 90 MiB (4096 tokens) and 414 MiB (40960) of this model.
    margin = host_mib() - 250
    verdict = verify_fit(llamacpp_bin, dense_gguf, extra_args=["--fit-target", str(margin)])
    assert verdict.status == "reduced", verdict.log
    assert verdict.ctx_asked is None and verdict.ctx_reduced_from == DENSE_SMALL.context
    assert verdict.ctx is not None and 4096 < verdict.ctx < DENSE_SMALL.context
    assert verdict.ctx % 256 == 0 and verdict.n_gpu_layers == -1
    disagree = compare(choice(str(dense_gguf), "tight", ctx=DENSE_SMALL.context), verdict)
    assert not disagree.agree
    assert f"a {verdict.ctx}-token context instead of 40960" in (disagree.explanation or "")


def test_no_llama_fit_params_in_the_build(tmp_path: Path, dense_gguf: Path) -> None:
    (tmp_path / "llama-completion").write_text("#!/bin/sh\n")
    with pytest.raises(FitParamsMissing) as error:
        verify_fit(tmp_path, dense_gguf, 4096)
    assert f"This build has no {FIT_PARAMS}" in error.value.message
    assert "newer llama.cpp" in error.value.fix
    assert not has_fit_params(tmp_path)


def test_a_file_that_is_not_gguf(llamacpp_bin: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.gguf"
    notes.write_text("these are notes, not a model\n" * 10)
    with pytest.raises(FitParamsFailed) as error:
        verify_fit(llamacpp_bin, notes, 4096)
    # llama.cpp says "invalid magic characters" unless its last log lines are lost at exit;
    # then the wizard reads the magic itself. Either way the person learns it is not a GGUF.
    message = error.value.message
    assert str(notes) in message and "GGUF" in message + error.value.fix
    assert error.value.returncode == 1


def test_a_missing_model_file(llamacpp_bin: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotLocal) as error:
        verify_fit(llamacpp_bin, tmp_path / "gone.gguf", 4096)
    assert "reads the model from disk" in error.value.message


def test_a_hub_model_that_is_not_downloaded(llamacpp_bin: Path, tmp_path: Path) -> None:
    # Not in our scan of the caches: llama-fit-params is asked with -hf ... --offline (its own
    # cache, no network), and says the model is not there.
    env = {
        **os.environ,
        "LLAMA_CACHE": str(tmp_path / "llama"),
        "HF_HUB_CACHE": str(tmp_path / "hf"),
    }
    with pytest.raises(ModelNotLocal) as error:
        verify_fit(llamacpp_bin, choice("Qwen/Qwen3-0.6B-GGUF"), env=env)
    assert "Qwen/Qwen3-0.6B-GGUF:Q8_0 is not in llama.cpp's download cache" in error.value.message
    assert "Launch it once" in error.value.fix and "--model PATH" in error.value.fix


def test_a_hub_model_found_in_the_hugging_face_cache(
    llamacpp_bin: Path, dense_gguf: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / "hf" / "models--Qwen--Qwen3-0.6B-GGUF" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    cached = snapshot / "Qwen3-0.6B-Q8_0.gguf"
    cached.symlink_to(dense_gguf)
    env = {
        **os.environ,
        "LLAMA_CACHE": str(tmp_path / "llama"),
        "HF_HUB_CACHE": str(tmp_path / "hf"),
    }
    verdict = verify_fit(llamacpp_bin, choice("Qwen/Qwen3-0.6B-GGUF"), env=env)
    assert verdict.argv[1:3] == ["-m", str(cached)] and verdict.status == "fits"


def test_a_timeout_stops_it_and_what_it_started(tmp_path: Path, dense_gguf: Path) -> None:
    stand_in = tmp_path / FIT_PARAMS
    stand_in.write_text("#!/bin/sh\nsleep 37.25 &\nwait\n")
    stand_in.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(FitTimeout) as error:
        verify_fit(tmp_path, dense_gguf, 4096, timeout=1)
    assert time.monotonic() - started < 15
    assert "did not answer in 1 s" in error.value.message and "timeout" in error.value.fix
    time.sleep(0.2)
    left = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "37.25"]]
    assert left == []


# --- from a plan ------------------------------------------------------------------------------


def test_a_plan_built_with_nix(llamacpp_flake: str, dense_gguf: Path) -> None:
    plan = plan_on_this_machine(llamacpp_flake, model=str(dense_gguf), ctx=4096)
    assert plan.model is not None and plan.build.backend == "cpu"
    with pytest.raises(FitParamsMissing) as error:
        verify_fit(plan)
    assert "not built yet" in error.value.message and "llama-wizard build" in error.value.fix
    nix_build(llamacpp_flake, plan.build.output, Path(plan.build.out_link))
    verdict = verify_fit(plan)
    assert verdict.argv[0] == str(Path(plan.build.out_link).absolute() / "bin" / FIT_PARAMS)
    assert verdict.argv[1:5] == ["-m", str(dense_gguf), "-c", "4096"]
    assert verdict.status == "fits", verdict.log
    agreement = compare(plan.model, verdict)
    assert agreement.agree, agreement


def test_plan_environment_is_the_launchs(tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "flake", "documented")
    plan = plan_on_this_machine(flake, "2x-mi50")
    base = {"HIP_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "7", "HOME": "/root", "PATH": "/b"}
    assert plan.build.env or plan.build.unset_env
    assert plan_environment(plan, base) == launch_spec(plan, check_built=False).environment(base)


def test_a_gpu_plan_asks_with_its_memory_flags_and_gpus(tmp_path: Path, dense_gguf: Path) -> None:
    flake = fixture_flake(tmp_path / "flake", "documented")
    plan = plan_on_this_machine(flake, "rtx4090", model=str(dense_gguf), ctx=8192)
    bin_dir = Path(plan.build.out_link) / "bin"
    bin_dir.mkdir(parents=True)
    record = tmp_path / "record"
    stand_in = bin_dir / FIT_PARAMS
    stand_in.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}.argv\nenv > {record}.env\n'
        'echo "-c 8192 -ngl -1"\n'
    )
    stand_in.chmod(0o755)
    verdict = verify_fit(plan)
    argv = (record.with_suffix(".argv")).read_text().split("\n")[:-1]
    assert argv[:4] == ["-m", str(dense_gguf), "-c", "8192"]
    # The launch's memory options (-fa on for a GPU build), never -ngl: placing the layers is the
    # question asked.
    assert argv[4:] == [*memory_args(plan.launch_args())[2:], "-lv", "4"]
    assert "-fa" in argv and "-ngl" not in argv and "-ts" not in argv
    env = dict(
        line.split("=", 1)
        for line in record.with_suffix(".env").read_text().splitlines()
        if "=" in line
    )
    for name, value in plan.build.env.items():
        assert env[name] == value
    for name in plan.build.unset_env:
        assert name not in env
    assert verdict.status == "fits"


# --- the launch rule, with the real llama-completion ------------------------------------------


def test_tight_fit_flags_are_accepted_and_fitting_runs(
    llamacpp_bin: Path, dense_gguf: Path
) -> None:
    args = apply_fit_rule(
        ["-m", str(dense_gguf), "-c", "4096", "-ngl", "99", "-fa", "on", "-ts", "1,1"],
        "tight",
        gpu=True,
    )
    assert args == ["-m", str(dense_gguf), "-c", "4096", "--fit", "on", "-fa", "on"]
    completion = [str(llamacpp_bin / "llama-completion"), *args]
    completion += ["-n", "4", "-no-cnv", "-p", "hi", "-t", "2", "-lv", "4"]
    result = subprocess.run(
        completion,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for bad in ("invalid argument", "unknown argument", "deprecated", "warning:"):
        assert bad not in result.stderr
    assert "common_params_fit_impl: projected to use" in result.stderr  # llama.cpp's fit ran


def test_fit_params_is_in_every_output_of_the_llamacpp_flake(
    llamacpp_flake: str, tmp_path: Path
) -> None:
    result = nix_build(llamacpp_flake, "cuda", tmp_path / "result-cuda")
    assert has_fit_params(result / "bin")
