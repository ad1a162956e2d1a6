"""Driving the wizard app in tests: a simulated machine, the fixture flake, and waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from llama_wizard.detect.simulate import materialize
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.tui.app import WizardApp
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.settings import Settings
from tests.nix_fixtures import fixture_flake


def make_app(directory: Path, profile: str, **settings: object) -> WizardApp:
    flake = settings.pop("flake", None) or fixture_flake(directory / "flake")
    box = materialize(profile, directory / "machine")
    machine = Machine(SystemRoot(box.root), box.env(), simulated=profile)
    return WizardApp(machine, timeout=5, settings=Settings(flake=str(flake), **settings))


async def settle(pilot: Pilot, timeout: float = 60) -> None:
    """Wait until every worker (detection, planning, fitting) is done and the screen redrawn."""
    app = pilot.app
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await pilot.pause()  # detection starts after the first paint
    while app.state.inventory is None or any(
        w.is_running or w.state.name == "PENDING" for w in app.workers if w.group != "build-follow"
    ):
        assert loop.time() < deadline, "workers never finished"
        await asyncio.sleep(0.02)
    await pilot.pause()


async def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def next_step(pilot: Pilot) -> None:
    await pilot.press("ctrl+n")
    await settle(pilot)
