"""Launching llama.cpp from the plan, for real: the fixture flake's output built with real Nix,
its stand-in llama-completion started through LaunchSpec/LaunchedProcess and through
`llama-wizard run`, and the argv and environment it received checked; timing lines parsed;
stopping leaves no process behind (psutil)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.models.choose import ModelChoice
from llama_wizard.nix.build import follow, read_record, start_build
from llama_wizard.tui.launch import (
    LaunchedProcess,
    LaunchError,
    LaunchSpec,
    Timing,
    describe_exit,
    exit_status,
    launch_spec,
    server_url,
)
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.plan import Plan, make_plan, state_dir
from tests.helpers import run_cli, wizard_executable
from tests.nix_fixtures import fixture_flake

MI50_UUIDS = "GPU-4f0a78a172e620fc,GPU-6e5e588172dc76b6"


# --- helpers (test_commands.py uses them too) ---------------------------------------------------


@pytest.fixture
def flake(tmp_path: Path) -> str:
    return fixture_flake(tmp_path / "flake", "documented")


def plan_for(simulated, profile: str, flake: str, **options) -> Plan:
    box = simulated(profile)
    machine = Machine(SystemRoot(box.root), box.env(), simulated=box.name)
    inventory = detect(machine.root, timeout=5, env=machine.env)
    inventory.simulated = box.name
    return make_plan(machine, inventory, flake_ref=flake, **options)


def build(plan: Plan) -> None:
    """Build the plan's output with real Nix, to the end."""
    build = plan.build
    record = start_build(build.build_argv, build.build_label, state_dir(),
                         out_link=build.out_link, name=build.build_name)  # fmt: skip
    for _ in follow(record):
        pass
    final = read_record(record)
    assert final.status == "succeeded", Path(final.text_log).read_text()


def run_to_end(process: LaunchedProcess, timeout: float = 30) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while not process.finished:
        assert time.monotonic() < deadline, f"still running: {lines}"
        lines += process.lines(0.1)
    return lines


def reported(lines: list[tuple[str, str]], kind: str) -> list[str]:
    """The stand-in's `argv: X` (kind "argv") or `env: NAME=value` (kind "env") lines."""
    return [line.removeprefix(f"{kind}: ") for _, line in lines if line.startswith(f"{kind}: ")]


def env_of(lines: list[tuple[str, str]]) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in reported(lines, "env"))


def alive(marker: str) -> list[str]:
    """Processes (not zombies) whose command line mentions marker."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
            continue
        cmdline = " ".join(process.info.get("cmdline") or [])
        if marker in cmdline:
            found.append(f"{process.pid}: {cmdline}")
    return found


def script(tmp_path: Path, body: str, name: str = "program") -> str:
    """A test-only program: a /bin/sh script under a unique name (the psutil marker)."""
    path = tmp_path / f"{name}-{uuid.uuid4().hex[:8]}"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


# --- LaunchSpec --------------------------------------------------------------------------------


def test_timing_lines_of_every_kind() -> None:
    """Timing reads llama.cpp's lines with tui/llamacpp_log.py (the one parser; its recorded real
    logs are tests/test_llamacpp_log.py's): today's, older ones, the server's."""
    timing = Timing()
    assert timing.summary() is None
    today = (
        "0.01.726.401 I common_perf_print: prompt eval time =     175.71 ms /    23 tokens (    "
        "7.64 ms per token,   130.90 tokens per second)"
    )
    assert timing.take(today) is not None
    assert timing.prompt_tokens_per_second == 130.9 and timing.prompt_tokens == 23
    assert timing.generation_tokens_per_second is None
    assert timing.summary() == "prompt 130.9 tokens/s (llama.cpp's figures)"
    old = (
        "llama_print_timings:        eval time =    5000.12 ms /   127 runs   (   39.37 ms per "
        "token,    25.40 tokens per second)"
    )
    assert timing.take(old) is not None
    assert timing.generation_tokens_per_second == 25.4 and timing.generated_tokens == 127
    assert timing.summary() == (
        "prompt 130.9 tokens/s · generation 25.4 tokens/s (llama.cpp's figures)"
    )
    slot = (
        "1.02.003.004 I slot print_timing: id  3 | task 0 |        eval time =     542.19 ms /    "
        "32 tokens (   16.94 ms per token,    59.02 tokens per second)"
    )
    said = timing.take(slot)
    assert said is not None and (said.slot, said.task) == (3, 0)
    assert timing.generation_tokens_per_second == 59.02
    empty = (
        "llama_perf_context_print: prompt eval time =       0.00 ms /     0 tokens (     nan ms "
        "per token,      inf tokens per second)"
    )
    assert timing.take(empty) is not None and timing.prompt_tokens_per_second is None
    for other in (
        "0.01.726.400 I common_perf_print:        load time =     123.45 ms",
        "llama_perf_context_print:       total time =     170.00 ms /    38 tokens",
        "The capital of France is Paris.",
        "",
    ):
        assert timing.take(other) is None
    assert timing.copy() == timing and timing.copy() is not timing


