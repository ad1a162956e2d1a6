"""The wizard's last resort after a second SIGTERM, in a real process: it restores the terminal
and prints the hint on the process's own standard error even while sys.stderr is Textual's
capture (which has no file descriptor), and ends with 128 + the signal. It used to print
nothing there, and the process ended before the main thread printed its hint (CI, 2026-11-30)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from llama_wizard.tui.app import RESTORE_TERMINAL

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time, types
    from llama_wizard.tui.app import SignalGuard

    class Capture:  # like Textual's print capture while an app runs: no fileno()
        def write(self, text): return len(text)
        def flush(self): pass

    app = types.SimpleNamespace(launched=None, signal_guard=None)
    guard = SignalGuard(app, hint=lambda: ["the build of slow goes on", "Follow it again with:"])
    guard.install()
    sys.stderr = Capture()
    os.kill(os.getpid(), signal.SIGTERM)  # the first: the app is asked to exit (it never does)
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)  # the second: do not wait for the app
    time.sleep(30)
    print("not ended", file=sys.__stdout__, flush=True)
    """
)


def test_a_second_signal_restores_the_terminal_and_prints_the_hint_while_the_app_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 128 + 15, result
    assert RESTORE_TERMINAL in result.stdout
    assert "not ended" not in result.stdout
    assert result.stderr == "the build of slow goes on\nFollow it again with:\n"


def test_after_the_app_has_ended_a_second_signal_leaves_the_hint_to_the_main_thread() -> None:
    script = SCRIPT.replace(
        "sys.stderr = Capture()", "sys.stderr = Capture(); guard.stand_down()"
    ).replace("time.sleep(30)", "time.sleep(1)")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result
    assert "not ended" in result.stdout
    assert RESTORE_TERMINAL not in result.stdout
    assert result.stderr == ""
