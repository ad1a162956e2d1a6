"""The Textual application: the full-screen face of the wizard, one screen per step (screens/).

The app holds the WizardSession (tui/session.py), which owns every rule of the flow; the screens
only ask and show. Workers compute and post messages; the handlers, on the UI thread, change the
session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

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
    # Below 32 rows (the 24-row SSH terminal) fields lose their borders: the lists get the rows.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]  # noqa: RUF012
    BINDINGS = [  # noqa: RUF012 - Textual's declared class attribute
        Binding("ctrl+c", "request_quit", "Quit", show=False, priority=True),
        # Textual's own ctrl+q quits at once: this one asks first when work is going on, and
        # saves the choices (the steps show it in the footer where `q` would be typed).
        Binding("ctrl+q", "request_quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, session: WizardSession) -> None:
        super().__init__()
        self.session = session
        self.step = STEP_KEYS[0]
        self.launched: LaunchedProcess | None = None
        self.build_running = False
        self.launch_running = False
        self.running: list[BuildRecord] = []  # builds found running at start
        self.build_record: BuildRecord | None = None  # the build-run step's, while it runs
        self.followed: list[BuildRecord] = []  # running builds shown with "Follow the running…"
        self.signal_guard: SignalGuard | None = None  # set by run_wizard
        self.exit_signal: int | None = None  # the signal that ended the wizard, if one did

    def get_default_screen(self) -> Screen:
        # The first step is the default screen itself: no blank screen to draw first.
        return _screen_for(self.step)

    def on_mount(self) -> None:
        if self.signal_guard is not None:
            self.signal_guard.attach(asyncio.get_running_loop())
        if self.session.simulated:
            self.sub_title = f"SIMULATED: {self.session.simulated}"
        self.show_notes()  # what loading the settings file had to say
        # Not urgent, and it must not compete with the first paint.
        self.set_timer(0.5, self.look_for_running_builds)

    # -- what the session says ------------------------------------------------------------------

    def show_notes(self) -> None:
        for note in self.session.take_notes():
            from llama_wizard.screens.base import message_markup

            self.notify(message_markup(note), severity="warning", timeout=12)

    def save_choices(self) -> None:
        problem = self.session.save()
        if problem:
            from llama_wizard.screens.base import message_markup

            self.notify(message_markup(problem), severity="warning", timeout=12)

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
        from llama_wizard.tui.build_view import started_text

        self.running = records
        for record in records:
            self.notify(
                f"A build of {record.output} started {started_text(record)} is still running. "
                "ctrl+p → “Follow the running build” shows it.",
                timeout=15,
                markup=False,
            )

    def follow_running_build(self, record: BuildRecord) -> None:
        from llama_wizard.screens.build import BuildScreen

        self.followed.append(record)
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
        download = self.session.download_job
        if download is not None and download.running:
            busy.append(
                "The model is downloading. It stops; its part is kept, and the next run "
                "(or `llama-wizard pull`) resumes it."
            )
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
        self.session.stop_download()
        self.save_choices()
        self.exit(0)

    def exit_on_signal(self, signum: int) -> None:
        """SIGTERM or SIGHUP: end as a quit does (llama.cpp stopped, choices saved), without
        asking; the build goes on. Leaving through exit() lets Textual's driver restore the
        terminal (normal screen, cursor, mouse and paste modes off)."""
        if self.exit_signal is not None:
            return
        self.exit_signal = signum
        if self.launched is not None:
            with contextlib.suppress(Exception):  # whatever happens, the app must still end
                self.launched.stop(grace=2.0)
        with contextlib.suppress(Exception):
            self.save_choices()
        self.exit(128 + signum)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for number, step in enumerate(STEPS, 1):
            yield SystemCommand(
                f"Go to step {number}: {step.title}",
                f"Jump to the {STEP_TITLES[step.key]} step",
                partial(self.goto, step.key),
            )
        from llama_wizard.tui.build_view import started_text

        for record in self.running:
            yield SystemCommand(
                "Follow the running build",
                f"Show the build of {record.output} started {started_text(record)}",
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


# Everything a full-screen program may have switched on, switched off: the kitty keyboard
# protocol, mouse reporting (every mode Textual uses), bracketed paste, focus events, in-band
# resize reports; then line wrapping back on (Textual's driver turns it off), the normal
# screen and a visible cursor. Only written when the app could not end by itself.
RESTORE_TERMINAL = (
    "\x1b[<u"
    "\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l"
    "\x1b[?2004l\x1b[?1004l\x1b[?2048l"
    "\x1b[?7h"
    "\x1b[?1049l\x1b[?25h"
)
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# How long the app gets to end by itself after a signal (it stops llama.cpp first, with a
# 2 s grace per signal) before the terminal is restored by hand and the process ends.
SIGNAL_EXIT_SECONDS = 10.0


class SignalGuard:
    """SIGTERM and SIGHUP end the wizard cleanly instead of killing it where it stands (which
    leaves the terminal in the alternate screen, mouse reporting on, cursor hidden, and
    llama.cpp orphaned). Textual's Linux driver handles neither signal.

    The signal asks the app to exit (WizardApp.exit_on_signal, on its event loop; the loop's
    own signal handling wakes it whichever thread the signal lands on). A watchdog makes sure
    the process ends anyway: if the app has not ended after SIGNAL_EXIT_SECONDS, or a second
    signal comes, it writes the restore sequences to the terminal itself, stops llama.cpp and
    exits with 128 + the signal. After a dropped SSH connection the terminal is gone and
    writes to it fail; only the watchdog's path is sure to end then."""

    def __init__(self, app: WizardApp, hint: Any = None) -> None:
        self.app = app
        self.hint = hint  # () -> lines to print at the shell
        self.signum: int | None = None
        self.done = threading.Event()
        self.ending = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.previous: dict[int, Any] = {}
        self.tty_attrs: list[Any] | None = None
        app.signal_guard = self

    def install(self) -> None:
        with contextlib.suppress(Exception):
            import termios

            self.tty_attrs = termios.tcgetattr(sys.stdin.fileno())
        for signum in EXIT_SIGNALS:
            self.previous[signum] = signal.signal(signum, self._python_handler)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """From the app's loop, once it runs: the loop's handlers wake it at once."""
        self.loop = loop
        for signum in EXIT_SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.add_signal_handler(signum, self.on_signal, signum)
        if self.signum is not None:  # it came while the app was starting
            loop.call_soon(self.app.exit_on_signal, self.signum)

    def _python_handler(self, signum: int, frame: object) -> None:
        del frame
        self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        if self.signum is not None:
            # A second signal: the person (or the system) insists; do not wait any longer.
            threading.Thread(target=self.last_resort, args=(self.signum,), daemon=True).start()
            return
        self.signum = signum
        threading.Thread(target=self._watch, args=(signum,), daemon=True).start()
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.app.exit_on_signal, signum)

    def _watch(self, signum: int) -> None:
        if not self.done.wait(SIGNAL_EXIT_SECONDS):
            self.last_resort(signum)

    def last_resort(self, signum: int) -> None:
        """The app did not end by itself: restore the terminal by hand and end the process.
        Holds the lock to the end (os._exit), so the main thread, once the app has ended,
        either stands the watchdog down first or waits here while the hint is printed; never
        both half-way (the process used to end between the app's exit and its hint)."""
        with self.ending:
            if self.done.is_set():
                return
            launched = self.app.launched
            if launched is not None:
                with contextlib.suppress(Exception):
                    launched.stop(grace=1.0)
            restore_terminal(self.tty_attrs)
            with contextlib.suppress(Exception):
                lines = self.hint() if self.hint is not None else []
                if lines:
                    # Not sys.stderr: while the app runs, Textual has replaced it with a
                    # capture that has no file descriptor.
                    os.write(original_stderr_fd(), ("\n".join(lines) + "\n").encode())
            os._exit(128 + signum)

    def stand_down(self) -> None:
        """The app has ended: the watchdog (and a second signal's last resort) stands down.
        The signal handlers stay until finished(), so a signal while the hint is printed
        does not kill the process half-way."""
        with self.ending:
            self.done.set()

    def finished(self) -> None:
        """The signals go back to what they were (the loop may outlive the app)."""
        self.stand_down()
        loop = self.loop
        for signum, previous in self.previous.items():
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)
            with contextlib.suppress(Exception):
                signal.signal(signum, previous)


