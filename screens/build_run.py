"""Step 4, build run: build the plan's output with progress and its log; cancel, retry, skip
when it is already built, and reattach to a build started before (here or from the CLI)."""

from __future__ import annotations

import os
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static

from llama_wizard.detect.errors import ActionableError
from llama_wizard.nix.build import BuildAlreadyRunning, BuildRecord, find_build, start_build
from llama_wizard.screens.base import WizardStep
from llama_wizard.screens.build import CSS as BUILD_CSS
from llama_wizard.screens.build import BuildView
from llama_wizard.tui.plan import state_dir


def build_name(out_link: str) -> str:
    return Path(out_link).name.removeprefix("result-")


def already_built(out_link: str) -> str | None:
    """The store path the result link points at, when the build is there."""
    link = Path(out_link)
    if not link.is_symlink():
        return None
    target = os.path.realpath(link)
    return target if target.startswith("/nix/store/") and Path(target).exists() else None


class BuildRunScreen(WizardStep):
    STEP = "build-run"
    CSS_PATH = BUILD_CSS
    BINDINGS = [  # noqa: RUF012
        Binding("c", "cancel", "Cancel build"),
        Binding("r", "rebuild", "Build again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.built: str | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield Static("", id="build-status")
        yield Vertical(id="build-area")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        plan = self.state.plan
        if plan is None:
            self._status("There is no plan yet: go back to the Build step.")
            return
        if plan.nix is None:
            self._status(
                "Nix is not installed, so nothing can be built here.\n"
                "Install it (`sudo apt install nix-bin`), then come back."
            )
            return
        name = build_name(plan.build.out_link)
        running = find_build(state_dir(), name)
        if running is not None and not running.finished:
            self._status(f"Reattached to the build of {name} started {running.started}.")
            self._follow(running)
            return
        self.built = already_built(plan.build.out_link)
        if self.built:
            self._status(f"{name} is already built: {self.built}\nctrl+n goes on; r builds again.")
            return
        self.start()

    def _status(self, text: str) -> None:
        self.query_one("#build-status", Static).update(text)

    @work(thread=True, exclusive=True, group="build-start")
    def start(self) -> None:
        plan = self.state.plan
        assert plan is not None
        name = build_name(plan.build.out_link)
        try:
            record = start_build(
                plan.build.build_argv,
                name,
                state_dir(),
                out_link=plan.build.out_link,
                env=self.state.machine.env,
            )
        except BuildAlreadyRunning as error:
            record = error.record
        except ActionableError as error:
            self.app.call_from_thread(self._status, f"⚠ {error.message}\nFix: {error.fix}")
            return
        self.app.call_from_thread(self._follow, record)

    def _follow(self, record: BuildRecord) -> None:
        self.state.build_record = record
        self.state.build_running = True
        area = self.query_one("#build-area", Vertical)
        area.remove_children()
        area.mount(BuildView(record))
        self._status(
            f"Building {record.output}; c cancels, escape leaves it running. Log: {record.text_log}"
        )

    @on(BuildView.Finished)
    def finished(self, event: BuildView.Finished) -> None:
        self.state.build_running = False
        self.state.build_record = event.record
        if event.record.status == "succeeded":
            self.built = event.record.out_paths[-1] if event.record.out_paths else "built"
            self._status("Built. ctrl+n goes on to the launch.")
        else:
            self._status(f"The build {event.record.status}. r tries again; its log is kept.")

    def action_cancel(self) -> None:
        views = self.query(BuildView)
        if views:
            views.first().cancel()

    def action_rebuild(self) -> None:
        if self.state.build_running:
            self.notify("A build is running already.", severity="warning")
            return
        self.built = None
        self.start()

    def can_leave(self) -> str | None:
        if self.built:
            return None
        if self.state.build_running:
            return "The build is still running (escape goes back and leaves it running)."
        return "Build first (r), or come back once it is built."
