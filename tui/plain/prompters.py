"""How plain mode asks: a `Prompter` with three kinds.

- `QuestionaryPrompter`: arrow-key menus (questionary) on a real terminal;
- `LinePrompter`: numbered choices read with `input()`, defaults in brackets, for TERM=dumb,
  serial consoles and anything that is not a terminal (prompt_toolkit misrenders there and asks
  the terminal for its cursor position, which a dumb one never answers);
- `AutoPrompter`: takes every default without asking (`--yes`), so it needs no stdin at all.

Every menu's options are `Option`s; BACK and QUIT are the values of the "Back" and "Quit"
entries (the line prompter also takes b and q for them)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

BACK = "__back__"
QUIT = "__quit__"
OTHER = "__other__"
EXIT_QUIT, EXIT_FAILED, EXIT_NO_INPUT, EXIT_INTERRUPTED = 0, 1, 1, 130


class Quit(Exception):
    """The person chose Quit (or stdin ran out): leave the flow with this exit status."""

    def __init__(self, code: int = EXIT_QUIT, message: str | None = None) -> None:
        super().__init__(message or "quit")
        self.code = code
        self.message = message


class NoInput(Quit):
    def __init__(self) -> None:
        super().__init__(
            EXIT_NO_INPUT,
            "No more input on stdin, so the wizard stops here. To run without questions use "
            "`llama-wizard --yes`.",
        )


@dataclass(frozen=True)
class Option:
    title: str
    value: Any
    disabled: str | None = None  # why it cannot be chosen


def _default_index(options: Sequence[Option], default: Any) -> int:
    for index, option in enumerate(options):
        if option.value == default and option.disabled is None:
            return index
    return next((i for i, o in enumerate(options) if o.disabled is None), 0)


class Prompter:
    """How the flow asks. `interactive` is False when nobody answers (`--yes`)."""

    interactive = True

    def select(self, message: str, options: Sequence[Option], default: Any = None) -> Any:
        raise NotImplementedError

    def checkbox(self, message: str, options: Sequence[Option], default: Sequence[Any]) -> list:
        raise NotImplementedError

    def confirm(self, message: str, default: bool = False) -> bool:
        raise NotImplementedError

    def text(
        self,
        message: str,
        default: str = "",
        validate: Callable[[str], str | None] | None = None,
    ) -> str:
        """validate returns why an answer is not acceptable, or None."""
        raise NotImplementedError


class LinePrompter(Prompter):
    """Numbered choices read a line at a time: works on any terminal, or none."""

    def __init__(self, out: IO[str] | None = None, read: Callable[[str], str] = input) -> None:
        self.out = out
        self.read = read

    def _print(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def _ask(self, prompt: str) -> str:
        (self.out or sys.stdout).flush()
        try:
            return self.read(prompt)
        except EOFError:
            self._print()
            raise NoInput() from None

    def select(self, message: str, options: Sequence[Option], default: Any = None) -> Any:
        self._print(message)
        for number, option in enumerate(options, 1):
            why = f"  (not available: {option.disabled})" if option.disabled else ""
            self._print(f"  {number}) {option.title}{why}")
        chosen = _default_index(options, default) + 1
        shortcuts = {"b": BACK, "back": BACK, "q": QUIT, "quit": QUIT}
        values = [o.value for o in options]
        while True:
            answer = self._ask(f"Choose 1-{len(options)} [{chosen}]: ").strip().lower()
            if not answer:
                return options[chosen - 1].value
            if answer in shortcuts and shortcuts[answer] in values:
                return shortcuts[answer]
            if answer.isdigit() and 1 <= int(answer) <= len(options):
                option = options[int(answer) - 1]
                if option.disabled is None:
                    return option.value
                self._print(f"{option.title} cannot be chosen: {option.disabled}")
                continue
            self._print(f"Type a number from 1 to {len(options)}, or press Enter for {chosen}.")

    def checkbox(self, message: str, options: Sequence[Option], default: Sequence[Any]) -> list:
        self._print(message)
        for number, option in enumerate(options, 1):
            mark = "x" if option.value in default else " "
            self._print(f"  {number}) [{mark}] {option.title}")
        numbers = [str(i) for i, o in enumerate(options, 1) if o.value in default]
        shown = ",".join(numbers) or "none"
        while True:
            answer = self._ask(f"Numbers separated by commas, or none [{shown}]: ").strip()
            if not answer:
                return [o.value for o in options if o.value in default]
            if answer.lower() == "none":
                return []
            parts = [p.strip() for p in answer.replace(" ", ",").split(",") if p.strip()]
            if all(p.isdigit() and 1 <= int(p) <= len(options) for p in parts):
                picked = {int(p) for p in parts}
                return [o.value for i, o in enumerate(options, 1) if i in picked]
            self._print(f"Type numbers from 1 to {len(options)} separated by commas, or none.")

    def confirm(self, message: str, default: bool = False) -> bool:
        hint = "Y/n" if default else "y/N"
        while True:
            answer = self._ask(f"{message} [{hint}]: ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes"):
                return True
            if answer in ("n", "no"):
                return False
            self._print("Answer y or n.")

    def text(
        self,
        message: str,
        default: str = "",
        validate: Callable[[str], str | None] | None = None,
    ) -> str:
        while True:
            shown = f" [{default}]" if default else ""
            answer = self._ask(f"{message}{shown}: ").strip() or default
            problem = validate(answer) if validate else None
            if problem is None:
                return answer
            self._print(problem)


class AutoPrompter(Prompter):
    """`--yes`: every question answered with its default, which is printed."""

    interactive = False

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def select(self, message: str, options: Sequence[Option], default: Any = None) -> Any:
        option = options[_default_index(options, default)]
        self._print(f"{message} → {option.title}")
        return option.value

    def checkbox(self, message: str, options: Sequence[Option], default: Sequence[Any]) -> list:
        return [o.value for o in options if o.value in default]

    def confirm(self, message: str, default: bool = False) -> bool:
        self._print(f"{message} → {'yes' if default else 'no'}")
        return default

    def text(
        self,
        message: str,
        default: str = "",
        validate: Callable[[str], str | None] | None = None,
    ) -> str:
        self._print(f"{message} → {default}")
        return default


def questionary_style():
    """Readable on any colour scheme (and without colours): the terminal's own foreground."""
    from questionary import Style

    return Style(
        [
            ("qmark", "fg:ansidefault bold"),
            ("question", "fg:ansidefault bold"),
            ("answer", "fg:ansidefault bold"),
            ("pointer", "fg:ansidefault bold"),
            ("highlighted", "fg:ansidefault bold reverse"),
            ("selected", "fg:ansidefault"),
            ("separator", "fg:ansidefault"),
            ("instruction", "fg:ansidefault italic"),
            ("text", "fg:ansidefault"),
            ("disabled", "fg:ansidefault italic"),
        ]
    )


