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
from llama_wizard.tui.session import Overrides, WizardSession
from llama_wizard.tui.settings import Choices, SettingsStore
from tests.nix_fixtures import fixture_flake


def make_app(
    directory: Path,
    profile: str | dict,
    *,
    simulated: bool = True,
    timeout: float = 5,
    **named: object,
) -> WizardApp:
    """The wizard on a simulated machine (or, simulated=False, as if it were the real one),
    with the saved settings file (the test's XDG config) and `named` as if given on the command
    line: flake (default the fixture flake; "" names none), output, gpus, model, quant, ctx."""
    flake = named.pop("flake", None)
    if flake is None:
        flake = str(fixture_flake(directory / "flake"))
    box = materialize(profile, directory / "machine")
    name = profile if isinstance(profile, str) else profile.get("name", "custom")
    machine = Machine(SystemRoot(box.root), box.env(), simulated=name if simulated else None)
    overrides = Overrides(flake=str(flake) if flake else None, **named)  # type: ignore[arg-type]
    session = WizardSession(machine, SettingsStore.load(), overrides, timeout=timeout)
    return WizardApp(session)


def saved_choices(key: str) -> Choices:
    """What the settings file holds for one machine key ("simulated:2x-mi50", ...)."""
    store = SettingsStore.load()
    assert key in store.machines, f"nothing saved for {key}: {sorted(store.machines)}"
    return store.choices_for(key, key, simulated=key.startswith("simulated:"))


def record_notifications(app: WizardApp) -> list[str]:
    """Every notification the app shows from now on (tests run with toasts hidden)."""
    shown: list[str] = []
    notify = app.notify

    def recording(message: str, *args: object, **kwargs: object) -> None:
        shown.append(str(message))
        notify(message, *args, **kwargs)  # type: ignore[arg-type]

    app.notify = recording  # type: ignore[method-assign]
    return shown


async def settle(pilot: Pilot, timeout: float = 60) -> None:
    """Wait until every worker (detection, planning, fitting) is done and the screen redrawn."""
    app = pilot.app
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await pilot.pause()  # detection starts after the first paint
    while app.session.inventory is None or any(
        w.is_running or w.state.name == "PENDING"
        for w in app.workers
        if w.group not in ("build-follow", "launch")
    ):
        assert loop.time() < deadline, "workers never finished"
        await asyncio.sleep(0.02)
    await pilot.pause()
    await pilot.pause()  # the messages the workers posted last


async def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def next_step(pilot: Pilot) -> None:
    await pilot.press("ctrl+n")
    await settle(pilot)


async def built_to_launch(pilot: Pilot, app: WizardApp) -> None:
    """From the first step through the real build of the chosen output to the Launch step
    (the build must succeed)."""
    from llama_wizard.screens.build import BuildView

    await settle(pilot)
    for _step in ("build", "model", "build-run"):
        await next_step(pilot)
    await wait_for(lambda: bool(app.screen.query(BuildView))
                   and app.screen.query_one(BuildView).final is not None, 300)  # fmt: skip
    final = app.screen.query_one(BuildView).final
    assert final is not None and final.status == "succeeded", final
    await next_step(pilot)
    assert app.step == "launch"
