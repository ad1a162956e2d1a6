"""What every wizard step shares: the step bar, the simulated banner, the keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

if TYPE_CHECKING:
    from llama_wizard.tui.app import WizardApp
    from llama_wizard.tui.state import WizardState

STEPS = ("hardware", "build", "model", "build-run", "launch", "done")
STEP_TITLES = {
    "hardware": "Hardware",
    "build": "Build",
    "model": "Model",
    "build-run": "Build run",
    "launch": "Launch",
    "done": "Done",
}


class StepBar(Static):
    """The steps in a row, the current one marked."""

    def __init__(self, current: str) -> None:
        # The app's name leads the bar: no Header row, one more line for content at 80x24.
        parts = []
        for number, step in enumerate(STEPS, 1):
            title = f"{number} {STEP_TITLES[step]}"
            parts.append(f"[reverse] {title} [/reverse]" if step == current else f" {title} ")
        super().__init__("[b]llama-wizard[/b] │" + "".join(parts), id="step-bar")


class WizardStep(Screen[None]):
    """A step of the wizard. `ctrl+n` goes on, `escape` goes back, `?` helps."""

    STEP = "hardware"
    BINDINGS = [  # noqa: RUF012 - Textual's declared class attribute
        Binding("ctrl+n", "app.next_step", "Next", priority=True),
        Binding("escape", "app.previous_step", "Back"),
        Binding("question_mark", "app.help", "Help"),
        Binding("f1", "app.help", "Help", show=False),
        Binding("q", "app.request_quit", "Quit"),
    ]

    @property
    def wizard(self) -> WizardApp:
        return self.app  # type: ignore[return-value]

    @property
    def state(self) -> WizardState:
        return self.wizard.state

    def compose_header(self) -> ComposeResult:
        if self.state.simulated:
            yield Static(f"SIMULATED machine: {self.state.simulated}", id="simulated")
        yield StepBar(self.STEP)

    def compose_footer(self) -> ComposeResult:
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = STEP_TITLES[self.STEP] + (" (simulated)" if self.state.simulated else "")

    def can_leave(self) -> str | None:
        """Why the person cannot go on yet (shown as a notification), or None."""
        return None
