"""Snapshots of each wizard step at 80x24 and 120x40 (pytest-textual-snapshot).

Everything on screen must be the same on every machine: the simulated 2x MI50 box, the fixture
flake copied to a fixed path, and fixed XDG directories (the result link's path is shown).
Update after an intended change with `pytest tests/test_snapshots.py --snapshot-update`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.nix_fixtures import fixture_flake
from tests.wizard_helpers import make_app, settle

FIXED = Path("/tmp/llama-wizard-snapshots")
SIZES = [(80, 24), (120, 40)]
STEPS = ["hardware", "build", "model", "build-run", "launch", "done"]


@pytest.fixture
def fixed_dirs(monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.rmtree(FIXED, ignore_errors=True)
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(name, str(FIXED / name.lower()))
    monkeypatch.setenv("HOME", str(FIXED / "home"))
    flake = Path(fixture_flake(FIXED / "flake"))
    # The flake's identity is on screen (in result link names), and Nix's URL for a path flake
    # carries its newest modification time: hold that still too.
    for path in [*flake.iterdir(), flake]:
        os.utime(path, (1_700_000_000, 1_700_000_000))
    return FIXED


def _prebuild(app) -> None:
    """Build the plan's output first, so the build-run step shows "already built" (a build in
    progress shows elapsed times, which no snapshot can hold still)."""
    build = app.session.plan.build
    subprocess.run(build.build_argv, check=True, capture_output=True)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("step", STEPS)
def test_step(step: str, size: tuple[int, int], fixed_dirs: Path, snap_compare) -> None:
    app = make_app(fixed_dirs, "2x-mi50", flake=str(fixed_dirs / "flake"),
                   model="Qwen/Qwen3-0.6B-GGUF")  # fmt: skip

    async def go_to_step(pilot) -> None:
        await settle(pilot)
        for name in STEPS[1 : STEPS.index(step) + 1]:
            if name == "build-run":
                _prebuild(app)
            app.goto(name)
            await settle(pilot)
        for field in app.screen.query(Input):  # a blinking cursor would make every run differ
            field.cursor_blink = False
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=go_to_step)


def test_help_at_80x24(fixed_dirs: Path, snap_compare) -> None:
    """The help's key table and its Close button are in view in the smallest terminal."""
    app = make_app(fixed_dirs, "2x-mi50", flake=str(fixed_dirs / "flake"))

    async def open_help(pilot) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=open_help)


def test_hardware_with_a_masked_igpu_at_80x24(fixed_dirs: Path, snap_compare) -> None:
    """Both GPUs ticked on the command line; the build leaves the iGPU out, and says so:
    `[x]` for the card, `[-]` and a line for the iGPU."""
    app = make_app(fixed_dirs, "7900xtx-raphael-igpu", flake=str(fixed_dirs / "flake"),
                   gpus=[0, 1])  # fmt: skip

    async def ready(pilot) -> None:
        await settle(pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)
