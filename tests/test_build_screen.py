"""The wizard's build step, driven with the pilot over real nix builds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.app import App
from textual.widgets import Log, Static

from llama_wizard.nix.build import read_record, start_build, wait_finished
from llama_wizard.screens.build import BuildScreen
from tests.nix_fixtures import fixture_flake, fresh_variant


class BuildHost(App[None]):
    def __init__(self, screen: BuildScreen) -> None:
        super().__init__()
        self.build_screen = screen

    def on_mount(self) -> None:
        self.push_screen(self.build_screen)


async def wait_until(predicate, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_build_screen_shows_progress_and_result(tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "flake")
    fresh_variant(flake, "cpu")
    record = start_build(["nix", "build", f"{flake}#default", "--no-link"], "default",
                         tmp_path / "state")  # fmt: skip
    screen = BuildScreen(record)
    app = BuildHost(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(lambda: screen.final is not None)
        await pilot.pause()
        assert screen.final.status == "succeeded"
        log = screen.query_one("#build-log", Log)
        assert any("[24/24]" in line for line in log.lines)
        result = str(screen.query_one("#build-result", Static).content)
        assert "succeeded" in result and "/nix/store/" in result
        await pilot.press("escape")


async def test_cancel_key_cancels_the_build(tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "flake")
    fresh_variant(flake, "slow")
    record = start_build(["nix", "build", f"{flake}#slow"], "slow", tmp_path / "state")
    try:
        screen = BuildScreen(record)
        app = BuildHost(screen)
        async with app.run_test(size=(80, 24)) as pilot:
            log = screen.query_one("#build-log", Log)
            await wait_until(lambda: any("[1/600]" in line for line in log.lines))
            await pilot.press("c")
            await pilot.pause()
            await pilot.press("y")  # cancelling an hour-long build asks first
            await wait_until(lambda: screen.final is not None)
            assert screen.final.status == "cancelled"
    finally:
        from llama_wizard.nix.build import request_cancel

        if not read_record(record).finished:
            request_cancel(read_record(record))
            wait_finished(record, timeout=30)


async def test_leaving_the_screen_leaves_the_build_running(tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "flake")
    fresh_variant(flake, "slow")
    record = start_build(["nix", "build", f"{flake}#slow"], "slow", tmp_path / "state")
    try:
        screen = BuildScreen(record)
        app = BuildHost(screen)
        async with app.run_test() as pilot:
            await pilot.pause(0.5)
            await pilot.press("escape")
            await pilot.pause()
        assert read_record(record).status == "running"
    finally:
        from llama_wizard.nix.build import request_cancel

        request_cancel(read_record(record))
        assert wait_finished(record, timeout=30).status == "cancelled"
