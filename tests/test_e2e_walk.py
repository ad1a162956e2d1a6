"""Issue 12's walk: the real `llama-wizard --simulate` in an 80x24 tmux, every step with keys
only, on three profiles. On every step `?` opens a help that shows the key table and its Close
button and closes again; the values a person must read (GPU rows, PCI addresses, memory, the
Done step's titles and commands) are on screen whole; the catalogue shows at least 6 rows.
`q` quits from the Build and Launch steps (separate runs), exit status 0, without typing into
the flake or prompt fields. Under NO_COLOR the selections carry glyphs ([x], [ ], (•), ( ))."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_wizard.detect.model import Inventory
from llama_wizard.models.catalogue import load_catalogue
from llama_wizard.tui.format import gpu_memory
from tests.helpers import wizard_executable
from tests.nix_fixtures import fixture_flake
from tests.terminal import Terminal

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="scripts/test installs tmux")

SIZE = (80, 24)
PROFILES = ["7900xtx-raphael-igpu", "2x-mi50", "no-gpu"]
DEFAULT_PROMPT = "The capital of France is"


@pytest.fixture
def short_dirs() -> Iterator[Path]:
    """Short XDG directories: the build's result link (under XDG_STATE_HOME) is a command
    word that must fit on one 76-column line, which a pytest tmp path does not."""
    base = Path(tempfile.mkdtemp(prefix="lw", dir="/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _env(base: Path, no_color: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    for name, short in (("XDG_CONFIG_HOME", "c"), ("XDG_CACHE_HOME", "k"),
                        ("XDG_STATE_HOME", "s"), ("XDG_DATA_HOME", "d")):  # fmt: skip
        env[name] = str(base / short)
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    return env


def _start(profile: str, base: Path, *, no_color: bool = False) -> tuple[Terminal, str]:
    flake = fixture_flake(base / "f")
    argv = [wizard_executable(), "--simulate", profile, "--flake", flake]
    return Terminal(argv, _env(base, no_color), size=SIZE, keep_status=True), flake


def _inventory(profile: str) -> Inventory:
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.session import WizardSession

    with open_machine(None, profile) as machine:
        return WizardSession(machine, None).detect()


def _saved(base: Path, profile: str) -> dict:
    document = json.loads((base / "c" / "llama-wizard" / "settings.json").read_text())
    return document["machines"][f"simulated:{profile}"]


def _check_help(terminal: Terminal, close: str) -> None:
    """`?` opens the help: the key table and Close are in view at 80x24; `close` shuts it."""
    terminal.keys("?")
    screen = terminal.wait_for("Close (escape)", timeout=10)
    for key in ("ctrl+n", "escape", "F1", "ctrl+q"):
        assert key in screen, f"{key} missing from the help's key table:\n{screen}"
    terminal.keys(close)
    _wait_gone(terminal, "Close (escape)")


def _wait_gone(terminal: Terminal, text: str, timeout: float = 10) -> str:
    import time

    deadline = time.monotonic() + timeout
    screen = terminal.screen()
    while text in screen and time.monotonic() < deadline:
        time.sleep(0.1)
        screen = terminal.screen()
    assert text not in screen, f"{text!r} is still on screen:\n{screen}"
    return screen


def _footer(screen: str) -> str:
    return screen.rstrip("\n").splitlines()[-1]


def _check_keys_shown(terminal: Terminal, timeout: float = 10) -> None:
    """The focus is not in a text field: the footer offers `?` and `q` themselves."""
    import time

    deadline = time.monotonic() + timeout
    footer = ""
    while time.monotonic() < deadline:
        footer = _footer(terminal.screen())
        if "? Help" in footer and "q Quit" in footer:
            return
        time.sleep(0.1)
    raise AssertionError(f"the footer lacks `? Help` / `q Quit`: {footer!r}")


def _no_ellipsis(screen: str) -> None:
    body = screen.rstrip("\n").splitlines()[:-1]  # the footer may elide a key's name
    cut = [line for line in body if "…" in line]
    assert not cut, "cut values:\n" + "\n".join(cut) + "\n\n" + screen


def _walk(profile: str, base: Path, *, no_color: bool) -> None:
    terminal, flake = _start(profile, base, no_color=no_color)
    inventory = _inventory(profile)
    try:
        # 1 Hardware: every GPU's name, full PCI address and memory, whole.
        screen = terminal.wait_for("found" if inventory.gpus else "No GPU found")
        screen = terminal.wait_for("RAM")
        for gpu in inventory.gpus:
            assert f"PCI {gpu.pci_bus_id}" in screen, screen
            assert gpu_memory(gpu) in screen, screen
            assert gpu.name in screen, screen
        _no_ellipsis(screen)
        _check_keys_shown(terminal)
        if no_color and inventory.gpus:
            assert "[x]" in screen, screen
            if any(g.integrated for g in inventory.gpus):
                assert "[ ]" in screen, screen  # the iGPU is left out, and shown so
        _check_help(terminal, "escape")

        # 2 Build: the output Select has the focus, not the flake field.
        terminal.keys("C-n")
        screen = terminal.wait_for(" from ", timeout=60)
        output = re.search(r"^ Build (\S+)(?: for \S+)? from ", screen, re.M)
        assert output, screen
        _check_keys_shown(terminal)
        _check_help(terminal, "?")

        # 3 Model: at least 6 catalogue rows, each model's name whole.
        terminal.keys("C-n")
        screen = terminal.wait_for("Chosen:", timeout=60)
        screen = _wait_fitted(terminal)
        # The list is ranked (best for this machine first): its first rows, each a whole name.
        names = [model.name for model in load_catalogue().models]
        rows = screen.split("\n Model (by ", 1)[1].split("\n Other ", 1)[0].splitlines()[1:]
        whole = [r for r in rows if any(re.match(rf" {re.escape(n)}\s", r) for n in names)]
        assert len(whole) >= 6, screen
        assert _bars_fit(screen), screen
        _no_ellipsis(screen)
        _check_keys_shown(terminal)
        _check_help(terminal, "q")

        # 4 Build run.
        terminal.keys("C-n")
        screen = terminal.wait_for("Built.", timeout=120)
        _check_help(terminal, "escape")

        # 5 Launch: the program choice has the focus; the selection reads by glyph.
        terminal.keys("C-n")
        screen = terminal.wait_for("llama-completion", timeout=30)
        screen = terminal.wait_for("ctrl+r runs it")
        _check_keys_shown(terminal)
        if no_color:
            assert "(•) llama-completion" in screen and "( ) llama-server" in screen, screen
        _check_help(terminal, "?")

        # 6 Done: the titles whole, and the build command's words each on one line.
        terminal.keys("C-n")
        screen = terminal.wait_for("NixOS service (services.llama-server)", timeout=30)
        assert re.search(r"Serve with llama-server on \S+:\d+\s", screen), screen
        assert f"Build ({output.group(1)})" in screen, screen
        assert f"'{flake}#{output.group(1)}'" in screen or f"{flake}#{output.group(1)}" in screen
        link = re.search(r"(\S*/llama-wizard/builds/result-\S+)", screen)
        assert link and link.group(1).startswith(str(base / "s")), screen
        assert "--out-link" in screen
        _no_ellipsis(screen)
        _check_keys_shown(terminal)
        _check_help(terminal, "escape")

        terminal.keys("q")
        assert terminal.exit_status(timeout=15) == 0, terminal.screen()
    finally:
        terminal.close()


def _wait_fitted(terminal: Terminal, timeout: float = 60) -> str:
    """The catalogue's fit column is filled in (no `…` left in it)."""
    import time

    deadline = time.monotonic() + timeout
    screen = terminal.screen()
    while "…" in screen and time.monotonic() < deadline:
        time.sleep(0.1)
        screen = terminal.screen()
    return screen


