"""Starting, watching and stopping a cluster: every worker's rpc-server, then the head's
llama-server with `--rpc`, each detached so that it outlives the wizard and the SSH connection
that started it, and recorded in a state file so that a later `cluster status` or `cluster down`
finds exactly those processes (by pid and start time: a reused pid is never signalled)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from llama_wizard.detect.errors import ActionableError
from llama_wizard.detect.process import stop_process_tree
from llama_wizard.tui.cluster.builds import (
    HostBuild,
    build_failures,
    build_hosts,
    find_program,
    host_slug,
    logs_dir,
)
from llama_wizard.tui.cluster.plan import (
    PUBLIC_BINDS,
    RPC_PROGRAMS,
    ClusterError,
    start_refusal,
)
from llama_wizard.tui.launch import build_environment, is_secret_name
from llama_wizard.tui.plan import state_dir

if TYPE_CHECKING:
    from llama_wizard.tui.cluster.plan import ClusterPlan, HostPlan
    from llama_wizard.tui.cluster.ssh import SshOptions

STATE_FILE = "state.json"
# Where a remote process's log goes on that host: the SSH user's state directory (a shell word,
# expanded there).
REMOTE_LOG_DIR = "${XDG_STATE_HOME:-$HOME/.local/state}/llama-wizard/cluster"
WORKER_TIMEOUT = 60.0  # an rpc-server listens within a second; allow for a slow ssh
HEALTH_TIMEOUT = 1800.0  # the head loads the model and sends layers over the network
STOP_GRACE = 10.0
REMOTE_TIMEOUT = 60.0
TAIL_LINES = 20
# Addresses an rpc-server must never listen on: RPC is unauthenticated, so anyone who reaches
# the port can run code on that GPU server's memory.
# Secret options of llama-server, passed in its environment instead of its command line (which
# `ps` shows to everyone on the host, and which the state file records).
SECRET_ENV = {"--api-key": "LLAMA_ARG_API_KEY", "--hf-token": "HF_TOKEN", "-hft": "HF_TOKEN"}

# The processes this wizard started and has not reaped yet: reaping them (poll) is ours to do,
# or they stay zombies while the wizard runs (and look alive to a pid check).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

# Shell functions for the far side: a process's start time (the key that tells it from a later
# process with the same pid) and whether it is alive (not a zombie).
_REMOTE_FUNCTIONS = (
    'key() { if [ -r "/proc/$1/stat" ]; then sed "s/.*) //" "/proc/$1/stat" | cut -d" " -f20; '
    'else ps -o lstart= -p "$1" 2>/dev/null; fi; }; '
    'state() { if [ -r "/proc/$1/stat" ]; then sed "s/.*) //" "/proc/$1/stat" | cut -c1; '
    'else ps -o stat= -p "$1" 2>/dev/null | cut -c1; fi; }; '
    'alive() { [ -n "$2" ] && [ "$(key "$1")" = "$2" ] && [ "$(state "$1")" != Z ]; }; '
)


@dataclass
class ProcessRecord:
    """One process `cluster up` started."""

    host: str
    kind: str  # "local" or "ssh"
    destination: str | None
    role: str  # "head" or "worker"
    pid: int
    start_key: str  # local: psutil create_time; ssh: /proc/PID/stat starttime (or ps lstart)
    argv: list[str]  # without secrets
    log: str  # on that host
    endpoint: str | None  # worker: ADDRESS:PORT; head: its URL


@dataclass
class ClusterState:
    processes: list[ProcessRecord] = field(default_factory=list)
    url: str | None = None
    started: str = ""
    status: str = "starting"  # "starting" while `up` runs, then "up"
    # What `up` found wrong but started anyway (a worker whose llama.cpp sees no GPU).
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        return cls(
            processes=[ProcessRecord(**p) for p in data.get("processes", [])],
            url=data.get("url"),
            started=data.get("started", ""),
            status=data.get("status", "up"),
            warnings=list(data.get("warnings", [])),
        )


def state_path() -> Path:
    return state_dir() / "cluster" / STATE_FILE


def load_state() -> ClusterState | None:
    try:
        return ClusterState.from_json(json.loads(state_path().read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as error:
        raise ClusterError(
            f"The cluster state file {state_path()} cannot be read: {error}.",
            "Stop the processes it names by hand if any still run, then delete the file.",
        ) from None


def save_state(state: ClusterState) -> None:
    """Written whole to a temporary file and renamed: a reader never sees half of it."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(state.to_json(), indent=1))
    os.replace(temporary, path)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


