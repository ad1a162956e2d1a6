"""Stopping a process and everything it started, the one way the wizard does it.

A GPU tool that overruns (detect/tools.py), `nix build` when a build is cancelled
(nix/supervisor.py) and llama.cpp when the person stops it (tui/launch.py) all leave helpers
behind if only the process itself is stopped: builders, compilers, a `sh` that started a
`sleep`. So stopping is: ask nicely (each of `signals`, `grace` seconds apart), then SIGKILL, then
kill whatever of its tree or process group is still there. Its descendants are remembered before
the first signal: once it is gone they are re-parented (to init, or to a subreaper) and can no
longer be found as its children, and some of them may have left its process group.

This module sits in detect/, the lowest layer, so that nix/ and tui/ can both use it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

import psutil

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REAP_SECONDS = 2.0  # how long a process may take to go after SIGKILL (a wedged driver can hold it)


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below pid now ([] when pid is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _running(process: subprocess.Popen[bytes] | int) -> bool:
    if isinstance(process, subprocess.Popen):
        return process.poll() is None
    try:
        return psutil.Process(process).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(process: subprocess.Popen[bytes] | int, sig: int, group: bool) -> None:
    """sig to the process group pid leads (group) or to the process alone. A group that cannot
    be signalled (gone, or another user's by now) falls back to the process itself."""
    pid = process.pid if isinstance(process, subprocess.Popen) else process
    if group:
        try:
            os.killpg(pid, sig)
            return
        except (ProcessLookupError, PermissionError):
            pass
    if isinstance(process, subprocess.Popen):
        # Popen.send_signal does nothing once the process has been reaped (no pid reuse).
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait(process: subprocess.Popen[bytes] | int, timeout: float) -> int | None:
    """The exit status once it has exited within timeout, else None. For a bare pid that is not
    our child the status is unknown: None as well (and `_running` says whether it is gone)."""
    if isinstance(process, subprocess.Popen):
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    try:
        return psutil.Process(process).wait(timeout=timeout)
    except (psutil.TimeoutExpired, psutil.Error):
        return None


def kill_leftovers(
    pid: int,
    *,
    seen: Iterable[psutil.Process] = (),
    group: bool = False,
    started_at: float | None = None,
    timeout: float = REAP_SECONDS,
) -> None:
    """SIGKILL what is left of pid's tree, not pid itself: the processes in `seen` (descendants
    remembered earlier, even those that left its group) that still run, its descendants now, and
    with `group` every other process in the group pid leads. Group members started before
    `started_at` (less a second of clock slack) are spared: the group id may have been reused;
    for the same reason pid's descendants are only looked for while pid is still the process
    that started then. Waits up to `timeout` for them to go."""
    left = [p for p in seen if p.is_running()]  # is_running also checks the start time
    created = _create_time(pid)
    if created is not None and (started_at is None or created <= started_at + 1):
        left += descendants(pid)
    if group:
        for process in psutil.process_iter(["pid"]):
            try:
                if process.pid == pid or os.getpgid(process.pid) != pid:
                    continue
                if started_at is not None and process.create_time() < started_at - 1:
                    continue
                left.append(process)
            except (OSError, psutil.Error):
                continue
    me = os.getpid()
    unique = [p for p in {p.pid: p for p in left}.values() if p.pid != me]
    for process in unique:
        with contextlib.suppress(psutil.Error):
            process.kill()
    _wait_gone(unique, timeout)


def _wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    """Wait until each process is gone, or is a zombie whose parent is not us: it is dead, and
    reaping it is its parent's job (psutil.wait_procs would wait the whole timeout for that).
    Our own children are reaped here."""
    pending = processes
    deadline = time.monotonic() + timeout
    while pending:
        still = []
        for process in pending:
            try:
                process.wait(timeout=0)  # reaps it if it is our child; returns once it is gone
            except psutil.TimeoutExpired:
                with contextlib.suppress(psutil.Error):
                    if process.status() != psutil.STATUS_ZOMBIE:
                        still.append(process)
            except psutil.Error:
                continue
        pending = still
        if pending and time.monotonic() < deadline:
            time.sleep(0.02)
        elif pending:
            return


def stop_process_tree(
    process: subprocess.Popen[bytes] | int,
    *,
    signals: Sequence[int] = DEFAULT_SIGNALS,
    grace: float = 5.0,
    group: bool = True,
    started_at: float | None = None,
    reap_timeout: float = REAP_SECONDS,
) -> int | None:
    """Stop `process` (a Popen, or a pid) and everything it started.

    Each of `signals` goes to its process group (`group`; the process leads its own group when
    it was started with start_new_session) or to the process alone, and the process gets
    `grace` seconds to exit after each; then SIGKILL, and `reap_timeout` seconds to go. Then
    `kill_leftovers`: its descendants seen before the first signal, those there now, and (with
    `group`) the rest of its group, started no earlier than `started_at` (default: when the
    process started). `signals=()` kills at once.

    Returns the exit status (Popen.returncode's sign convention), or None when it is unknown:
    the process did not go within reap_timeout, or it was a bare pid that is not our child.
    Safe to call on a process that has exited already: only its leftovers are killed."""
    pid = process.pid if isinstance(process, subprocess.Popen) else process
    # Once a Popen has been reaped its pid may already be another process's: nothing is looked
    # up by it then, and its group is swept only if we know when it started.
    reaped = isinstance(process, subprocess.Popen) and process.returncode is not None
    seen = [] if reaped else descendants(pid)
    if started_at is None and not reaped:
        started_at = _create_time(pid)
    code: int | None = None
    if _running(process):
        for sig in signals:
            _signal(process, sig, group)
            code = _wait(process, grace)
            if code is not None or not _running(process):
                break
        else:
            _signal(process, signal.SIGKILL, group)
            code = _wait(process, reap_timeout)
    elif isinstance(process, subprocess.Popen):
        code = process.poll()
    kill_leftovers(
        pid,
        seen=seen,
        group=group and started_at is not None,
        started_at=started_at,
        timeout=reap_timeout,
    )
    return code


def run_bounded(
    argv: Sequence[str], env: dict[str, str] | None, timeout: float
) -> tuple[str, str, int]:
    """Run a program to its end in its own session, with no input: (stdout, stderr, exit
    status), decoded leniently. Past `timeout` it is stopped with everything it started and
    subprocess.TimeoutExpired is raised; OSError when it cannot be started. For the short
    questions asked of a built llama.cpp (--list-devices, llama-fit-params)."""
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_tree(popen, signals=(), group=True)
        popen.communicate()
        raise
    return (
        out.decode("utf-8", errors="replace"),
        err.decode("utf-8", errors="replace"),
        popen.returncode,
    )
