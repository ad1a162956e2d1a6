"""The real `llama-wizard --simulate` in a real terminal (tmux), driven with send-keys from
the hardware step through the build to the launch, read back with capture-pane."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import wizard_executable
from tests.nix_fixtures import fixture_flake, fresh_builds
from tests.terminal import Terminal

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="scripts/test installs tmux")


def test_simulated_mi50s_through_build_and_launch(tmp_path: Path) -> None:
    flake = fresh_builds(fixture_flake(tmp_path / "flake"))
    env = dict(os.environ)
    argv = [wizard_executable(), "--simulate", "2x-mi50", "--flake", flake,
            "--model", "Qwen/Qwen3-0.6B-GGUF"]  # fmt: skip
    terminal = Terminal(argv, env)
    try:
        screen = terminal.wait_for("2 GPUs found")
        assert "SIMULATED" in screen and "gfx906" in screen
        terminal.keys("C-n")
        terminal.wait_for("Build rocm-gfx906")
        terminal.keys("C-n")
        screen = terminal.wait_for("Q8_0")
        assert "fits" in screen
        terminal.keys("C-n")
        screen = terminal.wait_for("Built.", timeout=120)
        assert "24/24" in screen, screen
        terminal.keys("C-n")
        terminal.wait_for("Prompt")
        terminal.keys("C-r")
        screen = terminal.wait_for("exited with status 0")
        assert "env: HSA_OVERRIDE_GFX_VERSION=9.0.6" in screen
        assert "env: ROCR_VISIBLE_DEVICES=GPU-4f0a78a172e620fc,GPU-6e5e588172dc76b6" in screen
        assert "generation 200.0 tokens/s" in screen
        terminal.keys("C-n")
        terminal.wait_for("NixOS service")
        terminal.keys("q")
        assert terminal.wait_closed(), "the wizard did not quit"
    finally:
        terminal.close()


GREYS = {0, 7, 8, 15, 16, 59, 102, 145, 188, 231, *range(232, 256)}


def test_no_color_terminal_gets_greys_only(tmp_path: Path) -> None:
    """NO_COLOR: Textual turns every colour into grey; meaning must not hang on colour (the
    current step is reversed, the memory bars use different glyphs)."""
    env = dict(os.environ, NO_COLOR="1")
    terminal = Terminal([wizard_executable(), "--simulate", "2x-mi50"], env, size=(100, 30))
    try:
        terminal.wait_for("2 GPUs found")
        coloured = terminal.capture_with_escapes()
        palette = [int(n) for n in re.findall(r"\x1b\[(?:[0-9;]*;)?[34]8;5;(\d+)", coloured)]
        assert palette, "expected the screen's greys in the capture"
        assert set(palette) <= GREYS, sorted(set(palette) - GREYS)
        assert not re.search(r"[34]8;2;", coloured)  # no true colour either
        assert "\x1b[7m 1 Hardware" in coloured  # the current step, reversed
        terminal.keys("q")
    finally:
        terminal.close()


def test_wrong_typed_settings_are_a_note_and_quitting_exits_0(tmp_path: Path) -> None:
    """Issue 9 (3): a settings field of the wrong type is dropped with a note on screen; no
    traceback, and quitting exits 0 (as tmux reports the ended program's status)."""
    env = dict(os.environ)
    config = Path(env["XDG_CONFIG_HOME"]) / "llama-wizard"
    config.mkdir(parents=True, exist_ok=True)
    bad = {"label": "simulated 2x-mi50", "ctx": "big", "gpus": "abc", "flake": 5}
    document = {"version": 2, "machines": {"simulated:2x-mi50": bad}}
    (config / "settings.json").write_text(json.dumps(document))
    argv = [wizard_executable(), "--simulate", "2x-mi50"]
    terminal = Terminal(argv, env, keep_status=True)
    try:
        screen = terminal.wait_for("2 GPUs found")
        screen = terminal.wait_for("dropped")
        assert "Traceback" not in screen
        terminal.keys("q")
        assert terminal.exit_status() == 0, terminal.screen()
    finally:
        terminal.close()
