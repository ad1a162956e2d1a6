"""The cluster runtime for real: rpc-servers of the real llama.cpp CPU build (GGML_RPC=ON) on
127.0.0.1 ports, llama-server on the head with `--rpc`, a completion through them, status and
down; and the builds of every host with the real nix and the fixture flake."""

from __future__ import annotations

import _thread
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from llama_wizard.detect.errors import ActionableError
from llama_wizard.detect.model import Cpu, Inventory
from llama_wizard.nix.recommend import BuildChoice
from llama_wizard.tui.cluster.builds import ClusterBuildError, build_hosts
from llama_wizard.tui.cluster.hosts import HostSpec
from llama_wizard.tui.cluster.plan import ClusterPlan, HostPlan
from llama_wizard.tui.cluster.runtime import (
    ClusterError,
    cluster_down,
    cluster_status,
    cluster_up,
    load_state,
    state_path,
)
from llama_wizard.tui.cluster.ssh import SshOptions
from tests.llamacpp import (  # noqa: F401
    children_of,
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    fixture_rpc_server_bin,
    free_port,
    fresh_flake,
    make_flake,
)
from tests.nix_fixtures import fixture_flake, fresh_variant
from tests.sshd import SshRig, fixture_ssh_rig  # noqa: F401

SSH = SshOptions()
PROGRAMS = ("ggml-rpc-server", "rpc-server", "llama-server")


def _inventory() -> Inventory:
    return Inventory([], Cpu("test CPU", "x86_64", 2, 2), 8 << 30, 4 << 30)


def _worker(name: str, program: str, port: int, build: BuildChoice | None = None) -> HostPlan:
    argv = [program, "-H", "127.0.0.1", "-p", str(port), "-c", "-t", "1"]
    return HostPlan(HostSpec("local", "local"), name, "worker", inventory=_inventory(),
                    detected_by="this machine", build=build,
                    out_link=None if build is None else build.out_link,
                    address="127.0.0.1", port=port, rpc_argv=argv)  # fmt: skip


def make_plan(
    bin_dir: Path, model: Path, *, builds: list[BuildChoice] | None = None, workers: int = 2
) -> ClusterPlan:
    """Head `local` + two workers on this machine (distinct names and ports on 127.0.0.1), as a
    person tries a cluster on one box."""
    build = builds[0] if builds else None
    head = HostPlan(HostSpec("local", "local"), "local", "head", inventory=_inventory(),
                    detected_by="this machine", build=build,
                    out_link=None if build is None else build.out_link)  # fmt: skip
    program = "ggml-rpc-server" if build is not None else str(bin_dir / "ggml-rpc-server")
    hosts = [head] + [
        _worker(f"local-w{i + 1}", program, free_port(), build) for i in range(workers)
    ]
    rpc = ",".join(h.endpoint or "" for h in hosts[1:])
    server = "llama-server" if build is not None else str(bin_dir / "llama-server")
    launch = [
        server,
        "-m",
        str(model),
        "--rpc",
        rpc,
        "-ngl",
        "99",
        "-ts",
        ",".join("1" for _ in hosts[1:]),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "-c",
        "512",
        "-t",
        "1",
        "-lv",
        "4",
    ]  # fmt: skip  (-lv 4: the log names the devices it uses)
    return ClusterPlan(hosts, head, flake="path:/nowhere", launch_argv=launch)


