"""Step 6, done: the exact commands to do it all again by hand (shell-quoted, environment
included), a NixOS `services.llama-server` snippet, the container commands and `nix develop`;
each copyable (OSC 52, which works over SSH) and all savable to a file."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, ListItem, ListView, Static

from llama_wizard.detect.errors import ActionableError
from llama_wizard.screens.base import WizardStep

DEFAULT_FILE = "~/llama-wizard-commands.sh"


class DoneScreen(WizardStep):
    STEP = "done"
    CSS_PATH = "done.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("y", "copy", "Copy (OSC 52)"),
        Binding("ctrl+s", "save", "Save all", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.commands: list = []

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with Horizontal(id="done-body"):
            yield ListView(id="command-list")
            with VerticalScroll(id="command-view"):
                yield Static("", id="command-text")
        with Horizontal(classes="form-row"):
            yield Label("Save to", classes="form-label")
            yield Input(value=DEFAULT_FILE, id="save-path")
        yield Static("y copies the selected command; ctrl+s saves them all.", id="done-status")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        from llama_wizard.tui.commands import commands_for
        from llama_wizard.tui.launch import launch_spec

        plan = self.state.plan
        if plan is None:
            self._status("There is no plan yet: go back to the Build step.")
            return
        settings = self.state.settings
        try:
            spec = launch_spec(
                plan,
                program=settings.program,
                prompt=settings.prompt,
                n_predict=settings.n_predict,
                host=settings.host,
                port=settings.port,
            )
        except ActionableError as error:
            self._status(f"⚠ {error.message}\nFix: {error.fix}")
            return
        self.commands = commands_for(plan, spec)
        items = self.query_one("#command-list", ListView)
        for command in self.commands:
            items.append(ListItem(Label(command.title)))
        if self.commands:
            items.index = 0
            self._show(0)
            items.focus()

    @on(ListView.Highlighted, "#command-list")
    def highlighted(self, event: ListView.Highlighted) -> None:
        if event.list_view.index is not None:
            self._show(event.list_view.index)

    def _show(self, index: int) -> None:
        self.query_one("#command-text", Static).update(self.commands[index].text)

    def _status(self, text: str) -> None:
        self.query_one("#done-status", Static).update(text)

    def action_copy(self) -> None:
        index = self.query_one("#command-list", ListView).index
        if index is None or not self.commands:
            return
        self.app.copy_to_clipboard(self.commands[index].text)
        self._status(
            f"Copied “{self.commands[index].title}” (OSC 52: your terminal, even over "
            "SSH, puts it on the clipboard; tmux needs `set -g set-clipboard on`)."
        )

    def action_save(self) -> None:
        from llama_wizard.tui.commands import save_commands

        path = Path(self.query_one("#save-path", Input).value.strip() or DEFAULT_FILE)
        path = path.expanduser()
        try:
            save_commands(self.commands, path, overwrite=True)
        except (OSError, ActionableError) as error:
            self._status(f"⚠ Could not save to {path}: {error}")
            return
        self._status(f"Saved {len(self.commands)} commands to {path}.")
