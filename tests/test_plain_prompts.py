"""The plain-mode prompters (numbered choices read with input(), and --yes's defaults), and Ctrl-C
stopping a program the launch step started."""

from __future__ import annotations

import io
import os
import signal
import time

import psutil
import pytest

from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.tui.cli.options import is_dumb_terminal
from llama_wizard.tui.launch import LaunchSpec
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.plain import (
    BACK,
    QUIT,
    AutoPrompter,
    NoInput,
    Option,
    PlainWizard,
)
from llama_wizard.tui.session import WizardSession
from tests.plain_helpers import line_prompter

OPTIONS = [Option("Use it", "use"), Option("Other", "other", disabled="none left"),
           Option("Back", BACK), Option("Quit", QUIT)]  # fmt: skip


def test_select_takes_enter_numbers_and_shortcuts() -> None:
    prompter, out, prompts = line_prompter("", "3", "q")
    assert prompter.select("Which?", OPTIONS, "use") == "use"
    assert prompts == ["Choose 1-4 [1]: "]
    assert "  2) Other  (not available: none left)" in out.getvalue()
    assert prompter.select("Which?", OPTIONS) == BACK
    assert prompter.select("Which?", OPTIONS) == QUIT


def test_select_asks_again_until_the_answer_is_usable() -> None:
    prompter, out, prompts = line_prompter("7", "two", "2", "1")
    assert prompter.select("Which?", OPTIONS, "use") == "use"
    assert len(prompts) == 4
    text = out.getvalue()
    assert "Type a number from 1 to 4, or press Enter for 1." in text
    assert "Other cannot be chosen: none left" in text


def test_a_disabled_default_falls_to_the_first_usable_option() -> None:
    prompter, _out, prompts = line_prompter("")
    assert prompter.select("Which?", OPTIONS, "other") == "use"
    assert prompts == ["Choose 1-4 [1]: "]


def test_checkbox_confirm_and_text() -> None:
    gpus = [Option("GPU 0", 0), Option("GPU 1", 1), Option("GPU 2", 2)]
    prompter, out, prompts = line_prompter("", "3, 1", "none", "x", "y", "", "", "abc", "42")
    assert prompter.checkbox("GPUs", gpus, default=[1]) == [1]
    assert prompts[0] == "Numbers separated by commas, or none [2]: "
    assert "  2) [x] GPU 1" in out.getvalue()
    assert prompter.checkbox("GPUs", gpus, default=[1]) == [0, 2]
    assert prompter.checkbox("GPUs", gpus, default=[1]) == []
    assert prompter.confirm("Sure?") is True  # "x" is asked again, then "y"
    assert prompter.confirm("Sure?", default=True) is True
    assert prompter.text("Prompt", default="Hello") == "Hello"

    def number(text: str) -> str | None:
        return None if text.isdigit() else "a number, please"

    assert prompter.text("Port", validate=number) == "42"
    assert "a number, please" in out.getvalue()
    assert prompts[-2:] == ["Port: ", "Port: "]


def test_end_of_input_quits() -> None:
    prompter, _out, _prompts = line_prompter()
    with pytest.raises(NoInput) as caught:
        prompter.select("Which?", OPTIONS)
    assert caught.value.code == 1 and "--yes" in (caught.value.message or "")


def test_auto_prompter_takes_the_defaults_and_says_so() -> None:
    out = io.StringIO()
    auto = AutoPrompter(out=out)
    assert not auto.interactive
    assert auto.select("Which build?", OPTIONS, "use") == "use"
    assert auto.checkbox("GPUs", [Option("GPU 0", 0), Option("GPU 1", 1)], [1]) == [1]
    assert auto.text("Prompt", default="Hi") == "Hi"
    assert auto.confirm("Save?") is False
    assert out.getvalue().splitlines() == ["Which build? → Use it", "Prompt → Hi", "Save? → no"]


def test_dumb_terminals() -> None:
    assert is_dumb_terminal({"TERM": "dumb"}) and is_dumb_terminal({"TERM": "unknown"})
    assert is_dumb_terminal({})
    assert not is_dumb_terminal({"TERM": "xterm-256color"})


class InterruptOn(io.StringIO):
    """Output that presses Ctrl-C (a real SIGINT) once `text` is written."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.sent = text, False

    def write(self, s: str) -> int:
        written = super().write(s)
        if self.text in s and not self.sent:
            self.sent = True
            signal.raise_signal(signal.SIGINT)
        return written


def test_ctrl_c_stops_the_launched_program_and_the_flow_goes_on(monkeypatch, tmp_path) -> None:
    # Python turns SIGINT into KeyboardInterrupt only with its own handler installed (a test
    # run in the background may have inherited SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = InterruptOn("serving-ready")  # what the program prints (not its command line)
    machine = Machine(SystemRoot(str(tmp_path)), dict(os.environ))
    wizard = PlainWizard(WizardSession(machine), AutoPrompter(out=out), out=out, err=out)
    script = "printf 'serv%s\\n' ing-ready; exec sleep 60"
    spec = LaunchSpec("llama-server", "/bin/sh", ["-c", script], env={"MARK": "x"})
    monkeypatch.setattr(wizard, "make_spec", lambda program: spec)
    started = time.monotonic()
    try:
        code = wizard.launch("llama-server")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 0
    assert time.monotonic() - started < 15
    text = out.getvalue()
    assert "stopping llama-server" in text and "llama-server stopped." in text
    assert wizard.spec is spec
    pid = wizard.process.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
