"""The build view over real nix builds of the fixture flake, at 80x24: the log keeps following
after a resize, the finished state is static (no `--%`, no `0/0 built`), elapsed time counts
from the build's own start when the view re-attaches, and cancelling asks first."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from textual.app import App
from textual.geometry import Region
from textual.widgets import Button, Label, Log, ProgressBar, Static

from llama_wizard.nix.build import (
    LogFollower,
    read_record,
    request_cancel,
    start_build,
    wait_finished,
)
from llama_wizard.screens.build import BuildScreen, BuildView
from llama_wizard.screens.dialogs import ConfirmScreen
from llama_wizard.tui.plan import state_dir
from tests.nix_fixtures import fixture_flake, fresh_variant
from tests.wizard_helpers import make_app, next_step, settle, wait_for


class BuildHost(App[None]):
    def __init__(self, screen: BuildScreen) -> None:
        super().__init__()
        self.build_screen = screen

    def on_mount(self) -> None:
        self.push_screen(self.build_screen)


def log_has(log: Log, text: str) -> bool:
    return any(text in line for line in log.lines)


def last_step(log: Log) -> int:
    steps = [int(m.group(1)) for line in log.lines if (m := re.match(r"\[(\d+)/600\]", line))]
    return max(steps, default=0)


def shows_the_end(log: Log) -> bool:
    """The log's last line is on screen."""
    height = log.scrollable_content_region.height
    return height > 0 and round(log.scroll_y) + height >= log.line_count


def detail(view: BuildView) -> str:
    return str(view.query_one("#derivations-detail", Label).content)


def on_screen(region: Region, size: tuple[int, int]) -> bool:
    return (
        region.width > 0
        and region.height > 0
        and region.x >= 0
        and region.y >= 0
        and region.right <= size[0]
        and region.bottom <= size[1]
    )


def cancel_when_done(record) -> None:
    request_cancel(read_record(record))
    assert wait_finished(record, timeout=30).finished


async def test_the_log_keeps_following_after_a_resize(tmp_path: Path) -> None:
    flake = fresh_variant(fixture_flake(tmp_path / "flake"), "slow")
    record = start_build(["nix", "build", f"{flake}#slow"], "slow", tmp_path / "state")
    try:
        screen = BuildScreen(record)
        async with BuildHost(screen).run_test(size=(80, 24)) as pilot:
            log = screen.query_one("#build-log", Log)
            await wait_for(lambda: log_has(log, "[2/600]"))
            # Smaller: the end moves away from the view without any scroll (the reported
            # bug: it stayed at [2/300] from then on).
            await pilot.resize_terminal(80, 14)
            await pilot.pause()
            reached = last_step(log)
            await wait_for(lambda: last_step(log) >= reached + 3, timeout=30)
            await pilot.pause()
            assert shows_the_end(log), (log.scroll_y, log.max_scroll_y, log.line_count)
            # Narrower and taller again, then small again: still at the end.
            await pilot.resize_terminal(60, 30)
            await pilot.pause()
            await pilot.resize_terminal(80, 12)
            reached = last_step(log)
            await wait_for(lambda: last_step(log) >= reached + 2, timeout=30)
            await pilot.pause()
            assert shows_the_end(log)
            # Scrolling up stops following (the person is reading); the end resumes it.
            log.scroll_home(animate=False, immediate=True)
            reached = last_step(log)
            await wait_for(lambda: last_step(log) >= reached + 2, timeout=30)
            await pilot.pause()
            assert round(log.scroll_y) == 0 and not shows_the_end(log)
            log.scroll_end(animate=False, immediate=True)
            reached = last_step(log)
            await wait_for(lambda: last_step(log) >= reached + 2, timeout=30)
            await pilot.pause()
            assert shows_the_end(log)
    finally:
        cancel_when_done(record)


async def test_a_finished_build_is_static_and_an_already_built_output_says_so(
    tmp_path: Path,
) -> None:
    flake = fresh_variant(fixture_flake(tmp_path / "flake"), "cpu")
    argv = ["nix", "build", f"{flake}#default", "--no-link"]
    first = start_build(argv, "default", tmp_path / "state")
    screen = BuildScreen(first)
    async with BuildHost(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: screen.final is not None)
        await pilot.pause()
        view = screen.view
        compile_bar = view.query_one("#compile", ProgressBar)
        assert screen.final.status == "succeeded"
        assert compile_bar.total == 24 and compile_bar.percentage == 1.0  # static, not `--%`
        assert view.query_one("#derivations", ProgressBar).percentage == 1.0
        assert re.search(r"\b([1-9])/\1 built\b", detail(view)), detail(view)
        assert str(view.query_one("#build-result", Static).content).startswith(
            "Build succeeded."
        )
    # The same output again: Nix has nothing to build. (A second later: build logs are named
    # by the second they start in.)
    await asyncio.sleep(1.1)
    again = start_build(argv, "default", tmp_path / "state")
    screen = BuildScreen(again)
    async with BuildHost(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: screen.final is not None)
        await pilot.pause()
        view = screen.view
        assert screen.final.status == "succeeded"
        assert "already in the Nix store" in detail(view), detail(view)
        assert "0/0" not in detail(view)
        assert view.query_one("#derivations", ProgressBar).percentage == 1.0
        # No compile step was ever seen: the row that would animate `--%` is gone.
        assert not view.query_one("#compile-row").display
        # Whatever bar is still shown is determinate: nothing animates `--%` after the end.
        shown = [bar for bar in view.query(ProgressBar) if bar.parent.display]
        assert shown and all(bar.total is not None for bar in shown)


