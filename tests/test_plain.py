"""Plain mode and `--yes`, end to end: the installed `llama-wizard` in a real pseudo-terminal (or
with a pipe, or with no stdin at all), on simulated hardware, building the fixture flake with
the real Nix and launching its stand-in `llama-completion`, which prints the argv and
environment it got."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psutil
import pytest

from llama_wizard.tui.settings import SettingsStore, settings_path
from tests.helpers import wizard_executable
from tests.nix_fixtures import fixture_flake, fresh_variant
from tests.plain_helpers import (
    DOWN,
    ENTER,
    MI50_UUIDS,
    RTX4090_UUID,
    Terminal,
    run_piped,
    save_choices,
    saved_choices,
    stand_in_report,
    wizard_env,
)


@pytest.fixture
def flake(tmp_path: Path) -> str:
    return fixture_flake(tmp_path / "flake", "documented")


@pytest.fixture
def terminal(tmp_path: Path):
    opened: list[Terminal] = []

    def start(*args: str, term: str = "dumb") -> Terminal:
        session = Terminal([wizard_executable(), *args], wizard_env(term), cwd=tmp_path)
        opened.append(session)
        return session

    yield start
    for session in opened:
        session.close()


def test_plain_mode_in_a_dumb_terminal_through_to_the_launch(terminal, flake, tmp_path) -> None:
    screen = terminal("--plain", "--simulate", "2x-mi50", "--flake", flake)
    screen.expect(r"Step 1/6: Hardware ==\s+\[SIMULATED: 2x-mi50\]")
    screen.expect(r"1\) Use GPUs 0, 1 \(recommended\)")
    screen.expect(r"Choose 1-4 \[1\]: ")
    screen.send("\n")
    screen.expect(r"Step 2/6: Build")
    screen.expect(r"1\) Build rocm-gfx906 \(recommended\)")
    screen.expect(r"Choose 1-5 \[1\]: ")
    screen.send("\n")
    screen.expect(r"Step 3/6: Model")
    screen.expect(r"Qwen3-Coder 30B-A3B Instruct: quants at a 32768-token context")
    screen.expect(r"Choose 1-6 \[1\]: ")
    screen.send("\n")
    screen.expect(r"Step 4/6: Build run")
    screen.expect(r"1\) Build rocm-gfx906 now")
    screen.send("\n")
    screen.expect(r"built rocm-gfx906")
    screen.expect(r"Step 5/6: Launch")
    screen.expect(r"Choose 1-5 \[1\]: ")
    screen.send("1\n")
    screen.expect(r"Prompt \[The capital of France is\]: ")
    screen.send("Name a river in Paris:\n")
    screen.expect(r"speed: prompt 600\.0 tokens/s · generation 200\.0 tokens/s")
    screen.expect(r"llama-completion exited with status 0\.")
    argv, env = stand_in_report(screen.text)
    assert argv[argv.index("-p") + 1] == "Name a river in Paris:"
    assert argv[argv.index("-hf") + 1] == "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF:Q5_K_M"
    assert argv[argv.index("-ts") + 1] == "1,1"
    assert env["HSA_OVERRIDE_GFX_VERSION"] == "9.0.6"
    assert env["ROCR_VISIBLE_DEVICES"] == ",".join(MI50_UUIDS)
    assert env["HIP_VISIBLE_DEVICES"] == "<unset>" and env["CUDA_VISIBLE_DEVICES"] == "<unset>"
    screen.expect(r"3\) Go on to the commands")
    screen.expect(r"Choose 1-5 \[3\]: ")  # after a run, the default goes on
    screen.send("\n")
    screen.expect(r"Step 6/6: Done")
    screen.expect(r"# Run llama-completion")
    screen.expect(r"Choose 1-5 \[1\]: ")
    screen.send("2\n")  # save the commands
    screen.expect(r"Save to \[.*llama-wizard-commands\.sh\]: ")
    saved = tmp_path / "commands.sh"
    screen.send(f"{saved}\n")
    screen.expect(rf"saved to {re.escape(str(saved))}")
    screen.expect(r"Choose 1-5 \[1\]: ")
    screen.send("\n")
    assert screen.wait() == 0
    text = saved.read_text()
    assert "HSA_OVERRIDE_GFX_VERSION=9.0.6" in text and "'Name a river in Paris:'" in text
    assert saved_choices("simulated:2x-mi50")["prompt"] == "Name a river in Paris:"


def test_questionary_menus_in_a_real_terminal(terminal, flake) -> None:
    """On a terminal that can do it, the same flow with arrow-key menus: here GPU 0 is
    unticked, so only GPU 1 runs the model."""
    screen = terminal("--plain", "--simulate", "2x-mi50", "--flake", flake, term="xterm-256color")
    screen.expect(r"Which GPUs should llama\.cpp use\? \(arrows, Enter\)")
    screen.expect(r"Use GPUs 0, 1 \(recommended\)")
    screen.send(DOWN + ENTER)  # Choose other GPUs
    screen.expect(r"GPUs to use \(none: the CPU\) \(Space toggles, Enter accepts\)")
    screen.expect(r"GPU 1: AMD Instinct")
    screen.send(" " + ENTER)  # untick GPU 0
    screen.expect(r"Use GPU 1\b")
    screen.send(ENTER)
    screen.expect(r"Which build\? \(arrows, Enter\)")
    screen.send(ENTER)
    screen.expect(r"Which model\? \(arrows, Enter\)")
    screen.send(ENTER)
    screen.expect(r"Build it now\? \(arrows, Enter\)")
    screen.send(ENTER)
    screen.expect(r"Launch what\? \(arrows, Enter\)")
    screen.send(ENTER)
    screen.expect(r"Prompt")
    screen.send("\x15" + "Hello from a pty" + ENTER)  # ^U clears the preset prompt
    screen.expect(r"llama-completion exited with status 0\.")
    argv, env = stand_in_report(screen.text)
    assert argv[argv.index("-p") + 1] == "Hello from a pty"
    assert "-ts" not in argv  # one GPU
    assert env["ROCR_VISIBLE_DEVICES"] == MI50_UUIDS[1]
    assert env["HSA_OVERRIDE_GFX_VERSION"] == "9.0.6"
    screen.expect(r"Launch what\? \(arrows, Enter\)")
    screen.send(ENTER)  # the default is now "Go on to the commands"
    screen.expect(r"Done\. What now\? \(arrows, Enter\)")
    screen.send(ENTER)
    assert screen.wait() == 0
    assert "CPR" not in screen.text  # prompt_toolkit never complained about the terminal
    assert saved_choices("simulated:2x-mi50")["gpus"] == [1]


def test_yes_runs_everything_without_stdin(flake, tmp_path) -> None:
    result = run_piped(["--yes", "--simulate", "rtx4090", "--flake", flake], None, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    out = result.stdout
    assert "Choose" not in out and "[SIMULATED: rtx4090]" in out
    assert "Which build? → Build cuda (recommended)" in out
    argv, env = stand_in_report(out)
    assert env["CUDA_VISIBLE_DEVICES"] == RTX4090_UUID
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["ROCR_VISIBLE_DEVICES"] == "<unset>"
    assert argv[argv.index("-p") + 1] == "The capital of France is"
    assert "speed: prompt 600.0 tokens/s" in out
    done = out[out.index("Step 6/6: Done") :]
    assert "# Build (cuda)" in done and "# Run llama-completion" in done
    assert f"CUDA_VISIBLE_DEVICES={RTX4090_UUID}" in done
    assert "built cuda" in result.stderr  # the build's plain progress lines


def test_yes_stops_with_the_error_and_its_fix(flake, tmp_path) -> None:
    missing = run_piped(["--yes", "--simulate", "rtx4090", "--flake", str(tmp_path / "nowhere")],
                        None, tmp_path)  # fmt: skip
    assert missing.returncode == 1
    assert "llama-wizard: " in missing.stderr and "\n" in missing.stderr.strip()
    # 75 GiB of weights and 40 GiB of KV cache: too big for the RTX 4090 and the RAM together
    # (a model that fits the RAM beside the GPU runs, with part of it there).
    big = ["--model", "bartowski/Meta-Llama-3.1-70B-Instruct-GGUF", "--quant", "Q8_0",
           "--ctx", "131072"]  # fmt: skip
    too_big = run_piped(["--yes", "--simulate", "rtx4090", "--flake", flake, *big], None, tmp_path)
    assert too_big.returncode == 1
    assert "at 131072 tokens needs" in too_big.stderr and "it does NOT fit" in too_big.stderr
    assert "llama-wizard fit MODEL" in too_big.stderr and "Step 4/6" not in too_big.stdout
    # A saved choice of a build that fails: --yes builds it, and says why it stopped.
    save_choices("simulated:no-gpu", flake=flake, output="fails")
    failed = run_piped(["--yes", "--simulate", "no-gpu"], None, tmp_path)
    assert failed.returncode == 1, failed.stdout[-2000:]
    assert "simulated compiler failure" in failed.stderr
    assert "llama-wizard: The build of fails failed" in failed.stderr
    assert "Read the log named above" in failed.stderr
    assert "Step 5/6" not in failed.stdout


def test_settings_are_remembered_between_runs_and_reset_forgets_them(flake, tmp_path) -> None:
    args = ["--plain", "--simulate", "2x-mi50", "--flake", flake]
    gpu_1 = "2\n2\n1\n"  # choose other GPUs; tick only the second; use them
    listing = run_piped(args, gpu_1 + "\n2\n", tmp_path)  # ... up to the list of models
    qwen3_8b = re.search(r"(\d+)\) Qwen3 8B \(7-8B\) - ", listing.stdout)
    assert qwen3_8b, listing.stdout[-3000:]
    # First run: GPU 1 only, Qwen3 8B at its first quant (Q4_K_M), a prompt of our own.
    first = run_piped(
        args,
        gpu_1 + "\n"  # the recommended build
        f"2\n{qwen3_8b[1]}\n3\n1\n1\n"  # another model, its first quant, use it
        "\n"  # build now
        "1\nremember me\n"  # run llama-completion with this prompt
        "\nq\n",  # go on to the commands; quit there
        tmp_path,
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    assert "Quit. Your choices are saved" in first.stdout
    saved = saved_choices("simulated:2x-mi50")
    assert saved["gpus"] == [1] and saved["prompt"] == "remember me"
    assert (saved["model"], saved["quant"], saved["ctx"]) == ("Qwen/Qwen3-8B-GGUF", "Q4_K_M",
                                                              32768)  # fmt: skip
    assert saved["flake"] == flake and saved["output"] is None

    # Second run, without --flake: the saved choices are the defaults; the build is skipped.
    second = run_piped(["--plain", "--simulate", "2x-mi50"], "\n\n\n\n1\n\nq\n", tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    out = second.stdout
    assert "1) Use GPU 1\n" in out
    assert f"Flake    {flake}" in out
    assert "1) Use Qwen3 8B Q4_K_M at 32768 tokens\n" in out
    assert "is already built" in out
    assert "Prompt [remember me]: " in out
    argv, env = stand_in_report(out)
    assert argv[argv.index("-p") + 1] == "remember me"
    assert env["ROCR_VISIBLE_DEVICES"] == MI50_UUIDS[1]

    # --reset: back to the recommendations (the old file is kept beside as a backup).
    third = run_piped(["--reset", "--plain", "--simulate", "2x-mi50", "--flake", flake], "q\n",
                      tmp_path)  # fmt: skip
    assert third.returncode == 0
    assert "Forgot the saved choices" in third.stderr
    assert "1) Use GPUs 0, 1 (recommended)" in third.stdout
    assert Path(str(settings_path()) + ".bak").is_file()
    assert SettingsStore.load().machines == {}


def test_back_and_quit_and_the_cost_of_an_override(flake, tmp_path) -> None:
    # Bare `llama-wizard` with TERM=dumb is plain mode. At the build step: choose the `rocm`
    # output (and see its cost), go back to the hardware step, and quit there.
    answers = "\n2\n{rocm}\n4\nq\n"
    menu = run_piped(["--simulate", "2x-mi50", "--flake", flake], "\n2\n", tmp_path)
    assert "Step 1/6: Hardware" in menu.stdout  # plain mode without --plain
    rocm = re.search(r"(\d+)\) rocm - AMD ROCm", menu.stdout)
    assert rocm, menu.stdout[-2000:]
    result = run_piped(["--simulate", "2x-mi50", "--flake", flake],
                       answers.format(rocm=rocm[1]), tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    out = result.stdout
    assert "What this choice costs:" in out
    assert "1) Build rocm (your choice; recommended: rocm-gfx906)" in out
    assert out.count("Step 1/6: Hardware") == 2  # "Back" went back to the first step
    assert out.rstrip().endswith("Quit. Your choices are saved; `llama-wizard --reset` forgets "
                                 "them.")  # fmt: skip
    # The build step was left by "Back": its choice was not saved.
    assert saved_choices("simulated:2x-mi50")["output"] is None


def test_end_of_input_and_ctrl_c(terminal, flake, tmp_path) -> None:
    ended = run_piped(["--plain", "--simulate", "2x-mi50", "--flake", flake], "", tmp_path)
    assert ended.returncode == 1
    assert "No more input on stdin" in ended.stderr and "--yes" in ended.stderr
    screen = terminal("--plain", "--simulate", "2x-mi50", "--flake", flake)
    screen.expect(r"Choose 1-4 \[1\]: ")
    for _attempt in range(5):
        # Ctrl-C on the terminal. Sent the instant the prompt shows, it can land between
        # input() writing its prompt and reading (CPython only sees it at the next read's
        # EINTR): a person is never that fast, so press it again until it is seen.
        screen.send("\x03")
        try:
            screen.expect(r"interrupted", timeout=2)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError(f"Ctrl-C never interrupted the wizard:\n{screen.text[-2000:]}")
    assert screen.wait() == 130


def test_ctrl_c_cancels_the_build_and_the_step_offers_a_retry(terminal, flake, tmp_path) -> None:
    fresh_variant(flake, "slow")  # a derivation Nix has not built yet (600 slow steps)
    listing = run_piped(["--plain", "--simulate", "no-gpu", "--flake", flake], "\n2\n", tmp_path)
    slow = re.search(r"(\d+)\) slow\n", listing.stdout)
    assert slow, listing.stdout[-2000:]
    screen = terminal("--plain", "--simulate", "no-gpu", "--flake", flake)
    screen.expect(r"Choose 1-\d \[1\]: ")
    screen.send("\n")
    screen.expect(r"Step 2/6: Build")
    screen.expect(r"Choose 1-5 \[1\]: ")
    screen.send(f"2\n{slow[1]}\n")
    screen.expect(r"1\) Build slow \(your choice; recommended: default\)")
    screen.send("\n")
    screen.expect(r"Step 3/6: Model")
    screen.expect(r"Choose 1-6 \[1\]: ")
    screen.send("\n")
    screen.expect(r"1\) Build slow now")
    screen.send("\n")
    screen.expect(r"started the build of slow \(pid (\d+)\)")
    supervisor = int(re.findall(r"started the build of slow \(pid (\d+)\)", screen.text)[-1])
    screen.expect(r"\d+/\d+ built", timeout=60)  # a progress line: Nix is building
    screen.send("\x03")
    screen.expect(r"cancelling the build")
    screen.expect(r"build of slow cancelled; its log is kept")
    screen.expect(r"problem: The build of slow was cancelled")
    screen.expect(r"1\) Build again")
    screen.expect(r"Choose 1-3 \[1\]: ")
    screen.send("q\n")
    assert screen.wait() == 0
    time.sleep(0.3)
    gone = not psutil.pid_exists(supervisor) or psutil.Process(supervisor).status() == "zombie"
    assert gone
    state = os.environ["XDG_STATE_HOME"]
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                 if state in " ".join(p.info.get("cmdline") or [])]  # fmt: skip
    assert leftovers == []
