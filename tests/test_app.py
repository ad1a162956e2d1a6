"""The wizard starts, shows the machine, and quits cleanly."""

from __future__ import annotations

import os
import shutil

import pytest
from textual.widgets import SelectionList, Static

from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.tui.app import WizardApp
from llama_wizard.tui.machine import Machine
from tests.helpers import wizard_executable
from tests.terminal import Terminal
from tests.wizard_helpers import settle


async def test_hardware_screen_lists_the_simulated_gpus(simulated) -> None:
    box = simulated("2x-mi50")
    app = WizardApp(Machine(SystemRoot(box.root), box.env(), simulated="2x-mi50"), timeout=5)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        selection = app.screen.query_one("#gpus", SelectionList)
        assert selection.option_count == 2 and sorted(selection.selected) == [0, 1]
        assert "gfx906" in str(selection.get_option_at_index(0).prompt)
        assert "SIMULATED" in str(app.screen.query_one("#simulated", Static).content)
        await pilot.press("q")
    assert app.return_code == 0


async def test_no_gpu_machine_says_cpu(simulated) -> None:
    box = simulated({"name": "empty", "cpu": {"model": "Test CPU"}, "memory": {"total_kib": 1}})
    app = WizardApp(Machine(SystemRoot(box.root), box.env()), timeout=5)
    async with app.run_test() as pilot:
        await settle(pilot)
        assert "No GPU" in str(app.screen.query_one("#status", Static).content)
        await pilot.press("ctrl+c")
    assert app.return_code == 0


async def test_warnings_show_their_fix(simulated) -> None:
    box = simulated("nvidia-nouveau")
    app = WizardApp(Machine(SystemRoot(box.root), box.env(), simulated="nvidia-nouveau"))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        shown = str(app.screen.query_one("#warnings", Static).content)
        assert "nouveau" in shown and "Fix:" in shown
        await pilot.press("q")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by scripts/test")
def test_real_terminal_start_and_quit() -> None:
    """The installed program in a real terminal (tmux), read from the screen."""
    terminal = Terminal([wizard_executable(), "--simulate", "2x-mi50"], dict(os.environ), (80, 24))
    try:
        screen = terminal.wait_for("gfx906", timeout=20)
        assert "SIMULATED" in screen
        terminal.keys("q")
        assert terminal.wait_closed(), "the wizard did not quit on q"
    finally:
        terminal.close()