# --- starting ----------------------------------------------------------------------------------


def cluster_up(
    plan: ClusterPlan,
    ssh: SshOptions,
    on_event: Callable[[str, str], None],
    *,
    build: bool = True,
    worker_timeout: float = WORKER_TIMEOUT,
    health_timeout: float = HEALTH_TIMEOUT,
) -> ClusterState:
    """Build (unless `build` is False), start every worker's rpc-server and wait until each
    accepts connections, then start the head's llama-server and wait until /health answers
    200. on_event(host name, text) reports progress (build lines too). Any failure, and a
    KeyboardInterrupt, stops everything started so far before the error goes on."""
    _check_plan(plan)
    _check_not_up(ssh)
    results: dict[str, HostBuild] = {}
    if build:
        built = build_hosts(plan, ssh, on_event)
        failure = build_failures(built)
        if failure is not None:
            raise failure
        results = {r.host: r for r in built}
    head = plan.head
    worker_argvs = {w.name: _worker_argv(w, results.get(w.name), ssh) for w in plan.workers}
    head_argv, head_env = _head_command(plan, results.get(head.name))
    state = ClusterState(url=_head_url(plan), started=_now())
    for host in [*plan.workers, head]:
        for warning in device_warnings(host, results.get(host.name), ssh):
            on_event(host.name, f"warning: {warning}")
            state.warnings.append(f"{host.name}: {warning}")
    save_state(state)
    try:
        for worker in plan.workers:
            record = _start(worker, worker_argvs[worker.name], worker.env, worker.unset_env, ssh)
            state.processes.append(record)
            save_state(state)
            on_event(worker.name, f"started {Path(record.argv[0]).name} (pid {record.pid}); "
                                  f"log {record.log}")  # fmt: skip
        for worker, record in zip(plan.workers, state.processes, strict=True):
            _wait_worker(worker, record, ssh, worker_timeout)
            on_event(worker.name, f"rpc-server is listening on {worker.endpoint}")
        record = _start(head, head_argv, head_env, head.unset_env, ssh)
        record.endpoint = state.url
        state.processes.append(record)
        save_state(state)
        on_event(head.name, f"started llama-server (pid {record.pid}); log {record.log}")
        _wait_head(record, state.url, ssh, health_timeout, on_event)
        on_event(head.name, f"{state.url}/health answered 200: the cluster is up")
    except BaseException:
        on_event(head.name, "stopping what was started")
        left = _stop_records(state, ssh, lambda _text: None)
        if left:
            state.processes = left
            save_state(state)
        else:
            with contextlib.suppress(OSError):
                state_path().unlink()
        raise
    state.status = "up"
    save_state(state)
    return state


def _check_plan(plan: ClusterPlan) -> None:
    refusal = start_refusal(plan)
    if refusal is not None:
        raise refusal


def _check_not_up(ssh: SshOptions) -> None:
    state = load_state()
    if state is None:
        return
    running = [r.host for r in state.processes if _alive(r, ssh) is not False]
    if running:
        raise ClusterError(
            f"A cluster is already up (started {state.started}; running on {', '.join(running)}).",
            "Stop it first with `llama-wizard cluster down`, or see it with "
            "`llama-wizard cluster status`.",
        )
    # What it recorded has ended (the machines restarted, say): nothing to stop.
    with contextlib.suppress(OSError):
        state_path().unlink()


