"""Plain mode and `--yes` over the one flow core (issue 9): choices are kept per machine, bad
settings and unwritable directories never end in a traceback, the context prompt checks what
every face checks, a model that does not fit is never taken silently, and a choice equal to
the recommendation is saved as "the recommendation".

Through the installed `llama-wizard` with its answers on a pipe (or none for `--yes`), on
simulated hardware and the fixture flake, built with the real Nix; the prompt checks through
PlainWizard with a line prompter fed from a list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llama_wizard.models.catalogue import load_catalogue
from llama_wizard.tui import validate
from llama_wizard.tui.machine import open_machine
from llama_wizard.tui.plain import PlainWizard, Quit
from llama_wizard.tui.session import Overrides, WizardSession
from llama_wizard.tui.settings import SettingsStore, settings_path
from tests.helpers import run_cli
from tests.nix_fixtures import fixture_flake
from tests.plain_helpers import line_prompter, run_piped, saved_choices

CODER = "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF"
QWEN3_8B = "Qwen/Qwen3-8B-GGUF"
LLAMA_70B = "bartowski/Meta-Llama-3.1-70B-Instruct-GGUF"


@pytest.fixture
def flake(tmp_path: Path) -> str:
    return fixture_flake(tmp_path / "flake", "documented")


def model_number(args: list[str], repo: str, tmp_path: Path, answers: str = "\n\n") -> int:
    """The number of a catalogue model in the "Choose another model" menu: the ranked list,
    best first, as this (simulated) machine ranks it, read from a run that stops there
    (`answers` lead to the Model step)."""
    model = load_catalogue().find(repo)
    assert model is not None, repo
    listing = run_piped(args, answers + "2\n", tmp_path)
    found = re.search(rf"(\d+)\) {re.escape(model.name)} \(", listing.stdout)
    assert found, listing.stdout[-3000:]
    return int(found[1])


def machines() -> dict[str, dict]:
    return json.loads(settings_path().read_text())["machines"]


def step(text: str, number: int) -> str:
    """What one step printed (from its header to the next one's)."""
    start = text.index(f"== Step {number}/6")
    end = text.find(f"== Step {number + 1}/6", start)
    return text[start:] if end < 0 else text[start:end]


def no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]


# --- 1. saved choices belong to one machine ---------------------------------------------------


def test_choices_saved_under_one_profile_stay_with_it(flake, tmp_path) -> None:
    # On 2x MI50: Qwen3 8B at its first quant (Q4_K_M), not the recommendation.
    args = ["--plain", "--simulate", "2x-mi50", "--flake", flake]
    mi50 = run_piped(
        args, f"\n\n2\n{model_number(args, QWEN3_8B, tmp_path)}\n3\n1\n1\nq\n", tmp_path
    )
    assert mi50.returncode == 0, mi50.stdout[-3000:] + mi50.stderr
    assert "Step 4/6" in mi50.stdout

    # Another profile starts from its own recommendation, not from the MI50's choice.
    rtx = run_piped(["--plain", "--simulate", "rtx4090", "--flake", flake], "\n\nq\n", tmp_path)
    assert rtx.returncode == 0, rtx.stdout[-3000:] + rtx.stderr
    model_step = step(rtx.stdout, 3)
    assert "Qwen3 8B Q4_K_M" not in model_step
    assert re.search(r"1\) Use .+ at \d+ tokens \(recommended\)\n", model_step), model_step

    # The real machine neither sees the simulated choices nor overwrites them.
    real = run_piped(["--plain", "--flake", flake], "\n\nq\n", tmp_path)
    assert real.returncode == 0, real.stdout[-3000:] + real.stderr
    assert "Use Qwen3 8B Q4_K_M" not in real.stdout

    chosen = saved_choices("simulated:2x-mi50")
    assert (chosen["model"], chosen["quant"]) == (QWEN3_8B, "Q4_K_M")
    assert saved_choices("simulated:rtx4090")["model"] is None
    real_keys = [key for key in machines() if not key.startswith("simulated:")]
    assert len(real_keys) == 1 and saved_choices(real_keys[0])["model"] is None


# --- 2. a build belongs to its flake ---------------------------------------------------------


def test_another_flakes_build_of_the_same_output_is_not_already_built(tmp_path) -> None:
    flake_a = fixture_flake(tmp_path / "a", "documented")
    flake_b = fixture_flake(tmp_path / "b", "documented")
    built = run_piped(["--yes", "--simulate", "no-gpu", "--flake", flake_a], None, tmp_path)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr
    again = run_piped(
        ["--plain", "--simulate", "no-gpu", "--flake", flake_a], "\n\n\nq\n", tmp_path
    )
    assert "default is already built" in step(again.stdout, 4)
    other = run_piped(
        ["--plain", "--simulate", "no-gpu", "--flake", flake_b], "\n\n\nq\n", tmp_path
    )
    build_run = step(other.stdout, 4)
    assert "already built" not in build_run and "1) Build default now" in build_run


