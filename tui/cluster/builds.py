"""`nix build` of every host's RPC-enabled llama.cpp at once: locally as a subprocess, over SSH
as the same command on the far side, each output line reported with the host's name so that a
face can show progress per host. The full log of each build is kept in a file; a Ctrl-C stops
every build that was started, here and on the far side."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llama_wizard.detect.errors import ActionableError
from llama_wizard.detect.process import stop_process_tree
from llama_wizard.tui.cluster.plan import RPC_PROGRAMS
from llama_wizard.tui.plan import state_dir

if TYPE_CHECKING:
    from llama_wizard.tui.cluster.plan import ClusterPlan, HostPlan
    from llama_wizard.tui.cluster.ssh import SshOptions

TAIL_LINES = 25
# The first line a remote build prints: the pid of the shell that then becomes `nix`, so that a
# Ctrl-C here can stop the build there (closing the connection alone may leave it running).
_PID_MARK = "@@llama-wizard-build-pid "
# Says the far side's pid, then becomes nix (exec keeps the pid): Ctrl-C can stop it there.
_EXEC_SCRIPT = f'echo "{_PID_MARK}$$"; exec "$@"'
# The far side's nix.conf is unknown: flakes may not be enabled there.
_FEATURES = ("--extra-experimental-features", "nix-command flakes")
REMOTE_QUERY_TIMEOUT = 60.0
STOP_GRACE = 5.0


class ClusterBuildError(ActionableError):
    """A host's build cannot be run or did not give what the cluster needs."""


@dataclass
class HostBuild:
    """How one host's build ended."""

    host: str
    ok: bool
    store_path: str | None = None
    # The worker's program in the result (`<store>/bin/ggml-rpc-server`), None when it has none.
    rpc_program: str | None = None
    elapsed: float = 0.0
    log_path: str | None = None
    log_tail: list[str] = field(default_factory=list)
    error: str | None = None
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ok": self.ok,
            "store_path": self.store_path,
            "rpc_program": self.rpc_program,
            "elapsed_s": round(self.elapsed, 1),
            "log": self.log_path,
            "log_tail": self.log_tail,
            "error": self.error,
            "fix": self.fix,
        }


def logs_dir() -> Path:
    return state_dir() / "cluster" / "logs"


def host_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "host"


def remote_build_argv(build_argv: list[str]) -> list[str]:
    """build_argv with flakes enabled explicitly (unless it says so already)."""
    if "--extra-experimental-features" in build_argv or "--experimental-features" in build_argv:
        return list(build_argv)
    return [build_argv[0], *_FEATURES, *build_argv[1:]]


def _out_link(host: HostPlan) -> str:
    if host.out_link:
        return host.out_link
    assert host.build is not None
    argv = host.build.build_argv
    if "--out-link" in argv:
        return argv[argv.index("--out-link") + 1]
    return host.build.out_link


class _Run:
    """One host's build in progress: its process (ssh or nix), its log, its remote pid."""

    def __init__(self, host: HostPlan, argv: list[str], log_path: Path) -> None:
        self.host = host
        self.argv = argv
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.remote_pid: int | None = None
        self.tail: list[str] = []
        self.result: HostBuild | None = None
        self.cancelled = threading.Event()


