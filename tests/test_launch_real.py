"""Launching real llama.cpp (issue 10, observations 1-5): the CPU tools built by scripts/llamacpp,
packaged by the fixture flake tests/fixtures/flakes/llamacpp and built with the real `nix build`
by the wizard, run on GGUF files from tests/gguf_factory.py through `llama-wizard run`, plain
mode and the full-screen Launch step.

- speeds: llama.cpp's own timing lines (today's `common_perf_print`, the server's per-request
  `slot print_timing`) give `timing` events and the summary every face shows;
- readiness: llama-server's `srv  llama_server: listening on ...` gives `listening`;
- a crash (a real SIGSEGV of the real program) is reported with the signal's name, the last
  lines of its log and what to try;
- the program dies with the wizard, even when the wizard is killed with SIGKILL;
- every flag the wizard's plans emit, for each backend, is accepted by the real binaries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import queue
import re
import resource
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from textual.widgets import Log, RadioButton, Static

from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.tui.launch import LaunchedProcess, LaunchSpec
from llama_wizard.tui.llamacpp_log import is_listening
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.plain.prompters import AutoPrompter
from llama_wizard.tui.plain.wizard import PlainWizard
from llama_wizard.tui.session import Overrides, WizardSession
from tests.helpers import run_cli, wizard_executable
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_gpt_oss_gguf,
    fixture_llamacpp_bin,
    fixture_llamacpp_flake,
    fixture_moe_gguf,
    free_port,
)
from tests.test_launch import build
from tests.wizard_helpers import built_to_launch, make_app, wait_for

SPEEDS = re.compile(r"prompt [\d.]+ tokens/s · generation [\d.]+ tokens/s \(llama\.cpp's figures\)")
# What llama.cpp's argument parser says about an argument it does not take as given.
REFUSED = re.compile(
    r"unknown argument|invalid argument|error while handling argument|deprecat"
    r"|specified multiple times",
    re.IGNORECASE,
)
LOADED = "system_info:"  # llama-completion's line once the model is loaded, before generating


@pytest.fixture(autouse=True)
def no_core_dumps() -> Iterator[None]:
    """The crash tests SIGSEGV real programs: no core files (the programs inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def built(flake: str) -> str:
    """`llama-wizard build --flake FLAKE` for this machine (real nix; the output is cached)."""
    result = run_cli("build", "--flake", flake, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return flake


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie (dead, waiting to be reaped)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Wizard:
    """`llama-wizard ARGS` in a subprocess; a thread collects its stdout lines (JSON events with
    --json) and its stderr lines."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [wizard_executable(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        for name in ("stdout", "stderr"):
            threading.Thread(target=self._read, args=(name,), daemon=True).start()

    def _read(self, name: str) -> None:
        for line in getattr(self.popen, name):
            self._queue.put((name, line.rstrip("\n")))
        self._queue.put((name, None))

    def _take(self, timeout: float) -> bool:
        try:
            name, line = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is not None:
            getattr(self, name).append(line)
        return True

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout]

    def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict:
        """The first event (JSON mode) that satisfies predicate, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            left = deadline - time.monotonic()
            if left <= 0 or (not self._take(left) and self.popen.poll() is not None):
                tail = "\n".join((self.stdout + self.stderr)[-30:])
                raise AssertionError(f"no such event; the wizard's last lines:\n{tail}")

    def until_stderr(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.stderr):
            left = deadline - time.monotonic()
            assert left > 0, "\n".join(self.stderr[-30:])
            self._take(left)

    def finish(self, timeout: float = 60) -> int:
        code = self.popen.wait(timeout=timeout)
        while self._take(2):  # the rest of both streams, until both have ended
            pass
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


@contextlib.contextmanager
def wizard(*args: str) -> Iterator[Wizard]:
    running = Wizard(*args)
    try:
        yield running
    finally:
        running.kill()


def get_json(url: str, body: dict | None = None, timeout: float = 60) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


# --- 1. speeds ---------------------------------------------------------------------------------


def test_run_json_streams_tokens_and_llama_cpp_s_speeds(llamacpp_flake, dense_gguf) -> None:
    flake = built(llamacpp_flake)
    result = run_cli("run", "--json", "--flake", flake, "--model", str(dense_gguf), "-n", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    started = next(e for e in events if e["event"] == "started")
    assert started["program"] == "llama-completion"
    assert started["argv"].count("-m") == 1 and str(dense_gguf) in started["argv"]
    text = "\n".join(
        e["line"] for e in events if e["event"] == "output" and e["stream"] == "stdout"
    )
    assert text.startswith("The capital of France is") and len(text) > len(
        "The capital of France is"
    )
    timings = [e for e in events if e["event"] == "timing"]
    assert [t["kind"] for t in timings] == ["prompt", "generation"]
    last = timings[-1]
    assert last["prompt_tokens"] > 0 and last["prompt_tokens_per_second"] > 0
    assert last["generated_tokens"] == 7  # -n 8: the first comes from the prompt's evaluation
    assert last["generation_tokens_per_second"] > 0
    exited = events[-1]
    assert exited["event"] == "exited" and exited["status"] == 0 and exited["signal"] is None
    assert exited["timing"] == {k: last[k] for k in exited["timing"]}
    assert exited["message"] == "llama-completion exited with status 0." and exited["fix"] is None

    plain = run_cli("run", "--flake", flake, "--model", str(dense_gguf), "-n", "8")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert SPEEDS.search(plain.stderr), plain.stderr[-2000:]
    assert plain.stdout.startswith("The capital of France is")


# --- 2. readiness, the server answering, stopping ------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])  # fmt: skip
def test_run_server_is_up_answers_and_stops_with_nothing_left(
    llamacpp_flake, dense_gguf, stop: signal.Signals
) -> None:
    flake = built(llamacpp_flake)
    port = free_port()
    args = ["run", "--server", "--json", "--flake", flake, "--model", str(dense_gguf),
            "--port", str(port)]  # fmt: skip
    with wizard(*args) as running:
        listening = running.until(lambda e: e["event"] == "listening")
        url = f"http://127.0.0.1:{port}/"
        assert listening["url"] == url and "llama_server: listening on" in listening["line"]
        started = running.until(lambda e: e["event"] == "started")
        server = started["pid"]
        assert psutil.Process(server).ppid() == running.popen.pid
        if stop == signal.SIGINT:
            assert get_json(f"{url}health") == {"status": "ok"}
            # The wizard's own first request comes first, and its timing event with it: this
            # test's request is the one with another task number.
            running.until(lambda e: e["event"] in ("first_answer", "first_answer_error"))
            first = running.until(lambda e: e["event"] == "timing" and e["kind"] == "generation")
            body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
            answer = get_json(f"{url}v1/chat/completions", body)
            assert answer["object"] == "chat.completion"
            assert answer["choices"][0]["message"]["role"] == "assistant"
            # llama-server's per-request `slot print_timing` lines give timing events too.
            timing = running.until(
                lambda e: e["event"] == "timing"
                and e["kind"] == "generation"
                and e["task"] != first["task"]
            )
            assert timing["task"] is not None and timing["slot"] is not None
            assert timing["generated_tokens"] == answer["usage"]["completion_tokens"]
            assert timing["generation_tokens_per_second"] > 0
            assert timing["prompt_tokens_per_second"] > 0
        running.popen.send_signal(stop)
        code = running.finish()
    events = running.events
    assert any(e["event"] == "stopping" and e["signal"] == stop.name for e in events)
    exited = events[-1]
    assert exited["event"] == "exited" and exited["message"] == "llama-server stopped."
    assert exited["status"] == code and exited["fix"] is None
    assert wait_gone(server, 5)


def test_run_server_notes_when_it_is_up(llamacpp_flake, dense_gguf) -> None:
    flake = built(llamacpp_flake)
    port = free_port()
    args = ["run", "--server", "--flake", flake, "--model", str(dense_gguf), "--port", str(port)]
    with wizard(*args) as running:
        running.until_stderr(f"llama-server is up: http://127.0.0.1:{port}/")
        running.popen.send_signal(signal.SIGINT)
        running.finish()
    assert any(line == "llama-server stopped." for line in running.stderr)


# --- 3. a crash --------------------------------------------------------------------------------


def test_run_reports_a_crash_with_the_signal_the_log_and_what_to_try(
    llamacpp_flake, dense_gguf
) -> None:
    flake = built(llamacpp_flake)
    base = ["run", "--flake", flake, "--model", str(dense_gguf), "-n", "100000"]
    with wizard(*base, "--json", "--", "--ignore-eos") as running:
        running.until(lambda e: e["event"] == "output" and LOADED in e["line"])
        program = running.until(lambda e: e["event"] == "started")["pid"]
        os.kill(program, signal.SIGSEGV)
        code = running.finish()
    assert code == 139
    exited = running.events[-1]
    assert exited["event"] == "exited" and exited["signal"] == "SIGSEGV"
    assert exited["returncode"] == -signal.SIGSEGV and exited["status"] == 139
    assert "SIGSEGV" in exited["message"] and "segmentation fault" in exited["message"]
    assert "-ngl" in exited["fix"] and "--ctx" in exited["fix"]

    with wizard(*base, "--", "--ignore-eos") as running:
        running.until_stderr(LOADED)
        program = next(p.pid for p in psutil.Process(running.popen.pid).children())
        os.kill(program, signal.SIGSEGV)
        assert running.finish() == 139
    text = "\n".join(running.stderr)
    assert (
        "llama-completion was ended by SIGSEGV (signal 11, exit status 139): it crashed "
        "(a segmentation fault)." in text
    )
    report = text[text.index("was ended by SIGSEGV") :]
    assert "The last lines of its log:" in report and LOADED in report
    assert "a lower -ngl" in report and "report it to llama.cpp" in report


def crash_spec(llamacpp_bin: Path, model: Path) -> LaunchSpec:
    return LaunchSpec("llama-completion", str(llamacpp_bin / "llama-completion"),
                      ["-m", str(model), "-c", "2048", "-n", "100000", "-no-cnv",
                       "--ignore-eos", "-p", "hello"])  # fmt: skip


class CrashOn(io.StringIO):
    """Plain mode's output: once `text` is written, the launched program gets SIGSEGV."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.wizard: PlainWizard | None = None
        self.sent = False

    def write(self, s: str) -> int:
        written = super().write(s)
        if self.text in s and not self.sent and self.wizard and self.wizard.process:
            self.sent = True
            os.kill(self.wizard.process.pid, signal.SIGSEGV)
        return written


def test_plain_mode_reports_a_crash(llamacpp_bin, dense_gguf, tmp_path, monkeypatch) -> None:
    out = CrashOn(LOADED)
    machine = Machine(SystemRoot(str(tmp_path)), dict(os.environ))
    wizard_ = PlainWizard(WizardSession(machine), AutoPrompter(out=out), out=out, err=out)
    out.wizard = wizard_
    monkeypatch.setattr(wizard_, "make_spec", lambda program: crash_spec(llamacpp_bin, dense_gguf))
    assert wizard_.launch("llama-completion") == 139
    assert out.sent
    text = out.getvalue()
    report = text[text.index("llama-completion was ended by SIGSEGV") :]
    assert report.startswith(
        "llama-completion was ended by SIGSEGV (signal 11, exit status 139): it crashed"
    )
    assert "The last lines of its log:" in report and LOADED in report
    assert "fix: Try a smaller context (--ctx) or quant" in report
    assert wizard_.last_exit is not None and wizard_.last_exit.signal == "SIGSEGV"


async def test_launch_step_reports_a_crash_and_says_when_the_server_is_up(
    llamacpp_flake, dense_gguf, tmp_path
) -> None:
    app = make_app(tmp_path, "no-gpu", flake=llamacpp_flake, model=str(dense_gguf))
    async with app.run_test(size=(120, 40)) as pilot:
        await built_to_launch(pilot, app)
        app.session.choices.n_predict = 100000
        await pilot.press("ctrl+r")
        log = app.screen.query_one("#launch-output", Log)
        await wait_for(lambda: any(LOADED in line for line in log.lines))
        assert app.launched is not None
        os.kill(app.launched.pid, signal.SIGSEGV)
        await wait_for(lambda: not app.launch_running)
        await pilot.pause()
        status = str(app.screen.query_one("#launch-status", Static).content)
        assert "llama-completion was ended by SIGSEGV (signal 11, exit status 139)" in status
        assert "its last lines are in the log below" in status and "a lower -ngl" in status

        app.screen.query_one("#port").value = str(free_port())
        app.screen.query_one("#llama-server", RadioButton).value = True
        await pilot.pause()
        await pilot.press("ctrl+r")
        await wait_for(
            lambda: "is up" in str(app.screen.query_one("#launch-status", Static).content)
        )
        status = str(app.screen.query_one("#launch-status", Static).content)
        assert status.startswith(f"llama-server is up: {app.session.server_url()}")
        server = app.launched
        assert server is not None and server.listening_url is not None
        assert get_json(f"{app.session.server_url()}health") == {"status": "ok"}
        await pilot.press("ctrl+s")
        await wait_for(lambda: not app.launch_running)
        await pilot.pause()
        assert str(app.screen.query_one("#launch-status", Static).content) == (
            "llama-server stopped."
        )
        assert wait_gone(server.pid, 5)
        await pilot.press("q")


# --- 4. the program dies with the wizard ---------------------------------------------------------


def test_llama_server_dies_when_the_wizard_is_killed(llamacpp_flake, dense_gguf) -> None:
    """`kill -9` of `llama-wizard run --server` used to leave llama-server serving (its own
    session, re-parented to PID 1): its parent-death signal now ends it."""
    flake = built(llamacpp_flake)
    port = free_port()
    args = ["run", "--server", "--json", "--flake", flake, "--model", str(dense_gguf),
            "--port", str(port)]  # fmt: skip
    with wizard(*args) as running:
        running.until(lambda e: e["event"] == "output" and is_listening(e["line"]) is not None)
        server = running.until(lambda e: e["event"] == "started")["pid"]
        running.popen.send_signal(signal.SIGKILL)
        running.popen.wait(timeout=10)
        assert wait_gone(server, 5), f"llama-server {server} outlived the wizard"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_a_program_started_from_a_thread_that_ends_keeps_running(llamacpp_bin, dense_gguf) -> None:
    """The parent-death signal belongs to the thread that forked: a Textual worker starts the
    program and then ends, and the program must not die with it (only with the wizard)."""
    port = free_port()
    spec = LaunchSpec("llama-server", str(llamacpp_bin / "llama-server"),
                      ["-m", str(dense_gguf), "-c", "2048", "--host", "127.0.0.1",
                       "--port", str(port)])  # fmt: skip
    started: list[LaunchedProcess] = []
    worker = threading.Thread(target=lambda: started.append(LaunchedProcess.start(spec)))
    worker.start()
    worker.join()
    (process,) = started
    try:
        deadline = time.monotonic() + 60
        while process.listening_url is None:
            assert process.returncode is None and time.monotonic() < deadline
            process.lines(0.1)
        time.sleep(0.5)  # well after the thread that started it has ended
        assert process.returncode is None
        assert get_json(f"http://127.0.0.1:{port}/health") == {"status": "ok"}
    finally:
        process.stop()
    assert process.exit_report().message == "llama-server stopped."


# --- 5. every flag the wizard emits, as the real binaries take it --------------------------------

FLAG_CASES = {
    # case: profile, model (a catalogue repo[:QUANT], or "dense" for the GGUF), the GGUF run in
    # its place, the flags the plan must have, the flake output it builds.
    "2x-mi50": ("2x-mi50", "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF", "moe_gguf",
                ["-ngl", "-fa", "--jinja", "-ts"], "rocm-gfx906"),
    "rtx4090": ("rtx4090", "dense", "dense_gguf", ["-ngl", "-fa"], "cuda"),
    # Over the GPU's memory: the moe-offload mode puts the experts of the first layers in RAM
    # (-ngl 99 --n-cpu-moe N, never --fit, which gives up when the layers are placed)...
    "rtx4090-moe": ("rtx4090", "unsloth/Qwen3-30B-A3B-GGUF:Q6_K", "moe_gguf",
                    ["-ngl", "-fa", "--n-cpu-moe"], "cuda"),
    # ...tight all on the GPU: llama.cpp's own --fit places the layers...
    "rtx4090-tight": ("rtx4090", "unsloth/Qwen3-30B-A3B-GGUF:Q5_K_M", "moe_gguf",
                      ["--fit", "-fa"], "cuda"),
    # ...and a build without --fit keeps the estimate's -ngl 99.
    "rtx4090-tight-no-fit": ("rtx4090", "unsloth/Qwen3-30B-A3B-GGUF:Q5_K_M", "moe_gguf",
                             ["-ngl", "-fa"], "cuda"),
    "no-gpu": ("no-gpu", "dense", "dense_gguf", [], "default"),
    # 16 GiB read from sysfs (lmem_total_bytes): gpt-oss-20b is tight there, so --fit places it.
    "intel-arc-a770": ("intel-arc-a770", "ggml-org/gpt-oss-20b-GGUF", "gpt_oss_gguf",
                       ["--fit", "-fa", "--jinja"], "vulkan"),
}  # fmt: skip


def substituted(args: list[str], model: Path, replace: dict[str, str]) -> list[str]:
    """The plan's args with the model source (its first two words) as `-m MODEL` and the values
    of the options in `replace` changed."""
    assert args[0] in ("-hf", "-m", "-mu"), args
    out = ["-m", str(model), *args[2:]]
    for option, value in replace.items():
        out[out.index(option) + 1] = value
    return out


def run_through(spec: LaunchSpec, *, server: bool) -> list[str]:
    """Run a spec as the wizard does (LaunchedProcess, the plan's environment) to the end, or
    for a server until it listens and then stopped; its output lines."""
    process = LaunchedProcess.start(spec)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while not process.finished and time.monotonic() < deadline:
            lines += [line for _stream, line in process.lines(0.1)]
            if server and process.listening_url:
                break
    finally:
        process.stop()
    lines += [line for _stream, line in process.lines(0)]
    if server:
        assert process.listening_url, "\n".join(lines[-30:])
    else:
        assert process.returncode == 0, "\n".join(lines[-30:])
    return lines


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_every_flag_of_the_plan_is_accepted_by_the_real_binaries(
    request, simulated, llamacpp_flake, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, repo, gguf_fixture, flags, output = FLAG_CASES[case]
    if case.endswith("-no-fit"):
        monkeypatch.setattr("llama_wizard.tui.launch._has_fit", lambda plan: False)
    gguf: Path = request.getfixturevalue(gguf_fixture)
    box = simulated(profile)
    machine = Machine(SystemRoot(box.root), box.env(), simulated=box.name)
    named, _, quant = (str(gguf) if repo == "dense" else repo).partition(":")
    overrides = Overrides(flake=llamacpp_flake, model=named, quant=quant or None)
    session = WizardSession(machine, None, overrides)
    plan = session.make_plan()
    assert plan.build.output == output
    build(plan)
    for program in ("llama-completion", "llama-server"):
        session.set_launch(program=program, host="127.0.0.1", port=free_port())
        spec = session.launch_spec()
        assert Path(spec.binary).is_file()
        for flag in flags:
            assert flag in spec.args, (flag, spec.args)
        if "--fit" not in flags:  # placed by the mode (or no --fit in the build): never both
            assert "--fit" not in spec.args, spec.args
        if "-fa" not in flags:  # a CPU build: no GPU flags at all
            assert "-ngl" not in spec.args and "-fa" not in spec.args
        args = substituted(spec.args, gguf, {"-n": "1"} if program == "llama-completion" else {})
        if case == "rtx4090" and "-ctk" not in args:
            args += ["-ctk", "q8_0", "-ctv", "q8_0"]  # as `run -- -ctk q8_0 -ctv q8_0` adds
        lines = run_through(dataclasses.replace(spec, args=args),
                            server=program == "llama-server")  # fmt: skip
        refused = [line for line in lines if REFUSED.search(line)]
        assert refused == [], f"{program} {args}:\n" + "\n".join(refused)
        if program == "llama-server":
            assert "--host" in args and "--port" in args
            listening = [line for line in lines if "listening on" in line]
            port = args[args.index("--port") + 1]
            assert listening and listening[-1].endswith(f"http://127.0.0.1:{port}")
