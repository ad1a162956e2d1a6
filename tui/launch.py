"""Launching llama.cpp from the plan: the command line and environment (`LaunchSpec`), what
llama.cpp says as it runs (`Timing`: its speed figures, read by tui/llamacpp_log.py, the one
parser of its output; readiness with `is_listening`), how it ended (`describe_exit` ->
`ExitReport`: the words `run`, plain mode and the Launch step all use), and the running program
(`LaunchedProcess`).

The program runs in its own session (so the terminal's Ctrl-C reaches only the wizard, which
stops it on purpose), with stdin closed and stdout/stderr read line by line by two threads.
Stopping it sends SIGINT to its process group (llama.cpp prints its timings and exits), then
SIGTERM, then SIGKILL after a grace period, and finally kills anything of its group or tree
that is still there. No shell is involved anywhere: argv lists only.

It dies with the wizard, even one killed with SIGKILL (its own session means no terminal hangup
reaches it, and it would be re-parented to init and go on serving): on Linux it is started with
a parent-death signal (prctl PR_SET_PDEATHSIG, SIGTERM). That signal follows the *thread* that
forked the child, so every program is forked by one launcher thread that lives as long as the
wizard (`_Spawner`), never by the Textual worker or other short-lived thread that asked for it.

Secrets (HF_TOKEN, API keys) are never part of a printed command: `shell_command()` and
`display_argv()` leave them out; the process itself inherits them from the base environment
(llama.cpp's -hf reads HF_TOKEN).
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llama_wizard.detect.errors import ActionableError
from llama_wizard.detect.process import kill_leftovers, stop_process_tree
from llama_wizard.tui.llamacpp_log import TimingLine, is_listening, parse_timing

if TYPE_CHECKING:
    from llama_wizard.tui.plan import Plan

PROGRAMS = ("llama-completion", "llama-server")
DEFAULT_PROMPT = "The capital of France is"
LEFTOVER_SECONDS = 2.0  # after the program exits, how long its leftovers may hold its output
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY)", re.IGNORECASE)
# llama.cpp options whose value is a secret, and the variable a person would keep it in.
SECRET_OPTIONS = {"--api-key": "LLAMA_API_KEY", "--hf-token": "HF_TOKEN", "-hft": "HF_TOKEN"}
# Secret variables a launch cannot go without (shown as a reference that must be set).
REQUIRED_SECRETS = ("LLAMA_API_KEY",)


class LaunchError(ActionableError):
    """The program cannot be launched as planned (no model, not built, cannot start)."""


# --- the command line ------------------------------------------------------------------------


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def _secret_option(arg: str) -> str | None:
    """The variable standing for the value of a secret option (`--api-key`), else None."""
    name = arg.split("=", 1)[0]
    if name in SECRET_OPTIONS:
        return SECRET_OPTIONS[name]
    if name.startswith("-") and is_secret_name(name):
        return name.lstrip("-").upper().replace("-", "_")
    return None


def _redacted(args: Sequence[str]) -> list[str]:
    """args with the values of secret options (--api-key X, --hf-token=X) shown as ***."""
    cleaned: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            cleaned.append("***")
            hide_next = False
        elif _secret_option(arg) is not None and "=" in arg:
            cleaned.append(arg.split("=", 1)[0] + "=***")
        else:
            cleaned.append(arg)
            hide_next = _secret_option(arg) is not None
    return cleaned


@dataclass
class LaunchSpec:
    program: str  # "llama-completion" or "llama-server"
    binary: str  # absolute path, <plan.build.out_link>/bin/<program>
    args: list[str]  # everything after the binary
    env: dict[str, str] = field(default_factory=dict)  # variables to set
    unset_env: list[str] = field(default_factory=list)  # variables to remove

    def argv(self) -> list[str]:
        return [self.binary, *self.args]

    def display_argv(self) -> list[str]:
        """argv for logs and JSON events: secret option values shown as ***."""
        return [self.binary, *_redacted(self.args)]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """What the program runs with: base minus unset_env, plus env."""
        return build_environment(base, self.env, self.unset_env)

    def shell_command(self) -> str:
        """The command as a person types it in a POSIX shell: `env -u A K=V BINARY args...`.
        Secret variables (HF_TOKEN, ...) are left out (set them in your shell), except a key
        the program requires, shown as `LLAMA_API_KEY="${LLAMA_API_KEY:?}"`; secret option
        values appear as a reference to a variable ("$LLAMA_API_KEY")."""
        prefix: list[str] = []
        for name in self.unset_env:
            prefix += ["-u", name]
        prefix += [f"{k}={v}" for k, v in self.env.items() if not is_secret_name(k)]
        parts = [shlex.join(["env", *prefix])] if prefix else []
        # A key the program must have (llama-server's on a reachable address) is a reference
        # that stops the shell when the variable is unset: without it llama-server would start
        # with no key, open to the network.
        required = [f'{k}="${{{k}:?}}"' for k in self.env if k in REQUIRED_SECRETS]
        if required:
            parts = [*(parts or ["env"]), *required]
        parts.append(shell_words([self.binary, *self.args]))
        return " ".join(parts)

    def secret_variables(self) -> list[str]:
        """The variables a person sets for the secrets this launch needs (they are never
        written out): secret options' variables, and secret names in env."""
        names = [v for a in self.args if (v := _secret_option(a)) is not None]
        names += [k for k in self.env if is_secret_name(k)]
        return list(dict.fromkeys(names))


