"""Helpers for tests that run the real installed command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


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