# --- 3. wrong-typed settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("ctx", "big"), ("flake", 5), ("model", 12), ("prompt", 7), ("host", 3), ("gpus", "abc")],
)
def test_a_wrong_typed_setting_is_dropped_with_a_note(field, value, flake, tmp_path) -> None:
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    document = {"version": 2, "machines": {"simulated:no-gpu": {field: value}}}
    settings_path().write_text(json.dumps(document))
    result = run_piped(["--yes", "--simulate", "no-gpu", "--flake", flake], None, tmp_path)
    no_traceback(result)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    assert re.search(rf"note: The saved {field} for .+ was dropped", result.stdout), result.stdout[
        :3000
    ]


def test_a_wrong_typed_setting_of_an_old_file_on_the_real_machine(flake, tmp_path) -> None:
    """The issue's own reproduction: `{"ctx":"big"}` (a version 1 file) and `--yes`."""
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text('{"ctx":"big"}')
    result = run_piped(["--yes", "--flake", flake], None, tmp_path)
    no_traceback(result)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    assert re.search(r"note: The saved ctx for .+ was dropped", result.stdout)


# --- 4. unwritable directories --------------------------------------------------------------


def run_with_a_file_as(variable: str, flake: str, tmp_path: Path):
    """`--yes` with a file where the XDG directory `variable` should be: (the file, result)."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    args = ["--yes", "--simulate", "no-gpu", "--flake", flake]
    result = run_piped(args, None, tmp_path, env={variable: str(afile)})
    no_traceback(result)
    return afile, result


def test_an_unwritable_state_directory_stops_the_build_with_the_fix(flake, tmp_path) -> None:
    afile, result = run_with_a_file_as("XDG_STATE_HOME", flake, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    assert f"llama-wizard: Builds cannot be recorded in {afile}/" in result.stderr
    assert "XDG_STATE_HOME" in result.stderr
    assert "Step 5/6" not in result.stdout


def test_an_unwritable_config_directory_goes_on_and_says_so(flake, tmp_path) -> None:
    afile, result = run_with_a_file_as("XDG_CONFIG_HOME", flake, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    notes = [line for line in result.stdout.splitlines() if "could not be saved" in line]
    assert len(notes) == 1 and str(afile) in notes[0] and "XDG_CONFIG_HOME" in notes[0]
    assert "Step 6/6: Done" in result.stdout


# --- 5. the context prompt ------------------------------------------------------------------


def test_the_context_prompt_takes_only_what_check_ctx_takes(flake) -> None:
    # Hardware and build: the defaults; the model step: change the context to -5, 100, "big"
    # (each refused), then 8192; then quit.
    prompter, out, prompts = line_prompter("", "", "4", "-5", "100", "big", "8192", "q")
    with open_machine(None, "rtx4090") as machine:
        session = WizardSession(machine, SettingsStore.load(), Overrides(flake=flake))
        wizard = PlainWizard(session, prompter, out=out, err=out)
        with pytest.raises(Quit) as quit_:
            wizard.run()
    assert quit_.value.code == 0
    text = out.getvalue()
    for refused in ("-5", "100", "big"):
        message = validate.problem(validate.check_ctx, refused)
        assert message and message in text
    assert prompts.count("Context size in tokens [32768]: ") == 4
    assert "Change the context size (now 8192)" in text
    assert "at 8192 tokens" in text


# --- 6. a model that does not fit -----------------------------------------------------------


def test_a_model_that_does_not_fit_needs_confirming(flake, tmp_path) -> None:
    """On the 780M APU (16 GiB, 28 GiB of RAM) no quant of Llama 3.1 70B runs, not even with
    part of it in RAM: choosing it shows its smallest quant as not fitting, and "Use" asks
    first (default No)."""
    args = ["--plain", "--simulate", "780m-apu", "--flake", flake]
    choose_big = f"\n\n2\n{model_number(args, LLAMA_70B, tmp_path)}\n1\n"
    declined = run_piped(args, choose_big + "\nq\n", tmp_path)
    assert declined.returncode == 0, declined.stdout[-3000:] + declined.stderr
    model_step = step(declined.stdout, 3)
    assert "No quant of Llama 3.1 70B Instruct fits at a 32768-token context" in model_step
    assert "1) Use Llama 3.1 70B Instruct IQ2_M at 32768 tokens - does NOT fit" in model_step
    asked = model_step.index("Use it anyway? [y/N]: ")
    assert "it does NOT fit" in model_step[:asked]
    assert "Which model?" in model_step[asked:]  # asked again, nothing taken
    assert "Step 4/6" not in declined.stdout

    confirmed = run_piped(args, choose_big + "y\nq\n", tmp_path)
    assert confirmed.returncode == 0, confirmed.stdout[-3000:] + confirmed.stderr
    assert "Step 4/6" in confirmed.stdout
    chosen = saved_choices("simulated:780m-apu")
    assert (chosen["model"], chosen["quant"]) == (LLAMA_70B, "IQ2_M")


def test_yes_refuses_a_named_model_that_does_not_fit(flake, tmp_path) -> None:
    args = ["--yes", "--simulate", "780m-apu", "--flake", flake, "--model", CODER]
    result = run_piped([*args, "--quant", "Q8_0"], None, tmp_path)
    no_traceback(result)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "llama-wizard: Qwen3-Coder 30B-A3B Instruct Q8_0 at 32768 tokens needs" in result.stderr
    assert "it does NOT fit" in result.stderr
    assert "Choose a smaller quant or context ('llama-wizard fit MODEL'" in result.stderr
    assert "Step 4/6" not in result.stdout


def test_the_plan_warning_and_the_model_table_agree_on_the_cpu(flake, tmp_path) -> None:
    detected = run_cli("detect", "--json")
    if json.loads(detected.stdout)["gpus"]:
        pytest.skip("this machine has GPUs: the check is for a CPU-only machine")
    result = run_piped(["--plain", "--flake", flake], "\n\nq\n", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    build_step, model_step = step(result.stdout, 2), step(result.stdout, 3)
    if "There is no memory to fit a model into" in model_step:
        pytest.skip("this machine's RAM is unknown")
    # The models table (Model, Size, Best fit, tok/s), not the chosen model's quant table.
    models = model_step.split(": quants at", 1)[0]
    rows = re.findall(r"^│ [> ] .+│ (.+?) +│ +\S+ │$", models, re.MULTILINE)
    assert rows, model_step
    if "no_model_fits" in build_step:
        assert all(row == "does not fit" for row in rows), rows
        assert "1) Use this model  (not available: nothing fits)" in model_step
    else:
        use = re.search(r"1\) Use (.+) (\S+) at (\d+) tokens", model_step)
        assert use and "does NOT fit" not in use[0], model_step
        chosen = re.search(r"^│ > .+│ (.+?) +│ +\S+ │$", models, re.MULTILINE)
        assert chosen and chosen[1] != "does not fit"
        assert any(row != "does not fit" for row in rows)


# --- 7. what is saved, and the commands file -------------------------------------------------


def test_a_choice_equal_to_the_recommendation_is_saved_as_it(flake, tmp_path) -> None:
    """Every step's recommendation chosen by hand: saved as null ("the recommendation"). The
    Done step offers ./llama-wizard-commands.sh and asks before replacing it."""
    args = ["--plain", "--simulate", "2x-mi50", "--flake", flake]
    listing = run_piped(args, "\n2\n", tmp_path)
    gfx906 = re.search(r"(\d+)\) rocm-gfx906 - ", listing.stdout)
    assert gfx906, listing.stdout[-3000:]
    commands = tmp_path / "llama-wizard-commands.sh"
    commands.write_text("# mine\n")
    coder = model_number(args, CODER, tmp_path, f"2\n1,2\n1\n2\n{gfx906[1]}\n1\n")
    answers = (
        "2\n1,2\n1\n"  # choose the GPUs: both (the recommendation); use them
        f"2\n{gfx906[1]}\n1\n"  # choose the output rocm-gfx906 (the recommendation); use it
        f"2\n{coder}\n1\n"  # choose the recommended model; use it
        "\n"  # build (or go on with the build)
        "3\n"  # go on to the commands
        "2\n\n\n"  # save to the offered file: it exists; do not replace it
        "2\n\ny\n"  # save again: replace it
        "\n"  # finish
    )
    result = run_piped(args, answers, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    out = result.stdout
    assert "1) Use GPUs 0, 1 (recommended)" in out
    assert "1) Build rocm-gfx906 (recommended)" in out
    assert re.search(r"1\) Use Qwen3-Coder 30B-A3B Instruct \S+ at \d+ tokens \(recommended\)", out)
    assert out.count(f"Save to [{commands}]: ") == 2
    assert out.count(f"{commands} already exists. Replace it? [y/N]: ") == 2
    assert "Not saved." in out and f"saved to {commands}" in out
    assert "# mine" not in commands.read_text() and "nix build" in commands.read_text()
    saved = saved_choices("simulated:2x-mi50")
    assert {
        name: saved[name] for name in ("gpus", "output", "model", "quant", "ctx")
    } == dict.fromkeys(("gpus", "output", "model", "quant", "ctx"))
