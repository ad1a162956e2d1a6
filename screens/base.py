"""What every wizard step shares: the step bar, the simulated banner, the keys, and what a step
may ask of the app that hosts it (`WizardHost`: the screens never import the app module)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from llama_wizard.tui.steps import STEP_TITLES, STEPS

if TYPE_CHECKING:
    from llama_wizard.tui.launch import LaunchedProcess
    from llama_wizard.tui.session import WizardSession


class WizardHost(Protocol):
    """What a step may ask of the app it runs in."""

    session: WizardSession
    step: str
    launched: LaunchedProcess | None  # the running llama.cpp program, stopped before quitting
    build_running: bool  # a build this wizard follows is running
    launch_running: bool  # the launched program is running

    def goto(self, step: str) -> None: ...

    def show_notes(self) -> None:
        """Show what the session has to say (session.take_notes()) as notifications."""
        ...

    def save_choices(self) -> None:
        """session.save(), its message (if any) shown as a warning."""
        ...

    def notify(self, message: str, *, severity: Any = ..., timeout: float | None = ...) -> None: ...


class StepBar(Static):
    """The steps in a row, the current one marked."""

    def __init__(self, current: str) -> None:
        # The app's name leads the bar: no Header row, one more line for content at 80x24.
        parts = []
        for number, step in enumerate(STEPS, 1):
            title = f"{number} {step.title}"
            parts.append(f"[reverse] {title} [/reverse]" if step.key == current else f" {title} ")
        super().__init__("[b]llama-wizard[/b] │" + "".join(parts), id="step-bar")


class WizardStep(Screen[None]):
    """A step of the wizard. `ctrl+n` goes on, `escape` goes back, `?` (or F1) helps, `q` (or
    ctrl+q, ctrl+c) quits.

    In a text field `?` and `q` are typed: Textual then leaves them out of the footer, which
    shows the next key of the same action instead (F1 Help, ^q Quit), and those work there
    because they are priority bindings. Each step starts with the focus on its main choice,
    never in a text field (Tab or a click moves there)."""

    STEP = "hardware"
    BINDINGS = [  # noqa: RUF012 - Textual's declared class attribute
        Binding("ctrl+n", "app.next_step", "Next", priority=True),
        Binding("escape", "app.previous_step", "Back"),
        Binding("question_mark", "app.help", "Help"),
        Binding("f1", "app.help", "Help", priority=True),
        Binding("q", "app.request_quit", "Quit"),
        Binding("ctrl+q", "app.request_quit", "Quit", priority=True),
    ]

    @property
    def host(self) -> WizardHost:
        return cast("WizardHost", self.app)

    @property
    def session(self) -> WizardSession:
        return self.host.session

    def compose_header(self) -> ComposeResult:
        if self.session.simulated:
            yield Static(f"SIMULATED machine: {self.session.simulated}", id="simulated")
        yield StepBar(self.STEP)

    def compose_footer(self) -> ComposeResult:
        yield Footer()

    # Fields drawn without borders in a short terminal (the -short breakpoint).
    COMPACT = ".form-row Input, .form-row Select"
    SHORT_ROWS = 32

    def on_mount(self) -> None:
        self.sub_title = STEP_TITLES[self.STEP] + (" (simulated)" if self.session.simulated else "")
        self.fit_fields()

    def on_resize(self) -> None:
        self.fit_fields()

    def fit_fields(self) -> None:
        short = self.app.size.height < self.SHORT_ROWS
        for widget in self.query(self.COMPACT):
            widget.compact = short  # type: ignore[attr-defined]

    def can_leave(self) -> str | None:
        """Why the person cannot go on yet (shown as a notification), or None."""
        return None

    def leave(self, go_on: Callable[[], None]) -> None:
        """Next was asked for: call go_on when the step may be left (a step may ask first)."""
        problem = self.can_leave()
        if problem:
            self.notify(problem, severity="warning")
            return
        go_on()


def error_text(error: Any) -> str:
    """An ActionableError as the steps show it (plain text: `code` spans in quotes)."""
    from llama_wizard.tui.format import plain_text

    return plain_text(f"⚠ {error.message}\nFix: {error.fix}")


def message_markup(message: str) -> str:
    """A message as Textual markup for notify(markup=True): its `code` spans in bold, without
    backticks, the rest exactly as written (tui/format.py's rule)."""
    from textual.markup import escape

    from llama_wizard.tui.format import code_spans

    return "".join(
        f"[b]{escape(text)}[/b]" if code else escape(text) for text, code in code_spans(message)
    )