def our_processes() -> list[str]:
    """llama.cpp processes of this test run still alive: our descendants, and any process
    running a program of ours from the test's directories."""
    found = []
    for pid in children_of(os.getpid()):
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE and process.name() in PROGRAMS:
                found.append(f"{pid} {process.name()}")
        except psutil.Error:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def completion(url: str) -> dict[str, object]:
    body = json.dumps({"prompt": "Hello", "n_predict": 4}).encode()
    request = urllib.request.Request(
        f"{url}/completion", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.fixture
def cleanup() -> object:
    """Whatever a failing test leaves up is stopped."""
    yield None
    if state_path().exists():
        cluster_down(SSH)


def test_up_serves_a_completion_through_two_rpc_servers_and_down_leaves_nothing(
    llamacpp_bin: Path, rpc_server_bin: Path, dense_gguf: Path, cleanup: object
) -> None:
    plan = make_plan(llamacpp_bin, dense_gguf)
    events: list[tuple[str, str]] = []
    state = cluster_up(plan, SSH, lambda host, text: events.append((host, text)), build=False)

    assert state.url == f"http://127.0.0.1:{plan.launch_argv[plan.launch_argv.index('--port') + 1]}"
    assert [(r.host, r.role) for r in state.processes] == [
        ("local-w1", "worker"), ("local-w2", "worker"), ("local", "head")]  # fmt: skip
    assert any(host == "local-w2" and "listening" in text for host, text in events), events
    assert load_state() is not None and load_state().status == "up"  # type: ignore[union-attr]
    pids = [r.pid for r in state.processes]
    assert all(alive(pid) for pid in pids)

    answer = completion(state.url or "")
    assert isinstance(answer.get("content"), str)
    head_log = Path(state.processes[-1].log).read_text(errors="replace")
    # The layers really went to the two rpc-servers, in the order of --rpc.
    for index, record in enumerate(state.processes[:2]):
        assert f"using device RPC{index} ({record.endpoint})" in head_log, head_log[-3000:]
        # (Buffer names say RPC0 for every server of this llama.cpp; the endpoint tells them
        # apart.)
        assert f"[{record.endpoint}] model buffer size" in head_log

    status = cluster_status(SSH)
    assert status.up and status.health == 200, status.to_json()
    assert [h.alive for h in status.hosts] == [True, True, True]
    assert [h.accepting for h in status.hosts] == [True, True, True]
    json.dumps(status.to_json())

    # A second `up` while it runs is refused, and says what to do.
    with pytest.raises(ClusterError) as refused:
        cluster_up(plan, SSH, lambda _h, _t: None, build=False)
    assert "already up" in refused.value.message and "cluster down" in refused.value.fix

    messages = cluster_down(SSH)
    assert messages[-1] == "Everything is stopped.", messages
    assert sum("stopped" in m for m in messages[:-1]) == 3, messages
    assert messages[0].startswith("local:"), messages  # the head first
    assert [pid for pid in pids if psutil.pid_exists(pid)] == []
    assert our_processes() == []
    assert not state_path().exists()

    again = cluster_down(SSH)
    assert again == ["No cluster is up: nothing to stop."]
    assert cluster_status(SSH).up is False


def test_a_worker_that_cannot_listen_fails_up_with_its_log_and_leaves_nothing(
    llamacpp_bin: Path, rpc_server_bin: Path, dense_gguf: Path, cleanup: object
) -> None:
    plan = make_plan(llamacpp_bin, dense_gguf)
    taken = plan.hosts[2]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", taken.port or 0))
        holder.listen()
        with pytest.raises(ClusterError) as failed:
            cluster_up(plan, SSH, lambda _h, _t: None, build=False)
    message = failed.value.message
    assert "local-w2" in message and "did not come up" in message, message
    named = re.search(r"its log \(([^)]+)\)", message)
    assert named is not None, message
    log = Path(named.group(1))
    assert log.name == "local-w2.log" and log.exists(), message
    # The worker's own words are in the error.
    last = [line for line in log.read_text().splitlines() if line.strip()][-1]
    assert last.strip() in message, (last, message)
    assert "cluster up" in failed.value.fix
    assert our_processes() == []
    assert not state_path().exists()
    assert cluster_down(SSH) == ["No cluster is up: nothing to stop."]


def test_a_killed_worker_shows_in_status_and_down_still_stops_the_rest(
    llamacpp_bin: Path, rpc_server_bin: Path, dense_gguf: Path, cleanup: object
) -> None:
    plan = make_plan(llamacpp_bin, dense_gguf)
    state = cluster_up(plan, SSH, lambda _h, _t: None, build=False)
    victim = state.processes[0]
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(victim.pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    status = cluster_status(SSH)
    assert status.up is False
    by_host = {h.host: h for h in status.hosts}
    assert by_host["local-w1"].alive is False and by_host["local-w1"].accepting is False
    assert by_host["local-w2"].alive is True
    assert status.note is not None and "local-w1" in status.note, status.note

    messages = cluster_down(SSH)
    assert any("local-w1" in m and "was not running" in m for m in messages), messages
    assert messages[-1] == "Everything is stopped."
    assert our_processes() == []


def test_up_refuses_simulated_hosts_and_a_public_bind(llamacpp_bin: Path, dense_gguf: Path) -> None:
    plan = make_plan(llamacpp_bin, dense_gguf, workers=1)
    plan.hosts[1] = HostPlan(HostSpec("sim:2x-mi50", "sim", profile="2x-mi50"), "sim:2x-mi50",
                             "worker", inventory=_inventory(), address="10.0.0.2", port=50052,
                             rpc_argv=["ggml-rpc-server", "-H", "10.0.0.2"])  # fmt: skip
    with pytest.raises(ClusterError) as simulated:
        cluster_up(plan, SSH, lambda _h, _t: None, build=False)
    assert "can be planned, not started" in simulated.value.message
    with pytest.raises(ClusterBuildError, match="there is nothing to build there"):
        build_hosts(plan, SSH, lambda _h, _t: None, hosts=["sim:2x-mi50"])

    public = make_plan(llamacpp_bin, dense_gguf, workers=1)
    public.hosts[1].rpc_argv = [str(llamacpp_bin / "ggml-rpc-server"), "-H", "0.0.0.0"]
    with pytest.raises(ClusterError, match="every interface"):
        cluster_up(public, SSH, lambda _h, _t: None, build=False)
    assert our_processes() == [] and not state_path().exists()


def test_a_worker_over_ssh_runs_detached_and_is_watched_and_stopped(
    ssh_rig: SshRig, llamacpp_bin: Path, rpc_server_bin: Path, dense_gguf: Path
) -> None:
    """The SSH path for real (sshd on 127.0.0.1, so the far side is this machine): the
    rpc-server outlives the connection in its own session, with its plan's environment."""
    plan = make_plan(llamacpp_bin, dense_gguf, workers=1)
    name = f"gpu-a-{uuid.uuid4().hex[:8]}"
    mark = uuid.uuid4().hex
    plan.hosts[1] = dataclasses.replace(
        plan.hosts[1],
        spec=HostSpec("gpu-a", "ssh", destination="gpu-a"),
        name=name,
        # A secret goes over stdin, never on the far side's command line (which `ps` shows).
        env={"LLAMA_WIZARD_TEST_MARK": mark, "HF_TOKEN": f"hf_{mark} with 'quotes' and $x"},
        # No tensor cache (-c): on this "far side" it would go to the real home's cache.
        rpc_argv=[word for word in plan.hosts[1].rpc_argv or [] if word != "-c"],
    )
    ssh = ssh_rig.options
    state = None
    try:
        state = cluster_up(plan, ssh, lambda _h, _t: None, build=False)
        worker = state.processes[0]
        assert (worker.kind, worker.destination) == ("ssh", "gpu-a")
        assert worker.log.endswith(f"/llama-wizard/cluster/{name}.log")
        process = psutil.Process(worker.pid)
        # Detached: not ours, leads its own session, and has its plan's environment.
        assert worker.pid not in children_of(os.getpid())
        assert os.getsid(worker.pid) == worker.pid
        assert process.environ().get("LLAMA_WIZARD_TEST_MARK") == mark
        assert process.environ().get("HF_TOKEN") == f"hf_{mark} with 'quotes' and $x"
        assert f"hf_{mark}" not in state_path().read_text()
        for each in [process, *process.parents()]:  # the far side's sh, env, nohup and setsid
            assert not any(f"hf_{mark}" in word for word in each.cmdline())
        assert isinstance(completion(state.url or "").get("content"), str)

        status = cluster_status(ssh)
        assert status.up, status.to_json()
        remote = status.hosts[0]
        assert remote.alive is True and remote.accepting is True and remote.log_tail

        messages = cluster_down(ssh)
        assert any(name in m and "stopped" in m for m in messages), messages
        assert messages[-1] == "Everything is stopped."
        assert not alive(worker.pid)
    finally:
        if state_path().exists():
            cluster_down(ssh)
        if state is not None:
            Path(state.processes[0].log).unlink(missing_ok=True)
    assert our_processes() == []


# --- builds with the real nix ------------------------------------------------------------------


def rpc_build(flake: str, out_link: Path, output: str = "default") -> BuildChoice:
    """The useRpc build as `cluster plan` writes it: `.override { useRpc = true; }`."""
    expression = (
        f'(builtins.getFlake "path:{flake}").packages.x86_64-linux.{output}'
        ".override { useRpc = true; }"
    )
    argv = ["nix", "build", "--impure", "--expr", expression, "--out-link", str(out_link), "-L"]
    return BuildChoice(flake, "x86_64-linux", output, "cpu", argv, str(out_link),
                       f"{output}-rpc", use_rpc=True)  # fmt: skip


def test_up_builds_every_host_with_nix_then_runs_the_built_programs(
    tmp_path: Path, llamacpp_bin: Path, rpc_server_bin: Path, dense_gguf: Path, cleanup: object
) -> None:
    flake = fresh_flake(make_flake(tmp_path / "flake", llamacpp_bin))
    choice = rpc_build(flake, tmp_path / "result-rpc")
    plan = make_plan(llamacpp_bin, dense_gguf, builds=[choice])
    lines: list[tuple[str, str]] = []
    state = cluster_up(plan, SSH, lambda host, text: lines.append((host, text)))

    store = os.path.realpath(choice.out_link)
    assert store.startswith("/nix/store/") and store.endswith("-rpc-0c1e570")
    assert any(host == "local" and "Installing ggml-rpc-server" in text for host, text in lines)
    # The workers on this box share the head's build (one nix build, not three).
    assert any(host == "local-w1" and "same build as local" in text for host, text in lines)
    workers = [r for r in state.processes if r.role == "worker"]
    assert [r.argv[0] for r in workers] == [f"{store}/bin/ggml-rpc-server"] * 2
    assert state.processes[-1].argv[0] == f"{store}/bin/llama-server"
    assert cluster_status(SSH).up
    assert cluster_down(SSH)[-1] == "Everything is stopped."
    assert our_processes() == []


def test_builds_report_per_host_and_a_worker_without_rpc_is_refused(
    tmp_path: Path, llamacpp_bin: Path, dense_gguf: Path
) -> None:
    no_rpc_bin = tmp_path / "no-rpc-bin"
    no_rpc_bin.mkdir()
    for tool in ("llama-server", "llama-completion"):
        shutil.copy2(llamacpp_bin / tool, no_rpc_bin / tool)
    flake = fresh_flake(make_flake(tmp_path / "flake", no_rpc_bin))
    choice = rpc_build(flake, tmp_path / "result-no-rpc")
    plan = make_plan(llamacpp_bin, dense_gguf, builds=[choice], workers=1)
    seen: dict[str, list[str]] = {}
    results = build_hosts(plan, SSH, lambda host, line: seen.setdefault(host, []).append(line))

    head, worker = results
    assert (
        head.ok
        and head.rpc_program is None
        and head.store_path == os.path.realpath(choice.out_link)
    )
    assert not worker.ok and "lacks llama.cpp's RPC backend" in (worker.error or "")
    assert "useRpc = true" in (worker.fix or "")
    assert any("Installing llama-server" in line for line in seen["local"])
    assert head.log_path and "Installing llama-server" in Path(head.log_path).read_text()

    with pytest.raises(ActionableError, match=re.escape("lacks llama.cpp's RPC backend")):
        cluster_up(plan, SSH, lambda _h, _t: None)
    assert not state_path().exists()


def test_a_failed_build_names_its_log_and_keeps_the_tail(tmp_path: Path) -> None:
    flake = fixture_flake(tmp_path / "documented", "documented")
    out_link = tmp_path / "result-fails"
    choice = BuildChoice(flake, "x86_64-linux", "fails", "cpu",
                         ["nix", "build", f"{flake}#fails", "--out-link", str(out_link), "-L"],
                         str(out_link), "fails")  # fmt: skip
    host = HostPlan(HostSpec("local", "local"), "local", "head", inventory=_inventory(),
                    build=choice, out_link=str(out_link))  # fmt: skip
    plan = ClusterPlan([host], host, flake)
    (result,) = build_hosts(plan, SSH, lambda _h, _l: None)
    assert not result.ok and result.log_path is not None
    assert result.log_path in (result.error or "")
    assert any("simulated compiler failure" in line for line in result.log_tail), result.log_tail
    assert "simulated compiler failure" in Path(result.log_path).read_text()


def test_ctrl_c_stops_every_build_it_started(tmp_path: Path) -> None:
    hosts = []
    for name in ("local", "local-b"):
        # Two derivations: two builds of one would wait for each other.
        flake = fresh_variant(fixture_flake(tmp_path / f"flake-{name}", "documented"), "slow")
        out_link = tmp_path / f"result-{name}"
        argv = ["nix", "build", f"{flake}#slow", "--out-link", str(out_link), "-L"]
        choice = BuildChoice(flake, "x86_64-linux", "slow", "cpu", argv, str(out_link), "slow")
        hosts.append(HostPlan(HostSpec("local", "local"), name, "head" if name == "local"
                              else "worker", inventory=_inventory(), build=choice,
                              out_link=str(out_link)))  # fmt: skip
    plan = ClusterPlan(hosts, hosts[0], "path:/nowhere")
    stepping: dict[str, threading.Event] = {h.name: threading.Event() for h in hosts}

    before = set(children_of(os.getpid()))  # the session's own (an sshd, say)
    started: set[int] = set()

    def on_line(host: str, line: str) -> None:
        if "[2/600]" in line:
            started.update(set(children_of(os.getpid())) - before)
            stepping[host].set()

    def interrupt() -> None:
        for event in stepping.values():
            event.wait(120)
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        build_hosts(plan, SSH, on_line)
    assert all(event.is_set() for event in stepping.values())
    assert len(started) >= 2  # both nix builds (and their builders) were running
    deadline = time.monotonic() + 15
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in (started | set(children_of(os.getpid()))) - before if alive(p)]
    assert left == [], [psutil.Process(p).cmdline() for p in left if alive(p)]