def original_stderr_fd() -> int:
    """The process's own standard error, whatever sys.stderr is now."""
    try:
        return sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    except (OSError, ValueError):
        return 2


def restore_terminal(tty_attrs: list[Any] | None = None, fd: int | None = None) -> None:
    """Switch off what the app switched on, written straight to the terminal (no buffer, no
    writer thread); errors ignored, the terminal may be gone."""
    if fd is None:
        try:
            fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
        except (OSError, ValueError):
            fd = 1
    with contextlib.suppress(OSError):
        os.write(fd, RESTORE_TERMINAL.encode())
    if tty_attrs is not None:
        with contextlib.suppress(Exception):
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, tty_attrs)


def reattach_argv(session: WizardSession, root: str | None = None) -> list[str]:
    """The command that follows the wizard's build again: `llama-wizard build` finds a running
    build by the plan's build name (flake + output), so it gets what made this plan (the
    machine, and the flake, output and GPUs the session holds), nothing else."""
    argv = ["llama-wizard", "build"]
    choices = session.choices
    if choices.output:
        argv.append(choices.output)
    if choices.flake:
        argv += ["--flake", choices.flake]
    if choices.gpus is not None:
        argv += ["--gpu", ",".join(str(gpu) for gpu in choices.gpus)]
    if session.simulated:
        argv += ["--simulate", session.simulated]
    elif root:
        argv += ["--root", root]
    return argv


