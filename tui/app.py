"""The Textual application: the full-screen wizard."""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from tui.machine import Machine, open_machine


class WizardApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "llama-wizard"
    BINDINGS = [  # noqa: RUF012 - Textual's declared class attribute
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, machine: Machine, timeout: float = 10.0) -> None:
        super().__init__()
        self.machine = machine
        self.timeout = timeout

    def on_mount(self) -> None:
        from screens.hardware import HardwareScreen

        self.push_screen(HardwareScreen(self.machine, self.timeout))


def run_wizard(root: str | None = None, simulate: str | None = None, timeout: float = 10.0) -> int:
    with open_machine(root, simulate) as machine:
        WizardApp(machine, timeout=timeout).run()
    return 0