def test_describe_exit_names_the_signal_and_what_to_try() -> None:
    log = [f"line {i}" for i in range(30)]
    crash = describe_exit(-signal.SIGSEGV, log, "llama-server")
    assert crash.signal == "SIGSEGV" and crash.status == 139 and crash.failed
    assert crash.message.startswith(
        "llama-server was ended by SIGSEGV (signal 11, exit status 139)"
    )
    assert "-ngl" in crash.fix and "--ctx" in crash.fix and "report it" in crash.fix
    assert crash.last_lines == tuple(log[-20:])
    assert crash.to_json() == {"signal": "SIGSEGV", "message": crash.message, "fix": crash.fix}
    abort = describe_exit(-signal.SIGABRT, log, "llama-completion")
    assert "GGML_ASSERT" in abort.message and abort.status == 134
    assert "oom" in describe_exit(-signal.SIGKILL, log).message
    assert "instruction" in describe_exit(-signal.SIGILL, log).message
    outside = describe_exit(-signal.SIGTERM, log, "llama-server")
    assert outside.signal == "SIGTERM" and not outside.failed and outside.fix is None
    assert "from outside" in outside.message
    stopped = describe_exit(-signal.SIGTERM, log, "llama-server", stopped=True)
    assert stopped.message == "llama-server stopped." and not stopped.failed
    assert describe_exit(130, log, "llama-server", stopped=True).status == 130
    ok = describe_exit(0, log, "llama-completion")
    assert (ok.message, ok.fix, ok.signal, ok.failed) == (
        "llama-completion exited with status 0.",
        None,
        None,
        False,
    )
    failed = describe_exit(1, log, "llama-completion")
    assert failed.failed and failed.signal is None and failed.status == 1 and failed.fix
    assert failed.last_lines == tuple(log[-20:])


def test_shell_command_round_trips_and_keeps_secrets_out() -> None:
    nasty = 'it\'s "quoted" $HOME `x` \\ ; & | * \n new line'
    spec = LaunchSpec(
        program="llama-completion",
        binary="/state dir/result-rocm/bin/llama-completion",
        args=["-hf", "org/model:Q4_K_M", "-p", nasty, "--api-key", "sk-123", "--hf-token=hf_xyz"],
        env={"HSA_OVERRIDE_GFX_VERSION": "9.0.6", "HF_TOKEN": "hf_secret", "ODD": "a b'c"},
        unset_env=["HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"],
    )
    command = spec.shell_command()
    for secret in ("hf_secret", "HF_TOKEN=", "sk-123", "hf_xyz"):
        assert secret not in command
    words = shlex.split(command)
    assert words == [
        "env", "-u", "HIP_VISIBLE_DEVICES", "-u", "CUDA_VISIBLE_DEVICES",
        "HSA_OVERRIDE_GFX_VERSION=9.0.6", "ODD=a b'c",
        "/state dir/result-rocm/bin/llama-completion",
        "-hf", "org/model:Q4_K_M", "-p", nasty,
        "--api-key", "${LLAMA_API_KEY}", "--hf-token=${HF_TOKEN}",
    ]  # fmt: skip
    # A real POSIX shell runs it as meant: the secret comes from the shell's own variable.
    echo = LaunchSpec("x", "/bin/echo", ["--api-key", "k", nasty], {}, [])
    shown = subprocess.run(["/bin/sh", "-c", echo.shell_command()], capture_output=True,
                           text=True, env={"LLAMA_API_KEY": "from-shell", "PATH": "/bin"},
                           check=True)  # fmt: skip
    assert shown.stdout == f"--api-key from-shell {nasty}\n"
    assert spec.display_argv()[-2:] == ["***", "--hf-token=***"]
    assert spec.argv() == [spec.binary, *spec.args]


