"""llama.cpp's own word on whether the chosen model fits: run the built output's `llama-fit-params`
for the plan's model, context and GPUs, read its answer, set it beside our estimate, and the
launch flags that keep llama.cpp's own fitting (`--fit`) working.

What llama.cpp does (commit 0c1e570, `common/fit.cpp`, `common/arg.cpp`,
`tools/fit-params/fit-params.cpp`; the feature came with ggml-org/llama.cpp PR #16653, Dec 2025):

- `--fit on|off` (default on; env LLAMA_ARG_FIT): before loading, llama.cpp projects the memory
  of the model + context on each device (free memory now, keeping `--fit-target` MiB spare per
  device, default 1024) and changes only the parameters the person left unset: `-ngl` (default
  `auto` = -1), `-ts`, `-ot` (also set by `--n-cpu-moe`/`--cpu-moe`), and the context size only
  when `-c` was not given (down to `--fit-ctx`, default 4096; `-c 0` asks for the full training
  context and turns the reduction off). When everything fits it changes nothing.
- When something must change but `-ngl` was given (`-ngl 99`, `-ngl all`), or `-ts`/`-ot`, the fit
  stops ("n_gpu_layers already set by user to 99, abort"), and the program loads as told: it runs
  out of GPU memory instead of offloading fewer layers. So `-ngl 99` disables the fit exactly when
  it is needed.
- Without a GPU (a CPU build) the projection is against total host memory; only the context can
  be reduced, and with `-c` given an overflow is a failure.
- `llama-fit-params` runs the same fit and prints the result on stdout as CLI arguments:
  `-c N -ngl N[ -ts A,B,...][ -ot "pattern=BUFT,..."]` (`-ngl -1`: unchanged, all layers that fit
  llama.cpp's default), exit 0; "failed to fit CLI arguments to free memory" and exit 1 when it
  cannot (or the model cannot be read). Its `-lv 4` log says what it projected
  ("projected to use 414 MiB of host memory vs. 24105 MiB of total host memory").

No Textual, no printing: worker-safe functions (a subprocess each) and pure parsers; errors are
ActionableError subclasses with a fix.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_wizard.detect.errors import ActionableError
from llama_wizard.tui.launch import build_environment, without_options
from llama_wizard.tui.llamacpp_log import split_prefix

if TYPE_CHECKING:
    from llama_wizard.models.choose import ModelChoice
    from llama_wizard.tui.plan import Plan

FIT_PARAMS = "llama-fit-params"
DEFAULT_TIMEOUT = 120.0  # a big model on a GPU build: backend start plus a few dry loads
MIB = 1 << 20
LOG_TAIL_LINES = 12
ATTEMPTS = 3  # runs of llama-fit-params when it fails without saying why (see _explained)

# --- errors ---------------------------------------------------------------------------------


class VerifyError(ActionableError):
    """llama.cpp's fit could not be asked (the estimate still stands)."""


class SimulatedMachine(VerifyError):
    """llama.cpp sees this machine's GPUs, never a --simulate profile's."""

    def __init__(self) -> None:
        super().__init__(
            "llama.cpp cannot check a simulated machine: it would see this machine's GPUs, "
            "not the simulated ones.",
            "Run it without --simulate on the machine itself.",
        )


class FitParamsMissing(VerifyError):
    """The build has no llama-fit-params (not built yet, or a llama.cpp older than Dec 2025)."""


class ModelNotLocal(VerifyError):
    """llama-fit-params reads the GGUF from disk, and the model is not on this machine."""


class FitTimeout(VerifyError):
    """llama-fit-params did not answer in time (it was stopped)."""


class FitParamsFailed(VerifyError):
    """llama-fit-params failed for another reason than "does not fit"."""

    def __init__(self, message: str, fix: str, returncode: int | None, log_tail: list[str]):
        super().__init__(message, fix)
        self.returncode = returncode
        self.log_tail = log_tail


# --- the answer -----------------------------------------------------------------------------


