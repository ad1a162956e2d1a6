"""Modal dialogs: help, and the question before quitting with work in progress."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Markdown

HELP = """\
# llama-wizard

From this machine's GPUs to llama.cpp running on them, in six steps:

1. **Hardware**: what was detected; choose the GPUs (space toggles).
2. **Build**: the llama.cpp flake output for them, the environment and why.
3. **Model**: a model, quant and context size that fit, with the memory they take.
4. **Build run**: `nix build` with progress; it keeps running if you leave.
5. **Launch**: run `llama-completion` with your prompt, or `llama-server`.
6. **Done**: the commands to do it again by hand, a NixOS snippet, containers.

| key | does |
|---|---|
| `ctrl+n` | next step |
| `escape` | previous step |
| `?` / `F1` | this help |
| `ctrl+p` | command palette (jump to a step, reset saved choices) |
| `q` / `ctrl+c` | quit (asks when a build or a run is going on) |

Choices are remembered between runs, for each machine apart (a simulated
profile keeps its own); `llama-wizard --reset` or ctrl+p → “Reset saved choices”
forgets them.
`llama-wizard --plain` asks the same questions line by line.
"""


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]  # noqa: RUF012

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Markdown(HELP)
            yield Button("Close", id="close", variant="primary")

    def on_button_pressed(self) -> None:
        self.dismiss()


class ConfirmScreen(ModalScreen[bool]):
    CSS_PATH = "dialogs.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Quit", no: str = "Stay") -> None:
        super().__init__()
        self.question = question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Markdown(self.question)
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button(f"{self.no} (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
