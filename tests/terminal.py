"""A real terminal for end-to-end tests: the program runs in tmux (a private server per test,
so tests never race one that is shutting down), keys go in with send-keys and the screen comes
back with capture-pane."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid

# A tmux server hands new sessions its own environment: these are passed explicitly.
PASSED_ENV = ("PATH", "NIX_CONFIG", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME",
              "XDG_DATA_HOME", "HOME", "NO_COLOR",
              # Where models come from and go (tests/hub_server.py stands in for the Hub).
              "HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME", "LLAMA_CACHE", "HF_HUB_OFFLINE",
              "LLAMA_WIZARD_RAM_GBS")  # fmt: skip


# With keep_status a small parent runs the program (an argv list, no shell), prints how it ended
# and stays: tmux's own dead-pane status lags, at times for seconds, behind the program's end,
# and a dead pane always reports a hidden cursor, so the modes a program left are read from a
# pane that lives on.
KEEPER = (
    "import subprocess, sys, time\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "print(f'[exited: {code}]', flush=True)\n"
    "time.sleep(600)\n"
)
EXITED = re.compile(r"\[exited: (-?\d+)\]")


class Terminal:
    """`command` is an argv list: tmux execs it directly (given as several words, after `env`,
    it never goes through a shell). With keep_status, a parent runs it and stays after it ends,
    so `exit_status()` can read how it ended and `modes()` what it left."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        size: tuple[int, int] = (120, 45),
        *,
        keep_status: bool = False,
    ) -> None:
        self.session = f"lw-e2e-{uuid.uuid4().hex[:8]}"
        passed = [a for key in PASSED_ENV if key in env for a in ("-e", f"{key}={env[key]}")]
        self.keep_status = keep_status
        if keep_status:
            command = [sys.executable, "-c", KEEPER, *command]
        subprocess.run(
            [
                "tmux",
                "-L",
                self.session,
                "new-session",
                "-d",
                "-s",
                self.session,
                "-x",
                str(size[0]),
                "-y",
                str(size[1]),
                "-e",
                "TERM=xterm-256color",
                *passed,
                "env",
                *command,
            ],
            check=True,
            env=env,
        )

    def exit_status(self, timeout: float = 10) -> int | None:
        """The program's exit status once it has ended (keep_status sessions), else None."""
        assert self.keep_status, "exit_status() needs Terminal(..., keep_status=True)"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = EXITED.search(self.joined_screen())
            if found:
                return int(found.group(1))
            time.sleep(0.1)
        return None

    def program_pid(self, timeout: float = 10) -> int:
        """The program's pid: the pane's own process, or its child under keep_status."""
        import psutil

        pane = psutil.Process(self.pane_pid())
        if not self.keep_status:
            return pane.pid
        deadline = time.monotonic() + timeout
        while not pane.children():
            assert time.monotonic() < deadline, "the program never started"
            time.sleep(0.05)
        return pane.children()[0].pid

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "-L", self.session, "capture-pane", "-p", "-t", self.session],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")

    def keys(self, *keys: str) -> None:
        subprocess.run(
            ["tmux", "-L", self.session, "send-keys", "-t", self.session, *keys], check=True
        )

    def alive(self) -> bool:
        return (
            subprocess.run(
                ["tmux", "-L", self.session, "has-session", "-t", self.session],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.session, "kill-session", "-t", self.session],
            capture_output=True,
            check=False,
        )

    def capture_with_escapes(self) -> str:
        return subprocess.run(
            ["tmux", "-L", self.session, "capture-pane", "-p", "-e", "-t", self.session],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def wait_closed(self, timeout: float = 10) -> bool:
        """True once the program (and so its tmux session) has ended."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.alive()

    # -- for the signal tests: the program's pid, and the modes it left the terminal in --------

    MODES = ("alternate_on", "cursor_flag", "mouse_any_flag", "mouse_standard_flag",
             "mouse_button_flag", "mouse_all_flag", "mouse_sgr_flag", "wrap_flag")  # fmt: skip

    def display(self, format_: str) -> str:
        """A tmux format (`man tmux`, FORMATS) evaluated for the pane."""
        return subprocess.run(
            ["tmux", "-L", self.session, "display-message", "-p", "-t", self.session, format_],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    def pane_pid(self) -> int:
        """The pid of the program in the pane (`env` execs it, so the program itself)."""
        return int(self.display("#{pane_pid}"))

    def modes(self) -> dict[str, bool]:
        """Whether the pane is in the alternate screen, shows its cursor, reports the mouse,
        wraps long lines."""
        values = self.display(" ".join(f"#{{{name}}}" for name in self.MODES)).split()
        return {name: value == "1" for name, value in zip(self.MODES, values, strict=True)}

    def resize(self, width: int, height: int) -> None:
        subprocess.run(
            ["tmux", "-L", self.session, "resize-window", "-t", self.session,
             "-x", str(width), "-y", str(height)],
            check=True,
        )  # fmt: skip

    def joined_screen(self) -> str:
        """The screen with lines the terminal wrapped joined again (capture-pane -J)."""
        return subprocess.run(
            ["tmux", "-L", self.session, "capture-pane", "-p", "-J", "-t", self.session],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
