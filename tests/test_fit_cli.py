"""`llama-wizard fit`: the real installed command, in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wizard.models.errors import SizeError
from llama_wizard.models.sizes import GIB, MIB, parse_size
from tests.fixtures.models.gguf_helpers import llama_tensors, write_gguf
from tests.helpers import run_cli


def run_fit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    del capsys  # the command runs in its own process
    result = run_cli("fit", *argv)
    return result.returncode, result.stdout, result.stderr


def test_json_for_the_reference_mi50_question(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_fit(
        capsys,
        "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF",
        "--ctx",
        "32768",
        "--vram",
        "32752MiB",
        "--ram",
        "64GiB",
        "--json",
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["model"] == "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF"
    assert document["ctx"] == 32768 and document["memory_bytes"] == 32752 * MIB
    quants = {q["quant"]: q for q in document["quants"]}
    for key in (
        "file_bytes",
        "weights_bytes",
        "kv_bytes",
        "compute_bytes",
        "total_bytes",
        "verdict",
        "max_ctx",
        "free_bytes",
        "n_cpu_moe",
    ):
        assert key in quants["Q4_K_M"]
    # With the RAM of a 64 GiB box: Q8_0 runs with the experts of some layers in RAM.
    assert [(quants[q]["verdict"], quants[q]["mode"]) for q in ("Q4_K_M", "Q5_K_M", "Q6_K")] == [
        ("fits", "gpu"),
        ("fits", "gpu"),
        ("tight", "gpu"),
    ]
    q8 = quants["Q8_0"]
    assert q8["mode"] == "moe-offload" and q8["verdict"] in ("fits", "tight")
    assert q8["n_cpu_moe"] >= 1 and q8["mode_label"] == f"MoE→RAM {q8['n_cpu_moe']}"
    assert 0 < q8["host_bytes"] < 64 * GIB and q8["host_memory_bytes"] == 64 * GIB
    assert q8["n_gpu_layers"] == 49 and "speed" in q8
    assert quants["Q4_K_M"]["n_gpu_layers"] == 49 and quants["Q4_K_M"]["n_cpu_moe"] is None
    q4 = quants["Q4_K_M"]
    assert q4["total_bytes"] == (
        q4["weights_bytes"] + q4["kv_bytes"] + q4["compute_bytes"] + q4["overhead_bytes"]
    )
    assert document["flags"] == ["--jinja"]


def test_quant_filter_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_fit(capsys, "ggml-org/gpt-oss-20b-GGUF:MXFP4", "--vram", "32GiB")
    assert code == 0
    assert "MXFP4" in out and "fits" in out and "--jinja" in out
    code, _, err = run_fit(
        capsys, "ggml-org/gpt-oss-20b-GGUF", "--quant", "Q4_K_M", "--vram", "32G"
    )
    assert code == 1 and "MXFP4" in err


def test_simulated_machine_and_gpu_choice(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_fit(
        capsys, "Qwen/Qwen3-0.6B-GGUF", "--simulate", "8x-mi50-32gb", "--gpu", "0,1", "--json"
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["simulated"] == "8x-mi50-32gb"
    assert len(document["devices"]) == 2
    assert document["memory_bytes"] == 2 * 34342961152
    (q8,) = document["quants"]
    assert q8["tensor_split"] == [1, 1] and q8["overhead_bytes"] == 2 * 576 * MIB
    code, _, err = run_fit(
        capsys, "Qwen/Qwen3-0.6B-GGUF", "--simulate", "8x-mi50-32gb", "--gpu", "9"
    )
    assert code == 1 and "no GPU 9" in err
    # No GPU: the CPU build runs it in the system RAM.
    code, out, err = run_fit(capsys, "Qwen/Qwen3-0.6B-GGUF", "--simulate", "no-gpu", "--json")
    assert code == 0, err
    (q8,) = json.loads(out)["quants"]
    assert q8["mode"] == "cpu" and q8["verdict"] == "fits" and q8["host_bytes"] > 0


def test_bad_sizes_say_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_size("24GiB") == 24 * GIB
    assert parse_size("24GB") == 24 * 10**9
    assert parse_size("24G") == 24 * GIB
    assert parse_size("32000MiB") == 32000 * MIB
    assert parse_size("24") == 24 * GIB
    for bad in ("lots", "24 parsecs", "-3GiB"):
        with pytest.raises(SizeError):
            parse_size(bad)
    code, _, err = run_fit(capsys, "Qwen/Qwen3-0.6B-GGUF", "--vram", "24 parsecs")
    assert code == 1 and "unknown unit" in err and "GiB" in err


def test_local_gguf_and_missing_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    meta = {
        "block_count": 2,
        "context_length": 2048,
        "embedding_length": 64,
        "attention.head_count": 8,
        "attention.head_count_kv": 2,
    }
    path = write_gguf(
        tmp_path / "tiny-Q8_0.gguf", "llama", meta, llama_tensors(2, 64, 8, 2, 8, 64, 300), 300
    )
    code, out, err = run_fit(capsys, str(path), "--vram", "1GiB", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["ctx"] == 2048  # the training context, smaller than the 32768 default
    assert document["quants"][0]["quant"] == "Q8_0" and document["quants"][0]["exact"]
    code, _, err = run_fit(capsys, str(tmp_path / "nothing.gguf"), "--vram", "1GiB")
    assert code == 1 and "No file" in err
    code, _, err = run_fit(capsys, "--vram", "1GiB")
    assert code == 2 and "needs a MODEL" in err


def test_offline_catalogue_and_unknown_repo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, _ = run_fit(capsys, "Qwen/Qwen3-8B-GGUF", "--vram", "16GiB", "--json")
    assert code == 0 and json.loads(out)["source"]["kind"] == "catalogue"
    code, _, err = run_fit(capsys, "someone/Else-GGUF", "--vram", "16GiB")
    assert code == 1 and "Hub was not asked" in err and "--list" in err


def test_list_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    """`fit --list` ranks the whole catalogue for this machine (tests/test_ranking.py: how)."""
    code, out, err = run_fit(capsys, "--list", "--json")
    assert code == 0, err
    rows = json.loads(out)["models"]
    assert all(m["kind"] == "catalogue" for m in rows)  # no model is cached in a test
    repos = [m["model"] for m in rows]
    assert {
        "Qwen/Qwen3-0.6B-GGUF",
        "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF",
        "ggml-org/gpt-oss-20b-GGUF",
        "ggml-org/gpt-oss-120b-GGUF",
    } <= set(repos)
    assert len(repos) >= 15
