"""Issue 12 in the pilot: where the focus starts, the keys that work in a text field, the GPUs
the build leaves out, the Launch preview following the port, and the shared drawing helpers
(memory bars of one width, commands wrapped between their words)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, RadioSet, Select

from llama_wizard.models.estimate import Estimate
from llama_wizard.tui.widgets import CommandText, memory_bar, shell_words, wrap_command
from tests.wizard_helpers import make_app, next_step, saved_choices, settle


async def test_build_step_starts_on_the_output_and_q_quits(tmp_path: Path) -> None:
    app = make_app(tmp_path, "2x-mi50")
    flake = app.session.overrides.flake
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        assert app.step == "build"
        assert isinstance(app.focused, Select) and app.focused.id == "output-choice"
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert saved_choices("simulated:2x-mi50").flake == flake


async def test_in_a_text_field_q_types_and_ctrl_q_f1_still_work(tmp_path: Path) -> None:
    app = make_app(tmp_path, "2x-mi50")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        field = app.screen.query_one("#flake", Input)
        field.focus()
        field.value = ""
        await pilot.press("q", "question_mark")
        assert field.value == "q?"  # typed, not taken as keys
        await pilot.press("f1")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        assert app.step == "build" and app.focused is field
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0


async def test_launch_step_starts_on_the_program_and_follows_the_port(tmp_path: Path) -> None:
    app = make_app(tmp_path, "2x-mi50", model="Qwen/Qwen3-0.6B-GGUF")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        app.goto("launch")
        await settle(pilot)
        assert isinstance(app.focused, RadioSet)
        await pilot.press("right", "enter")  # llama-server
        await pilot.pause()
        command = app.screen.query_one("#command", CommandText)
        assert "llama-server" in command.text and "--port 8080" in command.text
        port = app.screen.query_one("#port", Input)
        port.value = "9091"
        await pilot.pause()
        assert "--port 9091" in command.text, command.text
        port.value = "99999"
        await pilot.pause()
        assert "not a TCP port" in command.text and "--port" not in command.text
        port.value = "9092"
        await pilot.pause()
        assert "--port 9092" in command.text
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert saved_choices("simulated:2x-mi50").port == 9092


async def test_a_ticked_igpu_the_build_leaves_out_is_shown_so(tmp_path: Path) -> None:
    app = make_app(tmp_path, "7900xtx-raphael-igpu", gpus=[0, 1])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        session = app.session
        assert session.chosen_gpus() == [0, 1]
        masked = session.masked_gpus()
        assert masked == [1]
        gpus = app.screen.query_one("#gpus")
        assert gpus.marks == {1: "-"}
        lines = [strip.text for strip in app.screen._compositor.render_strips()]
        assert any("[x] 0" in line for line in lines), lines
        assert any("[-] 1" in line for line in lines), lines
        assert any("masked: the build leaves it out" in line for line in lines), lines
        await next_step(pilot)  # the plan's own answer agrees with what was shown
        assert [g.index for g in session.planned_gpus()] == [0]
        assert session.masked_gpus() == masked
        await pilot.press("q")


def _estimate(memory: int, weights: int, kv: int, compute: int) -> Estimate:
    verdict = "fits" if weights + kv + compute <= memory else "no"
    return Estimate(quant="Q8_0", ctx=4096, file_bytes=weights, weights_bytes=weights,
                    kv_bytes=kv, compute_bytes=compute, overhead_bytes=0, memory_bytes=memory,
                    verdict=verdict, max_ctx=None, devices=[])  # fmt: skip


def test_memory_bars_are_always_their_width() -> None:
    gib = 1 << 30
    for memory, weights, kv, compute in [(24, 10, 2, 1), (24, 30, 8, 2), (8, 20, 4, 1),
                                         (24, 0, 0, 0), (1, 100, 50, 10)]:  # fmt: skip
        bar = memory_bar(_estimate(memory * gib, weights * gib, kv * gib, compute * gib), 12)
        assert bar.cell_len == 12, (memory, weights, bar.plain)
        over = weights + kv + compute > memory
        assert ("!" in bar.plain) == over, bar.plain


def test_commands_wrap_between_words_and_stay_the_same_command() -> None:
    command = ("env -u HIP_VISIBLE_DEVICES ROCR_VISIBLE_DEVICES=GPU-4f0a78a172e620fc "
               "/tmp/lwabc/s/llama-wizard/builds/result-rocm-gfx906-d25573d38fc2/bin/llama-server "
               "-hf unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF:Q5_K_M -c 32768 "
               "-p 'The capital of France is' --port 8080")  # fmt: skip
    lines = wrap_command(command, 60)
    assert len(lines) > 1
    for line in lines[:-1]:
        assert line.endswith(" \\")
    for line in lines[1:]:
        assert line.startswith("    ")
    words = [word for line in lines for word in shell_words(line) if word != "\\"]
    assert words == shell_words(command)  # no word cut, none added but the continuations
    assert "'The capital of France is'" in words
    for line in lines:
        assert len(line) <= 60 or len(shell_words(line)) <= 2, line  # a lone long word
    nix = "services.llama-server = {\n  enable = true;\n};"
    assert wrap_command(nix, 20, "nix") == nix.splitlines()