def _option(argv: list[str], name: str) -> str | None:
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def _worker_argv(worker: HostPlan, result: HostBuild | None, ssh: SshOptions) -> list[str]:
    """rpc_argv with the program the build has (ggml-rpc-server, or rpc-server in older
    llama.cpp) in place of argv[0]."""
    assert worker.rpc_argv is not None
    argv = list(worker.rpc_argv)
    program = result.rpc_program if result is not None else None
    if program is None:
        if worker.out_link:
            directory = f"{worker.out_link}/bin"
        elif "/" in argv[0]:
            directory = os.path.dirname(argv[0])
        else:
            directory = ""
        if directory:
            program = find_program(worker, ssh, directory, RPC_PROGRAMS)
    if program is None:
        raise ClusterError(
            f"No {' or '.join(RPC_PROGRAMS)} was found for {worker.name}"
            + (f" in {worker.out_link}/bin" if worker.out_link else "")
            + ": it is not built, or built without llama.cpp's RPC backend.",
            "Run `llama-wizard cluster build` (it builds with useRpc = true), or "
            "`llama-wizard cluster up` without --no-build.",
        )
    return [program, *argv[1:]]


def _head_command(plan: ClusterPlan, result: HostBuild | None) -> tuple[list[str], dict[str, str]]:
    """llama-server's argv (secrets moved to its environment) and environment."""
    argv = list(plan.launch_argv)
    if result is not None and result.store_path and "/" not in argv[0]:
        argv[0] = f"{result.store_path}/bin/{argv[0]}"
    env = {**plan.head.env, **plan.launch_env}
    kept: list[str] = []
    pending: str | None = None
    for word in argv:
        name = word.split("=", 1)[0]
        if pending is not None:
            env[pending] = word
            pending = None
        elif name in SECRET_ENV and "=" in word:
            env[SECRET_ENV[name]] = word.split("=", 1)[1]
        elif name in SECRET_ENV:
            pending = SECRET_ENV[name]
        else:
            kept.append(word)
    if plan.head.spec.kind != "ssh" and shutil.which(kept[0]) is None:
        raise ClusterError(
            f"{kept[0]} does not exist here: the head's llama.cpp is not built.",
            "Run `llama-wizard cluster build`, or `llama-wizard cluster up` without --no-build.",
        )
    return kept, env


def _head_url(plan: ClusterPlan) -> str:
    """The head's URL as this machine reaches it."""
    host = _option(plan.launch_argv, "--host") or "127.0.0.1"
    port = _option(plan.launch_argv, "--port") or "8080"
    if plan.head.spec.kind == "ssh" and host in ("127.0.0.1", "localhost", "::1", *PUBLIC_BINDS):
        host = _destination_host(plan.head.spec.destination or "")
    elif host in PUBLIC_BINDS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _destination_host(destination: str) -> str:
    text = destination.removeprefix("ssh://").rsplit("@", 1)[-1]
    if text.startswith("["):
        return text[1 : text.index("]")]
    return text.split(":", 1)[0] if text.count(":") == 1 else text


def _start(
    host: HostPlan,
    argv: list[str],
    env: dict[str, str],
    unset_env: list[str],
    ssh: SshOptions,
) -> ProcessRecord:
    if host.spec.kind == "ssh":
        return _start_remote(host, argv, env, unset_env, ssh)
    return _start_local(host, argv, env, unset_env)


def _start_local(
    host: HostPlan, argv: list[str], env: dict[str, str], unset_env: list[str]
) -> ProcessRecord:
    directory = logs_dir()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"{host_slug(host.name)}.log"
    environment = build_environment(os.environ, env, unset_env)
    try:
        with log_path.open("wb") as log:
            # Its own session: no terminal signal (Ctrl-C in the wizard) reaches it, and it
            # survives the wizard; the whole group is what `down` stops.
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
    except OSError as error:
        raise ClusterError(
            f"{argv[0]} cannot be started on {host.name}: {error.strerror or error}.",
            "Build it first (`llama-wizard cluster build`).",
        ) from None
    _CHILDREN[popen.pid] = popen
    try:
        key = str(psutil.Process(popen.pid).create_time())
    except psutil.Error:
        key = str(time.time())  # it is gone already; waiting for it will say why
    return ProcessRecord(host.name, "local", None, host.role, popen.pid, key, argv,
                         str(log_path), host.endpoint)  # fmt: skip