@dataclass
class FitVerdict:
    """What llama-fit-params said for one model, context and set of GPUs.

    status: "fits" (as asked: the context kept, nothing moved off the GPUs), "reduced" (it fits
    only with the `-c`/`-ngl`/`-ts`/`-ot` in `args`), or "no" (it cannot fit: `reason`)."""

    status: str
    ctx_asked: int | None  # the -c passed (None: llama.cpp chose)
    ctx: int | None = None  # the context it would use
    n_gpu_layers: int | None = None  # as printed: -1 is llama.cpp's default (every layer)
    n_gpu_layers_asked: int = -1
    tensor_split: list[int] | None = None
    overrides: list[str] = field(default_factory=list)  # -ot entries, "pattern=BUFFER"
    args: list[str] = field(default_factory=list)  # the fitted arguments, as printed
    reason: str | None = None  # why it cannot fit, in llama.cpp's words
    ctx_reduced_from: int | None = None
    projected_bytes: int | None = None  # llama.cpp's projection with the parameters as asked
    available_bytes: int | None = None  # free device memory (total host memory on a CPU build)
    margin_bytes: int | None = None  # what it keeps spare per device (--fit-target)
    host: bool = False  # no GPU: the projection is against host memory
    argv: list[str] = field(default_factory=list)
    stdout: str = ""
    log: str = ""  # stderr
    returncode: int = 0

    @property
    def fits(self) -> bool:
        return self.status == "fits"

    @property
    def cpu_layers(self) -> list[int]:
        """The layers some of whose weights -ot keeps in system RAM."""
        layers = set()
        for entry in self.overrides:
            pattern, _, buffer = entry.rpartition("=")
            match = re.search(r"blk\\?\.(\d+)\\?\.", pattern)
            if match and buffer.upper().startswith("CPU"):
                layers.add(int(match[1]))
        return sorted(layers)

    def changes(self) -> list[str]:
        """What llama.cpp would change, in words (empty when it fits as asked)."""
        if self.status != "reduced":
            return []
        said = []
        if self.ctx is not None and self.ctx_reduced_from is not None:
            said.append(f"a {self.ctx}-token context instead of {self.ctx_reduced_from}")
        elif self.ctx is not None and self.ctx_asked and self.ctx != self.ctx_asked:
            said.append(f"a {self.ctx}-token context instead of {self.ctx_asked}")
        if self.n_gpu_layers is not None and self.n_gpu_layers != self.n_gpu_layers_asked:
            said.append(f"only {self.n_gpu_layers} layers on the GPU (-ngl {self.n_gpu_layers})")
        if self.cpu_layers:
            count = len(self.cpu_layers)
            said.append(
                f"part of the weights of {count} layer{'s' if count != 1 else ''} in system RAM "
                "(-ot)"
            )
        elif self.overrides:
            said.append(f"{len(self.overrides)} tensor placements (-ot)")
        if self.tensor_split:
            said.append(f"a split of {','.join(map(str, self.tensor_split))} across the GPUs")
        return said

    def summary(self) -> str:
        """One line for a person: llama.cpp's answer."""
        where = "system RAM" if self.host else "GPU memory"
        projected = ""
        if self.projected_bytes is not None and self.available_bytes is not None:
            spare = f", keeping {_size(self.margin_bytes)} spare" if self.margin_bytes else ""
            projected = (
                f" (it projects {_size(self.projected_bytes)} of "
                f"{_size(self.available_bytes)} {where}{spare})"
            )
        if self.status == "fits":
            ctx = f"at {self.ctx} tokens" if self.ctx else "as asked"
            return f"llama.cpp: fits {ctx}{projected}."
        if self.status == "reduced":
            return (
                f"llama.cpp: does not fit as asked{projected}; it would run with "
                + "; ".join(self.changes() or ["other parameters"])
                + f" ({' '.join(self.short_args())})."
            )
        return f"llama.cpp: cannot fit it{projected}: {self.reason or 'no reason given'}."

    def short_args(self) -> list[str]:
        """`args` with a long -ot list shortened, for showing."""
        shown = list(self.args)
        for i, arg in enumerate(shown[:-1]):
            if arg in ("-ot", "--override-tensor") and len(shown[i + 1]) > 60:
                shown[i + 1] = f"<{len(self.overrides)} overrides>"
        return shown

    def trace(self) -> list[str]:
        """llama.cpp's own lines about the fit (timestamps and colours removed), then the answer:
        the raw output worth showing."""
        lines = []
        for raw in self.log.splitlines():
            line = _clean(raw)
            if _FIT_LINE.search(line):
                lines.append(line)
        answer = _answer_line(self.stdout)
        if answer:
            lines.append(answer)
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ctx_asked": self.ctx_asked,
            "ctx": self.ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "tensor_split": self.tensor_split,
            "overrides": self.overrides,
            "args": self.args,
            "reason": self.reason,
            "ctx_reduced_from": self.ctx_reduced_from,
            "projected_bytes": self.projected_bytes,
            "available_bytes": self.available_bytes,
            "margin_bytes": self.margin_bytes,
            "host": self.host,
            "argv": self.argv,
            "summary": self.summary(),
            "trace": self.trace(),
            "returncode": self.returncode,
        }


