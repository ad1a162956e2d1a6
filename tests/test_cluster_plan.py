"""`cluster plan` on simulated hosts (bundled profiles), through the real command: the memory
fit across all devices of all hosts in llama.cpp's order, `-ts`, each worker's rpc-server and the
head's llama-server with `--rpc`, the RPC-enabled builds, and the refusals (public addresses,
bad hosts)."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from tests.helpers import run_cli

LLAMA_70B = "bartowski/Meta-Llama-3.1-70B-Instruct-GGUF"
GIB = 1 << 30


def cluster_plan(*args: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli("cluster", "plan", *args, "--json", timeout=120)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def test_two_simulated_2x_mi50_hosts_fit_a_70b_that_one_cannot() -> None:
    code, alone, _ = cluster_plan("sim:2x-mi50", "--model", LLAMA_70B, "--quant", "Q4_K_M")
    assert code == 1 and alone["model"]["verdict"] == "no"

    code, plan, stderr = cluster_plan(
        "sim:2x-mi50", "sim:2x-mi50", "--model", LLAMA_70B, "--quant", "Q4_K_M"
    )
    assert code == 0, stderr
    assert plan["model"]["verdict"] in ("fits", "tight")
    head, worker = plan["hosts"]
    assert plan["head"] == head["host"] == "sim:2x-mi50"
    assert worker["host"] == "sim:2x-mi50#2" and worker["role"] == "worker"
    assert head["simulated"] and worker["simulated"]
    # Each host's build: its GPUs' output with the RPC backend, built through .override.
    for host in (head, worker):
        assert host["output"] == "rocm-gfx906-rpc"
        assert "useRpc = true;" in " ".join(host["build_argv"])
        assert host["env"], host  # the host's own ROCm environment
    # The worker's rpc-server: bound to its (simulated, private) address, never 0.0.0.0.
    rpc = worker["rpc_command"]
    assert rpc[0].endswith("/bin/ggml-rpc-server")
    assert rpc[1:] == ["-H", "10.99.0.1", "-p", "50052", "-c"]
    assert head["rpc_command"] is None
    # Four devices, the worker's first (llama.cpp puts RPC devices at the front), then the
    # head's, which holds the output layer; every layer placed once; nothing over.
    devices = [*worker["devices"], *head["devices"]]
    assert len(devices) == 4 and len(plan["tensor_split"]) == 4
    assert all(d["name"].startswith("sim:2x-mi50#2: ") for d in worker["devices"])
    assert sum(d["layers"] for d in devices) == 80  # Llama 3.1 70B's repeating layers
    assert all(d["free_bytes"] >= 0 for d in devices)
    assert all(d["layers"] > 0 for d in devices)
    assert head["devices"][-1]["weights_bytes"] > head["devices"][0]["weights_bytes"]
    # The head's command: its own llama-server, --rpc to the worker, the split.
    argv = plan["launch_argv"]
    assert argv[0].endswith("/bin/llama-server")
    assert argv[argv.index("--rpc") + 1] == "10.99.0.1:50052"
    assert argv[argv.index("-ts") + 1] == ",".join(str(t) for t in plan["tensor_split"])
    assert argv[argv.index("-hf") + 1] == f"{LLAMA_70B}:Q4_K_M"
    assert plan["rpc"] == ["10.99.0.1:50052"]
    words = " ".join(plan["warnings"])
    assert "no authentication" in words and "made-up addresses" in words


def test_without_a_model_the_cluster_gets_a_bigger_one_than_one_host() -> None:
    _, one, _ = cluster_plan("sim:2x-mi50")
    _, three, _ = cluster_plan("sim:2x-mi50", "sim:2x-mi50", "sim:2x-mi50")
    assert three["model"]["total_bytes"] > one["model"]["total_bytes"]
    assert three["rpc"] == ["10.99.0.1:50052", "10.99.0.2:50052"]
    assert len(three["tensor_split"]) == 6


def test_the_text_plan_names_each_host_its_commands_and_the_split() -> None:
    result = run_cli(
        "cluster", "plan", "sim:2x-mi50", "sim:mi300x", "--model", LLAMA_70B, timeout=120
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "SIMULATED" in text
    assert "sim:mi300x: worker (rpc-server) [simulated]" in text
    assert "rpc-server: " in text and "-H 10.99.0.1 -p 50052 -c" in text
    head_line = next(line for line in text.splitlines() if line.startswith("Head: "))
    assert "--rpc 10.99.0.1:50052" in head_line and " -ts " in head_line
    assert "Split (-ts): " in text


def test_a_public_address_is_refused_unless_allowed() -> None:
    _, plan, _ = cluster_plan(
        "sim:2x-mi50", "sim:2x-mi50", "--address", "sim:2x-mi50#2=8.8.8.8", "--model", LLAMA_70B
    )
    worker = plan["hosts"][1]
    assert worker["error"] and "public address" in worker["error"]
    assert "--allow-public-rpc" in worker["fix"] and worker["rpc_command"] is None
    assert plan["rpc"] == []

    _, allowed, _ = cluster_plan(
        "sim:2x-mi50",
        "sim:2x-mi50",
        "--address",
        "sim:2x-mi50#2=8.8.8.8",
        "--allow-public-rpc",
        "--model",
        LLAMA_70B,
    )
    assert allowed["rpc"] == ["8.8.8.8:50052"]


@pytest.mark.parametrize(
    ("hosts", "words"),
    [
        (["sim:nope"], "no bundled hardware profile called 'nope'"),
        (["local", "-oProxyCommand=x"], "not a host the cluster can use"),
        (["local", "local"], "named twice"),
    ],
)
def test_bad_hosts_say_what_to_give(hosts: list[str], words: str) -> None:
    result = run_cli("cluster", "plan", "--", *hosts)
    assert result.returncode == 1
    assert words in result.stderr and "llama-wizard:" in result.stderr


def test_no_hosts_and_a_bad_address_say_how_to_write_them() -> None:
    result = run_cli("cluster", "plan")
    assert result.returncode == 1 and "needs the hosts" in result.stderr
    result = run_cli("cluster", "plan", "sim:2x-mi50", "--address", "nothing")
    assert result.returncode == 1 and "HOST=ADDRESS" in result.stderr


def test_simulated_hosts_are_not_started_or_built() -> None:
    for action in ("up", "build"):
        result = run_cli("cluster", action, "sim:2x-mi50", "sim:2x-mi50", "--model", LLAMA_70B)
        assert result.returncode == 1
        assert "imulated" in result.stderr and "cluster plan" in result.stderr, result.stderr


def test_the_build_commands_are_what_nix_is_given() -> None:
    _, plan, _ = cluster_plan("sim:2x-mi50", "sim:no-gpu", "--model", "Qwen/Qwen3-8B-GGUF")
    cpu_worker = plan["hosts"][1]
    assert cpu_worker["output"] == "default-rpc"
    assert cpu_worker["devices"] and "CPU (RAM over RPC)" in cpu_worker["devices"][0]["name"]
    expression = cpu_worker["build_argv"][cpu_worker["build_argv"].index("--expr") + 1]
    assert expression.endswith(".default.override { useRpc = true; }")
    assert shlex.split(shlex.join(cpu_worker["build_argv"])) == cpu_worker["build_argv"]


def test_a_head_without_a_gpu_and_no_worker_is_refused_saying_why() -> None:
    result = run_cli("cluster", "up", "local", "--simulate", "no-gpu", "--model", LLAMA_70B)
    assert result.returncode == 1
    assert "There is no device to put a model on: local has no GPU" in result.stderr
    assert "Add a server" in result.stderr
    plan = run_cli("cluster", "plan", "local", "--simulate", "no-gpu")
    assert plan.returncode == 1 and "the head has no GPU and no worker" in plan.stdout
