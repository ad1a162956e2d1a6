"""Running a GPU tool (rocminfo, nvidia-smi, sysctl) with a hard time limit.

A wedged GPU can hang these tools for minutes (gpu-detection.md pitfall 9), so every run has a
timeout, and a tool that overruns is killed with its whole process group: it may have started
helpers of its own, and none may outlive detection.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

DEFAULT_TIMEOUT = 10.0


class ToolNotFound(Exception):
    """The tool is not on PATH (normal: ROCm or the NVIDIA driver is not installed)."""


class ToolTimeout(Exception):
    def __init__(self, tool: str, timeout: float) -> None:
        super().__init__(f"{tool} did not answer within {timeout:g} s")
        self.tool = tool
        self.timeout = timeout


@dataclass(frozen=True)
class ToolResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """stdout and stderr together, for classifying a failure (never for data)."""
        return "\n".join(part for part in (self.stdout, self.stderr) if part)


def run_tool(
    argv: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> ToolResult:
    environment = dict(os.environ if env is None else env)
    executable = shutil.which(argv[0], path=environment.get("PATH"))
    if executable is None:
        raise ToolNotFound(argv[0])
    environment.setdefault("LC_ALL", "C")
    import subprocess  # not before a tool is found: most machines lack rocminfo or nvidia-smi

    try:
        process = subprocess.Popen(
            [executable, *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            start_new_session=True,
        )
    except OSError as error:
        raise ToolNotFound(f"{argv[0]} ({error.strerror})") from error
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise ToolTimeout(argv[0], timeout) from None
    return ToolResult(
        argv=tuple(argv),
        returncode=process.returncode,
        stdout=stdout.decode("utf-8", errors="replace"),
        stderr=stderr.decode("utf-8", errors="replace"),
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """A tool that overran is killed at once, its group and helpers with it: a wedged GPU does
    not answer politely, so there is nothing to wait for."""
    try:
        from llama_wizard.detect.process import stop_process_tree
    except ImportError:  # psutil missing: the probe sent over SSH (tui/cluster/probe_bundle.py)
        import contextlib
        import signal
        import subprocess

        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)
    else:
        stop_process_tree(process, signals=(), group=True, reap_timeout=1.0)
    # The pipes may be held open by grandchildren that escaped the group; don't wait on them.
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
