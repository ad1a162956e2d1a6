"""A real terminal for end-to-end tests: the program runs in tmux (a private server per test,
so tests never race one that is shutting down), keys go in with send-keys and the screen comes
back with capture-pane."""

from __future__ import annotations

import subprocess
import time
import uuid

# A tmux server hands new sessions its own environment: these are passed explicitly.
PASSED_ENV = ("PATH", "NIX_CONFIG", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME",
              "XDG_DATA_HOME", "HOME", "NO_COLOR")  # fmt: skip


class Terminal:
    """`command` is an argv list: tmux execs it directly (given as several words, after `env`,
    it never goes through a shell). With keep_status, the pane stays after the program ends, so
    `exit_status()` can read how it ended."""

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
        # Chained in one tmux command list, so the option is set before the program can end.
        keep = (
            [";", "set-option", "-t", self.session, "remain-on-exit", "on"] if keep_status else []
        )
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
                *(keep if keep_status else []),
            ],
            check=True,
            env=env,
        )

    def exit_status(self, timeout: float = 10) -> int | None:
        """The program's exit status once it has ended (keep_status sessions), else None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead, _, status = (
                subprocess.run(
                    ["tmux", "-L", self.session, "display-message", "-p", "-t", self.session,
                     "#{pane_dead}:#{pane_dead_status}"],
                    capture_output=True, text=True, check=False,
                ).stdout.strip().partition(":")
            )  # fmt: skip
            if dead == "1":
                return int(status)
            time.sleep(0.1)
        return None

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
