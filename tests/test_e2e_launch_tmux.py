"""The real full-screen wizard in a real 80x24 terminal (tmux) with real llama.cpp: the fixture
flake of tests/llamacpp.py built by the wizard with the real `nix build`, llama-completion run
from the Launch step showing llama.cpp's own speeds, then llama-server started from it, said to
be up, and killed with the wizard (`kill -9`): it must not outlive it."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import serve_on_a_free_port, walk_to_launch, wizard_executable
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    fixture_llamacpp_flake,
    free_port,
)
from tests.terminal import Terminal

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="scripts/test installs tmux")

SPEEDS = re.compile(r"prompt [\d.]+ tokens/s · generation [\d.]+ tokens/s \(llama\.cpp's")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_launch_step_shows_llama_cpp_s_speeds_and_the_server_dies_with_the_wizard(
    llamacpp_flake: str, dense_gguf: Path
) -> None:
    argv = [wizard_executable(), "--flake", llamacpp_flake, "--model", str(dense_gguf)]
    terminal = Terminal(argv, dict(os.environ), size=(80, 24))
    try:
        walk_to_launch(terminal)
        terminal.keys("C-r")
        screen = terminal.wait_for("llama-completion exited with status 0.")
        screen = terminal.wait_for("(llama.cpp's figures)")
        assert SPEEDS.search(screen), screen

        # llama-server on a free port: the program's radio buttons (the step's focus starts
        # there), then the port field.
        port = serve_on_a_free_port(terminal)
        terminal.keys("C-r")
        screen = terminal.wait_for(f"llama-server is up: http://127.0.0.1:{port}/")
        wizard = terminal.program_pid()
        servers = [p for p in psutil.Process(wizard).children() if p.name() == "llama-server"]
        assert len(servers) == 1, servers
        server = servers[0].pid
        os.kill(wizard, 9)  # the wizard dies at once: no cleanup of its own runs
        deadline = time.monotonic() + 5
        while not gone(server):
            assert time.monotonic() < deadline, f"llama-server {server} outlived the wizard"
            time.sleep(0.05)
    finally:
        terminal.close()