def going_on(app: WizardApp, root: str | None = None) -> list[str]:
    """What to print at the shell about the builds this wizard started or followed that go on
    after it ended: how to follow each again."""
    from llama_wizard.nix.build import read_record, slug_for

    plan = app.session.plan
    ours = slug_for(plan.build.build_name) if plan is not None else None
    seen: set[str] = set()
    lines: list[str] = []
    for record in [r for r in (app.build_record, *app.followed) if r is not None]:
        if record.directory in seen:
            continue
        seen.add(record.directory)
        current = read_record(record)
        if current.finished:
            continue
        lines.append(
            f"llama-wizard: the build of {current.output} goes on in the background "
            f"(log: {current.text_log})."
        )
        if current.slug == ours:
            lines.append("Follow it again with:")
            lines.append(f"  {shlex.join(reattach_argv(app.session, root))}")
        else:
            lines.append(f"Follow its log with:\n  {shlex.join(['tail', '-f', current.text_log])}")
    return lines


def _print_at_shell(lines: list[str]) -> None:
    """After the app has left the alternate screen. The terminal may be gone (SIGHUP): then
    nothing is printed and nothing fails at exit either."""
    if not lines:
        return
    try:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            devnull = open(os.devnull, "w")  # noqa: SIM115 - replaces the dead stream
            sys.stderr = sys.stdout = devnull


def run_wizard(
    root: str | None = None,
    simulate: str | None = None,
    timeout: float = 10.0,
    overrides: Overrides | None = None,
) -> int:
    """The full-screen wizard; `overrides` (from the command line) win over saved choices.
    Exit status 0 when the person quits, 1 when the app failed, 128 + N when signal N (SIGTERM,
    SIGHUP) ended it (as a shell reports a program a signal killed). A build that goes on is
    named at the shell afterwards, with the command that follows it again."""
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.settings import SettingsStore

    with open_machine(root, simulate) as machine:
        session = WizardSession(machine, SettingsStore.load(), overrides, timeout=timeout)
        app = WizardApp(session)
        guard = SignalGuard(app, hint=lambda: going_on(app, root))
        guard.install()
        try:
            code = app.run()
            guard.stand_down()
            with contextlib.suppress(Exception):  # a hint must never turn an exit into a crash
                _print_at_shell(going_on(app, root))
        finally:
            guard.finished()
    if app.exit_signal is not None:
        return 128 + app.exit_signal
    if app.return_code:
        return app.return_code
    return code or 0
