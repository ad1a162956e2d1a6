"""llama-fit-params' answers, parsed from what it really printed; our estimate set beside them
(`compare`); and the launch rule that keeps llama.cpp's own fit working (`fit_flags`).

Where each recording comes from:

- `*_STDOUT` / `*_LOG` (stdout / stderr): recorded by hand on 2026-11-30 with the real
  `llama-fit-params` of llama.cpp 0c1e570 built by scripts/llamacpp (CPU only, 24105 MiB of host
  memory), on `qwen3-dense.gguf` (tests/gguf_factory.DENSE_SMALL):
  FITS: `-m qwen3-dense.gguf -c 4096 -lv 4` (exit 0);
  NO: `... -c 4096 -fitt 24105 -lv 4` (a margin as large as the RAM: exit 1);
  REDUCED: `-m qwen3-dense.gguf -fitt 23855 -lv 4` (no -c: it reduces the context; exit 0);
  NGL99: `... -c 4096 -ngl 99 -lv 4` (exit 0: the -ngl given is echoed);
  NOTGGUF: `-m /etc/passwd -c 4096 -lv 4` (exit 1);
  OFFLINE: `-hf Qwen/Qwen3-0.6B-GGUF:Q8_0 --offline -c 4096 -lv 4` with an empty cache (exit 1).
- `README_GPU`: a CUDA run (RTX 4090, build 6895, Nov 2025) quoted in llama.cpp's own
  tools/fit-params/README.md at 0c1e570, stderr and stdout together (`| tee`): the context
  reduced, 34 layers' experts kept in system RAM with `-ot` (unquoted, as builds then printed it).
- tests/fixtures/llamacpp/0c1e570/fit-params-dense.log: `-c 4096 -t 2 2>&1` (issue 10's recording).
- `CONSTRUCTED_TS`: NOT a recording (no multi-GPU build here): a line in the exact format of
  tools/fit-params/fit-params.cpp's printf at 0c1e570 (`-ts` and a quoted `-ot`), for the -ts
  parsing only.
"""
# ruff: noqa: E501  (recorded log lines are kept verbatim)

from __future__ import annotations

from pathlib import Path

import pytest

from llama_wizard.models.choose import ModelChoice
from llama_wizard.tui.verify import (
    FitParamsFailed,
    FitVerdict,
    ModelNotLocal,
    apply_fit_rule,
    compare,
    fit_flags,
    memory_args,
    parse_fit_output,
    parse_fitted_args,
)

FIXTURE = (
    Path(__file__).resolve().parent / "fixtures" / "llamacpp" / "0c1e570" / "fit-params-dense.log"
)
MIB = 1 << 20

FITS_STDOUT = """\
-c 4096 -ngl -1
"""
FITS_LOG = """\
0.00.002.098 I common_params_fit_impl: getting device memory data for initial parameters:
0.00.005.326 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.00.005.344 I common_memory_breakdown_print: |   - Host               |                   90 =    32 +      32 +      26                |
0.00.005.486 I common_params_fit_impl: projected to use 90 MiB of host memory vs. 24105 MiB of total host memory
0.00.005.495 I common_params_fit_impl: will leave 24014 >= 1024 MiB of system memory, no changes needed
0.00.005.495 I common_fit_params: successfully fit params to free device memory
0.00.005.496 I common_fit_params: fitting params to free memory took 0.00 seconds
0.00.005.496 I llama_fit_params: printing fitted CLI arguments to stdout...
"""

NO_STDOUT = """\
"""
NO_LOG = """\
0.00.002.022 I common_params_fit_impl: getting device memory data for initial parameters:
0.00.005.196 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.00.005.220 I common_memory_breakdown_print: |   - Host               |                   90 =    32 +      32 +      26                |
0.00.005.371 I common_params_fit_impl: projected to use 90 MiB of host memory vs. 24105 MiB of total host memory
0.00.005.387 I common_params_fit_impl: cannot meet free memory target of 24105 MiB, need to reduce device memory by 90 MiB
0.00.005.400 I common_params_fit_impl: context size set by user to 4096 -> no change
0.00.005.479 W common_fit_params: failed to fit params to free device memory: was unable to fit model into system memory by reducing context, abort
0.00.005.498 I common_fit_params: fitting params to free memory took 0.00 seconds
0.00.005.511 E llama_fit_params: failed to fit CLI arguments to free memory, exiting...
"""