def shell_words(words: Sequence[str]) -> str:
    """shlex.join, except that the value of a secret option is a reference to the variable
    that holds it (`--api-key "${LLAMA_API_KEY}"`), never the value itself."""
    parts: list[str] = []
    pending: str | None = None
    for word in words:
        if pending is not None:
            parts.append(f'"${{{pending}}}"')
            pending = None
            continue
        variable = _secret_option(word)
        if variable is not None and "=" in word:
            parts.append(f'{shlex.quote(word.split("=", 1)[0] + "=")}"${{{variable}}}"')
        else:
            parts.append(shlex.quote(word))
            pending = variable
    return " ".join(parts)


def without_secrets(args: Sequence[str]) -> list[str]:
    """args without secret options and their values."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif _secret_option(arg) is not None:
            skip = "=" not in arg
        else:
            kept.append(arg)
    return kept


GPU_BACKENDS = ("rocm", "cuda", "vulkan")
CPU_BUILD_IGNORES = ("-ngl", "--n-gpu-layers", "--gpu-layers", "--n-cpu-moe", "-ncmoe", "-ts",
                     "--tensor-split")  # fmt: skip


def uses_gpu(plan: Plan) -> bool:
    """A GPU backend: ROCm, CUDA, Vulkan, or the default build on Apple GPUs (Metal)."""
    build = plan.build
    if build.backend in GPU_BACKENDS:
        return True
    return any(g.vendor == "apple" for g in plan.inventory.gpus if g.index in build.gpus)


def model_args(plan: Plan, model_path: str | None = None) -> list[str]:
    """How llama.cpp is told the plan's model, once: the source (`-hf repo:QUANT`, or `-m` the
    cached file once that is downloaded; `-m FILE` or `-mu URL`, or `-m model_path`), `-c`,
    then on a GPU build the placement of the model's run mode (`-ngl 99`; moe-offload adds
    `--n-cpu-moe N`; hybrid `-ngl N`; cpu `-ngl 0`) and `-fa on` (a CPU build has no layers
    to offload: no -ngl), then the model's own flags. The plan shows exactly these.

    llama.cpp's --fit (on by default) moves layers only when the command line does not place
    them (no -ngl, -ts, -ot or --n-cpu-moe: common/fit.cpp gives up with "n_gpu_layers already
    set by user"). So the mode's fixed flags stand alone, and --fit is said instead of them only
    for the gpu mode when the estimate is tight or no mode runs (tui/verify.fit_flags)."""
    model = plan.model
    gpu = uses_gpu(plan)
    if model is None and model_path is None:
        raise LaunchError(
            "There is no model to run: none was named, and the plan has none (no model of the "
            "catalogue fits the chosen GPUs, or there is no GPU to fit one into).",
            "Name one: --model owner/repo[:QUANT] or a .gguf path (`llama-wizard fit MODEL` "
            "says what fits).",
        )
    if model is None:
        source = ["-m", str(Path(model_path or "").expanduser())]
        rest = ["-ngl", "99"] if gpu else []
    else:
        own_source = model.source_args()
        args = model.launch_args()
        rest = args[len(own_source) :]  # the source is given once, below
        if model_path is None and own_source[:1] == ["-hf"]:
            # Downloaded already (llama-wizard pull, the wizard's download, llama.cpp's own -hf):
            # -m the cached file, so llama.cpp neither fetches it again nor needs the network.
            from llama_wizard.models.download import cached_model_path

            model_path = cached_model_path(model)
        source = ["-m", str(Path(model_path).expanduser())] if model_path else own_source
    if not gpu:
        # No layers to place on a CPU build (llama.cpp only warns that it ignores them).
        rest = without_options(rest, CPU_BUILD_IGNORES)
    if model is not None and (model.mode == "gpu" or model.verdict == "no"):
        # Tight or over on the GPUs: llama.cpp's own --fit places the layers (an explicit
        # -ngl 99 makes it give up and run out of GPU memory); see tui/verify.fit_flags. A
        # moe-offload, hybrid or cpu mode that runs keeps its own placement.
        from llama_wizard.tui.verify import apply_fit_rule

        rest = apply_fit_rule(rest, model.verdict, gpu, _has_fit(plan))
    if gpu and not any(a in ("-fa", "--flash-attn") or a.startswith("--flash-attn=") for a in rest):
        # Flash attention, as the reference runs the MI50 (`-ngl 99 -fa on`): less KV memory
        # and faster prompt processing (the flake's ROCm builds set GGML_CUDA_FA). A `-fa` in
        # extra_args comes later on the command line and wins.
        placement = next((i + 2 for i, a in enumerate(rest) if a in ("-ngl", "--fit")), len(rest))
        rest[placement:placement] = ["-fa", "on"]
    device = device_args(plan) if gpu else []
    if device:
        # Before -ts: the split is written in this same order of GPUs (the plan's).
        split = next((i for i, a in enumerate(rest) if a in ("-ts", "--tensor-split")), len(rest))
        rest[split:split] = device
    return [*source, *rest]


def device_args(plan: Plan) -> list[str]:
    """`--device Vulkan1,Vulkan0`: the chosen GPUs as llama.cpp's Vulkan build names them, in
    the plan's GPU order, once its --list-devices was matched to them (tui/devices.py); else
    nothing (ROCm and CUDA are masked by the plan's environment instead)."""
    check = plan.device_check
    if check is None or not check.device_arg or plan.build.backend != "vulkan":
        return []
    return ["--device", check.device_arg]


def _has_fit(plan: Plan) -> bool:
    """Whether the build has llama.cpp's --fit: its llama-fit-params is there (before the build
    exists, assumed: the flake builds a recent llama.cpp)."""
    from llama_wizard.tui.verify import has_fit_params

    bin_dir = Path(plan.build.out_link) / "bin"
    return has_fit_params(bin_dir) or not bin_dir.exists()


def build_environment(
    base: Mapping[str, str], env: Mapping[str, str], unset_env: Iterable[str]
) -> dict[str, str]:
    """What a program of a build runs with: base minus the build's unset_env, plus its env."""
    removed = set(unset_env)
    environment = {k: v for k, v in base.items() if k not in removed}
    environment.update(env)
    return environment


def without_options(args: Sequence[str], names: Iterable[str]) -> list[str]:
    """args without the options `names` and their values (`-c 4096` and `--ctx-size=4096`)."""
    names = set(names)
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif arg.split("=", 1)[0] not in names:
            kept.append(arg)
    return kept


def launch_spec(
    plan: Plan,
    *,
    program: str = "llama-completion",
    prompt: str | None = None,
    n_predict: int = 128,
    host: str = "127.0.0.1",
    port: int = 8080,
    model_path: str | None = None,
    extra_args: Sequence[str] = (),
    check_built: bool = True,
) -> LaunchSpec:
    """The command that runs the plan's model on the plan's build. Raises LaunchError when there
    is no model, or (unless check_built is False: for showing the commands before building) the
    program is not built yet."""
    spec = _spec(plan, program=program, prompt=prompt, n_predict=n_predict, host=host,
                 port=port, model_path=model_path, extra_args=extra_args)  # fmt: skip
    if check_built and not Path(spec.binary).is_file():
        built = Path(plan.build.out_link).exists()
        raise LaunchError(
            f"{program} is not built yet: {spec.binary} does not exist"
            + (" (the build has no such program)." if built else "."),
            f"build it first: llama-wizard build{_build_hint(plan)}",
        )
    return spec


def _build_hint(plan: Plan) -> str:
    if plan.build.output != plan.build.recommended_output:
        return f" {plan.build.output}"
    return ""


def _spec(
    plan: Plan,
    *,
    program: str,
    prompt: str | None,
    n_predict: int,
    host: str,
    port: int,
    model_path: str | None,
    extra_args: Sequence[str],
) -> LaunchSpec:
    """launch_spec without looking at the disk (for the commands the Done step shows)."""
    if program not in PROGRAMS:
        raise ValueError(f"program must be one of {PROGRAMS}, not {program!r}")
    args = model_args(plan, model_path)
    if program == "llama-completion":
        # -no-cnv: with a chat template llama-completion would start a conversation and wait
        # for input; this is a one-shot completion of the prompt.
        args += ["-p", DEFAULT_PROMPT if prompt is None else prompt, "-n", str(n_predict)]
        args.append("-no-cnv")
    else:
        args += ["--host", host, "--port", str(port)]
        if plan.model is not None:
            args += plan.model.server_args()  # -np N: the slots the estimate is for
    args += list(extra_args)
    env = dict(plan.build.env)
    if program == "llama-server":
        from llama_wizard.tui.apikey import API_KEY_VARIABLE, ensure_api_key, needs_api_key

        if needs_api_key(host, extra_args):
            # Reachable from other machines: llama-server requires the wizard's key, given in
            # the environment (an argument would show in `ps`), never printed.
            env[API_KEY_VARIABLE] = ensure_api_key()
    return LaunchSpec(
        program=program,
        binary=str(Path(plan.build.out_link).absolute() / "bin" / program),
        args=args,
        env=env,
        unset_env=list(plan.build.unset_env),
    )


def server_url(host: str, port: int) -> str:
    """Where a browser or client reaches llama-server listening on host:port."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


# --- what llama.cpp says: speeds, readiness, how it ended ----------------------------------------


@dataclass
class Timing:
    """llama.cpp's own speed figures, the latest of each kind: its timing lines are read by
    tui/llamacpp_log.py (the one parser, for every version's format); llama-server prints a
    pair per request, so the figures follow the latest request."""

    prompt_tokens_per_second: float | None = None
    generation_tokens_per_second: float | None = None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None

    def take(self, line: str) -> TimingLine | None:
        """Update from one line of llama.cpp's output; the timing it held, else None. A rate
        llama.cpp prints as inf or nan (no tokens) is recorded as None."""
        timing = parse_timing(line)
        if timing is None:
            return None
        if timing.kind == "prompt":
            self.prompt_tokens_per_second = timing.tokens_per_second
            self.prompt_tokens = timing.tokens
        else:
            self.generation_tokens_per_second = timing.tokens_per_second
            self.generated_tokens = timing.tokens
        return timing

    def summary(self) -> str | None:
        """ "prompt 130.9 tokens/s · generation 20.2 tokens/s (llama.cpp's figures)", as every
        face shows it; None before llama.cpp has printed a speed."""
        parts = []
        if self.prompt_tokens_per_second is not None:
            parts.append(f"prompt {self.prompt_tokens_per_second:.1f} tokens/s")
        if self.generation_tokens_per_second is not None:
            parts.append(f"generation {self.generation_tokens_per_second:.1f} tokens/s")
        return " · ".join(parts) + " (llama.cpp's figures)" if parts else None

    def copy(self) -> Timing:
        return dataclasses.replace(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens_per_second": self.prompt_tokens_per_second,
            "generation_tokens_per_second": self.generation_tokens_per_second,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
        }


# Signals that mean the program itself failed (a crash), with what the name alone does not say.
_CRASH_SIGNALS = {
    "SIGSEGV": "it crashed (a segmentation fault)",
    "SIGBUS": "it crashed (a bus error)",
    "SIGFPE": "it crashed (an arithmetic error)",
    "SIGABRT": "it aborted (llama.cpp does on a failed check, GGML_ASSERT, or a failed GPU call)",
    "SIGTRAP": "it crashed (a trap)",
    "SIGSYS": "it crashed (a bad system call)",
}
TAIL_LINES = 20  # the stderr lines an exit report keeps


@dataclass(frozen=True)
class ExitReport:
    """How a launched program ended, in the words every face uses (`run`, plain mode, the
    Launch step): a one-line message, what to try (None when nothing went wrong), the signal's
    name when a signal ended it, and the last lines of its log (stderr) when it failed."""

    message: str
    fix: str | None
    status: int  # as a shell reports it: 128 + N for signal N
    signal: str | None = None
    last_lines: tuple[str, ...] = ()
    failed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"signal": self.signal, "message": self.message, "fix": self.fix}

    def text_lines(self) -> list[str]:
        """The message and the last lines of the log, as the text faces print them (the fix
        is each face's to show)."""
        tail = ["The last lines of its log:", *(f"  {line}" for line in self.last_lines)]
        return [self.message, *(tail if self.last_lines else [])]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(
    returncode: int | None,
    last_lines: Sequence[str] = (),
    program: str = "llama.cpp",
    *,
    stopped: bool = False,
) -> ExitReport:
    """What to tell the person when `program` ended with `returncode` (Popen's: negative for a
    signal). `stopped`: the wizard stopped it on purpose (ctrl+s, Ctrl-C), so whatever signal
    ended it is no failure. `last_lines`: the end of its log, kept when it failed."""
    if returncode is None:
        return ExitReport(f"{program} is still running.", None, 0)
    status = exit_status(returncode)
    name = _signal_name(-returncode) if returncode < 0 else None
    tail = tuple(last_lines)[-TAIL_LINES:]
    if stopped:
        return ExitReport(f"{program} stopped.", None, status, name)
    if returncode == 0:
        return ExitReport(f"{program} exited with status 0.", None, 0)
    smaller = (
        "a smaller context (--ctx) or quant, or fewer layers on the GPU (a lower -ngl: "
        "`llama-wizard run -- -ngl 20`)"
    )
    report = (
        "report it to llama.cpp (github.com/ggml-org/llama.cpp/issues) with the command and "
        "these last lines of its log"
    )
    if name is None:
        return ExitReport(
            f"{program} exited with status {status}: it failed.",
            "Its last lines say why (a model it cannot load, memory it cannot get, an option "
            f"it does not know). Try {smaller}; or {report}.",
            status,
            None,
            tail,
            failed=True,
        )
    said = f"{program} was ended by {name} (signal {-returncode}, exit status {status})"
    if name == "SIGILL":
        message = f"{said}: it crashed on an instruction this machine's CPU or GPU lacks."
        fix = f"Choose a build output for this hardware (llama-wizard build OUTPUT), or {report}."
    elif name in _CRASH_SIGNALS:
        message = f"{said}: {_CRASH_SIGNALS[name]}."
        fix = f"Try {smaller}; if it crashes again, {report}."
    elif name == "SIGKILL":
        message = (
            f"{said}: something killed it, most often the kernel when memory runs out "
            "(`dmesg | grep -i oom` says)."
        )
        fix = f"If memory ran out, try {smaller}."
    else:
        message = f"{said}: it was stopped from outside the wizard."
        return ExitReport(message, None, status, name)
    return ExitReport(message, fix, status, name, tail, failed=True)


# --- the running program ---------------------------------------------------------------------

# Linux prctl(2): the signal a process gets when the thread that forked it ends.
PR_SET_PDEATHSIG = 1
PARENT_DEATH_SIGNAL = signal.SIGTERM  # llama.cpp stops on it as on Ctrl-C


def _parent_death_hook() -> Any:
    """A preexec_fn that makes the child get PARENT_DEATH_SIGNAL when the wizard dies (even by
    SIGKILL, when no cleanup of ours can run): Linux only; None elsewhere (or without prctl).

    libc is loaded here, before the fork; in the child the hook only calls prctl and getppid.
    If the wizard died between fork and prctl, the child's parent is already someone else (init
    or a subreaper): it then ends itself at once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - every Linux libc has prctl
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), PARENT_DEATH_SIGNAL)

    return hook


class _Spawner:
    """The one thread that starts every launched program.

    The parent-death signal is tied to the *thread* that forked the child, not to the process:
    a program started from a thread that then ends (a Textual worker, which lives only as long
    as one launch call) would get the signal at once. So every program is forked by this
    thread, which is started on first use and lives until the wizard exits: the program then
    dies with the wizard, and only with it. Callers wait for the Popen (or the OSError)."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[dict[str, Any], queue.Queue[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, daemon=True, name="llama-wizard-launcher"
                )
                self._thread.start()
        answer: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._requests.put((kwargs, answer))
        result = answer.get()
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    def _serve(self) -> None:
        while True:
            kwargs, answer = self._requests.get()
            try:
                answer.put(subprocess.Popen(preexec_fn=_parent_death_hook(), **kwargs))  # noqa: PLW1509
            except BaseException as error:  # handed to the caller, who raises it
                answer.put(error)


_SPAWNER = _Spawner()


class LaunchedProcess:
    """A running llama.cpp program. Output arrives as (stream, line) pairs, stream being
    "stdout" or "stderr". As lines are read, `timing` follows llama.cpp's speed figures,
    `listening_url` is set once llama-server says it is up, and `last_lines` keeps the end of
    its log (stderr) for an exit report.

    It dies with the wizard: on Linux it gets SIGTERM when the wizard ends, however it ends
    (kill -9 included), through a parent-death signal set by the thread that starts every
    program (see _Spawner)."""

    def __init__(self, spec: LaunchSpec, popen: subprocess.Popen[bytes]) -> None:
        self.spec = spec
        self._popen = popen
        self.pid = popen.pid
        self.started_at = time.time()
        self.timing = Timing()
        self.listening_url: str | None = None
        self.last_lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.stopped_on_purpose = False  # stop() ended it (not the program itself, or a crash)
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._timing_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stopped = False
        pipes = (("stdout", popen.stdout), ("stderr", popen.stderr))
        self._readers = [
            threading.Thread(target=self._read, args=pipe, daemon=True, name=f"read-{pipe[0]}")
            for pipe in pipes
        ]
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._watch, daemon=True, name="watch").start()

    @classmethod
    def start(cls, spec: LaunchSpec, base_env: Mapping[str, str] | None = None) -> LaunchedProcess:
        """Start the program in its own session, to die with the wizard. Raises LaunchError
        when it cannot start."""
        environment = spec.environment(os.environ if base_env is None else base_env)
        try:
            popen = _SPAWNER.popen(
                args=spec.argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=environment,
                start_new_session=True,
            )
        except OSError as error:
            raise LaunchError(
                f"{spec.program} could not be started: {error.strerror or error}.",
                f"Check that {spec.binary} exists and is executable "
                "(rebuild it: llama-wizard build).",
            ) from None
        return cls(spec, popen)

    def _read(self, stream: str, pipe: IO[bytes] | None) -> None:
        if pipe is None:
            return
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                with self._timing_lock:
                    self.timing.take(line)
                    if stream == "stderr":
                        self.last_lines.append(line)
                    if self.listening_url is None:
                        self.listening_url = is_listening(line)
                self._queue.put((stream, line))

    def timing_now(self) -> Timing:
        """A copy of the speed figures so far (safe to hand to another thread)."""
        with self._timing_lock:
            return self.timing.copy()

    def exit_report(self) -> ExitReport:
        """How it ended (describe_exit), once it has."""
        with self._timing_lock:
            tail = list(self.last_lines)
        return describe_exit(
            self.returncode, tail, self.spec.program, stopped=self.stopped_on_purpose
        )

    def _watch(self) -> None:
        """Once the program has exited on its own, give its output a moment to end; whatever
        still holds its pipes then (a helper it left running in its process group) is killed,
        so the output ends and nothing is left behind."""
        while self._popen.poll() is None:
            time.sleep(0.1)
        deadline = time.monotonic() + LEFTOVER_SECONDS
        while not self.output_closed and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.output_closed:
            kill_leftovers(self.pid, group=True, started_at=self.started_at)

    def lines(self, timeout: float) -> list[tuple[str, str]]:
        """What arrived since the last call: waits up to `timeout` for the first line, then
        takes whatever else is there without waiting."""
        got: list[tuple[str, str]] = []
        try:
            first = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return got
        got.append(first)
        while True:
            try:
                got.append(self._queue.get_nowait())
            except queue.Empty:
                return got

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    @property
    def output_closed(self) -> bool:
        """Both output streams have ended (the program and whatever held its pipes are gone)."""
        return not any(reader.is_alive() for reader in self._readers)

    @property
    def finished(self) -> bool:
        """The program has exited and every line of its output has been taken by lines()."""
        return self.returncode is not None and self.output_closed and self._queue.empty()

    def wait(self, timeout: float | None) -> int | None:
        """The exit status once the program has exited, or None if it is still running after
        timeout seconds."""
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 5.0) -> int:
        """Stop the program and everything it started: SIGINT to its process group, then SIGTERM,
        then SIGKILL, `grace` seconds apart; then kill what is left of its group and tree.
        Waits for it; safe to call again (and after it exited on its own)."""
        with self._stop_lock:
            if not self._stopped:
                if self._popen.poll() is None:
                    self.stopped_on_purpose = True
                stop_process_tree(
                    self._popen,
                    signals=(signal.SIGINT, signal.SIGTERM),
                    grace=grace,
                    group=True,
                    started_at=self.started_at,
                )
                self._stopped = True
                for reader in self._readers:
                    reader.join(timeout=2)
            return self._popen.wait()

    def __enter__(self) -> LaunchedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def exit_status(returncode: int) -> int:
    """A program's returncode as a shell reports it: 128 + N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode
