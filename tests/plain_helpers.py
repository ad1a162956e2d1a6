"""Helpers for the plain-mode tests: the installed `llama-wizard` in a real pseudo-terminal, or
with its answers on a pipe, with this test's XDG directories; and what it saved."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

from llama_wizard.tui.plain import LinePrompter
from llama_wizard.tui.settings import Choices, SettingsStore, settings_path
from tests.helpers import wizard_executable

MI50_UUIDS = ("GPU-4f0a78a172e620fc", "GPU-6e5e588172dc76b6")
RTX4090_UUID = "GPU-3f6a1c2e-9b7d-4e80-a5c1-7d2f0e9b6a43"
# CSI/OSC sequences and the lone escapes prompt_toolkit and rich write, and carriage returns.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]"
                  r"|\x1b[=>78]|\r")  # fmt: skip
DOWN, ENTER = "\x1b[B", "\r"


class Terminal:
    """The program on a real pseudo-terminal that is its controlling terminal (so ^C there is a
    SIGINT, as on a person's terminal). It answers cursor-position requests like a terminal."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, rows: int = 40,
                 cols: int = 110) -> None:  # fmt: skip
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

        def take_terminal() -> None:
            # In the child, after setsid: the pty becomes its controlling terminal, and ^C
            # interrupts it as a shell's foreground job (whatever this process ignores).
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
            start_new_session=True, preexec_fn=take_terminal, close_fds=True,  # noqa: PLW1509
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.rows = rows
        self.raw = ""
        self.position = 0  # how far expect() has read
        self.answered = 0

    def _pump(self, timeout: float) -> bool:
        """Read what is there; False once the terminal is closed on the program's side."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        if not data:
            return False
        self.raw += data.decode("utf-8", errors="replace")
        while self.answered < self.raw.count("\x1b[6n"):
            os.write(self.master, f"\x1b[{self.rows};1R".encode())
            self.answered += 1
        return True

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def expect(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.text, self.position)
            if found:
                self.position = found.end()
                return found
            open_ = self._pump(0.1)
            if time.monotonic() > deadline or (not open_ and self.process.poll() is not None):
                raise AssertionError(f"{pattern!r} never showed; the screen ends:\n"
                                     f"{self.text[-4000:]}")  # fmt: skip

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pump(0.1) and self.process.poll() is not None:
                break
        return self.process.wait(timeout=max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)
        os.close(self.master)


def saved_choices(machine: str) -> dict:
    """What the settings file holds for one machine ("simulated:NAME" for a profile)."""
    return json.loads(settings_path().read_text())["machines"][machine]


def save_choices(machine: str, **values: object) -> None:
    """Settings as an earlier run would have saved them for `machine`."""
    store = SettingsStore.load()
    store.put(machine, machine, Choices(**values))  # type: ignore[arg-type]
    store.save()


def wizard_env(term: str = "dumb") -> dict[str, str]:
    """This test's XDG dirs and NIX_CONFIG (from conftest), and a terminal type."""
    env = dict(os.environ, TERM=term)
    env.pop("LLAMA_WIZARD_ROOT", None)
    env.pop("NO_COLOR", None)
    return env


def run_piped(
    args: list[str],
    answers: str | None,
    tmp_path: Path,
    term: str = "dumb",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The program with its answers on a pipe (None: no stdin at all); `env` adds to or
    replaces variables of this test's environment."""
    return subprocess.run(
        [wizard_executable(), *args],
        input=answers,
        stdin=subprocess.DEVNULL if answers is None else None,
        capture_output=True,
        text=True,
        env={**wizard_env(term), **(env or {})},
        cwd=tmp_path,
        timeout=240,
        check=False,
    )


def stand_in_report(text: str) -> tuple[list[str], dict[str, str]]:
    """The argv and env lines the stand-in llama-completion printed (the last run's)."""
    start = text.rindex("stand-in llama-")
    lines = text[start:].splitlines()
    argv = [line.removeprefix("argv: ") for line in lines if line.startswith("argv: ")]
    env = dict(line.removeprefix("env: ").split("=", 1) for line in lines
               if line.startswith("env: "))  # fmt: skip
    return argv, env


def line_prompter(*answers: str) -> tuple[LinePrompter, io.StringIO, list[str]]:
    """A line prompter that reads `answers` in turn (then end of input): it, what it printed,
    and the prompts it showed."""
    out = io.StringIO()
    queue: Iterator[str] = iter(answers)
    prompts: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        try:
            return next(queue)
        except StopIteration:
            raise EOFError from None

    return LinePrompter(out=out, read=read), out, prompts
