"""Modal dialogs: help, and the question before quitting with work in progress."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Markdown

HELP = """\
| key | does |
|---|---|
| `ctrl+n` | next step |
| `escape` | previous step |
| `tab` / `shift+tab` | next / previous field |
| `?` / `F1` | this help (`F1` in a text field) |
| `q` / `ctrl+q` | quit (`ctrl+q` in a text field); asks while a build or a run goes on |
| `ctrl+p` | command palette (jump to a step, reset saved choices) |
| `c` | cancel a running build (asks first) |
| `a` | Hardware step: add servers (one model across several) |
| `s` | Model step: sort the list (score, speed, size, name) |
| `k` | Done step: keep the server running (a systemd service) |

From this machine's GPUs to llama.cpp running on them, in six steps:

1. **Hardware**: what was detected; choose the GPUs (space toggles; `[x]` used, `[-]` ticked
   but left out by the build).
2. **Build**: the llama.cpp flake output for them, the environment and why.
3. **Model**: a model, quant and context size that fit, with the memory they take.
4. **Build run**: `nix build` with progress; it keeps running if you leave.
5. **Launch**: run `llama-completion` with your prompt, or `llama-server`.
6. **Done**: the commands to do it again by hand, a NixOS snippet, containers.

Choices are remembered between runs, for each machine apart (a simulated
profile keeps its own); `llama-wizard --reset` or ctrl+p → “Reset saved choices”
forgets them.
`llama-wizard --plain` asks the same questions line by line.
"""


class HelpScreen(ModalScreen[None]):
    """The keys first (they must show at 80x24), then the steps; the text scrolls (arrows,
    page keys) and the Close button stays in view below it."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]  # noqa: RUF012

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            with VerticalScroll(id="help-body"):
                yield Markdown(HELP)
            yield Button("Close (escape)", id="close", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()  # the arrows scroll the text

    def on_resize(self) -> None:
        # The text gets what the screen leaves: the border and the Close row stay in view.
        self.query_one("#help-body").styles.max_height = max(self.size.height - 4, 3)

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