REDUCED_STDOUT = """\
-c 22016 -ngl -1
"""
REDUCED_LOG = """\
0.00.002.018 I common_params_fit_impl: getting device memory data for initial parameters:
0.00.006.066 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.00.006.083 I common_memory_breakdown_print: |   - Host               |                  414 =    32 +     320 +      62                |
0.00.006.334 I common_params_fit_impl: projected to use 414 MiB of host memory vs. 24105 MiB of total host memory
0.00.006.344 I common_params_fit_impl: cannot meet free memory target of 23855 MiB, need to reduce device memory by 164 MiB
0.00.008.341 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.00.008.362 I common_memory_breakdown_print: |   - Host               |                   90 =    32 +      32 +      26                |
0.00.008.394 I common_params_fit_impl: context size reduced from 40960 to 22016 -> need 166 MiB less memory in total
0.00.008.403 I common_params_fit_impl: entire model can be fit by reducing context
0.00.008.403 I common_fit_params: successfully fit params to free device memory
0.00.008.404 I common_fit_params: fitting params to free memory took 0.01 seconds
0.00.008.404 I llama_fit_params: printing fitted CLI arguments to stdout...
"""

OFFLINE_STDOUT = """\
"""
OFFLINE_LOG = """\
error: --model is required

"""

NGL99_STDOUT = """\
-c 4096 -ngl 99
"""
NGL99_LOG = """\
warning: no usable GPU found, --gpu-layers option will be ignored
warning: one possible reason is that llama.cpp was compiled without GPU support
warning: consult docs/build.md for compilation instructions
0.00.002.086 I common_params_fit_impl: getting device memory data for initial parameters:
0.00.005.331 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.00.005.344 I common_memory_breakdown_print: |   - Host               |                   90 =    32 +      32 +      26                |
0.00.005.474 I common_params_fit_impl: projected to use 90 MiB of host memory vs. 24105 MiB of total host memory
0.00.005.481 I common_params_fit_impl: will leave 24014 >= 1024 MiB of system memory, no changes needed
0.00.005.482 I common_fit_params: successfully fit params to free device memory
0.00.005.483 I common_fit_params: fitting params to free memory took 0.00 seconds
0.00.005.483 I llama_fit_params: printing fitted CLI arguments to stdout...
"""

NOTGGUF_STDOUT = """\
"""
NOTGGUF_LOG = """\
0.00.002.249 I common_params_fit_impl: getting device memory data for initial parameters:
0.00.002.309 E gguf_init_from_reader: invalid magic characters: 'root', expected 'GGUF'
0.00.002.437 E llama_model_load: error loading model: llama_model_loader: failed to load model from /etc/passwd
0.00.002.449 E llama_model_load_from_file_impl: failed to load model
0.00.002.471 E common_fit_params: encountered an error while trying to fit params to free device memory: failed to load model
0.00.002.473 I common_fit_params: fitting params to free memory took 0.00 seconds
0.00.002.476 E llama_fit_params: failed to fit CLI arguments to free memory, exiting...
"""

README_GPU = r"""ggml_cuda_init: GGML_CUDA_FORCE_MMQ:    no
ggml_cuda_init: GGML_CUDA_FORCE_CUBLAS: no
ggml_cuda_init: found 1 CUDA devices:
  Device 0: NVIDIA GeForce RTX 4090, compute capability 8.9, VMM: yes
build: 6895 (4341dc8bc) with cc (GCC) 15.2.1 20250813 for x86_64-pc-linux-gnu
llama_params_fit_impl: projected to use 61807 MiB of device memory vs. 24077 MiB of free device memory
llama_params_fit_impl: cannot fulfill margin of 1024 MiB, need to reduce device memory by 42444 MiB
llama_params_fit_impl: context size reduced from 40960 to 4096 -> need 3456 MiB less memory in total
llama_params_fit_impl: with only dense weights in device memory there is a total surplus of 16164 MiB
llama_params_fit_impl: distributing layers across devices with overflow to next device/system memory:
llama_params_fit_impl:   - CUDA0 (NVIDIA GeForce RTX 4090): 48 layers (34 overflowing),  19187 MiB used,   1199 MiB free
llama_params_fit: successfully fit params to free device memory
llama_params_fit: fitting params to free memory took 1.15 seconds
Printing fitted CLI arguments to stdout...
-c 4096 -ngl 48 -ot blk\.14\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.15\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.16\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.17\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.18\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.19\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.20\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.21\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.22\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.23\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.24\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.25\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.26\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.27\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.28\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.29\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.30\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.31\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.32\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.33\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.34\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.35\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.36\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.37\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.38\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.39\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.40\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.41\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.42\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.43\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.44\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.45\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.46\.ffn_(up|down|gate)_(ch|)exps=CPU,blk\.47\.ffn_(up|down|gate)_(ch|)exps=CPU
"""

