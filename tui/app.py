"""The Textual application: the full-screen face of the wizard, one screen per step (screens/).

The app holds the WizardSession (tui/session.py), which owns every rule of the flow; the screens
only ask and show. Workers compute and post messages; the handlers, on the UI thread, change the
session."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from llama_wizard.tui.session import Overrides, WizardSession
from llama_wizard.tui.steps import STEP_KEYS, STEP_TITLES, STEPS

if TYPE_CHECKING:
    from llama_wizard.nix.build import BuildRecord
    from llama_wizard.tui.launch import LaunchedProcess


def _screen_for(step: str) -> Screen[None]:
    # Imported here so `llama-wizard --help` and the subcommands never load the screens.
    if step == "hardware":
        from llama_wizard.screens.hardware import HardwareScreen

        return HardwareScreen()
    if step == "build":
        from llama_wizard.screens.build_choice import BuildChoiceScreen

        return BuildChoiceScreen()
    if step == "model":
        from llama_wizard.screens.model import ModelScreen

        return ModelScreen()
    if step == "build-run":
        from llama_wizard.screens.build_run import BuildRunScreen

        return BuildRunScreen()
    if step == "launch":
        from llama_wizard.screens.launch import LaunchScreen

        return LaunchScreen()
    from llama_wizard.screens.done import DoneScreen

    return DoneScreen()


class WizardApp(App[int]):
    """The full-screen wizard over a WizardSession (screens.base.WizardHost)."""

    CSS_PATH = "app.tcss"
    TITLE = "llama-wizard"
    # Screens lay themselves out differently below 100 columns (the 80x24 SSH terminal).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012
    BINDINGS = [  # noqa: RUF012 - Textual's declared class attribute
        Binding("ctrl+c", "request_quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, session: WizardSession) -> None:
        super().__init__()
        self.session = session
        self.step = STEP_KEYS[0]
        self.launched: LaunchedProcess | None = None
        self.build_running = False
        self.launch_running = False
        self.running: list[BuildRecord] = []  # builds found running at start

    def get_default_screen(self) -> Screen:
        # The first step is the default screen itself: no blank screen to draw first.
        return _screen_for(self.step)

    def on_mount(self) -> None:
        if self.session.simulated:
            self.sub_title = f"SIMULATED: {self.session.simulated}"
        self.show_notes()  # what loading the settings file had to say
        # Not urgent, and it must not compete with the first paint.
        self.set_timer(0.5, self.look_for_running_builds)

    # -- what the session says ------------------------------------------------------------------

    def show_notes(self) -> None:
        for note in self.session.take_notes():
            self.notify(note, severity="warning", timeout=12, markup=False)

    def save_choices(self) -> None:
        problem = self.session.save()
        if problem:
            self.notify(problem, severity="warning", timeout=12, markup=False)

    # -- builds started before ------------------------------------------------------------------

    @work(thread=True, group="running-builds")
    def look_for_running_builds(self) -> None:
        """A build started before (by this wizard, another session or `llama-wizard build`)
        may still be running: say so, and how to follow it."""
        from llama_wizard.nix.build import running_builds
        from llama_wizard.tui.plan import state_dir

        try:
            found = running_builds(state_dir())
        except OSError:
            return  # an unusable state directory: the build step says so, with the fix
        if found:
            self.call_from_thread(self._found_running, found)

    def _found_running(self, records: list[BuildRecord]) -> None:
        self.running = records
        for record in records:
            self.notify(
                f"A build of {record.output} started {record.started} is still running. "
                "ctrl+p → “Follow the running build” shows it.",
                timeout=15,
                markup=False,
            )

    def follow_running_build(self, record: BuildRecord) -> None:
        from llama_wizard.screens.build import BuildScreen

        self.push_screen(BuildScreen(record, f"Following the build of {record.output}"))

    # -- navigation -----------------------------------------------------------------------------

    def goto(self, step: str) -> None:
        self.step = step
        if len(self.screen_stack) == 1:  # the default screen (step 1) cannot be switched away
            self.push_screen(_screen_for(step))
        else:
            self.switch_screen(_screen_for(step))

    def action_next_step(self) -> None:
        from llama_wizard.screens.base import WizardStep

        screen = self.screen
        step = self.step
        if isinstance(screen, WizardStep):
            screen.leave(partial(self._advance, step))
        else:
            self._advance(step)

    def _advance(self, step: str) -> None:
        if step != self.step:
            return  # answered after the person went elsewhere
        index = STEP_KEYS.index(step)
        if index + 1 < len(STEP_KEYS):
            self.save_choices()
            self.show_notes()
            self.goto(STEP_KEYS[index + 1])

    def action_previous_step(self) -> None:
        index = STEP_KEYS.index(self.step)
        if index > 0:
            self.goto(STEP_KEYS[index - 1])

    # -- help, quit, palette --------------------------------------------------------------------

    def action_help(self) -> None:
        from llama_wizard.screens.dialogs import HelpScreen

        self.push_screen(HelpScreen())

    def action_request_quit(self) -> None:
        busy = []
        if self.build_running:
            busy.append(
                "A build is running. It goes on in the background; `llama-wizard build` "
                "follows it again."
            )
        if self.launched is not None and self.launched.returncode is None:
            busy.append("llama.cpp is running and will be stopped.")
        if not busy:
            self._quit()
            return
        from llama_wizard.screens.dialogs import ConfirmScreen

        def answered(quit_now: bool | None) -> None:
            if quit_now:
                self._quit()

        self.push_screen(ConfirmScreen("\n\n".join(["**Quit?**", *busy])), answered)

    def _quit(self) -> None:
        if self.launched is not None:
            self.launched.stop()
        self.save_choices()
        self.exit(0)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for number, step in enumerate(STEPS, 1):
            yield SystemCommand(
                f"Go to step {number}: {step.title}",
                f"Jump to the {STEP_TITLES[step.key]} step",
                partial(self.goto, step.key),
            )
        for record in self.running:
            yield SystemCommand(
                "Follow the running build",
                f"Show the build of {record.output} started {record.started}",
                partial(self.follow_running_build, record),
            )
        yield SystemCommand(
            "Reset saved choices",
            "Forget the choices remembered between runs",
            self._reset_settings,
        )

    def _reset_settings(self) -> None:
        from llama_wizard.tui.settings import reset_settings

        try:
            backup = reset_settings()
        except OSError as error:
            self.notify(
                f"The saved choices could not be reset: {error.strerror or error}.",
                severity="warning",
                markup=False,
            )
            return
        self.session.forget_choices()
        self.notify(
            f"Saved choices forgotten{f' (kept as {backup})' if backup else ''}; back to the "
            "recommendations.",
            markup=False,
        )
        self.goto(STEP_KEYS[0])  # every step shows choices that were just forgotten


def run_wizard(
    root: str | None = None,
    simulate: str | None = None,
    timeout: float = 10.0,
    overrides: Overrides | None = None,
) -> int:
    """The full-screen wizard; `overrides` (from the command line) win over saved choices.
    Exit status 0 when the person quits, 1 when the app failed."""
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.settings import SettingsStore

    with open_machine(root, simulate) as machine:
        session = WizardSession(machine, SettingsStore.load(), overrides, timeout=timeout)
        app = WizardApp(session)
        code = app.run()
    if app.return_code:
        return app.return_code
    return code or 0