# --- parsing what llama-fit-params prints ---------------------------------------------------

_ANSWER = re.compile(r"^\s*-c\s+(?P<ctx>\d+)\s+-ngl\s+(?P<ngl>-?\d+)(?P<rest>.*)$")
_PROJECTED = re.compile(
    r"projected to use (?P<used>\d+) MiB of (?P<kind>device|host|system) memory vs\.? "
    r"(?P<avail>\d+) MiB"
)
_MARGIN = re.compile(
    r"will leave -?\d+ >= (?P<a>\d+) MiB|free memory target of (?P<b>\d+) MiB"
    r"|margin of (?P<c>\d+) MiB"
)
_REDUCED = re.compile(r"context size reduced from (?P<old>\d+) to (?P<new>\d+)")
_FAILED = re.compile(r"failed to fit params to free device memory: (?P<reason>.+?)\s*$")
_ERROR = re.compile(
    r"encountered an error while trying to fit params to free device memory: (?P<error>.+?)\s*$"
)
_FIT_LINE = re.compile(
    r"(params_fit|fit_params|llama_fit_params|memory_breakdown_print|fitted CLI arguments)"
)
# Reasons that are the fit's own limits, not memory.
_UNSUPPORTED = ("not implemented", "did not provide", "is insufficient")


def _clean(line: str) -> str:
    """The message of a llama.cpp log line: colours, `[pid]`, timestamp and level dropped."""
    return split_prefix(line)[2].rstrip()


def _answer_line(stdout: str) -> str | None:
    found = None
    for raw in stdout.splitlines():
        line = _clean(raw)
        if _ANSWER.match(line):
            found = line.strip()
    return found


def parse_fitted_args(line: str) -> dict[str, Any]:
    """`-c 4096 -ngl 48 -ts 30,18 -ot "blk\\.14\\.ffn_...=CPU,..."` (the -ot value quoted since
    early 2026, bare before) -> {"ctx", "n_gpu_layers", "tensor_split", "overrides", "args"}.
    The -ot patterns hold no spaces, so splitting on whitespace keeps their backslashes."""
    match = _ANSWER.match(line)
    if match is None:
        raise ValueError(f"not a llama-fit-params answer: {line!r}")
    words = line.split()
    parsed: dict[str, Any] = {
        "ctx": int(match["ctx"]),
        "n_gpu_layers": int(match["ngl"]),
        "tensor_split": None,
        "overrides": [],
    }
    args: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1].strip('"') if i + 1 < len(words) else ""
        if word in ("-ts", "--tensor-split"):
            parsed["tensor_split"] = [int(float(v)) for v in value.split(",") if v]
        elif word in ("-ot", "--override-tensor"):
            parsed["overrides"] += [v for v in value.split(",") if v]
        args += [word, value] if word.startswith("-") and i + 1 < len(words) else [word]
        i += 2 if word.startswith("-") else 1
    parsed["args"] = args
    return parsed