CONSTRUCTED_TS = '-c 32768 -ngl 49 -ts 30,19 -ot "blk\\.29\\.ffn_(gate|down).*=CUDA1,blk\\.47\\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU"\n'


def choice(
    verdict: str, ctx: int = 4096, total: int = 72 * MIB, memory: int = 23 << 30
) -> ModelChoice:
    return ModelChoice(repo="/models/qwen3-dense.gguf", name="qwen3-dense", quant="Q8_0",
                       files=["/models/qwen3-dense.gguf"], ctx=ctx, max_ctx=None, verdict=verdict,
                       file_bytes=35 * MIB, total_bytes=total, memory_bytes=memory,
                       flags=[])  # fmt: skip


# --- parsing --------------------------------------------------------------------------------


def test_fits_as_asked() -> None:
    verdict = parse_fit_output(FITS_STDOUT, FITS_LOG, 0, ctx_asked=4096)
    assert verdict.status == "fits" and verdict.fits
    assert (verdict.ctx, verdict.n_gpu_layers, verdict.tensor_split, verdict.overrides) == (
        4096,
        -1,
        None,
        [],
    )
    assert verdict.args == ["-c", "4096", "-ngl", "-1"]
    assert verdict.projected_bytes == 90 * MIB and verdict.available_bytes == 24105 * MIB
    assert verdict.margin_bytes == 1024 * MIB and verdict.host
    assert verdict.summary() == (
        "llama.cpp: fits at 4096 tokens (it projects 90.0 MiB of 23.5 GiB system RAM, "
        "keeping 1.0 GiB spare)."
    )
    trace = verdict.trace()
    assert trace[-1] == "-c 4096 -ngl -1"
    assert (
        "common_params_fit_impl: will leave 24014 >= 1024 MiB of system memory, no changes needed"
        in trace
    )
    assert not any(line[:1].isdigit() for line in trace)  # timestamps removed


def test_the_recorded_fixture_with_stderr_and_stdout_merged() -> None:
    text = FIXTURE.read_text()
    verdict = parse_fit_output(text, text, 0, ctx_asked=4096)
    assert verdict.status == "fits" and verdict.args == ["-c", "4096", "-ngl", "-1"]
    assert verdict.projected_bytes is None  # not logged without -lv 4


def test_an_ngl_given_is_echoed_and_counts_as_unchanged() -> None:
    verdict = parse_fit_output(NGL99_STDOUT, NGL99_LOG, 0, ctx_asked=4096, n_gpu_layers_asked=99)
    assert verdict.status == "fits" and verdict.n_gpu_layers == 99
    assert parse_fit_output(NGL99_STDOUT, NGL99_LOG, 0, ctx_asked=4096).status == "reduced"


def test_cannot_fit() -> None:
    verdict = parse_fit_output(NO_STDOUT, NO_LOG, 1, ctx_asked=4096)
    assert verdict.status == "no" and not verdict.fits
    assert verdict.reason == "was unable to fit model into system memory by reducing context"
    assert verdict.ctx is None and verdict.args == []
    assert verdict.margin_bytes == 24105 * MIB
    assert verdict.summary().startswith(
        "llama.cpp: cannot fit it (it projects 90.0 MiB of 23.5 GiB"
    )


def test_context_reduced_when_none_was_asked() -> None:
    verdict = parse_fit_output(REDUCED_STDOUT, REDUCED_LOG, 0)
    assert verdict.status == "reduced"
    assert verdict.ctx == 22016 and verdict.ctx_reduced_from == 40960
    assert verdict.changes() == ["a 22016-token context instead of 40960"]
    assert verdict.projected_bytes == 414 * MIB


