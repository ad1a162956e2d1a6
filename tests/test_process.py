"""Stopping a process tree (detect/process.py), the one way the tools, the build supervisor and
the launched llama.cpp are stopped: with real processes, nothing of the tree may be left."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil

from llama_wizard.detect.process import kill_leftovers, stop_process_tree


def _start(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


def _tree_of(process: subprocess.Popen[bytes], size: int) -> list[psutil.Process]:
    """The shell and its `size` children, once they have all started."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = psutil.Process(process.pid).children(recursive=True)
        if len(children) >= size:
            return [psutil.Process(process.pid), *children]
        time.sleep(0.02)
    raise AssertionError("the tree never started")


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_stop_leaves_nothing_of_the_tree() -> None:
    # The background sleep ignores SIGINT (a non-interactive shell does that to `&` jobs), so
    # the escalation to SIGTERM is what stops it.
    process = _start("sleep 100 & sleep 100")
    tree = _tree_of(process, 2)
    started = time.monotonic()
    code = stop_process_tree(process, grace=1.0)
    assert time.monotonic() - started < 5
    assert code is not None and code != 0
    assert _alive(tree) == []


def test_a_child_that_left_the_group_is_found_too() -> None:
    # `setsid` takes the first sleep out of the group: signalling the group misses it, but it
    # was seen below the shell before the first signal.
    process = _start("setsid sleep 100 & sleep 100")
    tree = _tree_of(process, 2)
    stop_process_tree(process, grace=1.0)
    assert _alive(tree) == []


def test_signals_can_be_skipped_to_kill_at_once() -> None:
    process = _start("trap '' INT TERM; sleep 100 & sleep 100")
    tree = _tree_of(process, 2)
    started = time.monotonic()
    assert stop_process_tree(process, signals=(), grace=30) == -signal.SIGKILL
    assert time.monotonic() - started < 5  # no grace waited for
    assert _alive(tree) == []


def test_a_process_that_ignores_the_polite_signals_is_killed_after_the_grace() -> None:
    process = _start("trap '' INT TERM; sleep 100")
    tree = _tree_of(process, 1)
    started = time.monotonic()
    assert stop_process_tree(process, grace=0.3) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 5  # SIGINT and SIGTERM each had their grace
    assert _alive(tree) == []


def test_a_bare_pid_without_its_group() -> None:
    # group=False signals the process alone (the supervisor's case: Nix shares its group).
    process = _start("sleep 100 & sleep 100")
    tree = _tree_of(process, 2)
    stop_process_tree(process.pid, grace=1.0, group=False)
    process.wait(timeout=5)
    assert _alive(tree) == []


def test_stopping_a_process_that_is_gone_kills_only_its_leftovers() -> None:
    # Reaped, its pid could be anyone's: its group is swept only for processes started since
    # it was (LaunchedProcess passes that time).
    started = time.time()
    process = _start("sleep 100 & exit 3")
    leftover = None
    deadline = time.monotonic() + 10
    while leftover is None and time.monotonic() < deadline:
        leftover = next(
            (p for p in psutil.process_iter(["cmdline"]) if _in_group(p, process.pid)), None
        )
        time.sleep(0.02)
    assert leftover is not None
    process.wait(timeout=5)
    assert stop_process_tree(process, grace=1.0, started_at=started) == 3
    assert _alive([leftover]) == []


def test_kill_leftovers_spares_the_process_itself() -> None:
    process = _start("sleep 100 & sleep 100")
    tree = _tree_of(process, 2)
    kill_leftovers(process.pid, group=True)
    assert _alive(tree[1:]) == []
    # The shell ends because its sleep did, not by a SIGKILL of its own.
    assert process.wait(timeout=5) != -signal.SIGKILL


def _in_group(process: psutil.Process, group: int) -> bool:
    try:
        return process.pid != group and os.getpgid(process.pid) == group
    except OSError:
        return False