def parse_fit_output(
    stdout: str,
    log: str,
    returncode: int,
    *,
    ctx_asked: int | None = None,
    n_gpu_layers_asked: int = -1,
    argv: Sequence[str] = (),
    model: str = "the model",
) -> FitVerdict:
    """The verdict from what llama-fit-params printed (stdout: the answer; log: stderr, or both
    merged). Raises FitParamsFailed (or ModelNotLocal) when it failed for another reason than
    memory."""
    lines = [_clean(raw) for raw in log.splitlines()]
    verdict = FitVerdict(
        status="no",
        ctx_asked=ctx_asked,
        n_gpu_layers_asked=n_gpu_layers_asked,
        argv=list(argv),
        stdout=stdout,
        log=log,
        returncode=returncode,
    )
    for line in lines:
        if (m := _PROJECTED.search(line)) and verdict.projected_bytes is None:
            verdict.projected_bytes = int(m["used"]) * MIB
            verdict.available_bytes = int(m["avail"]) * MIB
            verdict.host = m["kind"] != "device"
        if (m := _MARGIN.search(line)) and verdict.margin_bytes is None:
            verdict.margin_bytes = int(m["a"] or m["b"] or m["c"]) * MIB
        if m := _REDUCED.search(line):
            verdict.ctx_reduced_from = int(m["old"])
    answer = _answer_line(stdout)
    if returncode == 0 and answer is not None:
        parsed = parse_fitted_args(answer)
        verdict.ctx = parsed["ctx"]
        verdict.n_gpu_layers = parsed["n_gpu_layers"]
        verdict.tensor_split = parsed["tensor_split"]
        verdict.overrides = parsed["overrides"]
        verdict.args = parsed["args"]
        if verdict.ctx_reduced_from is not None and verdict.ctx == verdict.ctx_reduced_from:
            verdict.ctx_reduced_from = None
        changed = (
            verdict.ctx_reduced_from is not None
            or (bool(ctx_asked) and verdict.ctx != ctx_asked)
            or verdict.n_gpu_layers != n_gpu_layers_asked
            or bool(verdict.tensor_split)
            or bool(verdict.overrides)
        )
        verdict.status = "reduced" if changed else "fits"
        return verdict
    tail = _tail(stdout, log)
    failed = next((m for line in lines if (m := _FAILED.search(line))), None)
    error = next((m for line in lines if (m := _ERROR.search(line))), None)
    if failed is not None and error is None:
        reason = re.sub(r",?\s*abort$", "", failed["reason"])
        if "set by user" in reason:
            raise FitParamsFailed(
                f"llama.cpp's fit stopped because of the arguments it was given: {reason}.",
                "Leave -ngl, -ts, -ot and --n-cpu-moe out: llama-fit-params chooses them itself.",
                returncode,
                tail,
            )
        if any(b in reason for b in _UNSUPPORTED):
            raise FitParamsFailed(
                f"llama.cpp's fit cannot handle this setup: {reason}.",
                "llama.cpp cannot confirm the fit here (its --fit does not support it); the "
                "estimate still stands.",
                returncode,
                tail,
            )
        verdict.reason = reason
        return verdict
    raise _failure(
        stdout, log, returncode, error=error["error"] if error else None, model=model, tail=tail
    )


def _tail(stdout: str, log: str) -> list[str]:
    lines = [_clean(line) for line in (log + "\n" + stdout).splitlines()]
    return [line for line in lines if line.strip()][-LOG_TAIL_LINES:]