_START_SCRIPT = (
    f"{_REMOTE_FUNCTIONS}"
    'while IFS= read -r kv; do export "$kv"; done; '
    f'd="{REMOTE_LOG_DIR}"; mkdir -p "$d" || exit 3; cd "$HOME" || exit 3; '
    'log="$d/$1.log"; shift; '
    'nohup setsid "$@" >"$log" 2>&1 </dev/null & pid=$!; '
    'echo "$pid"; echo "$log"; key "$pid"'
)


def _start_remote(
    host: HostPlan, argv: list[str], env: dict[str, str], unset_env: list[str], ssh: SshOptions
) -> ProcessRecord:
    """`nohup setsid env ... ARGV` in the background on the far side: its own session, no
    terminal, stdio in a log file, so it outlives the connection. Secret values arrive on
    stdin (never on a command line, which `ps` shows)."""
    from llama_wizard.tui.cluster.ssh import run_remote

    assert host.spec.destination is not None
    secrets = {k: v for k, v in env.items() if is_secret_name(k) or k in SECRET_ENV.values()}
    words = ["env"]
    for name in unset_env:
        words += ["-u", name]
    words += [f"{k}={v}" for k, v in env.items() if k not in secrets]
    words += argv
    # The script is a constant: the log's name and the command are its arguments ($1, then
    # "$@"), and the secrets come as NAME=VALUE lines on stdin.
    stdin = "".join(f"{name}={value}\n" for name, value in secrets.items()).encode() or None
    result = run_remote(
        host.spec.destination,
        ["sh", "-c", _START_SCRIPT, "sh", host_slug(host.name), *words],
        ssh,
        timeout=REMOTE_TIMEOUT,
        input=stdin,
    )
    lines = result.text.strip().splitlines()
    if result.returncode != 0 or len(lines) < 2 or not lines[0].isdigit():
        raise ClusterError(
            f"{Path(argv[0]).name} could not be started on {host.name} (status "
            f"{result.returncode}): {result.error_text.strip()[-500:] or 'no output'}.",
            "Check that the host has `setsid` and `nohup` (util-linux, coreutils) and a "
            "writable home.",
        )
    key = lines[2].strip() if len(lines) > 2 else ""
    return ProcessRecord(host.name, "ssh", host.spec.destination, host.role, int(lines[0]),
                         key, argv, lines[1], host.endpoint)  # fmt: skip


def device_warnings(host: HostPlan, result: HostBuild | None, ssh: SshOptions) -> list[str]:
    """What llama.cpp on that host sees, against the GPUs the plan counts there: its built
    llama-server's `--list-devices` with the host's environment (tui/devices.py's reading).
    An rpc-server that finds no GPU serves its CPU instead, without a word: the layers the plan
    puts on that host's GPUs would run at CPU speed. Empty when all is as planned, or when
    the build cannot be asked (then starting says why)."""
    from llama_wizard.tui.devices import evaluate

    if host.build is None or host.inventory is None:
        return []
    base = result.store_path if result is not None and result.store_path else host.out_link
    if not base:
        return []
    argv = [f"{base}/bin/llama-server", "--list-devices"]
    words = ["env", *[w for name in host.unset_env for w in ("-u", name)]]
    words += [f"{k}={v}" for k, v in host.env.items()]
    try:
        if host.spec.kind == "ssh":
            from llama_wizard.tui.cluster.ssh import run_remote

            assert host.spec.destination is not None
            answer = run_remote(host.spec.destination, [*words, *argv], ssh,
                                timeout=REMOTE_TIMEOUT)  # fmt: skip
            text = answer.text + "\n" + answer.error_text
        else:
            from llama_wizard.detect.process import run_bounded

            environment = build_environment(os.environ, host.env, host.unset_env)
            out, err, _status = run_bounded(argv, environment, REMOTE_TIMEOUT)
            text = out + "\n" + err
    except (ActionableError, OSError, subprocess.TimeoutExpired):
        return []
    return [f"{p.message} Fix: {p.fix}" for p in evaluate(host, text, argv).problems]  # type: ignore[arg-type]


def _wait_worker(worker: HostPlan, record: ProcessRecord, ssh: SshOptions, timeout: float) -> None:
    assert worker.address is not None and worker.port is not None
    deadline = time.monotonic() + timeout
    while True:
        if _alive(record, ssh) is False:
            raise _did_not_start(record, ssh, "it exited")
        if _listening(record, worker.address, worker.port):
            # Something else may hold the port (then ours fails to bind and exits): it must
            # still be alive a moment later.
            time.sleep(0.3)
            if _alive(record, ssh) is False:
                raise _did_not_start(record, ssh, "it exited")
            return
        if time.monotonic() > deadline:
            raise _did_not_start(
                record, ssh, f"{worker.endpoint} accepted no connection in {timeout:.0f} s"
            )
        time.sleep(0.2)


def _listening(record: ProcessRecord, address: str, port: int) -> bool:
    """Whether ADDRESS:PORT accepts a connection from here; locally, also that the listening
    socket is this process's own (not another program's on the same port)."""
    if not _accepts(address, port):
        return False
    if record.kind != "local":
        return True
    try:
        process = psutil.Process(record.pid)
        connections = (
            process.net_connections(kind="inet")
            if hasattr(process, "net_connections")
            else process.connections(kind="inet")
        )
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
               for c in connections)  # fmt: skip


def _accepts(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address.strip("[]"), port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_head(
    record: ProcessRecord,
    url: str | None,
    ssh: SshOptions,
    timeout: float,
    on_event: Callable[[str, str], None],
) -> None:
    assert url is not None
    started = time.monotonic()
    last = ""
    while True:
        code = _health(record, url, ssh)
        if code == 200:
            return
        if _alive(record, ssh) is False:
            raise _did_not_start(record, ssh, "it exited")
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise _did_not_start(record, ssh, f"{url}/health did not answer 200 in {timeout:.0f} s")
        said = "loading the model (503)" if code == 503 else "not answering yet"
        text = f"waiting for {url}/health: {said}"
        if text != last:
            on_event(record.host, text)
            last = text
        time.sleep(0.5)


def _health(record: ProcessRecord, url: str, ssh: SshOptions) -> int | None:
    """The status /health answers (None when nothing answers). A remote head is asked on its
    own host: its port need not be reachable from here."""
    if record.kind == "ssh" and record.destination is not None:
        from llama_wizard.tui.cluster.ssh import run_remote

        port = url.rsplit(":", 1)[1]
        local_url = f"http://127.0.0.1:{port}/health"
        script = (
            'if command -v curl >/dev/null 2>&1; then curl -s -o /dev/null -w "%{http_code}" '
            '--max-time 5 "$1"; elif command -v wget >/dev/null 2>&1; then wget -q -S -O '
            "/dev/null -T 5 \"$1\" 2>&1 | awk '/HTTP\\//{c=$2} END{print c}'; fi"
        )
        try:
            result = run_remote(record.destination, ["sh", "-c", script, "sh", local_url], ssh,
                                timeout=REMOTE_TIMEOUT)  # fmt: skip
        except ActionableError:
            return None
        text = result.text.strip()
        return int(text) if text.isdigit() and text != "000" else None
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as response:  # our own URL
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def _did_not_start(record: ProcessRecord, ssh: SshOptions, why: str) -> ClusterError:
    tail = "\n".join(f"    {line}" for line in _log_tail(record, ssh))
    program = Path(record.argv[0]).name
    return ClusterError(
        f"{program} on {record.host} did not come up: {why}. The last lines of its log "
        f"({record.log}):\n{tail or '    (empty)'}",
        "The log says why (a port already in use, a model it cannot read, memory it cannot "
        "get). Fix that and run `llama-wizard cluster up` again; everything started was "
        "stopped.",
    )


# --- watching ----------------------------------------------------------------------------------


def _alive(record: ProcessRecord, ssh: SshOptions) -> bool | None:
    """Whether the recorded process still runs (None: unknown, its host cannot be asked)."""
    if record.kind != "ssh":
        return _alive_local(record)
    from llama_wizard.tui.cluster.ssh import run_remote

    assert record.destination is not None
    script = f"{_REMOTE_FUNCTIONS}" + 'if alive "$1" "$2"; then echo alive; else echo gone; fi'
    try:
        result = run_remote(record.destination, ["sh", "-c", script, "sh", str(record.pid),
                                                 record.start_key], ssh,
                            timeout=REMOTE_TIMEOUT)  # fmt: skip
    except ActionableError:
        return None
    answer = result.text.strip()
    return True if answer == "alive" else False if answer == "gone" else None


def _alive_local(record: ProcessRecord) -> bool:
    popen = _CHILDREN.get(record.pid)
    if popen is not None and popen.poll() is not None:
        del _CHILDREN[record.pid]  # reaped: its pid may be anyone's now
        return False
    try:
        process = psutil.Process(record.pid)
        same = abs(process.create_time() - float(record.start_key)) < 1.0
        return same and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def _log_tail(record: ProcessRecord, ssh: SshOptions, lines: int = TAIL_LINES) -> list[str]:
    if record.kind != "ssh":
        try:
            with open(record.log, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]
    from llama_wizard.tui.cluster.ssh import run_remote

    assert record.destination is not None
    try:
        result = run_remote(record.destination, ["tail", "-n", str(lines), record.log], ssh,
                            timeout=REMOTE_TIMEOUT)  # fmt: skip
    except ActionableError as error:
        return [f"(the log cannot be read: {error.message})"]
    return result.text.splitlines()[-lines:]


@dataclass
class HostStatus:
    host: str
    role: str
    kind: str
    destination: str | None
    pid: int
    alive: bool | None  # None: its host cannot be asked
    endpoint: str | None
    accepting: bool | None  # workers: whether the endpoint accepts connections from here
    log: str
    log_tail: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClusterStatus:
    up: bool  # every process alive and /health answering 200
    state_file: str
    started: str | None = None
    url: str | None = None
    health: int | None = None  # the head's /health status (None: no answer)
    hosts: list[HostStatus] = field(default_factory=list)
    note: str | None = None
    warnings: list[str] = field(default_factory=list)  # what `up` found (ClusterState)

    def to_json(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "state_file": self.state_file,
            "started": self.started,
            "url": self.url,
            "health": self.health,
            "hosts": [h.to_json() for h in self.hosts],
            "note": self.note,
            "warnings": self.warnings,
        }


def cluster_status(ssh: SshOptions) -> ClusterStatus:
    """Each recorded process: alive, its endpoint accepting connections, its log's last lines;
    and the head's /health."""
    state = load_state()
    if state is None:
        note = "No cluster is up (`llama-wizard cluster up` starts one)."
        return ClusterStatus(False, str(state_path()), note=note)
    hosts: list[HostStatus] = []
    health: int | None = None
    for record in state.processes:
        alive = _alive(record, ssh)
        accepting: bool | None = None
        if record.role == "worker" and record.endpoint is not None:
            address, _, port = record.endpoint.rpartition(":")
            accepting = _accepts(address, int(port)) if port.isdigit() else None
        if record.role == "head" and state.url is not None and alive:
            health = _health(record, state.url, ssh)
            accepting = health is not None
        hosts.append(HostStatus(record.host, record.role, record.kind, record.destination,
                                record.pid, alive, record.endpoint, accepting, record.log,
                                _log_tail(record, ssh, 5)))  # fmt: skip
    has_head = any(h.role == "head" for h in hosts)
    up = state.status == "up" and has_head and all(h.alive for h in hosts) and health == 200
    note = None
    if not up:
        down = [h.host for h in hosts if h.alive is False]
        unknown = [h.host for h in hosts if h.alive is None]
        parts = []
        if state.status != "up":
            parts.append("`cluster up` has not finished (or was interrupted)")
        if down:
            parts.append(f"not running: {', '.join(down)}")
        if unknown:
            parts.append(f"cannot be asked: {', '.join(unknown)}")
        if health not in (None, 200):
            parts.append(f"the head's /health answers {health}")
        parts.append("`llama-wizard cluster down` stops what is left, then `cluster up`")
        note = "; ".join(parts) + "."
    return ClusterStatus(up, str(state_path()), state.started, state.url, health, hosts, note,
                         list(state.warnings))  # fmt: skip


# --- stopping ----------------------------------------------------------------------------------


def cluster_down(ssh: SshOptions) -> list[str]:
    """Stop the head, then the workers. The state file goes once everything is stopped; a
    process that could not be stopped (its host unreachable) stays in it, and is named."""
    state = load_state()
    if state is None:
        return ["No cluster is up: nothing to stop."]
    messages: list[str] = []
    left = _stop_records(state, ssh, messages.append)
    if left:
        state.processes = left
        save_state(state)
        messages.append(
            "Still running (or unknown): "
            + ", ".join(f"{r.host} (pid {r.pid})" for r in left)
            + f". They stay recorded in {state_path()}; run `llama-wizard cluster down` again "
            "once those hosts can be reached."
        )
    else:
        with contextlib.suppress(FileNotFoundError):
            state_path().unlink()
        messages.append("Everything is stopped.")
    return messages


def _stop_records(
    state: ClusterState, ssh: SshOptions, say: Callable[[str], None]
) -> list[ProcessRecord]:
    """Stop the head first (it holds connections to the workers), then the workers; the
    records of those that may still run."""
    ordered = sorted(state.processes, key=lambda r: 0 if r.role == "head" else 1)
    left: list[ProcessRecord] = []
    for record in ordered:
        program = Path(record.argv[0]).name
        try:
            outcome = _stop(record, ssh)
        except ActionableError as error:
            say(f"{record.host}: {program} (pid {record.pid}) cannot be stopped: "
                f"{error.message}")  # fmt: skip
            left.append(record)
            continue
        if outcome == "stopped":
            say(f"{record.host}: stopped {program} (pid {record.pid})")
        elif outcome == "gone":
            say(f"{record.host}: {program} (pid {record.pid}) was not running")
        else:
            say(f"{record.host}: {program} (pid {record.pid}) is still running")
            left.append(record)
    return left


# $1 the pid, $2 its start key, $3 how many 0.2 s ticks to wait after SIGTERM. setsid made
# it the leader of its own group: the group goes, helpers included.
_STOP_SCRIPT = (
    f"{_REMOTE_FUNCTIONS}"
    'p=$1; k=$2; if ! alive "$p" "$k"; then echo gone; exit 0; fi; '
    'kill -TERM -"$p" 2>/dev/null || kill -TERM "$p"; i=0; '
    'while alive "$p" "$k" && [ $i -lt "$3" ]; do sleep 0.2 2>/dev/null || sleep 1; '
    "i=$((i+1)); done; "
    'if alive "$p" "$k"; then kill -KILL -"$p" 2>/dev/null || kill -KILL "$p"; sleep 1; fi; '
    'if alive "$p" "$k"; then echo running; else echo stopped; fi'
)


def _stop(record: ProcessRecord, ssh: SshOptions) -> str:
    """ "stopped", "gone" (it was not running) or "running" (it would not stop)."""
    if record.kind != "ssh":
        if not _alive_local(record):
            return "gone"
        target: subprocess.Popen[bytes] | int = _CHILDREN.get(record.pid, record.pid)
        stop_process_tree(target, signals=(signal.SIGTERM,), grace=STOP_GRACE, group=True,
                          started_at=float(record.start_key))  # fmt: skip
        _CHILDREN.pop(record.pid, None)
        return "running" if _alive_local(record) else "stopped"
    from llama_wizard.tui.cluster.ssh import run_remote

    assert record.destination is not None
    ticks = str(int(STOP_GRACE) * 5)  # of 0.2 s
    result = run_remote(record.destination, ["sh", "-c", _STOP_SCRIPT, "sh", str(record.pid),
                                             record.start_key, ticks], ssh,
                        timeout=REMOTE_TIMEOUT + STOP_GRACE)  # fmt: skip
    answer = result.text.strip().splitlines()
    return answer[-1] if answer and answer[-1] in ("gone", "stopped", "running") else "running"