def test_gpu_run_from_llamacpp_readme() -> None:
    verdict = parse_fit_output(README_GPU, README_GPU, 0)
    assert verdict.status == "reduced" and not verdict.host
    assert verdict.ctx == 4096 and verdict.ctx_reduced_from == 40960
    assert verdict.n_gpu_layers == 48
    assert len(verdict.overrides) == 34
    assert verdict.overrides[0] == r"blk\.14\.ffn_(up|down|gate)_(ch|)exps=CPU"  # backslashes kept
    assert verdict.cpu_layers == list(range(14, 48))
    assert verdict.projected_bytes == 61807 * MIB and verdict.available_bytes == 24077 * MIB
    assert verdict.margin_bytes == 1024 * MIB
    assert verdict.changes() == [
        "a 4096-token context instead of 40960",
        "only 48 layers on the GPU (-ngl 48)",
        "part of the weights of 34 layers in system RAM (-ot)",
    ]
    assert verdict.args[:4] == ["-c", "4096", "-ngl", "48"] and verdict.args[4] == "-ot"
    assert verdict.short_args() == ["-c", "4096", "-ngl", "48", "-ot", "<34 overrides>"]
    assert "GPU memory, keeping 1.0 GiB spare" in verdict.summary()


def test_tensor_split_and_quoted_overrides() -> None:
    parsed = parse_fitted_args(CONSTRUCTED_TS.strip())
    assert parsed["ctx"] == 32768 and parsed["n_gpu_layers"] == 49
    assert parsed["tensor_split"] == [30, 19]
    assert parsed["overrides"] == [
        r"blk\.29\.ffn_(gate|down).*=CUDA1",
        r"blk\.47\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU",
    ]
    verdict = parse_fit_output(CONSTRUCTED_TS, "", 0, ctx_asked=32768)
    assert verdict.status == "reduced" and verdict.cpu_layers == [47]
    assert "a split of 30,19 across the GPUs" in verdict.changes()
    with pytest.raises(ValueError):
        parse_fitted_args("Host 32 32 26")


def test_not_a_gguf_is_an_error_with_the_log_tail() -> None:
    with pytest.raises(FitParamsFailed) as error:
        parse_fit_output(NOTGGUF_STDOUT, NOTGGUF_LOG, 1, model="/etc/passwd")
    assert (
        "could not load /etc/passwd (invalid magic characters: 'root', expected 'GGUF')"
        in error.value.message
    )
    assert "GGUF" in error.value.fix and error.value.returncode == 1
    assert error.value.log_tail[-1] == (
        "llama_fit_params: failed to fit CLI arguments to free memory, exiting..."
    )


def test_model_not_in_the_cache() -> None:
    with pytest.raises(ModelNotLocal) as error:
        parse_fit_output(OFFLINE_STDOUT, OFFLINE_LOG, 1, model="Qwen/Qwen3-0.6B-GGUF:Q8_0")
    assert "not in llama.cpp's download cache" in error.value.message
    assert 'hf download Qwen/Qwen3-0.6B-GGUF --include "*Q8_0*.gguf"' in error.value.fix
    assert "--model PATH" in error.value.fix


def test_a_failure_whose_reason_was_lost() -> None:
    # llama.cpp logs from a thread; exit(1) may drop the last lines (common/log.cpp).
    lost = NO_LOG.splitlines()[0] + "\n"
    with pytest.raises(FitParamsFailed) as error:
        parse_fit_output("", lost, 1)
    assert "exit status 1" in error.value.message and "gave no reason" in error.value.message


def test_fit_blocked_by_flags_given() -> None:
    log = "0.00.005.479 W common_fit_params: failed to fit params to free device memory: n_gpu_layers already set by user to 99, abort\n"
    with pytest.raises(FitParamsFailed) as error:
        parse_fit_output("", log, 1)
    assert "n_gpu_layers already set by user to 99" in error.value.message
    assert "-ngl" in error.value.fix


def test_killed_by_a_signal() -> None:
    with pytest.raises(FitParamsFailed) as error:
        parse_fit_output("", FITS_LOG.splitlines()[0], -11)
    assert "SIGSEGV" in error.value.message


# --- the estimate beside llama.cpp's answer ---------------------------------------------------


def verdict_of(name: str, **asked: int) -> FitVerdict:
    stdout, log, code = {
        "fits": (FITS_STDOUT, FITS_LOG, 0),
        "no": (NO_STDOUT, NO_LOG, 1),
        "reduced": (REDUCED_STDOUT, REDUCED_LOG, 0),
        "gpu": (README_GPU, README_GPU, 0),
    }[name]
    return parse_fit_output(stdout, log, code, **asked)


