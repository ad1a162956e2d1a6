"""The wizard starts, shows the machine, and quits cleanly."""

from __future__ import annotations

import os
import shutil

import pytest
from textual.widgets import SelectionList, Static

from tests.helpers import wizard_executable
from tests.terminal import Terminal
from tests.wizard_helpers import make_app, settle


async def test_hardware_screen_lists_the_simulated_gpus(tmp_path) -> None:
    app = make_app(tmp_path, "2x-mi50")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        selection = app.screen.query_one("#gpus", SelectionList)
        assert selection.option_count == 2 and sorted(selection.selected) == [0, 1]
        assert "gfx906" in str(selection.get_option_at_index(0).prompt)
        assert "SIMULATED" in str(app.screen.query_one("#simulated", Static).content)
        await pilot.press("q")
    assert app.return_code == 0


async def test_no_gpu_machine_says_cpu(tmp_path) -> None:
    profile = {"name": "empty", "cpu": {"model": "Test CPU"}, "memory": {"total_kib": 1}}
    app = make_app(tmp_path, profile, simulated=False)
    async with app.run_test() as pilot:
        await settle(pilot)
        assert "No GPU" in str(app.screen.query_one("#status", Static).content)
        await pilot.press("ctrl+c")
    assert app.return_code == 0


async def test_warnings_show_their_fix(tmp_path) -> None:
    app = make_app(tmp_path, "nvidia-nouveau", timeout=10)
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


def test_the_screens_do_not_import_the_app() -> None:
    """screens/ is typed against screens.base.WizardHost: no import of tui.app (no cycle)."""
    import subprocess
    import sys

    code = (
        "import sys, importlib, pkgutil\n"
        "import llama_wizard.screens as screens\n"
        "for module in pkgutil.iter_modules(screens.__path__):\n"
        "    importlib.import_module(f'llama_wizard.screens.{module.name}')\n"
        "assert 'llama_wizard.tui.app' not in sys.modules, 'a screen imported tui.app'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