def _bars_fit(screen: str) -> bool:
    """Every memory bar on screen is the same width (none spills past its column)."""
    bars = re.findall(r"[█▓▒░!]{4,}", screen)
    return len({len(bar) for bar in bars}) <= 1


@pytest.mark.parametrize("profile", PROFILES)
def test_walk_every_step_at_80x24(profile: str, short_dirs: Path) -> None:
    _walk(profile, short_dirs, no_color=False)


def test_walk_under_no_color_shows_selection_glyphs(short_dirs: Path) -> None:
    _walk("7900xtx-raphael-igpu", short_dirs, no_color=True)


def test_q_on_the_build_step_quits_without_typing_into_the_flake(short_dirs: Path) -> None:
    terminal, flake = _start("2x-mi50", short_dirs)
    try:
        terminal.wait_for("2 GPUs found")
        terminal.keys("C-n")
        terminal.wait_for(" from ", timeout=60)
        terminal.keys("q")
        assert terminal.exit_status(timeout=15) == 0, terminal.screen()
    finally:
        terminal.close()
    assert _saved(short_dirs, "2x-mi50")["flake"] == flake


def test_q_on_the_launch_step_quits_without_typing_into_the_prompt(short_dirs: Path) -> None:
    terminal, _ = _start("2x-mi50", short_dirs)
    try:
        terminal.wait_for("2 GPUs found")
        terminal.keys("C-n")
        terminal.wait_for(" from ", timeout=60)
        terminal.keys("C-n")
        terminal.wait_for("Chosen:", timeout=60)
        terminal.keys("C-n")
        terminal.wait_for("Built.", timeout=120)
        terminal.keys("C-n")
        terminal.wait_for("ctrl+r runs it", timeout=30)
        terminal.keys("q")
        assert terminal.exit_status(timeout=15) == 0, terminal.screen()
        assert "Running" not in terminal.screen()  # Enter-less: nothing was started
    finally:
        terminal.close()
    assert _saved(short_dirs, "2x-mi50").get("prompt", DEFAULT_PROMPT) == DEFAULT_PROMPT
