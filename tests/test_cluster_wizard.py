"""The wizard's branch "Add servers" (issue 15): `a` on the Hardware step opens the cluster
screen, which plans one model across this machine and the servers typed (here bundled profiles,
sim:PROFILE) with the real planner and the fixture flake, shows the plan in the words of
`cluster plan`, the `cluster up` command to copy, and refuses to start what is simulated.
Plain mode has the same branch as an entry of the GPU menu."""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path

import pytest
from textual.widgets import Input

from llama_wizard.detect.simulate import materialize
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.screens.cluster import ClusterScreen
from llama_wizard.screens.dialogs import HelpScreen
from llama_wizard.screens.hardware import HardwareScreen
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.plain import AutoPrompter
from llama_wizard.tui.plain.wizard import PlainWizard
from llama_wizard.tui.session import Overrides, WizardSession
from llama_wizard.tui.settings import SettingsStore
from llama_wizard.tui.widgets import CommandText
from tests.helpers import wizard_executable
from tests.nix_fixtures import fixture_flake
from tests.plain_helpers import run_piped
from tests.terminal import Terminal
from tests.wizard_helpers import make_app, settle, wait_for

HOSTS_QUESTION = "Add other servers to run one model across them? (hosts, or Enter for none)"


async def type_hosts(pilot, text: str) -> None:
    """Into the servers field (focused, emptied first), then Enter."""
    field = pilot.app.screen.query_one("#hosts", Input)
    field.focus()
    field.value = ""
    await pilot.pause()
    await pilot.press(*text)
    await pilot.press("enter")


async def open_cluster_screen(pilot, app) -> ClusterScreen:
    """`a` on the Hardware step: the Add servers screen."""
    await pilot.press("a")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, ClusterScreen)
    return screen


async def planned(pilot) -> ClusterScreen:
    screen = pilot.app.screen
    assert isinstance(screen, ClusterScreen)
    await wait_for(lambda: screen.plan is not None and not screen.planning)
    await pilot.pause()
    return screen


def footer_keys(screen) -> dict[str, str]:
    """The keys the footer shows, with their words."""
    return {
        key: active.binding.description
        for key, active in screen.active_bindings.items()
        if active.binding.show and active.enabled
    }


async def test_add_servers_plans_a_simulated_cluster_and_refuses_to_start_it(tmp_path) -> None:
    app = make_app(tmp_path, "2x-mi50")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert footer_keys(app.screen).get("a") == "Add servers"
        await pilot.press("a")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ClusterScreen)
        assert isinstance(app.focused, Input)  # typing the servers is what the screen is for
        await pilot.press("escape")  # from the field too: back to the Hardware step
        await pilot.pause()
        assert isinstance(app.screen, HardwareScreen)
        await pilot.press("a")
        await pilot.pause()
        await type_hosts(pilot, "sim:2x-mi50")
        screen = await planned(pilot)
        shown = screen.plan_text()
        assert "local: head (llama-server) [simulated]" in shown
        assert "sim:2x-mi50: worker (rpc-server) [simulated]" in shown
        assert "rpc-server: " in shown and " -H 10.99.0.1 -p 50052 -c" in shown
        assert "Split (-ts): " in shown
        assert "SIMULATED" in shown
        command = app.screen.query_one("#cluster-command", CommandText).text
        assert command.startswith("llama-wizard cluster up local sim:2x-mi50 ")
        assert command.endswith("--simulate 2x-mi50")
        # The keys act on the plan now (the focus left the field).
        assert footer_keys(screen).get("u") == "Start" and footer_keys(screen).get("y") == "Copy"
        await pilot.press("y")
        await pilot.pause()
        assert app.clipboard == command
        assert "Copied" in screen.status_text()
        await pilot.press("u")
        await pilot.pause()
        status = screen.status_text()
        assert "Simulated hosts can be planned, not started" in status
        assert "local, sim:2x-mi50." in status and "Fix:" in status
        assert not screen.starting and screen.progress_text() == ""
        assert not [w for w in app.workers if w.group == "cluster-up"]
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HardwareScreen)
        assert len(app.screen_stack) == 1
        await pilot.press("q")
    assert app.return_code == 0


