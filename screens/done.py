"""Step 6, done: the exact commands to do it all again by hand (shell-quoted, environment
included), a NixOS `services.llama-server` snippet, the container commands and `nix develop`;
each copyable (OSC 52, which works over SSH) and all savable to a file
(./llama-wizard-commands.sh unless the person types another; an existing file is replaced
only when the person says so)."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, ListItem, ListView, Static

from llama_wizard.detect.errors import ActionableError
from llama_wizard.screens.base import WizardStep, error_text
from llama_wizard.tui.widgets import CommandText


def shown_path(path: Path) -> str:
    """A path in the current directory as ./NAME (what plain mode says too)."""
    return f"./{path.name}" if path.parent == Path.cwd() else str(path)


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
                # Wrapped between words, each continued line ending in ` \\`: what is read is
                # still the command (y copies the exact text, unwrapped).
                yield CommandText(id="command-text")
        with Horizontal(classes="form-row"):
            yield Label("Save to", classes="form-label")
            yield Input(value=shown_path(self.session.default_commands_path()), id="save-path")
        yield Static(
            "y copies the selected command; ctrl+s saves them all.", id="done-status", markup=False
        )
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        if self.session.plan is None:
            self._status("There is no plan yet: go back to the Build step.")
            return
        self.commands = self.session.commands()
        self.host.show_notes()  # e.g. why only the build command is there
        items = self.query_one("#command-list", ListView)
        for command in self.commands:
            items.append(ListItem(Label(command.title, markup=False)))
        if self.commands:
            items.index = 0
            self._show(0)
            items.focus()

    @on(ListView.Highlighted, "#command-list")
    def highlighted(self, event: ListView.Highlighted) -> None:
        if event.list_view.index is not None:
            self._show(event.list_view.index)

    def _show(self, index: int) -> None:
        command = self.commands[index]
        self.query_one("#command-text", CommandText).show(command.text, command.language)
        self.query_one("#command-view").border_title = command.title

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
        from llama_wizard.tui.commands import CommandsFileExists

        if not self.commands:
            return
        typed = self.query_one("#save-path", Input).value.strip()
        path = Path(typed).expanduser() if typed else self.session.default_commands_path()
        try:
            self._saved(self.session.save_commands(path))
        except CommandsFileExists:
            from llama_wizard.screens.dialogs import ConfirmScreen

            def answered(replace: bool | None) -> None:
                if replace:
                    self._save_over(path)
                else:
                    self._status(f"Kept {path} as it was; type another file name to save to.")

            self.app.push_screen(
                ConfirmScreen(
                    f"**{path} already exists.**\n\nReplace it with these commands?",
                    yes="Replace",
                    no="Keep it",
                ),
                answered,
            )
        except ActionableError as error:
            self._status(error_text(error))

    def _save_over(self, path: Path) -> None:
        try:
            self._saved(self.session.save_commands(path, overwrite=True))
        except ActionableError as error:
            self._status(error_text(error))

    def _saved(self, path: Path) -> None:
        self._status(f"Saved {len(self.commands)} commands to {path}.")
