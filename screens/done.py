"""Step 6, done: the exact commands to do it all again by hand (shell-quoted, environment
included), a NixOS `services.llama-server` snippet, the container commands and `nix develop`;
each copyable (OSC 52, which works over SSH) and all savable to a file
(./llama-wizard-commands.sh unless the person types another; an existing file is replaced
only when the person says so).

"Keep the server running" (k): the systemd unit of tui/service.py, shown in a dialog first (its
file, text and commands: the dry run); once agreed, installed in a worker with its progress
below, then its status. On NixOS the module's snippet is the way (it is selected); where systemd
is not running, the install says so and what to do instead."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ListItem, ListView, Static

from llama_wizard.detect.errors import ActionableError
from llama_wizard.screens.base import WizardStep, error_text
from llama_wizard.tui.widgets import CommandText

if TYPE_CHECKING:
    from llama_wizard.tui.service import ServiceUnit


def shown_path(path: Path) -> str:
    """A path in the current directory as ./NAME (what plain mode says too)."""
    return f"./{path.name}" if path.parent == Path.cwd() else str(path)


class DoneScreen(WizardStep):
    STEP = "done"
    CSS_PATH = "done.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("y", "copy", "Copy"),
        Binding("ctrl+s", "save", "Save all", priority=True),
        Binding("k", "keep_running", "Service"),
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
            yield Button("Keep the server running (k)", id="keep-running", compact=True)
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

    # --- keep the server running ---------------------------------------------------------------

    def status_text(self) -> str:
        return str(self.query_one("#done-status", Static).content)

    @on(Button.Pressed, "#keep-running")
    def keep_running_pressed(self) -> None:
        self.action_keep_running()

    def action_keep_running(self) -> None:
        session = self.session
        if session.plan is None:
            return
        try:
            if session.is_nixos():
                self._show_nixos()
                return
            if session.simulated:
                self._status(
                    f"This machine is simulated ({session.simulated}): a service for it is "
                    "shown by `llama-wizard service install --dry-run`, never installed."
                )
                return
            unit = session.service_unit(check_built=False)
        except ActionableError as error:
            self._status(error_text(error))
            return

        def answered(agreed: bool | None) -> None:
            if agreed:
                self._status(f"Installing {unit.location.name}…")
                self._install(unit)
            else:
                self._status("Nothing installed.")

        self.app.push_screen(ServiceDialog(unit), answered)

    def _show_nixos(self) -> None:
        titles = [command.title for command in self.commands]
        index = next((i for i, t in enumerate(titles) if t.startswith("NixOS")), None)
        if index is None:
            self._status(
                "This is NixOS, where a service is configured, not installed; but this flake "
                "has no NixOS module (nixosModules.default) to configure it with."
            )
            return
        self.query_one("#command-list", ListView).index = index
        self._show(index)
        self._status(
            "This is NixOS: add this snippet to your configuration's flake (y copies it), then "
            "`sudo nixos-rebuild switch --flake /etc/nixos`."
        )

    @work(thread=True, exclusive=True, group="service")
    def _install(self, unit: ServiceUnit) -> None:
        from llama_wizard.tui import service

        def progress(text: str) -> None:
            self.app.call_from_thread(self._status, text)

        try:
            service.check_systemd()  # first: without systemd nothing else matters
            self.session.service_unit(check_built=True)  # the build must be there now
            state = service.install(unit, progress)
        except ActionableError as error:
            self.app.call_from_thread(self._status, error_text(error))
            return
        log = "\n".join(state.log_lines[-5:])
        self.app.call_from_thread(
            self._status, f"{state.summary()}. It stays up after you log out.\n{log}"
        )


class ServiceDialog(ModalScreen[bool]):
    """The unit and the commands that install it (the dry run), before anything is written."""

    CSS_PATH = "done.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("y", "answer(True)", "Install"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, unit: ServiceUnit) -> None:
        super().__init__()
        self.unit = unit
        lines = [f"# {unit.location.path} ({unit.location.scope} unit)", unit.text]
        lines += [f"# {note}" for note in unit.notes]
        if unit.api_key_file is not None:
            lines.append(f"# Clients need the API key in {unit.api_key_file}.")
        lines += ["# Then:", *unit.shown_commands(), f"# and wait for {unit.health_url}"]
        self.shown_text = "\n".join(lines)

    def compose(self) -> ComposeResult:
        with Vertical(id="service-dialog"):
            yield Static(
                f"Keep llama-server running at {self.unit.url}: install this unit?",
                id="service-question",
                markup=False,
            )
            with VerticalScroll(id="service-body"):
                yield CommandText(id="service-text")
            with Horizontal(id="service-buttons"):
                yield Button("Install (y)", id="yes", variant="error")
                yield Button("Cancel (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#service-text", CommandText).show(self.shown_text, "sh")
        self.query_one("#service-body").focus()

    def on_resize(self) -> None:
        # The text gets what the screen leaves: the question and the buttons stay in view.
        self.query_one("#service-body").styles.max_height = max(self.size.height - 8, 3)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
