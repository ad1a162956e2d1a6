"""The Textual application: the full-screen wizard, one screen per step (screens/)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from llama_wizard.tui.machine import Machine, open_machine
from llama_wizard.tui.settings import Settings, reset_settings
from llama_wizard.tui.state import WizardState

STEP_ORDER = ("hardware", "build", "model", "build-run", "launch", "done")


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
    CSS_PATH = "app.tcss"
    TITLE = "llama-wizard"
    # Screens lay themselves out differently below 100 columns (the 80x24 SSH terminal).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012
    BINDINGS = [  # noqa: RUF012 - Textual's declared class attribute
        Binding("ctrl+c", "request_quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self, machine: Machine, timeout: float = 10.0, settings: Settings | None = None
    ) -> None:
        super().__init__()
        self.state = WizardState(
            machine=machine, timeout=timeout, settings=settings or Settings.load()
        )
        self.step = "hardware"
        self.launched = None  # the running llama.cpp process, stopped before quitting
        self.running: list = []  # builds found running at start

    def get_default_screen(self) -> Screen:
        # The first step is the default screen itself: no blank screen to draw first.
        return _screen_for(self.step)

    def on_mount(self) -> None:
        if self.state.simulated:
            self.sub_title = f"SIMULATED: {self.state.simulated}"
        for note in self.state.settings.notes:
            self.notify(note, severity="warning", timeout=10)
        # Not urgent, and it must not compete with the first paint.
        self.set_timer(0.5, self.look_for_running_builds)

    @work(thread=True, group="running-builds")
    def look_for_running_builds(self) -> None:
        """A build started before (by this wizard, another session or `llama-wizard build`)
        may still be running: say so, and how to follow it."""
        from llama_wizard.nix.build import running_builds
        from llama_wizard.tui.plan import state_dir

        self.running = running_builds(state_dir())
        for record in self.running:
            self.call_from_thread(
                self.notify,
                f"A build of {record.output} started {record.started} is still running. "
                "ctrl+p → “Follow the running build” shows it.",
                timeout=15,
            )

    def follow_running_build(self, record) -> None:
        from llama_wizard.screens.build import BuildScreen

        self.push_screen(BuildScreen(record, f"Following the build of {record.output}"))

    # -- navigation -------------------------------------------------------------------------

    def goto(self, step: str) -> None:
        self.step = step
        if len(self.screen_stack) == 1:  # the default screen (step 1) cannot be switched away
            self.push_screen(_screen_for(step))
        else:
            self.switch_screen(_screen_for(step))

    def action_next_step(self) -> None:
        from llama_wizard.screens.base import WizardStep

        screen = self.screen
        if isinstance(screen, WizardStep):
            problem = screen.can_leave()
            if problem:
                self.notify(problem, severity="warning")
                return
        index = STEP_ORDER.index(self.step)
        if index + 1 < len(STEP_ORDER):
            self.save_settings()
            self.goto(STEP_ORDER[index + 1])

    def action_previous_step(self) -> None:
        index = STEP_ORDER.index(self.step)
        if index > 0:
            self.goto(STEP_ORDER[index - 1])

    def save_settings(self) -> None:
        try:
            self.state.settings.save()
        except OSError as error:
            self.notify(f"Could not save your choices: {error}", severity="warning")

    # -- help, quit, palette ----------------------------------------------------------------

    def action_help(self) -> None:
        from llama_wizard.screens.dialogs import HelpScreen

        self.push_screen(HelpScreen())

    def action_request_quit(self) -> None:
        busy = []
        if self.state.build_running:
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
        self.save_settings()
        self.exit(0)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        from llama_wizard.screens.base import STEP_TITLES

        for number, step in enumerate(STEP_ORDER, 1):
            yield SystemCommand(
                f"Go to step {number}: {STEP_TITLES[step]}",
                f"Jump to the {STEP_TITLES[step]} step",
                partial(self.goto, step),
            )
        for record in getattr(self, "running", []):
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
        backup = reset_settings()
        self.state.settings = Settings()
        self.notify(f"Saved choices forgotten{f' (kept as {backup})' if backup else ''}.")


def run_wizard(
    root: str | None = None,
    simulate: str | None = None,
    timeout: float = 10.0,
    overrides: dict[str, object] | None = None,
) -> int:
    """The full-screen wizard; `overrides` (from the command line) win over saved choices."""
    settings = Settings.load()
    for key, value in (overrides or {}).items():
        if value is not None:
            setattr(settings, key, value)
    with open_machine(root, simulate) as machine:
        code = WizardApp(machine, timeout=timeout, settings=settings).run()
    return code or 0
