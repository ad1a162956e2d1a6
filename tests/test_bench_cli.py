"""`llama-wizard bench`: the real llama-bench (the CPU build of the tests) on a generated model,
its results shown and recorded, and then found by the measurement lookup."""

from __future__ import annotations

import json
import os
from pathlib import Path

from llama_wizard.detect.host import read_cpu
from llama_wizard.detect.model import Inventory
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.tui.measurements import MeasurementStore, key_for, measured_or_predicted
from tests.helpers import run_cli
from tests.llamacpp import fixture_dense_gguf, fixture_llamacpp_bin  # noqa: F401


def _this_machine() -> Inventory:
    # No GPU on the test machine: the key is cpu-only plus this CPU, as bench records it.
    return Inventory([], read_cpu(SystemRoot()), 1, 1)


def test_bench_runs_llama_bench_and_records(dense_gguf: Path, llamacpp_bin: Path) -> None:
    result = run_cli(
        "bench", str(dense_gguf), "--llamacpp-bin", str(llamacpp_bin), "--output", "default",
        "-p", "16", "-n", "4", "-r", "1", "-t", "2", "--json", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done"
    results = {e["test"]: e for e in events if e["event"] == "result"}
    assert set(results) == {"pp16", "tg4"}
    assert all(e["tokens_per_second"] > 0 for e in results.values())
    recorded = next(e for e in events if e["event"] == "recorded")["measurement"]
    assert recorded["quant"] == "Q8_0" and recorded["mode"] == "cpu"
    assert recorded["prompt_tps"] == results["pp16"]["tokens_per_second"]
    assert recorded["generation_tps"] == results["tg4"]["tokens_per_second"]
    path = Path(os.environ["XDG_STATE_HOME"]) / "llama-wizard" / "measurements.json"
    assert path.is_file()
    store = MeasurementStore.load(path)
    assert len(store.records) == 1
    key = key_for(_this_machine(), "default", str(dense_gguf), "Q8_0", ctx=32768, mode="cpu")
    speed = measured_or_predicted(key, None, store)
    assert speed is not None and speed.source == "measured"
    assert speed.generation_tps == results["tg4"]["tokens_per_second"]
    assert "pp16/tg4" in speed.basis and "llama-bench" in speed.basis


def test_bench_plain_output_and_missing_model(dense_gguf: Path, llamacpp_bin: Path) -> None:
    shown = run_cli(
        "bench", str(dense_gguf), "--llamacpp-bin", str(llamacpp_bin), "--output", "default",
        "-p", "8", "-n", "2", "-r", "1", "-t", "2", timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "pp8:" in shown.stdout and "tg2:" in shown.stdout and "Recorded" in shown.stdout
    missing = run_cli("bench", "nobody/NoSuchModel-GGUF:Q4_K_M", "--output", "default")
    assert missing.returncode == 1
    assert "not on this machine" in missing.stderr and "does not download" in missing.stderr
    no_binary = run_cli("bench", str(dense_gguf), "--llamacpp-bin", str(dense_gguf.parent),
                        "--output", "default")  # fmt: skip
    assert no_binary.returncode == 1 and "llama-bench is not there" in no_binary.stderr