def build_hosts(
    plan: ClusterPlan,
    ssh: SshOptions,
    on_line: Callable[[str, str], None],
    *,
    hosts: list[str] | None = None,
) -> list[HostBuild]:
    """Build every usable host's HostPlan.build (or those named in `hosts`) in parallel.

    Every output line goes to on_line(host name, line) (from the build threads). A build that
    fails is a HostBuild with ok=False, its log tail and the log file's path; a worker whose
    result lacks the rpc-server program is one too. Simulated hosts, hosts with no build and
    unknown names raise ClusterBuildError before anything starts. A KeyboardInterrupt stops
    every build started (and is raised again)."""
    chosen = _chosen_hosts(plan, hosts)
    directory = logs_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ClusterBuildError(
            f"{directory} cannot be created: {error.strerror or error}.",
            "Make the state directory writable (XDG_STATE_HOME), then build again.",
        ) from None
    runs: list[_Run] = []
    # Several hosts on one machine (workers on this box, for trying it) share one build: two
    # `nix build`s of the same out link at once would race for it.
    same_as: dict[str, _Run] = {}
    leaders: dict[tuple[str, tuple[str, ...]], _Run] = {}
    for host in chosen:
        assert host.build is not None
        argv = list(host.build.build_argv)
        if host.spec.kind == "ssh":
            argv = remote_build_argv(argv)
        key = (host.spec.destination or host.spec.kind, tuple(argv))
        if key in leaders:
            same_as[host.name] = leaders[key]
            on_line(host.name, f"the same build as {leaders[key].host.name}")
            continue
        leaders[key] = _Run(host, argv, directory / f"build-{host_slug(host.name)}.log")
        runs.append(leaders[key])
    threads = [
        threading.Thread(target=_build_one, args=(run, ssh, on_line), daemon=True) for run in runs
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
    except BaseException:
        _cancel(runs, ssh)
        for thread in threads:
            thread.join(timeout=STOP_GRACE + 5)
        raise
    results: dict[str, HostBuild] = {
        run.host.name: run.result or _failed(run, 0.0, "the build thread ended without a result")
        for run in runs
    }
    for name, leader in same_as.items():
        host = next(h for h in chosen if h.name == name)
        results[name] = _shared(host, results[leader.host.name])
    return [results[host.name] for host in chosen]


def _shared(host: HostPlan, leader: HostBuild) -> HostBuild:
    result = replace(leader, host=host.name, log_tail=list(leader.log_tail))
    if result.ok and host.role == "worker" and result.rpc_program is None:
        _lacks_rpc(result, host)
    return result


def _lacks_rpc(result: HostBuild, host: HostPlan) -> None:
    result.ok = False
    result.error = (
        f"The build for {host.name} ({result.store_path}) has no "
        f"{' or '.join(RPC_PROGRAMS)}: it lacks llama.cpp's RPC backend."
    )
    result.fix = (
        "Build it with useRpc = true (`.override { useRpc = true; }`, as `cluster plan` "
        "does), or use a flake whose llama.cpp has the RPC backend."
    )


def _chosen_hosts(plan: ClusterPlan, names: list[str] | None) -> list[HostPlan]:
    usable = [h for h in plan.hosts if h.usable]
    if names is not None:
        known = {h.name: h for h in plan.hosts}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ClusterBuildError(
                f"The plan has no host called {', '.join(unknown)}.",
                f"Name one of: {', '.join(known)}.",
            )
        usable = [known[n] for n in names]
    for host in usable:
        if host.spec.simulated:
            raise ClusterBuildError(
                f"{host.name} is simulated (a bundled profile): there is nothing to build "
                "there.",
                "Use `cluster plan` to try the plan, and real servers (`local` or SSH "
                "destinations) to build and start.",
            )
        if host.error is not None:
            raise ClusterBuildError(
                f"{host.name} was left out of the plan: {host.error}",
                host.fix or "Fix what the plan says about it, or leave it out.",
            )
        if host.build is None:
            raise ClusterBuildError(
                f"The plan has no build for {host.name}.",
                "Plan again (`llama-wizard cluster plan HOST...`) so that each host has a build.",
            )
    return usable


def _build_one(run: _Run, ssh: SshOptions, on_line: Callable[[str, str], None]) -> None:
    started = time.monotonic()
    try:
        run.result = _run_build(run, ssh, on_line, started)
    except ActionableError as error:
        run.result = _failed(run, time.monotonic() - started, error.message, error.fix)
    except OSError as error:
        run.result = _failed(
            run,
            time.monotonic() - started,
            f"{run.argv[0]} cannot be started: {error.strerror or error}.",
            "Install Nix (or ssh) and make sure it is on PATH.",
        )


def _run_build(
    run: _Run, ssh: SshOptions, on_line: Callable[[str, str], None], started: float
) -> HostBuild:
    host = run.host
    if host.spec.kind == "ssh":
        from llama_wizard.tui.cluster.ssh import ssh_argv

        assert host.spec.destination is not None
        # `exec` keeps the pid: the shell that prints it becomes nix.
        remote = ["sh", "-c", _EXEC_SCRIPT, "sh", *run.argv]
        argv = ssh_argv(host.spec.destination, remote, ssh)
    else:
        argv = run.argv
    with run.log_path.open("w", encoding="utf-8", errors="replace") as log:
        log.write(f"$ {shlex.join(run.argv)}\n")
        log.flush()
        if run.cancelled.is_set():
            return _failed(run, 0.0, "cancelled")
        run.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C goes to us only; we stop it, and its helpers
        )
        _follow(run, log, on_line)
        code = run.popen.wait()
    elapsed = time.monotonic() - started
    if run.cancelled.is_set():
        return _failed(run, elapsed, "the build was cancelled")
    if code != 0:
        where = f"on {host.name}" if host.spec.kind == "ssh" else "here"
        return _failed(
            run,
            elapsed,
            f"nix build {where} failed (status {code}); its log is {run.log_path}.",
            "The log's last lines say why; fix that and run `llama-wizard cluster build` again.",
        )
    store = _store_path(host, ssh)
    if store is None:
        return _failed(
            run,
            elapsed,
            f"nix build on {host.name} succeeded but {_out_link(host)} points at no store path.",
            "Build again; if it keeps happening, check that the out link's directory is writable.",
        )
    program = _rpc_program(host, ssh, store)
    result = HostBuild(host.name, True, store, program, elapsed, str(run.log_path))
    if host.role == "worker" and program is None:
        _lacks_rpc(result, host)
    return result


