"""Measured speeds (tui/measurements.py): recorded per machine and key, merged with what another
process wrote, a bad file set aside, nothing recorded for a simulated machine, and the speed a
table shows (measured when there is a measurement, else the prediction)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from llama_wizard.detect.model import Cpu, Gpu, Inventory
from llama_wizard.models.speed import Speed
from llama_wizard.tui import measurements
from llama_wizard.tui.launch import Timing
from llama_wizard.tui.measurements import (
    Key,
    Measurement,
    MeasurementStore,
    key_for,
    machine_key,
    measured_or_predicted,
    model_identity,
    record,
    record_launch,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "llamacpp"


def _inventory(simulated: str | None = None, gpus: list[Gpu] | None = None) -> Inventory:
    cpu = Cpu("AMD EPYC 7302 16-Core Processor", "x86_64", 16, 32, ["avx2"])
    return Inventory(gpus or [], cpu, 64 << 30, 60 << 30, simulated=simulated)


def _measurement(**changes: object) -> Measurement:
    base = {
        "machine": "cpu-only+cpu:x", "output": "default", "model": "Qwen/Qwen3-8B-GGUF",
        "quant": "Q4_K_M", "ctx": 4096, "mode": "cpu", "program": "llama-bench",
        "test": "pp512/tg128", "prompt_tps": 50.0, "generation_tps": 5.0,
        "prompt_tokens": 512, "generated_tokens": 128, "at": time.time(),
    }  # fmt: skip
    base.update(changes)
    return Measurement(**base)  # type: ignore[arg-type]


def test_machine_key_follows_gpus_and_cpu_not_simulated() -> None:
    plain = machine_key(_inventory())
    assert plain is not None and plain[0].startswith("cpu-only+cpu:")
    other_cpu = _inventory()
    other_cpu.cpu = Cpu("Intel Xeon", "x86_64", 8, 16, [])
    assert machine_key(other_cpu) != plain
    gpu = Gpu("nvidia", "NVIDIA GeForce RTX 4090", vram_total_bytes=24 << 30)
    with_gpu = machine_key(_inventory(gpus=[gpu]))
    assert with_gpu is not None and with_gpu[0].startswith("gpus:")
    assert machine_key(_inventory(simulated="rtx4090")) is None


def test_model_identity_resolves_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    assert model_identity("./m.gguf") == str(model.resolve())
    assert model_identity(str(model)) == str(model.resolve())
    assert model_identity("Qwen/Qwen3-8B-GGUF") == "Qwen/Qwen3-8B-GGUF"


def test_record_and_lookup_prefers_same_context(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    old = _measurement(ctx=None, generation_tps=6.0, at=time.time() - 100)
    record(old, path)
    record(_measurement(ctx=8192, generation_tps=4.0), path)
    store = MeasurementStore.load(path)
    key = Key("cpu-only+cpu:x", "default", "Qwen/Qwen3-8B-GGUF", "Q4_K_M", None, "cpu")
    found = store.lookup(key)
    assert found is not None and found.generation_tps == 6.0  # the same (bench) context
    at_4096 = store.lookup(Key(*[*list(key.__dict__.values())[:4], 4096, "cpu"]))
    assert at_4096 is not None and at_4096.generation_tps == 4.0  # the latest at any size
    assert store.lookup(Key("cpu-only+cpu:x", "default", "other", "Q4_K_M", None, "cpu")) is None
    assert store.lookup(Key("cpu-only+cpu:x", "default", "Qwen/Qwen3-8B-GGUF", "Q4_K_M", None,
                            "gpu")) is None  # fmt: skip


def test_writes_merge_with_another_process(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    first = MeasurementStore.load(path)
    second = MeasurementStore.load(path)  # loaded before the first one wrote
    first.add(_measurement(model="a"))
    second.add(_measurement(model="b"))
    models = {m.model for m in MeasurementStore.load(path).records}
    assert models == {"a", "b"}
    # Only the latest few of one key are kept.
    for n in range(measurements.KEEP_PER_KEY + 3):
        first.add(_measurement(model="a", at=1000.0 + n))
    kept = [m for m in MeasurementStore.load(path).records if m.model == "a"]
    assert len(kept) == measurements.KEEP_PER_KEY


def test_bad_file_is_set_aside_and_bad_records_dropped(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{ not json")
    store = MeasurementStore.load(path)
    assert store.records == [] and "could not be read" in store.notes[0]
    assert list(tmp_path.glob("m.json.bad-*"))
    good = _measurement().to_json()
    path.write_text(json.dumps({"version": 1, "records": [good, {"machine": 3}, "x"]}))
    store = MeasurementStore.load(path)
    assert len(store.records) == 1 and "2 unreadable" in store.notes[0]


def test_unwritable_state_gives_a_note(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    recorded, notes = record(_measurement(), blocker / "m.json")
    assert recorded is None and "could not be saved" in notes[-1]


def _plan(inventory: Inventory) -> SimpleNamespace:
    choice = SimpleNamespace(repo="Qwen/Qwen3-8B-GGUF", quant="q4_k_m", ctx=4096, n_cpu_moe=None,
                             mode="hybrid")  # fmt: skip
    build = SimpleNamespace(output="default", backend="cpu")
    return SimpleNamespace(model=choice, inventory=inventory, build=build)


def _timing_from_recorded_log() -> Timing:
    timing = Timing()
    for line in (FIXTURES / "0c1e570" / "completion-dense.stderr.log").read_text().splitlines():
        timing.take(line)
    assert timing.generation_tokens_per_second is not None
    return timing


def test_record_launch_from_real_timing_lines() -> None:
    timing = _timing_from_recorded_log()
    recorded, notes = record_launch(_plan(_inventory()), timing, "llama-completion")  # type: ignore[arg-type]
    assert recorded is not None and notes == []
    assert recorded.mode == "hybrid" and recorded.quant == "Q4_K_M" and recorded.ctx == 4096
    assert recorded.generation_tps == timing.generation_tokens_per_second
    key = key_for(_inventory(), "default", "Qwen/Qwen3-8B-GGUF", "Q4_K_M", ctx=4096,
                  mode="hybrid")  # fmt: skip
    prediction = Speed(900.0, 9.0, "predicted", "predicted: …")
    shown = measured_or_predicted(key, prediction)
    assert shown is not None and shown.source == "measured"
    assert shown.generation_tps == timing.generation_tokens_per_second
    assert "measured" in shown.basis and "llama-completion" in shown.basis
    # The recorded prompt was a handful of tokens: the prediction stands in, said so.
    assert timing.prompt_tokens is not None and timing.prompt_tokens < 32
    assert shown.prompt_tps == 900.0 and "prompt speed predicted" in shown.basis
    # Another mode of the same model has no measurement: the prediction.
    other = key_for(_inventory(), "default", "Qwen/Qwen3-8B-GGUF", "Q4_K_M", ctx=4096, mode="cpu")
    assert measured_or_predicted(other, prediction) is prediction


def test_simulated_launch_is_not_recorded() -> None:
    timing = _timing_from_recorded_log()
    recorded, notes = record_launch(_plan(_inventory("rtx4090")), timing, "llama-completion")  # type: ignore[arg-type]
    assert recorded is None and "simulated" in notes[0]
    assert not measurements.measurements_path().exists()
    assert key_for(_inventory("rtx4090"), "cuda", "m", "Q4_K_M", ctx=None, mode="gpu") is None


def test_host_cpu_spec_override_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(measurements.RAM_GBS_ENV, "77")
    spec = measurements.host_cpu_spec(_inventory())
    assert spec.bandwidth_gbs == 77 and spec.measured
    monkeypatch.delenv(measurements.RAM_GBS_ENV)
    simulated = measurements.host_cpu_spec(_inventory("no-gpu"))
    assert not simulated.measured and "assumed" in simulated.basis
    measured = measurements.host_cpu_spec(_inventory())
    assert measured.measured and "measured on this machine" in measured.basis


def test_quant_speed_predicts_then_shows_the_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_wizard.models.choose import devices_from_gpus, fit_model
    from llama_wizard.models.source import resolve_model
    from llama_wizard.tui.measurements import quant_speed
    from tests.gguf_factory import MOE_SMALL, write_gguf

    monkeypatch.setenv(measurements.RAM_GBS_ENV, "40")
    path = write_gguf(tmp_path / "moe.gguf", MOE_SMALL)
    gpu = Gpu("nvidia", "NVIDIA GeForce RTX 4090", vram_total_bytes=24 << 30,
              memory_usable_bytes=24 << 30)  # fmt: skip
    inventory = _inventory(gpus=[gpu])
    report = fit_model(resolve_model(str(path)), devices_from_gpus([gpu]), 4096)
    speed = quant_speed(report, 0, inventory, gpus=[gpu], output="cuda", backend="cuda")
    assert speed is not None and speed.source == "predicted"
    assert speed.generation_tps is not None and speed.generation_tps > 1000  # a tiny model
    assert "RTX 4090" in speed.basis
    estimate = report.quants[0]
    record(_measurement(machine=machine_key(inventory)[0], output="cuda",  # type: ignore[index]
                        model=str(path.resolve()), quant=estimate.quant.upper(), ctx=None,
                        mode=estimate.mode, generation_tps=123.0))  # fmt: skip
    shown = quant_speed(report, 0, inventory, gpus=[gpu], output="cuda", backend="cuda")
    assert shown is not None and shown.source == "measured" and shown.generation_tps == 123.0
    assert shown.to_json()["source"] == "measured"
    # The CPU build of the same model: predicted from the RAM bandwidth given.
    on_cpu = quant_speed(report, 0, inventory, gpus=[gpu], output="default", backend="cpu")
    assert on_cpu is not None and on_cpu.source == "predicted" and "40 GB/s" in on_cpu.basis
