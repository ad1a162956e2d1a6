"""Helpers for tests that run the real installed command."""

from __future__ import annotations

import contextlib
import os
import shutil
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def wizard_executable() -> str:
    found = shutil.which("llama-wizard", path=str(Path(sys.executable).parent))
    assert found, "llama-wizard is not installed in the test environment (pip install -e .)"
    return found


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real installed command, in a real subprocess."""
    environment = dict(os.environ if env is None else env)
    if env is None:
        environment.pop("LLAMA_WIZARD_ROOT", None)
    return subprocess.run(
        [wizard_executable(), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[socketserver.BaseServer]:
    """A test's HTTP server answering on its own thread until the block ends, then closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def walk_to_launch(terminal: Any) -> None:
    """The wizard in a tests.terminal.Terminal, by keys, from its first screen to the Launch
    step of a plan whose model is chosen on the command line (the build runs for real)."""
    terminal.wait_for("5 Launch")
    terminal.wait_for("RAM")  # detection has answered
    terminal.keys("C-n")
    terminal.wait_for("nix build")
    terminal.keys("C-n")
    terminal.wait_for("Chosen:")
    terminal.keys("C-n")
    terminal.wait_for("Built.", timeout=300)
    terminal.keys("C-n")
    terminal.wait_for("ctrl+r runs it")


def serve_on_a_free_port(terminal: Any) -> int:
    """On the Launch step in a Terminal (the program's radio buttons hold the focus): choose
    llama-server, type a free port into its field and wait for the command to show it."""
    from tests.llamacpp import free_port

    terminal.keys("Right")
    terminal.keys("Enter")
    terminal.wait_for("Listen on")
    terminal.keys("Tab", "Tab")
    time.sleep(0.5)  # the focus moves when the app has read the keys
    terminal.keys("C-a", "C-k")
    terminal.wait_for("⚠")  # no port
    port = free_port()
    terminal.keys(str(port))
    terminal.wait_for(f"--port {port}")
    return port