def _failure(
    stdout: str, log: str, returncode: int, *, error: str | None, model: str, tail: list[str]
) -> VerifyError:
    text = log + "\n" + stdout
    shown = "\n".join(tail)
    if "--model is required" in text or "not available in cache (offline mode)" in text:
        return ModelNotLocal(
            f"llama-fit-params reads the model from disk, and {model} is not in llama.cpp's "
            "download cache yet.",
            _download_fix(model),
        )
    if error is not None and "load model" in error:
        detail = next(
            (line for line in tail if "invalid magic" in line or "failed to open" in line), None
        )
        return FitParamsFailed(
            f"llama.cpp could not load {model}"
            + (f" ({detail.split(': ', 1)[-1]})" if detail else "")
            + ".",
            "Check that it is a complete GGUF file (an interrupted download or another format "
            "fails like this): `llama-wizard fit FILE` reads its header; download it again if "
            "it is cut short.",
            returncode,
            tail,
        )
    invalid = re.search(r"error: (invalid argument|unknown value[^:]*): ?(.*)", text)
    if invalid:
        return FitParamsFailed(
            f"llama-fit-params rejected an argument: {invalid[0].strip()}",
            "This llama.cpp build does not know that option; leave it out of the extra "
            "arguments (or build a newer llama.cpp).",
            returncode,
            tail,
        )
    if returncode < 0:
        name = _signal_name(-returncode)
        return FitParamsFailed(
            f"llama-fit-params was killed by {name}. Its last lines:\n{shown}",
            "It crashed while projecting the model's memory: run it by hand with -lv 4 to see "
            "where (`llama-wizard plan --verify --json` prints the command), and report it to "
            "llama.cpp if it persists. The estimate still stands.",
            returncode,
            tail,
        )
    said = f". Its last lines:\n{shown}" if tail else ""
    if error is None and not any(_FAILED.search(line) for line in tail):
        said += (
            "\n(It gave no reason: llama.cpp logs from a thread and can lose its last lines "
            "when it exits.)"
        )
    return FitParamsFailed(
        f"llama-fit-params failed (exit status {returncode})"
        + (f": {error}" if error else "")
        + said,
        "Run the command by hand to see all of it (`llama-wizard plan --verify --json` prints "
        "it); the estimate still stands.",
        returncode,
        tail,
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _download_fix(model: str) -> str:
    repo, _, quant = model.partition(":")
    include = f' --include "*{quant}*.gguf"' if quant else ""
    return (
        "Launch it once (llama.cpp downloads it into its cache) and check again; or download "
        f"the GGUF yourself (`hf download {repo}{include} --local-dir ~/models`) and choose "
        "that file with --model PATH."
    )


def _size(value: int) -> str:
    from llama_wizard.models.sizes import human_bytes

    return human_bytes(value)


# --- running it -----------------------------------------------------------------------------

# Options of a launch command that change how much memory llama.cpp projects, and that
# llama-fit-params takes (checked against `llama-fit-params --help` at 0c1e570). Placement
# options (-ngl, -ts, -ot, --n-cpu-moe, --cpu-moe) are left out on purpose: their choice is the
# question asked.
_VALUE_OPTIONS = frozenset(
    [
        "-c",
        "--ctx-size",
        "-fa",
        "--flash-attn",
        "-ctk",
        "--cache-type-k",
        "-ctv",
        "--cache-type-v",
        "-b",
        "--batch-size",
        "-ub",
        "--ubatch-size",
        "-np",
        "--parallel",
        "-sm",
        "--split-mode",
        "-mg",
        "--main-gpu",
        "-dev",
        "--device",
        "--rope-scaling",
        "--rope-scale",
        "--rope-freq-base",
        "--rope-freq-scale",
        "--yarn-orig-ctx",
        "-fitt",
        "--fit-target",
        "-fitc",
        "--fit-ctx",
        "--override-kv",
    ]
)
_FLAG_OPTIONS = frozenset(
    [
        "--swa-full",
        "-kvo",
        "--kv-offload",
        "-nkvo",
        "--no-kv-offload",
        "--op-offload",
        "--no-op-offload",
    ]
)
_NGL = ("-ngl", "--gpu-layers", "--n-gpu-layers")
_SOURCE = ("-m", "--model", "-hf", "-hfr", "--hf-repo", "-mu", "--model-url")


def memory_args(args: Sequence[str]) -> list[str]:
    """The part of a launch's arguments that llama-fit-params should see: options that change
    the memory projected (`-c`, `-fa`, `-ctk`, `-np`, ...), in order; the model source,
    placement (`-ngl`, `-ts`, `-ot`, `--n-cpu-moe`) and everything else left out."""
    kept: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if (name in _VALUE_OPTIONS and "=" in arg) or name in _FLAG_OPTIONS:
            kept.append(arg)
        elif name in _VALUE_OPTIONS and i + 1 < len(args):
            kept += [arg, args[i + 1]]
            i += 1
        i += 1
    return kept


def _asked_layers(args: Sequence[str]) -> int:
    value = None
    for i, arg in enumerate(args):
        if arg in _NGL and i + 1 < len(args):
            value = args[i + 1]
        elif arg.split("=", 1)[0] in _NGL and "=" in arg:
            value = arg.split("=", 1)[1]
    if value is None or value == "auto":
        return -1
    if value == "all":
        return -2
    try:
        return int(value)
    except ValueError:
        return -1


def _asked_ctx(args: Sequence[str]) -> int | None:
    ctx = None
    for i, arg in enumerate(args):
        if arg in ("-c", "--ctx-size") and i + 1 < len(args):
            ctx = int(args[i + 1])
        elif arg.startswith("--ctx-size="):
            ctx = int(arg.split("=", 1)[1])
    return ctx


def _is_plan(target: object) -> bool:
    from llama_wizard.tui.plan import Plan

    return isinstance(target, Plan)


def binary_of(target: Plan | str | os.PathLike[str]) -> Path:
    """Where llama-fit-params is: in a plan's build result (`<out_link>/bin`), in a bin
    directory, or the path itself."""
    if _is_plan(target):
        return Path(target.build.out_link).absolute() / "bin" / FIT_PARAMS  # type: ignore[union-attr]
    path = Path(target)  # type: ignore[arg-type]
    return path / FIT_PARAMS if path.is_dir() else path


def has_fit_params(bin_dir: str | os.PathLike[str]) -> bool:
    """Whether a build has llama-fit-params, and with it `--fit` (both came with PR #16653)."""
    return (Path(bin_dir) / FIT_PARAMS).is_file()


def plan_environment(plan: Plan, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a plan's launch runs with (LaunchSpec.environment: base minus the build's
    unset_env, plus its env): the same GPUs are visible to the fit as to the launch."""
    base = os.environ if base is None else base
    return build_environment(base, plan.build.env, plan.build.unset_env)


def local_source(choice: ModelChoice, env: Mapping[str, str] | None = None) -> list[str]:
    """The model as llama-fit-params reads it: `-m FILE` for a local file or a copy in
    llama.cpp's or the Hugging Face cache; else `-hf repo:QUANT --offline` (or `-mu URL
    --offline`), which finds what llama.cpp's own cache holds and never downloads.
    Raises ModelNotLocal for a named file that is not there."""
    from llama_wizard.models.local import find_local_models

    source = choice.source_args()
    if source[0] == "-m":
        path = Path(source[1]).expanduser()
        if not path.is_file():
            raise ModelNotLocal(
                f"The model file {path} is not there: llama-fit-params reads the model from disk.",
                "Check the path (or choose the model again with --model).",
            )
        return ["-m", str(path)]
    if source[0] == "-hf":
        repo = choice.repo.lower()
        quant = choice.quant.upper()
        for found in find_local_models(dict(env) if env is not None else None):
            if (found.repo or "").lower() == repo and (found.quant or "").upper() == quant:
                return ["-m", str(found.path)]
    return [*source, "--offline"]


def verify_fit(
    target: Plan | str | os.PathLike[str],
    model: ModelChoice | str | os.PathLike[str] | Sequence[str] | None = None,
    ctx: int | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> FitVerdict:
    """Ask the build's llama-fit-params whether the model fits, and what it would change.

    target: a Plan (its build's `bin/`, its model, its launch's memory options, its environment)
    or a bin directory / the path of llama-fit-params.
    model: a local GGUF path, llama.cpp source args (`["-m", FILE]`, `["-hf", "repo:Q"]`), or a
    ModelChoice; None: the plan's model.
    ctx: the context to check (`-c`); None: the plan's model's, or without a plan llama.cpp's own
    choice (it starts from the training context and reduces it to fit).
    env: the base environment (default os.environ); a plan's env/unset_env go on top, as for the
    launch.
    extra_args: more llama-fit-params options (`-fa on`, `-np 4`, `--fit-target 2048`).

    Runs one subprocess (no shell) and changes nothing: safe from a worker thread.
    Raises FitParamsMissing, ModelNotLocal, FitTimeout, FitParamsFailed."""
    plan: Plan | None = target if _is_plan(target) else None  # type: ignore[assignment]
    binary = binary_of(target)
    if not binary.is_file():
        raise _missing(binary, plan)
    base = os.environ if env is None else env
    environment = plan_environment(plan, base) if plan is not None else dict(base)
    if model is None:
        if plan is None or plan.model is None:
            raise VerifyError(
                "There is no model to check: the plan has none.",
                "Choose one first (--model owner/repo[:QUANT] or a .gguf path).",
            )
        model = plan.model
    launch_memory: list[str] = []
    if isinstance(model, (str, os.PathLike)):
        source = ["-m", str(Path(model).expanduser())]
        shown = source[1]
        if not Path(shown).is_file():
            raise ModelNotLocal(
                f"The model file {shown} is not there: llama-fit-params reads the model from disk.",
                "Check the path, or download the GGUF first.",
            )
    elif hasattr(model, "source_args"):  # a ModelChoice
        source = local_source(model, environment)
        shown = source[1] if source[0] == "-m" else model.hf_arg
        if ctx is None:
            ctx = model.ctx
        if plan is not None:
            # The plan's launch line when it is this choice; another quant's own flags else.
            same = plan.model is not None and plan.model.hf_arg == model.hf_arg
            launch_memory = memory_args(plan.launch_args() if same else model.launch_args())
    else:
        source = list(model)
        shown = source[1] if len(source) > 1 else " ".join(source)
    if ctx is not None:
        launch_memory = without_options(launch_memory, ("-c", "--ctx-size"))
    argv = [str(binary), *source]
    if ctx is not None:
        argv += ["-c", str(ctx)]
    argv += [*launch_memory, *extra_args, "-lv", "4"]
    asked_ctx = ctx if ctx is not None else _asked_ctx([*launch_memory, *extra_args])
    for _attempt in range(ATTEMPTS):
        stdout, log, returncode = _run(argv, environment, timeout)
        if returncode == 0 or _explained(stdout, log):
            break
    if returncode != 0 and not _explained(stdout, log) and source[0] == "-m":
        # Its reasons were lost every time: say what we can see ourselves.
        magic = _magic(Path(source[1]))
        if magic != b"GGUF":
            raise FitParamsFailed(
                f"{shown} is not a GGUF file (it starts with {magic!r}, not b'GGUF'), so "
                "llama.cpp cannot load it.",
                "Choose the .gguf file itself (a complete download); `llama-wizard fit FILE` "
                "reads its header.",
                returncode,
                _tail(stdout, log),
            )
    return parse_fit_output(
        stdout,
        log,
        returncode,
        ctx_asked=asked_ctx,
        n_gpu_layers_asked=_asked_layers(extra_args),
        argv=argv,
        model=shown,
    )


def _explained(stdout: str, log: str) -> bool:
    """Whether a failed run said why. llama.cpp logs from a thread and `exit(1)` does not wait
    for it (common/log.cpp: "logs may be lost if not flushed before the program exits"), so the
    reason is sometimes missing: the run is then repeated."""
    lines = [_clean(line) for line in (log + "\n" + stdout).splitlines()]
    return any(
        _FAILED.search(line) or _ERROR.search(line) or line.startswith("error: ") for line in lines
    )


def _magic(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(4)
    except OSError:
        return b""


def _missing(binary: Path, plan: Any) -> FitParamsMissing:
    if plan is not None and not Path(plan.build.out_link).exists():
        return FitParamsMissing(
            f"{plan.build.output} is not built yet, so llama.cpp cannot be asked whether the "
            "model fits.",
            "Build it first (llama-wizard build); until then the estimate is all there is.",
        )
    return FitParamsMissing(
        f"This build has no {FIT_PARAMS} ({binary} does not exist): it is a llama.cpp older "
        "than December 2025, or a package that leaves the tool out.",
        "Build a newer llama.cpp (a newer flake revision) to have llama.cpp confirm the fit; "
        "until then the estimate is all there is.",
    )


def _run(argv: list[str], env: Mapping[str, str], timeout: float) -> tuple[str, str, int]:
    from llama_wizard.detect.process import run_bounded

    try:
        return run_bounded(argv, dict(env), timeout)
    except OSError as error:
        raise FitParamsFailed(
            f"{argv[0]} could not be started: {error.strerror or error}.",
            "Check that it exists and is executable (rebuild: llama-wizard build).",
            None,
            [],
        ) from None
    except subprocess.TimeoutExpired:
        raise FitTimeout(
            f"{FIT_PARAMS} did not answer in {timeout:g} s (it was stopped).",
            "A slow GPU driver start or a very large model can take long: try again with a "
            "longer timeout; the estimate still stands.",
        ) from None


# --- our estimate beside llama.cpp's answer ---------------------------------------------------


@dataclass
class Agreement:
    agree: bool
    estimate: str  # our verdict: fits, tight or no
    llamacpp: str  # llama.cpp's: fits, reduced or no
    summary: str  # one line, always
    explanation: str | None = None  # one line, when they disagree

    def to_json(self) -> dict[str, Any]:
        return {
            "agree": self.agree,
            "estimate": self.estimate,
            "llamacpp": self.llamacpp,
            "summary": self.summary,
            "explanation": self.explanation,
        }


def compare(estimate_choice: ModelChoice, verdict: FitVerdict) -> Agreement:
    """Whether our estimate and llama.cpp agree. They agree when we say it fits (or fits
    tightly) and llama.cpp keeps the context and every layer, or when we say it does not fit
    and llama.cpp must reduce the layers/context or cannot fit it at all."""
    choice = estimate_choice
    ours = choice.verdict
    words = {"fits": "fits", "tight": "fits, tightly", "no": "does NOT fit"}.get(ours, ours)
    what = f"{choice.name} {choice.quant} at {choice.ctx} tokens"
    estimate = f"{_size(choice.total_bytes)} of {_size(choice.memory_bytes)}"
    llama_says = verdict.summary().removeprefix("llama.cpp: ").rstrip(".")
    other_ctx = (
        f" (llama.cpp was asked about {verdict.ctx_asked} tokens, not {choice.ctx})"
        if verdict.ctx_asked and verdict.ctx_asked != choice.ctx
        else ""
    )
    we_fit = ours in ("fits", "tight")
    agree = we_fit == (verdict.status == "fits")
    if agree:
        return Agreement(
            True, ours, verdict.status, f"llama.cpp agrees that {what} {words}: {llama_says}."
        )
    if we_fit and verdict.status == "reduced":
        why = (
            "it sees less free memory than the estimate assumed (other programs, or the "
            f"{_size(verdict.margin_bytes or 1024 * MIB)} it keeps spare)"
        )
        explanation = (
            f"The estimate says {what} {words} ({estimate}), but llama.cpp would not run it as "
            f"asked: {'; '.join(verdict.changes())} — {why}{other_ctx}."
        )
    elif we_fit:
        explanation = (
            f"The estimate says {what} {words} ({estimate}), but llama.cpp cannot fit it: "
            f"{verdict.reason or 'no reason given'}{other_ctx}."
        )
    else:
        explanation = (
            f"The estimate says {what} does NOT fit ({estimate}), but llama.cpp fits it as "
            f"asked{_projection(verdict)}: the estimate is cautious here, and it can run as "
            f"chosen{other_ctx}."
        )
    return Agreement(
        False,
        ours,
        verdict.status,
        f"llama.cpp and the estimate disagree: {llama_says}.",
        explanation,
    )


def _projection(verdict: FitVerdict) -> str:
    if verdict.projected_bytes is None or verdict.available_bytes is None:
        return ""
    return f" (it projects {_size(verdict.projected_bytes)} of {_size(verdict.available_bytes)})"


# --- launch flags that keep llama.cpp's fit working -----------------------------------------

PLACEMENT_OPTIONS = {
    "-ngl": 1, "--gpu-layers": 1, "--n-gpu-layers": 1,
    "-ts": 1, "--tensor-split": 1,
    "-ot": 1, "--override-tensor": 1,
    "-ncmoe": 1, "--n-cpu-moe": 1,
    "-cmoe": 0, "--cpu-moe": 0,
}  # fmt: skip


def fit_flags(verdict: str, gpu: bool, has_fit: bool = True) -> list[str] | None:
    """How the launch places the model's layers, from our estimate's verdict.

    - CPU build (`gpu` False): [] — no layers to offload (any -ngl only draws a warning).
    - "fits" on a GPU, or a build without `--fit` (`has_fit` False, e.g. no llama-fit-params in
      it): None — keep the estimate's own placement (`-ngl 99`, its `-ts` and `--n-cpu-moe`).
      With --fit this costs nothing: llama.cpp changes nothing when the projection fits.
    - "tight" or "no" on a GPU build with `--fit`: `["--fit", "on"]` and no -ngl/-ts/-ot/
      --n-cpu-moe, so that llama.cpp's own fit may offload fewer layers (or MoE experts) when
      the model does not fit after all; `-ngl 99` would make it give up ("n_gpu_layers already
      set by user") and run out of GPU memory. `-c` stays: the chosen context is kept and the
      fit moves weights to system RAM instead (slower, but it runs). `--fit on` is llama.cpp's
      default; saying it shows the intent in the printed command and wins over LLAMA_ARG_FIT.

    Returns the flags that replace the placement options, or None for "keep them"."""
    if not gpu:
        return []
    if not has_fit or verdict == "fits":
        return None
    return ["--fit", "on"]


def apply_fit_rule(args: Sequence[str], verdict: str, gpu: bool, has_fit: bool = True) -> list[str]:
    """A model's launch arguments with the placement options replaced as fit_flags says: for
    model_args (`rest = apply_fit_rule(rest, model.verdict, gpu, has_fit)`). The flags go where
    -ngl was (else at the end)."""
    flags = fit_flags(verdict, gpu, has_fit)
    if flags is None:
        return list(args)
    kept: list[str] = []
    position: int | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name in PLACEMENT_OPTIONS:
            if position is None:
                position = len(kept)
            i += 1 + (PLACEMENT_OPTIONS[name] if "=" not in arg else 0)
            continue
        if name in ("-fit", "--fit"):  # one say only: ours
            i += 1 if "=" in arg else 2
            continue
        kept.append(arg)
        i += 1
    at = len(kept) if position is None else position
    kept[at:at] = flags
    return kept


__all__ = [
    "Agreement",
    "FitParamsFailed",
    "FitParamsMissing",
    "FitTimeout",
    "FitVerdict",
    "ModelNotLocal",
    "SimulatedMachine",
    "VerifyError",
    "apply_fit_rule",
    "compare",
    "fit_flags",
    "has_fit_params",
    "memory_args",
    "parse_fit_output",
    "parse_fitted_args",
    "plan_environment",
    "verify_fit",
]