def _follow(run: _Run, log: IO[str], on_line: Callable[[str, str], None]) -> None:
    assert run.popen is not None and run.popen.stdout is not None
    for raw in run.popen.stdout:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if run.remote_pid is None and line.startswith(_PID_MARK):
            with contextlib.suppress(ValueError):
                run.remote_pid = int(line.removeprefix(_PID_MARK))
            continue
        log.write(line + "\n")
        log.flush()
        run.tail = [*run.tail[-(TAIL_LINES - 1) :], line]
        on_line(run.host.name, line)


def _store_path(host: HostPlan, ssh: SshOptions) -> str | None:
    link = _out_link(host)
    if host.spec.kind == "ssh":
        from llama_wizard.tui.cluster.ssh import run_remote

        assert host.spec.destination is not None
        result = run_remote(
            host.spec.destination, ["readlink", "-f", link], ssh, timeout=REMOTE_QUERY_TIMEOUT
        )
        path = result.text.strip()
        return path if result.returncode == 0 and path.startswith("/") else None
    try:
        return os.path.realpath(link, strict=True)
    except OSError:
        return None


def _rpc_program(host: HostPlan, ssh: SshOptions, store: str) -> str | None:
    """`<store>/bin/ggml-rpc-server` (or the older `rpc-server`), None when it has neither."""
    return find_program(host, ssh, f"{store}/bin", RPC_PROGRAMS)


def find_program(
    host: HostPlan, ssh: SshOptions, directory: str, names: tuple[str, ...]
) -> str | None:
    """The first of `names` that is an executable in `directory` on that host."""
    if host.spec.kind != "ssh":
        for name in names:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        return None
    from llama_wizard.tui.cluster.ssh import run_remote

    assert host.spec.destination is not None
    script = 'd=$1; shift; for p; do if test -x "$d/$p"; then echo "$d/$p"; exit 0; fi; done'
    result = run_remote(
        host.spec.destination,
        ["sh", "-c", script, "sh", directory, *names],
        ssh,
        timeout=REMOTE_QUERY_TIMEOUT,
    )
    found = result.text.strip().splitlines()
    return found[0] if result.returncode == 0 and found else None


def _failed(run: _Run, elapsed: float, message: str, fix: str | None = None) -> HostBuild:
    return HostBuild(
        run.host.name,
        False,
        elapsed=elapsed,
        log_path=str(run.log_path),
        log_tail=list(run.tail),
        error=message,
        fix=fix,
    )


# $1 the far side's nix, $2 the seconds it gets to stop after SIGINT.
_CANCEL_SCRIPT = (
    'kill -INT "$1" 2>/dev/null || exit 0; i=0; '
    'while kill -0 "$1" 2>/dev/null && [ $i -lt "$2" ]; do sleep 1; i=$((i+1)); done; '
    'kill -KILL "$1" 2>/dev/null; exit 0'
)


def _cancel(runs: list[_Run], ssh: SshOptions) -> None:
    """Stop every build started: the far side's nix first (while the connection is up), then
    the local processes (nix, or ssh) with everything they started."""
    for run in runs:
        run.cancelled.set()
    for run in runs:
        if run.remote_pid is not None and run.host.spec.destination is not None:
            from llama_wizard.tui.cluster.ssh import run_remote

            with contextlib.suppress(Exception):
                run_remote(
                    run.host.spec.destination,
                    ["sh", "-c", _CANCEL_SCRIPT, "sh", str(run.remote_pid), str(int(STOP_GRACE))],
                    ssh,
                    timeout=STOP_GRACE + 20,
                )
    for run in runs:
        if run.popen is not None:
            with contextlib.suppress(Exception):
                stop_process_tree(run.popen, grace=STOP_GRACE)


def build_failures(results: list[HostBuild]) -> ClusterBuildError | None:
    """One error naming every host whose build failed (None when all are fine)."""
    failed = [r for r in results if not r.ok]
    if not failed:
        return None
    parts = []
    for result in failed:
        tail = "\n".join(f"    {line}" for line in result.log_tail[-10:])
        parts.append(f"{result.host}: {result.error}" + (f"\n{tail}" if tail else ""))
    fixes = sorted({r.fix for r in failed if r.fix})
    return ClusterBuildError(
        "The build failed on " + ", ".join(r.host for r in failed) + ":\n" + "\n".join(parts),
        " ".join(fixes) or "Read the logs named above, fix the cause and build again.",
    )