async def test_a_bad_host_shows_the_error_and_its_fix_and_the_screen_stays_usable(
    tmp_path,
) -> None:
    app = make_app(tmp_path, "2x-mi50")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await open_cluster_screen(pilot, app)
        await type_hosts(pilot, "-x")
        await pilot.pause()
        status = screen.status_text()
        assert "'-x' is not a host the cluster can use" in status
        assert "Fix: Give 'local', 'sim:PROFILE'" in status
        assert app.screen is screen and screen.plan is None
        await type_hosts(pilot, "sim:nope")
        await pilot.pause()
        status = screen.status_text()
        assert "no bundled hardware profile called 'nope'" in status
        assert "Fix: Use sim:NAME with one of:" in status and "2x-mi50" in status
        await type_hosts(pilot, "")
        await pilot.pause()
        assert "No other server was named" in screen.status_text()
        # And still usable: a good host now plans.
        await type_hosts(pilot, "sim:2x-mi50")
        screen = await planned(pilot)
        assert "sim:2x-mi50: worker (rpc-server)" in screen.plan_text()
        assert "⚠" not in screen.status_text()
        await pilot.press("u")  # with no crash: refused in words
        await pilot.pause()
        assert "not started" in screen.status_text()
        # ctrl+n goes on as from the Hardware step (the cluster is started with its command).
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert app.step == "build" and not isinstance(app.screen, ClusterScreen)
        assert [type(s).__name__ for s in app.screen_stack] == [
            "HardwareScreen",
            type(app.screen).__name__,
        ]


async def test_planning_runs_in_a_worker_and_the_screen_answers_meanwhile(tmp_path) -> None:
    """The real planner, held at its start until the test lets it go: meanwhile the screen says
    what it does and takes keys."""
    app = make_app(tmp_path, "2x-mi50")
    go = threading.Event()
    plan_cluster = app.session.plan_cluster

    def held(hosts: list[str]):
        assert go.wait(30), "the test never let the planner go"
        return plan_cluster(hosts)

    app.session.plan_cluster = held  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await open_cluster_screen(pilot, app)
        await type_hosts(pilot, "sim:2x-mi50 sim:2x-mi50")
        await pilot.pause()
        assert screen.status_text() == "Detecting 3 hosts…"
        await pilot.press("u")  # the UI thread is free: the key is handled at once
        await pilot.pause()
        assert "still being detected" in screen.status_text()
        go.set()
        screen = await planned(pilot)
        assert "sim:2x-mi50#2: worker (rpc-server)" in screen.plan_text()


def test_plain_mode_plans_other_servers_from_the_gpu_menu(tmp_path: Path) -> None:
    """The GPU menu's entry asks for the servers once; a bad one is asked again with its fix;
    the plan and the `cluster up` command are printed, and the GPU menu comes back."""
    flake = fixture_flake(tmp_path / "flake")
    args = ["--plain", "--simulate", "2x-mi50", "--flake", flake]
    menu = run_piped(args, "q\n", tmp_path)
    entry = next(
        line.split(")")[0].strip()
        for line in menu.stdout.splitlines()
        if "Add other servers (one model across them)" in line
    )
    result = run_piped(args, f"{entry}\n-x\nsim:2x-mi50\nq\n", tmp_path)
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert HOSTS_QUESTION in out
    assert "'-x' is not a host the cluster can use." in out
    assert "local: head (llama-server) [simulated]" in out
    assert "sim:2x-mi50: worker (rpc-server) [simulated]" in out
    assert "rpc-server: " in out and "Split (-ts): " in out
    assert f"llama-wizard cluster up local sim:2x-mi50 --flake {flake} --simulate 2x-mi50" in out
    # After the plan, this machine's GPU menu again (q there quits).
    assert out.count("Which GPUs should llama.cpp use?") == 2

    skipped = run_piped(args, f"{entry}\n\nq\n", tmp_path)
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert HOSTS_QUESTION in skipped.stdout
    assert "Cluster of" not in skipped.stdout and "cluster up" not in skipped.stdout
    assert skipped.stdout.count("Which GPUs should llama.cpp use?") == 2