@pytest.mark.parametrize(
    ("ours", "theirs", "agree"),
    [
        ("fits", "fits", True),
        ("tight", "fits", True),
        ("no", "no", True),
        ("no", "gpu", True),
        ("fits", "no", False),
        ("tight", "gpu", False),
        ("no", "fits", False),
    ],
)
def test_agreement_table(ours: str, theirs: str, agree: bool) -> None:
    result = compare(choice(ours), verdict_of(theirs, ctx_asked=4096))
    assert result.agree is agree
    assert (result.estimate, result.llamacpp) == (ours, verdict_of(theirs).status)
    assert (result.explanation is None) is agree
    assert "\n" not in result.summary and "\n" not in (result.explanation or "")


def test_agreement_says_it_in_words() -> None:
    agreed = compare(choice("fits"), verdict_of("fits", ctx_asked=4096))
    assert agreed.summary.startswith(
        "llama.cpp agrees that qwen3-dense Q8_0 at 4096 tokens fits: fits at 4096"
    )
    disagree = compare(choice("tight", ctx=40960), verdict_of("reduced"))
    assert not disagree.agree
    assert disagree.explanation is not None
    assert disagree.explanation.startswith(
        "The estimate says qwen3-dense Q8_0 at 40960 tokens fits, tightly (72.0 MiB of 23.0 GiB)"
    )
    assert "a 22016-token context instead of 40960" in disagree.explanation
    cannot = compare(choice("fits"), verdict_of("no", ctx_asked=4096))
    assert "llama.cpp cannot fit it: was unable to fit model into system memory" in (
        cannot.explanation or ""
    )
    cautious = compare(choice("no"), verdict_of("fits", ctx_asked=4096))
    assert "the estimate is cautious here" in (cautious.explanation or "")
    assert (
        cautious.to_json()["agree"] is False
        and cautious.to_json()["explanation"] == cautious.explanation
    )


def test_a_verdict_for_another_context_says_so() -> None:
    result = compare(choice("fits", ctx=8192), verdict_of("no", ctx_asked=4096))
    assert "asked about 4096 tokens, not 8192" in (result.explanation or "")


# --- what llama-fit-params is given, and the launch rule ----------------------------------------


def test_memory_args_keep_what_changes_memory_only() -> None:
    launch = ["-m", "/m.gguf", "-c", "8192", "-ngl", "99", "-fa", "on", "--jinja", "-ts", "1,1",
              "--n-cpu-moe", "4", "-ctk", "q8_0", "--flash-attn=off", "-np", "4", "-no-cnv",
              "-p", "hi", "--swa-full", "--fit", "on"]  # fmt: skip
    assert memory_args(launch) == ["-c", "8192", "-fa", "on", "-ctk", "q8_0", "--flash-attn=off",
                                   "-np", "4", "--swa-full"]  # fmt: skip


@pytest.mark.parametrize(
    ("verdict", "gpu", "has_fit", "flags"),
    [
        ("fits", False, True, []),
        ("tight", False, True, []),
        ("no", False, True, []),
        ("fits", True, True, None),
        ("tight", True, True, ["--fit", "on"]),
        ("no", True, True, ["--fit", "on"]),
        ("tight", True, False, None),
        ("no", True, False, None),
    ],
)
def test_fit_flags(verdict: str, gpu: bool, has_fit: bool, flags: list[str] | None) -> None:
    assert fit_flags(verdict, gpu, has_fit) == flags


def test_apply_fit_rule_replaces_the_placement() -> None:
    args = ["-m", "/m.gguf", "-c", "32768", "-ngl", "99", "-fa", "on", "--jinja", "-ts", "3,1",
            "--n-cpu-moe", "12", "-ot=blk.1=CPU", "--cpu-moe"]  # fmt: skip
    assert apply_fit_rule(args, "tight", gpu=True) == [
        "-m", "/m.gguf", "-c", "32768", "--fit", "on", "-fa", "on", "--jinja"
    ]  # fmt: skip
    assert apply_fit_rule(args, "fits", gpu=True) == args
    assert apply_fit_rule(args, "tight", gpu=True, has_fit=False) == args
    assert apply_fit_rule(["-m", "/m.gguf", "-c", "4096", "-ngl", "99"], "fits", gpu=False) == [
        "-m", "/m.gguf", "-c", "4096"
    ]  # fmt: skip
    assert apply_fit_rule(["-c", "4096", "--fit", "off"], "no", gpu=True) == [
        "-c",
        "4096",
        "--fit",
        "on",
    ]