def test_environment_removes_then_sets() -> None:
    spec = LaunchSpec("llama-completion", "/x", [], {"ROCR_VISIBLE_DEVICES": "GPU-1"},
                      ["HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"])  # fmt: skip
    base = {"HIP_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "3", "HF_TOKEN": "t", "PATH": "/b"}
    assert spec.environment(base) == {"ROCR_VISIBLE_DEVICES": "GPU-1", "HF_TOKEN": "t",
                                      "PATH": "/b"}  # fmt: skip
    assert base["HIP_VISIBLE_DEVICES"] == "0"  # not modified


def _choice(repo: str, files: list[str]) -> ModelChoice:
    return ModelChoice(repo=repo, name="m", quant="Q4_K_M", files=files, ctx=4096, max_ctx=None,
                       verdict="fits", file_bytes=1, total_bytes=1, memory_bytes=1,
                       flags=[])  # fmt: skip


def test_model_source_for_hub_repo_local_file_and_url(tmp_path: Path) -> None:
    assert _choice("org/repo-GGUF", ["repo-Q4_K_M.gguf"]).source_args() == [
        "-hf", "org/repo-GGUF:Q4_K_M"
    ]  # fmt: skip
    local = tmp_path / "model-Q4_K_M.gguf"
    local.write_bytes(b"GGUF")
    assert _choice(str(local), [str(local)]).source_args() == ["-m", str(local)]
    url = "https://example.org/m/model-Q4_K_M.gguf"
    assert _choice(url, [url]).source_args() == ["-mu", url]


def test_launch_spec_for_two_mi50s(simulated, flake) -> None:
    plan = plan_for(simulated, "2x-mi50", flake)
    with pytest.raises(LaunchError) as error:
        launch_spec(plan)
    assert "llama-wizard build" in error.value.fix
    unbuilt = launch_spec(plan, prompt="Hello", n_predict=32, check_built=False)
    build(plan)
    spec = launch_spec(plan, prompt="Hello", n_predict=32)
    assert spec == unbuilt
    assert spec.binary == str(Path(plan.build.out_link) / "bin" / "llama-completion")
    assert plan.model is not None
    model_args = plan.model.launch_args()
    # flake.md: `-ngl 99 -fa on` for the MI50s; then the model's own flags (--jinja, -ts).
    assert spec.args[: model_args.index("-ngl") + 2] == model_args[: model_args.index("-ngl") + 2]
    ngl = spec.args.index("-ngl")
    assert spec.args[ngl : ngl + 4] == ["-ngl", "99", "-fa", "on"]
    assert spec.args[-5:] == ["-p", "Hello", "-n", "32", "-no-cnv"]
    assert "--no-display-prompt" not in spec.args
    assert spec.env == plan.build.env and spec.unset_env == plan.build.unset_env
    server = launch_spec(plan, program="llama-server", host="0.0.0.0", port=9000)
    assert server.args[-4:] == ["--host", "0.0.0.0", "--port", "9000"]
    assert "-p" not in server.args and "-n" not in server.args
    assert server_url("0.0.0.0", 9000) == "http://127.0.0.1:9000/"
    local = launch_spec(plan, model_path="/models/x.gguf", extra_args=["--temp", "0.2"])
    assert local.args[:2] == ["-m", "/models/x.gguf"] and local.args[-2:] == ["--temp", "0.2"]


def test_launch_spec_on_the_cpu(simulated, flake, tmp_path) -> None:
    plan = plan_for(simulated, "no-gpu", flake)
    assert plan.build.backend == "cpu"
    with pytest.raises(LaunchError) as error:
        launch_spec(dataclasses.replace(plan, model=None))
    assert "--model" in error.value.fix
    build(plan)
    spec = launch_spec(dataclasses.replace(plan, model=None), model_path=str(tmp_path / "m.gguf"))
    assert spec.args[:2] == ["-m", str(tmp_path / "m.gguf")]
    assert "-ngl" not in spec.args and "-fa" not in spec.args
    if plan.model is not None:  # a model that fits the RAM: no GPU flags either
        spec = launch_spec(plan)
        assert spec.args[:2] == ["-hf", plan.model.hf_arg]
        assert "-ngl" not in spec.args and "-fa" not in spec.args


# --- launching for real ------------------------------------------------------------------------


def test_stand_in_completion_on_two_mi50s(simulated, flake) -> None:
    plan = plan_for(simulated, "2x-mi50", flake)
    build(plan)
    spec = launch_spec(plan, prompt="The capital of France is", n_predict=32)
    base = dict(os.environ, HIP_VISIBLE_DEVICES="1", CUDA_VISIBLE_DEVICES="0")
    process = LaunchedProcess.start(spec, base_env=base)
    lines = run_to_end(process)
    assert process.returncode == 0 and process.stop() == 0
    assert ("stdout", "stand-in llama-completion") in lines
    assert reported(lines, "argv") == spec.args
    env = env_of(lines)
    assert env["HSA_OVERRIDE_GFX_VERSION"] == "9.0.6"
    assert env["ROCR_VISIBLE_DEVICES"] == MI50_UUIDS
    assert env["HIP_VISIBLE_DEVICES"] == "<unset>" and env["CUDA_VISIBLE_DEVICES"] == "<unset>"
    assert ("stdout", "The capital of France is Paris.") in lines
    assert any(stream == "stderr" and "llama_perf_context_print" in line
               for stream, line in lines)  # fmt: skip
    assert process.timing.prompt_tokens_per_second == 600.0
    assert process.timing.generation_tokens_per_second == 200.0


def test_the_program_inherits_hf_token_but_no_command_shows_it(tmp_path) -> None:
    program = script(tmp_path, 'echo "token=$HF_TOKEN"; echo "hip=${HIP_VISIBLE_DEVICES-unset}"\n')
    spec = LaunchSpec("llama-completion", program, ["-hf", "a/b:Q4_K_M"], {"X": "1"},
                      ["HIP_VISIBLE_DEVICES"])  # fmt: skip
    base = dict(os.environ, HF_TOKEN="hf_abcdef", HIP_VISIBLE_DEVICES="0")
    process = LaunchedProcess.start(spec, base_env=base)
    lines = run_to_end(process)
    assert ("stdout", "token=hf_abcdef") in lines and ("stdout", "hip=unset") in lines
    assert "hf_abcdef" not in spec.shell_command() + " ".join(spec.display_argv())


def test_a_program_that_cannot_start_is_a_launch_error(tmp_path) -> None:
    spec = LaunchSpec("llama-completion", str(tmp_path / "missing"), [], {}, [])
    with pytest.raises(LaunchError) as error:
        LaunchedProcess.start(spec)
    assert "llama-wizard build" in error.value.fix


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # llama.cpp's way: SIGINT, a last word, exit 130. Its helper ignores SIGINT (a
        # non-interactive shell's background job does) and is swept up afterwards.
        ("sleep 300 &\ntrap 'echo interrupted; exit 130' INT\nwhile :; do sleep 0.1; done\n", 130),
        # Deaf to SIGINT: SIGTERM ends it.
        ("trap '' INT\nsleep 300 &\nwait\n", 128 + signal.SIGTERM),
        # Deaf to SIGINT and SIGTERM: SIGKILL.
        ("trap '' INT TERM\nsleep 300 &\nwhile :; do sleep 0.1; done\n", 128 + signal.SIGKILL),
    ],
    ids=["sigint", "sigterm", "sigkill"],
)
def test_stop_leaves_nothing_behind(tmp_path, body: str, expected: int) -> None:
    program = script(tmp_path, "echo ready\n" + body, "sleeper")
    process = LaunchedProcess.start(LaunchSpec("llama-server", program, ["--port", "1"], {}, []))
    deadline = time.monotonic() + 10
    seen: list[tuple[str, str]] = []
    while ("stdout", "ready") not in seen:
        assert time.monotonic() < deadline
        seen += process.lines(0.1)
    time.sleep(0.2)  # the helper `sleep 300` has started
    tree = [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
    assert len(tree) >= 2
    started = time.monotonic()
    code = process.stop(grace=0.5)
    assert exit_status(code) == expected
    assert time.monotonic() - started < 5
    assert alive(program) == []
    assert [pid for pid in tree if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE] == []  # fmt: skip
    assert process.stop() == code  # idempotent
    assert process.finished or process.output_closed
    if expected == 130:
        assert ("stdout", "interrupted") in seen + process.lines(0.5)


def test_helpers_left_behind_by_a_program_that_exits_are_ended(tmp_path) -> None:
    # The helper keeps the program's stdout open: without cleanup, its output would never end.
    program = script(tmp_path, "sleep 300 &\necho bye\n", "leaver")
    process = LaunchedProcess.start(LaunchSpec("llama-completion", program, [], {}, []))
    started = time.monotonic()
    assert run_to_end(process, timeout=10) == [("stdout", "bye")]
    assert time.monotonic() - started < 5 and process.returncode == 0
    time.sleep(0.2)
    assert alive(program) == [] and process.stop() == 0
    # The helper was a `sleep 300` whose parent (the program) is gone: none is left in its group.
    for other in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(OSError, psutil.Error):
            if other.info["cmdline"] == ["sleep", "300"]:
                assert os.getpgid(other.pid) != process.pid


def test_wait_and_lines_do_not_block(tmp_path) -> None:
    program = script(tmp_path, "sleep 1; echo done\n")
    process = LaunchedProcess.start(LaunchSpec("llama-completion", program, [], {}, []))
    started = time.monotonic()
    assert process.lines(0) == [] and process.wait(0.1) is None
    assert time.monotonic() - started < 0.5
    assert process.wait(10) == 0
    assert run_to_end(process) == [("stdout", "done")]


# --- llama-wizard run ------------------------------------------------------------------------


def test_cli_run_on_two_mi50s(flake) -> None:
    built = run_cli("build", "--simulate", "2x-mi50", "--flake", flake, timeout=120)
    assert built.returncode == 0, built.stderr
    env = dict(os.environ, HIP_VISIBLE_DEVICES="1", HF_TOKEN="hf_do_not_print")
    result = run_cli("run", "--simulate", "2x-mi50", "--flake", flake, "--prompt", "Hi there",
                     "-n", "16", "--", "--temp", "0.1", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hf_do_not_print" not in result.stdout + result.stderr
    lines = [("stdout", line) for line in result.stdout.splitlines()]
    args = reported(lines, "argv")
    assert args[args.index("-ngl") : args.index("-ngl") + 4] == ["-ngl", "99", "-fa", "on"]
    assert args[-7:] == ["-p", "Hi there", "-n", "16", "-no-cnv", "--temp", "0.1"]
    assert env_of(lines)["HSA_OVERRIDE_GFX_VERSION"] == "9.0.6"
    assert env_of(lines)["ROCR_VISIBLE_DEVICES"] == MI50_UUIDS
    assert env_of(lines)["HIP_VISIBLE_DEVICES"] == "<unset>"
    # The program's stderr (llama.cpp's log) stays on stderr; ours too, with the command.
    assert "llama_perf_context_print" in result.stderr and "llama_perf" not in result.stdout
    assert (
        "prompt 600.0 tokens/s · generation 200.0 tokens/s (llama.cpp's figures)" in result.stderr
    )
    command = next(line for line in result.stderr.splitlines() if line.startswith("$ "))
    assert shlex.split(command[2:])[-7:] == args[-7:]
    assert "simulated" in result.stderr


def test_cli_run_json_on_an_rtx4090(flake) -> None:
    built = run_cli("build", "--simulate", "rtx4090", "--flake", flake, timeout=120)
    assert built.returncode == 0, built.stderr
    result = run_cli("run", "--simulate", "rtx4090", "--flake", flake, "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    # The plan's warnings first (not NixOS: the CUDA driver must be linked for Nix binaries).
    position = next(i for i, e in enumerate(events) if e["event"] == "started")
    assert all(e["event"] == "warning" and e["fix"] for e in events[:position])
    started = events[position]
    assert started["program"] == "llama-completion"
    assert re.search(r"/result-cuda-[0-9a-f]{12}/bin/llama-completion$", started["argv"][0])
    assert started["simulated"] == "rtx4090" and isinstance(started["pid"], int)
    output = [("stdout", e["line"]) for e in events if e["event"] == "output"]
    assert reported(output, "argv") == started["argv"][1:]
    env = env_of(output)
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["CUDA_VISIBLE_DEVICES"].startswith("GPU-")
    assert env["HSA_OVERRIDE_GFX_VERSION"] == "<unset>"
    timings = [e for e in events if e["event"] == "timing"]
    assert timings[-1]["prompt_tokens_per_second"] == 600.0
    assert timings[-1]["generation_tokens_per_second"] == 200.0
    exited = events[-1]
    assert exited["event"] == "exited" and exited["returncode"] == 0 and exited["status"] == 0
    assert exited["timing"]["generation_tokens_per_second"] == 200.0


def test_cli_run_before_building_says_build_first(flake) -> None:
    result = run_cli("run", "--simulate", "2x-mi50", "--flake", flake)
    assert result.returncode == 1
    assert "build it first: llama-wizard build" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_run_rejects_stray_arguments(flake) -> None:
    result = run_cli("run", "--simulate", "2x-mi50", "--flake", flake, "hello")
    assert result.returncode == 2 and "after `--`" in result.stderr


def test_cli_ctrl_c_stops_the_server_and_everything_it_started(flake, tmp_path) -> None:
    # A llama-server that runs until stopped, where the plan's build would put it.
    plan_json = run_cli("plan", "--simulate", "2x-mi50", "--flake", flake, "--json")
    out_link = Path(json.loads(plan_json.stdout)["out_link"])
    (out_link / "bin").mkdir(parents=True)
    marker = f"lw-server-{uuid.uuid4().hex[:8]}"
    server = out_link / "bin" / "llama-server"
    timing = (
        "llama_perf_context_print:        eval time =  1.00 ms /  1 runs   ( 1.00 ms per token, "
        " 1000.00 tokens per second)"
    )
    server.write_text(
        "#!/bin/sh\n"
        f"# {marker}\n"
        "sleep 300 &\n"
        f"trap 'echo \"{timing}\" >&2; exit 130' INT\n"
        'echo "main: server is listening on http://127.0.0.1:8080 - starting the main loop"\n'
        "while :; do sleep 0.1; done\n"
    )
    server.chmod(0o755)
    wizard = subprocess.Popen(
        [wizard_executable(), "run", "--server", "--simulate", "2x-mi50", "--flake", flake,
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert wizard.stdout is not None
    events = []
    for line in wizard.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "listening":
            break
    assert events[0]["event"] == "started" and events[0]["program"] == "llama-server"
    assert {"event": "url", "url": "http://127.0.0.1:8080/"} in events
    program = events[0]["pid"]
    children = [p.pid for p in psutil.Process(program).children(recursive=True)]
    wizard.send_signal(signal.SIGINT)  # Ctrl-C
    events += [json.loads(line) for line in wizard.stdout]
    assert wizard.wait(timeout=30) == 130
    assert any(e["event"] == "stopping" and e["signal"] == "SIGINT" for e in events)
    assert events[-1]["event"] == "exited" and events[-1]["returncode"] == 130
    assert events[-1]["timing"]["generation_tokens_per_second"] == 1000.0
    time.sleep(0.2)
    assert alive(marker) == [] and alive(str(server)) == []
    for pid in [program, *children]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