async def test_elapsed_counts_from_the_build_s_start_when_re_attaching(tmp_path: Path) -> None:
    flake = fresh_variant(fixture_flake(tmp_path / "flake"), "slow")
    record = start_build(["nix", "build", f"{flake}#slow"], "slow", tmp_path / "state")
    try:
        # Let it run for a while before anyone follows it.
        follower = LogFollower(record)
        seen: list[str] = []
        deadline = asyncio.get_running_loop().time() + 60
        while not any("[6/600]" in line for line in seen):
            assert asyncio.get_running_loop().time() < deadline
            seen.extend(follower.read())
            await asyncio.sleep(0.1)
        follower.close()
        screen = BuildScreen(record)
        async with BuildHost(screen).run_test(size=(80, 24)) as pilot:
            view = screen.view
            await wait_for(lambda: "·" in detail(view))
            minutes, seconds = re.search(r"· (\d\d):(\d\d)", detail(view)).groups()
            assert int(minutes) * 60 + int(seconds) >= 4, detail(view)
            await pilot.press("escape")
    finally:
        cancel_when_done(record)


async def test_cancel_asks_first_and_says_what_it_loses(tmp_path: Path) -> None:
    flake = fresh_variant(fixture_flake(tmp_path / "flake"), "slow")
    record = start_build(["nix", "build", f"{flake}#slow"], "slow", tmp_path / "state")
    try:
        screen = BuildScreen(record)
        app = BuildHost(screen)
        async with app.run_test(size=(80, 24)) as pilot:
            log = screen.query_one("#build-log", Log)
            await wait_for(lambda: log_has(log, "[2/600]"))
            await pilot.press("c")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen)
            assert "Cancel the build of slow?" in dialog.question
            assert "starts from the beginning" in dialog.question
            assert record.text_log in dialog.question
            # Readable at 80x24: the whole dialog and both buttons on screen.
            assert on_screen(dialog.query_one("#confirm-dialog").region, (80, 24))
            for button in dialog.query(Button):
                assert on_screen(button.region, (80, 24)), button.label
            await pilot.press("n")
            await pilot.pause(1.5)
            assert app.screen is screen
            assert read_record(record).status == "running"
            await pilot.press("c")
            await pilot.pause()
            await pilot.press("y")
            await wait_for(lambda: screen.final is not None, timeout=30)
            await pilot.pause()
            assert screen.final.status == "cancelled"
            result = str(screen.query_one("#build-result", Static).content)
            assert result.startswith("Build cancelled."), result
            shown = [bar for bar in screen.view.query(ProgressBar) if bar.parent.display]
            assert all(bar.total is not None for bar in shown)
    finally:
        cancel_when_done(record)


async def test_the_build_step_confirms_a_cancel_and_words_it(tmp_path: Path) -> None:
    flake = fresh_variant(fixture_flake(tmp_path / "flake"), "slow")
    app = make_app(tmp_path, "no-gpu", flake=flake, output="slow")
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await next_step(pilot)
            await next_step(pilot)
            await next_step(pilot)
            assert app.step == "build-run"
            await wait_for(lambda: app.build_running)
            view = app.screen.query_one(BuildView)
            log = view.query_one("#build-log", Log)
            await wait_for(lambda: log_has(log, "[1/600]"))
            await pilot.press("c")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("escape")  # escape keeps building
            await pilot.pause()
            assert app.build_running and view.final is None
            await pilot.press("c")
            await pilot.pause()
            await pilot.press("y")
            await wait_for(lambda: view.final is not None, timeout=30)
            await pilot.pause()
            status = str(app.screen.query_one("#build-status", Static).content)
            assert status.startswith("You cancelled the build; the log is at "), status
            assert view.final.text_log in status
            assert "The build cancelled" not in status
            await pilot.press("q")
    finally:
        plan = app.session.plan
        if plan is not None:
            from llama_wizard.nix.build import find_build

            found = find_build(state_dir(), plan.build.build_name)
            if found is not None:
                cancel_when_done(found)


async def test_a_failed_build_ends_static_with_nix_s_report(tmp_path: Path) -> None:
    flake = fresh_variant(fixture_flake(tmp_path / "flake"), "fails")
    record = start_build(["nix", "build", f"{flake}#fails", "--no-link"], "fails",
                         tmp_path / "state")  # fmt: skip
    screen = BuildScreen(record)
    async with BuildHost(screen).run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: screen.final is not None)
        await pilot.pause()
        view = screen.view
        assert screen.final.status == "failed"
        result = str(view.query_one("#build-result", Static).content)
        assert result.startswith("Build failed."), result
        assert f"full log: {record.text_log}" in result
        compile_bar = view.query_one("#compile", ProgressBar)
        assert compile_bar.total == 5 and compile_bar.progress == 5  # where it stopped, static
        assert "running" not in detail(view)
        assert str(view.query_one("#running", Static).content) == ""
