"""SIGTERM and SIGHUP to the real wizard in a real 80x24 terminal (tmux) during a real nix build
of the fixture flake: the terminal is given back as it was (normal screen, cursor shown, mouse
reporting off), the shell shows how to follow the build that goes on, the build goes on, and
the exit status is 128 + the signal. A launched llama.cpp (the real llama-server) is stopped on
the same path."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from llama_wizard.nix.build import find_build, read_record, request_cancel, wait_finished
from llama_wizard.tui.plan import state_dir
from tests.helpers import wizard_executable
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    free_port,
)
from tests.nix_fixtures import fixture_flake, fresh_variant
from tests.terminal import Terminal
from tests.wizard_helpers import make_app, settle

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="scripts/test installs tmux")

RESTORED = {
    "alternate_on": False,
    "cursor_flag": True,
    "mouse_any_flag": False,
    "mouse_standard_flag": False,
    "mouse_button_flag": False,
    "mouse_all_flag": False,
    "mouse_sgr_flag": False,
    # Textual turns line wrapping off while it runs: a shell left so would cut every long line
    # at the last column (the hint's command was, when the app did not end by itself).
    "wrap_flag": True,
}


def wizard_pid(terminal: Terminal) -> int:
    return terminal.program_pid()


def exit_code(terminal: Terminal) -> int:
    code = terminal.exit_status(timeout=20)
    assert code is not None, f"the wizard never ended:\n{terminal.screen()}"
    return code


def start_wizard_building_slow(tmp_path: Path) -> tuple[Terminal, str]:
    """The wizard at 80x24 on the no-GPU profile, at the Build run step of the fixture flake's
    `slow` output (600 one-second steps; chosen in the saved settings, as a person's earlier
    choice would be)."""
    flake = fresh_variant(fixture_flake(tmp_path / "flake"), "slow")
    env = dict(os.environ)
    config = Path(env["XDG_CONFIG_HOME"]) / "llama-wizard"
    config.mkdir(parents=True, exist_ok=True)
    saved = {"label": "simulated no-gpu", "output": "slow"}
    (config / "settings.json").write_text(
        json.dumps({"version": 2, "machines": {"simulated:no-gpu": saved}})
    )
    argv = [wizard_executable(), "--simulate", "no-gpu",
            "--flake", flake]  # fmt: skip
    terminal = Terminal(argv, env, size=(80, 24), keep_status=True)
    terminal.wait_for("No GPU found")
    terminal.keys("C-n")
    terminal.wait_for("Build slow from")
    terminal.keys("C-n")
    terminal.wait_for("Chosen:")
    terminal.keys("C-n")
    terminal.wait_for("[2/600]", timeout=60)
    return terminal, flake


def running_build():
    builds = [b for b in (find_build(state_dir(), d.name) for d in
              (state_dir() / "builds").iterdir() if d.is_dir()) if b is not None]  # fmt: skip
    return [b for b in builds if not b.finished]


@pytest.mark.parametrize(
    ("signum", "times"),
    [(signal.SIGTERM, 1), (signal.SIGHUP, 1), (signal.SIGTERM, 2), (0, 0)],
    # Twice: a second signal does not wait for the app; the terminal is restored by hand.
    # 0: no signal, the person quits (q, then yes): the same hint at the shell, status 0.
    ids=["SIGTERM", "SIGHUP", "SIGTERM-twice", "quit"],
)
def test_a_signal_during_a_build_restores_the_terminal_and_says_how_to_follow_it(
    tmp_path: Path, signum: int, times: int
) -> None:
    terminal, flake = start_wizard_building_slow(tmp_path)
    records = []
    try:
        assert terminal.modes()["alternate_on"] and terminal.modes()["mouse_any_flag"]
        wizard = wizard_pid(terminal)
        records = running_build()
        assert [r.output for r in records] == ["slow"]
        supervisor = records[0].supervisor_pid
        others = [p.pid for p in psutil.Process(wizard).children(recursive=True)
                  if p.pid != supervisor and supervisor not in
                  [a.pid for a in p.parents()]]  # fmt: skip
        for number in range(times):
            if number:
                time.sleep(0.05)  # delivered apart, not merged into one pending signal
            os.kill(wizard, signum)
        if not signum:
            # On the way: a smaller window, and the log still follows the build.
            terminal.resize(80, 16)
            step = max(int(n) for n in re.findall(r"\[(\d+)/600\]", terminal.screen()))
            terminal.wait_for(f"[{step + 3}/600] Building", timeout=30)
            terminal.keys("q")
            terminal.wait_for("Quit?")
            terminal.keys("y")
        assert exit_code(terminal) == (128 + signum if signum else 0), terminal.screen()
        assert terminal.modes() == RESTORED
        screen = terminal.screen()
        assert "the build of slow goes on in the background" in screen, screen
        # The command, as printed (it may wrap at 80 columns), follows the same build.
        joined = terminal.joined_screen()
        match = re.search(r"Follow it again with:\n  (llama-wizard build .*)\n", joined)
        assert match, screen
        command = shlex.split(match.group(1))
        assert command == ["llama-wizard", "build", "slow", "--flake", flake,
                           "--simulate", "no-gpu"]  # fmt: skip
        # The build goes on, and the printed command re-attaches to it.
        assert read_record(records[0]).status == "running"
        assert psutil.pid_exists(supervisor)
        followed = subprocess.run(
            [wizard_executable(), *command[1:], "--detach", "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        first = json.loads(followed.stdout.splitlines()[0])
        assert first["event"] == "attached" and first["pid"] == supervisor, followed.stdout
        # Nothing the wizard started outside the build is left running.
        left = [pid for pid in others if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]  # fmt: skip
        assert left == []
    finally:
        terminal.close()
        for record in records:
            request_cancel(read_record(record))
            assert wait_finished(record, timeout=30).finished


def test_a_terminal_that_goes_away_ends_the_wizard_and_not_the_build(tmp_path: Path) -> None:
    """The SSH connection drops: the terminal closes under the wizard (tmux kills the pane:
    the pty's end goes away and the kernel hangs up on it). Writes to it fail from then on; the
    wizard must still end, soon, and the build go on."""
    terminal, _ = start_wizard_building_slow(tmp_path)
    records = []
    try:
        wizard = psutil.Process(wizard_pid(terminal))
        records = running_build()
        supervisor = records[0].supervisor_pid
        terminal.close()
        deadline = time.monotonic() + 20
        while wizard.is_running() and wizard.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the wizard outlived its terminal"
            time.sleep(0.1)
        assert read_record(records[0]).status == "running"
        assert psutil.pid_exists(supervisor)
    finally:
        terminal.close()
        for record in records:
            request_cancel(read_record(record))
            assert wait_finished(record, timeout=30).finished


async def test_a_signal_stops_a_launched_llama_server_and_saves_the_choices(
    tmp_path: Path, llamacpp_bin: Path, dense_gguf: Path
) -> None:
    """The app's side of the signal path (exit_on_signal), with the real llama-server running
    as the Launch step would have started it."""
    from llama_wizard.tui.launch import LaunchedProcess, LaunchSpec

    app = make_app(tmp_path, "no-gpu")
    port = free_port()
    args = ["-m", str(dense_gguf), "--port", str(port), "--host", "127.0.0.1"]
    spec = LaunchSpec("llama-server", str(llamacpp_bin / "llama-server"), args)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.session.set_launch(program="llama-server", port=port)  # choices to save
        app.launched = LaunchedProcess.start(spec)
        deadline = time.monotonic() + 60
        while app.launched.listening_url is None:
            assert app.launched.returncode is None, app.launched.exit_report()
            assert time.monotonic() < deadline, "llama-server never came up"
            await pilot.pause(0.1)
        tree = [app.launched.pid] + [
            p.pid for p in psutil.Process(app.launched.pid).children(recursive=True)
        ]
        app.exit_on_signal(signal.SIGTERM)
        await pilot.pause()
    assert app.exit_signal == signal.SIGTERM
    assert app.return_value == 128 + signal.SIGTERM
    assert app.launched.returncode is not None
    assert [pid for pid in tree if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE] == []  # fmt: skip
    saved = json.loads((Path(os.environ["XDG_CONFIG_HOME"]) / "llama-wizard" /
                        "settings.json").read_text())  # fmt: skip
    machine = saved["machines"]["simulated:no-gpu"]
    assert machine["program"] == "llama-server" and machine["port"] == port


def test_restoring_by_hand_switches_every_mode_off() -> None:
    """The last resort writes straight to the terminal: every mode the app switched on, off."""
    from llama_wizard.tui.app import restore_terminal

    master, slave = os.openpty()
    try:
        restore_terminal(fd=slave)
        written = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    for mode in ("?1049l", "?25h", "?1000l", "?1002l", "?1003l", "?1006l", "?1015l", "?2004l"):
        assert f"\x1b[{mode}" in written, mode
    assert written.index("?1049l") < written.index("?25h")  # the cursor on the normal screen


STOPPED_BY_HAND = """
import os, sys
from textual.app import App
from textual.widgets import Static
from llama_wizard.tui.app import restore_terminal


class Stuck(App):
    def compose(self):
        yield Static("running")

    def on_mount(self):
        self.set_timer(0.5, self.give_up)

    def give_up(self):
        # What the last resort does when the app does not end by itself: the terminal is
        # restored by hand over whatever Textual's driver switched on, and the process ends.
        restore_terminal()
        os.write(2, ("x" * 100 + "|end\\n").encode())
        os._exit(143)


Stuck().run()
"""


def test_the_restore_by_hand_undoes_everything_textual_switched_on(tmp_path: Path) -> None:
    """The last resort's sequences against the real ones of Textual's driver (in tmux): normal
    screen, cursor, no mouse reporting, and line wrapping back on (a 100-column line wraps
    instead of being cut at the last column)."""
    import sys

    terminal = Terminal([sys.executable, "-c", STOPPED_BY_HAND], dict(os.environ),
                        size=(80, 24), keep_status=True)  # fmt: skip
    try:
        assert terminal.exit_status(timeout=30) == 143, terminal.screen()
        assert terminal.modes() == RESTORED
        assert "x" * 100 + "|end" in terminal.joined_screen(), terminal.screen()
    finally:
        terminal.close()
