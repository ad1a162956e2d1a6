"""`llama-wizard cluster` end to end, through the real command, over the real sshd rig
(tests/sshd.py: `gpu-a` and `gpu-b` are this machine over SSH, each simulating 2x MI50 on its far
side): detection over SSH (llama-wizard there, and the probe), the plan with its link measure,
then `cluster up` building every host with real Nix (the fixture flake's RPC build), starting
real rpc-servers over SSH and the real llama-server here with --rpc, a completion through them,
`status`, and `down` leaving no process."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import psutil

from tests.helpers import run_cli
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    free_port,
    fresh_flake,
    make_flake,
)
from tests.sshd import SshRig, fixture_ssh_rig  # noqa: F401


def running(pid: int) -> bool:
    """Alive, not a zombie: a detached rpc-server is reparented to init, which reaps it in its
    own time (in a container, whenever its PID 1 gets to it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cluster(rig: SshRig, *args: str, timeout: float = 300) -> tuple[int, str, str]:
    result = run_cli("cluster", *args, "--ssh-config", str(rig.config), timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def test_plan_over_ssh_detects_each_host_its_way_and_leaves_out_the_one_that_is_down(
    ssh_rig: SshRig, dense_gguf: Path
) -> None:
    code, out, err = cluster(
        ssh_rig, "plan", "local", "gpu-a", "gpu-b", "gpu-down", "--model", str(dense_gguf),
        "--json", "--host-timeout", "15",
    )  # fmt: skip
    assert code == 0, err
    plan = json.loads(out)
    local, a, b, down = plan["hosts"]
    assert local["role"] == "head" and local["detected_by"] == "this machine"
    assert a["detected_by"] == "llama-wizard over SSH (the far side simulates 2x-mi50)"
    assert b["detected_by"] == "probe over SSH (the far side simulates 2x-mi50)"
    for worker in (a, b):
        assert worker["simulated"] and worker["output"] == "rocm-gfx906-rpc"
        assert worker["address"] == "127.0.0.1" and worker["link"]["rtt_ms"] > 0
        assert worker["link"]["bytes_per_second"] > 0
        assert worker["env"]["HSA_OVERRIDE_GFX_VERSION"] == "9.0.6"
        assert len(worker["devices"]) == 2  # two MI50s each, over RPC
    # One address, two rpc-servers: two ports.
    assert [a["port"], b["port"]] == [50052, 50053]
    assert plan["rpc"] == ["127.0.0.1:50052", "127.0.0.1:50053"]
    assert down["error"] and "gpu-down" in down["error"] and down["fix"]
    assert down["devices"] == [] and down["rpc_command"] is None


def test_up_builds_starts_serves_and_down_leaves_nothing(
    tmp_path: Path, ssh_rig: SshRig, llamacpp_bin: Path, dense_gguf: Path
) -> None:
    flake = fresh_flake(make_flake(tmp_path / "flake", llamacpp_bin))
    port, rpc_port = free_port(), free_port()
    common = [
        "local", "gpu-a", "gpu-b", "--flake", flake, "--model", str(dense_gguf), "--ctx", "512",
        "--port", str(port), "--rpc-port", str(rpc_port), "--no-measure",
    ]  # fmt: skip
    code, _, err = cluster(ssh_rig, "up", *common, timeout=600)
    try:
        assert code == 0, err
        assert f"The cluster is up: http://127.0.0.1:{port}" in err
        # Each host built its own RPC output, with its progress named by host.
        assert "[local] " in err and "[gpu-a] " in err
        # The far sides simulate two MI50s each, but llama.cpp there (the CPU build) sees no
        # GPU: its rpc-server would serve the CPU instead, and `up` says so for each.
        for host in ("gpu-a", "gpu-b"):
            assert f"[{host}] warning: llama.cpp's ROCm build sees no GPU" in err, err
        # (not for the head: its CPU build sees no GPU, as planned; Nix's own "warning:" lines,
        # such as a busy store database while three builds share it, may show under [local])
        assert "[local] warning: llama.cpp" not in err
        code, out, err = cluster(ssh_rig, "status", "--json")
        assert code == 0, err
        status = json.loads(out)
        assert status["up"] and status["health"] == 200
        pids = [h["pid"] for h in status["hosts"]]
        roles = sorted(h["role"] for h in status["hosts"])
        assert roles == ["head", "worker", "worker"]
        workers = [h for h in status["hosts"] if h["role"] == "worker"]
        assert {w["endpoint"] for w in workers} == {
            f"127.0.0.1:{rpc_port}", f"127.0.0.1:{rpc_port + 1}"
        }
        # The rpc-servers run detached (not our children), from the builds over SSH.
        for worker in workers:
            process = psutil.Process(worker["pid"])
            assert process.name() == "ggml-rpc-server"
            assert os.path.realpath(process.exe()).startswith("/nix/store/")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/completion",
            data=json.dumps({"prompt": "The capital of France is", "n_predict": 4}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
        assert answer["tokens_predicted"] == 4 or answer.get("content") is not None
        # The text status names each host.
        code, out, _ = cluster(ssh_rig, "status")
        assert code == 0 and "Cluster UP" in out and "gpu-b (worker)" in out
        assert "! gpu-a: llama.cpp's ROCm build sees no GPU" in out
    finally:
        code, out, err = cluster(ssh_rig, "down")
    assert code == 0, err
    assert "Everything is stopped." in out
    assert [p for p in pids if running(p)] == []
    code, out, _ = cluster(ssh_rig, "down")
    assert code == 0 and "No cluster is up" in out
    code, out, _ = cluster(ssh_rig, "status")
    assert code == 1 and "No cluster is up" in out


def test_build_builds_each_host_and_says_where(
    tmp_path: Path, ssh_rig: SshRig, llamacpp_bin: Path, dense_gguf: Path
) -> None:
    flake = fresh_flake(make_flake(tmp_path / "flake", llamacpp_bin))
    code, out, err = cluster(
        ssh_rig, "build", "local", "gpu-b", "--flake", flake, "--model", str(dense_gguf),
        "--no-measure", "--json", timeout=600,
    )  # fmt: skip
    assert code == 0, err
    local, remote = json.loads(out)["builds"]
    assert local["host"] == "local" and remote["host"] == "gpu-b"
    for build in (local, remote):
        assert build["ok"] and build["store_path"].startswith("/nix/store/")
        assert build["store_path"].endswith("-rpc-0c1e570")
    # The worker's program is in its build; the head needs none.
    assert remote["rpc_program"] == f"{remote['store_path']}/bin/ggml-rpc-server"
    assert "gpu-b: built /nix/store/" in err and "[gpu-b] " in err