class QuestionaryPrompter(Prompter):
    """Arrow-key menus on a real terminal. `unsafe_ask()` lets Ctrl-C through to the one
    handler around the flow; Ctrl-D (EOF) quits like the line prompter's end of input."""

    def __init__(self) -> None:
        self.style = questionary_style()

    def _ask(self, question: Any) -> Any:
        try:
            return question.unsafe_ask()
        except EOFError:
            raise NoInput() from None

    def select(self, message: str, options: Sequence[Option], default: Any = None) -> Any:
        import questionary

        choices = [
            questionary.Choice(o.title, value=i, disabled=o.disabled) for i, o in enumerate(options)
        ]
        index = self._ask(
            questionary.select(
                message,
                choices,
                default=_default_index(options, default),
                style=self.style,
                instruction="(arrows, Enter)",
            )
        )
        return options[index].value

    def checkbox(self, message: str, options: Sequence[Option], default: Sequence[Any]) -> list:
        import questionary

        choices = [
            questionary.Choice(o.title, value=i, checked=o.value in default)
            for i, o in enumerate(options)
        ]
        picked = self._ask(
            questionary.checkbox(
                message, choices, style=self.style, instruction="(Space toggles, Enter accepts)"
            )
        )
        return [options[i].value for i in picked]

    def confirm(self, message: str, default: bool = False) -> bool:
        import questionary

        return bool(self._ask(questionary.confirm(message, default=default, style=self.style)))

    def text(
        self,
        message: str,
        default: str = "",
        validate: Callable[[str], str | None] | None = None,
    ) -> str:
        import questionary

        def check(answer: str) -> bool | str:
            problem = validate(answer.strip()) if validate else None
            return True if problem is None else problem

        answer = self._ask(
            questionary.text(message, default=default, validate=check, style=self.style)
        )
        return str(answer).strip()


def choose_prompter(yes: bool) -> Prompter:
    """--yes: the defaults; a real terminal: arrow-key menus; anything else: numbered lines."""
    from llama_wizard.tui.cli.options import is_dumb_terminal

    if yes:
        return AutoPrompter()
    if sys.stdin.isatty() and sys.stdout.isatty() and not is_dumb_terminal():
        return QuestionaryPrompter()
    return LinePrompter()