def test_yes_never_asks_for_other_servers(tmp_path: Path) -> None:
    box = materialize("2x-mi50", tmp_path / "machine")
    machine = Machine(SystemRoot(box.root), box.env(), simulated="2x-mi50")
    flake = fixture_flake(tmp_path / "flake")
    session = WizardSession(machine, SettingsStore.load(), Overrides(flake=flake))
    out = io.StringIO()
    wizard = PlainWizard(session, AutoPrompter(out=out), out=out, err=out)
    assert wizard.step_hardware() == "next"
    text = out.getvalue()
    assert "Which GPUs should llama.cpp use? → Use GPUs 0, 1" in text
    assert HOSTS_QUESTION not in text and "Cluster of" not in text


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by scripts/test")
def test_add_servers_in_a_real_80x24_terminal_without_colour(tmp_path: Path) -> None:
    """Keys alone, NO_COLOR, 80x24: the branch and its way back, read from the screen."""
    flake = fixture_flake(tmp_path / "flake")
    env = dict(os.environ, NO_COLOR="1")
    argv = [wizard_executable(), "--simulate", "2x-mi50", "--flake", flake]
    terminal = Terminal(argv, env, (80, 24))
    try:
        screen = terminal.wait_for("2 GPUs found", timeout=30)
        assert "a Add servers" in screen
        terminal.keys("a")
        terminal.wait_for("Other servers: SSH destinations or sim:PROFILE")
        terminal.keys("sim:2x-mi50", "Enter")
        screen = terminal.wait_for("llama-wizard cluster up local sim:2x-mi50", timeout=60)
        assert "Cluster of 2 hosts" in screen and "u Start" in screen
        terminal.keys("u")
        screen = terminal.wait_for("planned, not started")
        assert "Traceback" not in screen
        terminal.keys("Escape")
        terminal.wait_for("Detect again")
        terminal.keys("q")
        assert terminal.wait_closed(), "the wizard did not quit on q"
    finally:
        terminal.close()


@pytest.mark.skipif(shutil.which("ssh") is None, reason="scripts/test installs openssh-client")
async def test_start_runs_cluster_up_in_a_worker_with_its_progress_and_its_error(tmp_path) -> None:
    """A plan that is not simulated (this machine as if real, a server that cannot be reached
    and is left out): u runs the runtime's cluster_up in a worker; its progress lines are
    appended below the plan, and its failure (here the build of the fixture flake) is shown
    with its fix, the whole of it below; nothing crashes. The documented fixture flake has no
    real llama-server (a stand-in that prints and exits), so the start cannot succeed."""
    app = make_app(tmp_path, "2x-mi50", simulated=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        await type_hosts(pilot, "nosuch.invalid")
        screen = await planned(pilot)
        assert screen.status_text() != "" and "⚠" not in screen.status_text()
        assert "nosuch.invalid: worker (rpc-server): LEFT OUT" in screen.plan_text()
        assert screen.plan is not None and not screen.plan.simulated
        await pilot.press("u")
        await pilot.pause()
        assert screen.starting or screen.progress
        await wait_for(lambda: not screen.starting, timeout=240)
        await pilot.pause()
        progress = screen.progress_text()
        assert "[local] " in progress  # the runtime's own lines, as they came
        status = screen.status_text()
        assert status.startswith("⚠ ") and "\nFix: " in status, status
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HardwareScreen)
