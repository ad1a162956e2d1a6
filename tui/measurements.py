"""Measured llama.cpp speeds on this machine, and the speed a table shows: the measurement when
there is one, else the prediction (models/speed.py).

Every launch (`llama-wizard run`, plain mode, the wizard's Launch step) records llama.cpp's own
prompt and generation speeds (its timing lines, read by tui/llamacpp_log.py), and so does
`llama-wizard bench` (llama-bench's pp/tg results), in `$XDG_STATE_HOME/llama-wizard/
measurements.json`, keyed by what the speed depends on: the machine (the GPU fingerprint of
saved choices, plus the CPU, which a CPU or hybrid run depends on), the flake output, the model,
the quant, the context size and the run mode.

    {"version": 1,
     "records": [{"machine": "gpus:3f9a…+cpu:1c2d…", "machine_label": "RTX 4090",
                  "output": "cuda", "model": "Qwen/Qwen3-8B-GGUF", "quant": "Q4_K_M",
                  "ctx": 32768, "mode": "gpu", "program": "llama-completion",
                  "test": "prompt 6 tokens, generated 128 tokens",
                  "prompt_tps": 812.4, "generation_tps": 104.2,
                  "prompt_tokens": 6, "generated_tokens": 128, "at": 1764460800.0}, ...]}

A simulated machine records nothing (the program ran on this machine's hardware, not the
profile's). Writes are atomic (a temporary file renamed over the old one) and merge with what is
on disk at that moment, so two wizards never lose each other's records; a file that cannot be
read is set aside (never deleted) with a note, and recording starts afresh."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_wizard.models.speed import Speed

if TYPE_CHECKING:
    from llama_wizard.detect.model import Gpu, Inventory
    from llama_wizard.models.choose import FitReport, ModelChoice
    from llama_wizard.models.speed import CpuSpec
    from llama_wizard.tui.launch import Timing
    from llama_wizard.tui.plan import Plan

VERSION = 1
FILE_NAME = "measurements.json"
RAM_FILE_NAME = "ram_bandwidth.json"
KEEP_PER_KEY = 5  # the latest few of each key: enough to see a change, never an ever-growing file
# A launch's prompt figure over fewer tokens than this is mostly start-up cost, not the speed
# of prompt processing: the table keeps the prediction for it.
MIN_PROMPT_TOKENS = 32
RAM_GBS_ENV = "LLAMA_WIZARD_RAM_GBS"


def measurements_path() -> Path:
    from llama_wizard.tui.plan import state_dir

    return state_dir() / FILE_NAME


# --- what a record is keyed by -------------------------------------------------------------------


def machine_key(inventory: Inventory) -> tuple[str, str] | None:
    """(key, label) of this machine for measurements: the saved-choices fingerprint of its GPUs
    (tui/session.py machine_fingerprint) plus its CPU model and thread count. None for a
    simulated profile: nothing measured here describes it."""
    from llama_wizard.tui.session import machine_fingerprint

    if inventory.simulated:
        return None
    key, label = machine_fingerprint(inventory)
    cpu = inventory.cpu
    digest = hashlib.sha256(f"{cpu.model}|{cpu.threads}".encode()).hexdigest()[:12]
    return f"{key}+cpu:{digest}", f"{label} · {cpu.model}"


def model_identity(spec: str) -> str:
    """One name per model however it was given: a Hub repo as it is, a local file by its
    absolute path (`./m.gguf`, `~/m.gguf` and `/home/me/m.gguf` are one model)."""
    text = spec.strip()
    if text.startswith(("http://", "https://")):
        return text
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf") or text.startswith((".", "/", "~")) or path.is_file():
        with contextlib.suppress(OSError):
            return str(path.resolve())
    return text


def mode_of(choice: ModelChoice, backend: str | None = None) -> str:
    """The run mode of a model choice: its own `mode` when it has one, else gpu (moe-offload
    with --n-cpu-moe); cpu on the CPU build."""
    mode = getattr(choice, "mode", None)
    if isinstance(mode, str) and mode:
        return mode
    if backend == "cpu":
        return "cpu"
    return "moe-offload" if choice.n_cpu_moe else "gpu"


@dataclass(frozen=True)
class Key:
    machine: str
    output: str
    model: str
    quant: str
    ctx: int | None  # None: a llama-bench result (its own small context)
    mode: str


@dataclass
class Measurement:
    machine: str
    output: str
    model: str
    quant: str
    ctx: int | None
    mode: str
    program: str  # llama-completion, llama-server, llama-bench
    test: str  # what was measured, in words ("pp512/tg128", "prompt 6 tokens, ...")
    prompt_tps: float | None
    generation_tps: float | None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    at: float = 0.0
    machine_label: str = ""

    @property
    def key(self) -> Key:
        return Key(self.machine, self.output, self.model, self.quant, self.ctx, self.mode)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Measurement | None:
        """A record from the file, or None when it is not one (a bad record is dropped, the
        others kept)."""
        if not isinstance(data, dict):
            return None
        names = {f.name for f in fields(cls)}
        try:
            record = cls(**{k: v for k, v in data.items() if k in names})
        except TypeError:
            return None
        text = (record.machine, record.output, record.model, record.quant, record.mode)
        if not all(isinstance(v, str) and v for v in text):
            return None
        for rate in (record.prompt_tps, record.generation_tps):
            if rate is not None and not (isinstance(rate, (int, float)) and rate > 0):
                return None
        if record.ctx is not None and not isinstance(record.ctx, int):
            return None
        if not isinstance(record.at, (int, float)):
            return None
        return record


# --- the file ------------------------------------------------------------------------------------


def _read(path: Path, notes: list[str]) -> list[Measurement]:
    """The records in `path` ([] when there is no file). A file that is not ours is set aside as
    <name>.bad-<time> with a note; bad records are dropped with a note."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as error:
        notes.append(f"Could not read the measured speeds ({path}: {error.strerror or error}).")
        return []
    try:
        document = json.loads(text)
        records = document["records"]
        if not isinstance(records, list):
            raise ValueError("records is not a list")
    except (ValueError, KeyError, TypeError) as error:
        aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        notes.append(
            f"The measured speeds file {path} could not be read ({error}); it was kept as "
            f"{aside.name} and recording starts afresh."
        )
        return []
    kept = [m for m in (Measurement.from_json(r) for r in records) if m is not None]
    if len(kept) < len(records):
        notes.append(f"{len(records) - len(kept)} unreadable record(s) in {path} were dropped.")
    return kept


def _pruned(records: Iterable[Measurement]) -> list[Measurement]:
    """The latest KEEP_PER_KEY records of each key, oldest first; exact duplicates once."""
    by_key: dict[Key, list[Measurement]] = {}
    seen: set[tuple[Any, ...]] = set()
    for record in sorted(records, key=lambda m: m.at):
        identity = tuple(record.to_json().values())
        if identity in seen:
            continue
        seen.add(identity)
        by_key.setdefault(record.key, []).append(record)
    kept = [m for group in by_key.values() for m in group[-KEEP_PER_KEY:]]
    return sorted(kept, key=lambda m: m.at)


class MeasurementStore:
    def __init__(self, path: Path, records: list[Measurement], notes: list[str]) -> None:
        self.path = path
        self.records = records
        self.notes = notes

    @classmethod
    def load(cls, path: Path | None = None) -> MeasurementStore:
        path = path or measurements_path()
        notes: list[str] = []
        return cls(path, _read(path, notes), notes)

    def add(self, record: Measurement) -> None:
        """Record it, and write the file: merged with what is on disk now, atomically. Raises
        OSError when the state directory cannot be written."""
        self.records.append(record)
        on_disk = _read(self.path, self.notes)
        self.records = _pruned([*on_disk, *self.records])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        document = {"version": VERSION, "records": [m.to_json() for m in self.records]}
        try:
            tmp.write_text(json.dumps(document, indent=1) + "\n")
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def lookup(self, key: Key) -> Measurement | None:
        """The measurement for `key`: the latest at this context size, else the latest of this
        machine, output, model, quant and mode at any context (a llama-bench result, or a
        launch at another size: the speed at the start of a context hardly depends on how
        much was allocated)."""
        same = [
            m
            for m in self.records
            if (m.machine, m.output, m.model, m.quant, m.mode)
            == (key.machine, key.output, key.model, key.quant, key.mode)
            and (m.generation_tps is not None or m.prompt_tps is not None)
        ]
        if not same:
            return None
        return max(same, key=lambda m: (m.ctx == key.ctx, m.at))


# --- recording -----------------------------------------------------------------------------------


def record(
    measurement: Measurement, path: Path | None = None
) -> tuple[Measurement | None, list[str]]:
    """Add a measurement to the store; (the record, notes). A state directory that cannot be
    written gives a note, never an exception: a launch must not fail over bookkeeping."""
    store = MeasurementStore.load(path)
    try:
        store.add(measurement)
    except OSError as error:
        store.notes.append(
            f"The measured speed could not be saved in {store.path}: {error.strerror or error}. "
            "Make that directory writable (or set XDG_STATE_HOME) to keep measurements."
        )
        return None, store.notes
    return measurement, store.notes


def record_launch(
    plan: Plan, timing: Timing, program: str, *, path: Path | None = None
) -> tuple[Measurement | None, list[str]]:
    """Record what llama.cpp said about its speed in a launch of `plan`'s model; (None, notes
    saying why) when there is nothing to record: a simulated machine, no model, no speed."""
    if plan.model is None:
        return None, []
    machine = machine_key(plan.inventory)
    if machine is None:
        return None, [
            "The speed was not recorded: the machine is simulated, and the program ran on this "
            "machine's hardware."
        ]
    prompt, generation = timing.prompt_tokens_per_second, timing.generation_tokens_per_second
    if prompt is None and generation is None:
        return None, []
    choice = plan.model
    test = ", ".join(
        part
        for part in (
            f"prompt {timing.prompt_tokens} tokens" if timing.prompt_tokens else "",
            f"generated {timing.generated_tokens} tokens" if timing.generated_tokens else "",
        )
        if part
    )
    measurement = Measurement(
        machine=machine[0],
        output=plan.build.output,
        model=model_identity(choice.repo),
        quant=choice.quant.upper(),
        ctx=choice.ctx,
        mode=mode_of(choice, plan.build.backend),
        program=program,
        test=test or "a launch",
        prompt_tps=prompt,
        generation_tps=generation,
        prompt_tokens=timing.prompt_tokens,
        generated_tokens=timing.generated_tokens,
        at=time.time(),
        machine_label=machine[1],
    )
    return record(measurement, path)


# --- what a table shows --------------------------------------------------------------------------


def _date(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(at))


def measured_speed(measurement: Measurement, prediction: Speed | None = None) -> Speed:
    """A measurement as the Speed a table shows. A launch's prompt figure over a handful of
    tokens is start-up cost more than speed: the prediction's prompt figure stands in for it
    (said so)."""
    basis = f"measured {_date(measurement.at)}, {measurement.test} on this machine"
    basis += f" ({measurement.program})"
    prompt = measurement.prompt_tps
    short = measurement.program != "llama-bench" and (
        measurement.prompt_tokens is not None and measurement.prompt_tokens < MIN_PROMPT_TOKENS
    )
    if prompt is None or short:
        prompt = prediction.prompt_tps if prediction is not None else None
        if prompt is not None:
            basis += "; prompt speed predicted (the measured prompt was too short to tell)"
    generation = measurement.generation_tps
    if generation is None and prediction is not None:
        generation = prediction.generation_tps
        basis += "; generation speed predicted"
    return Speed(prompt, generation, "measured", basis)


def measured_or_predicted(
    key: Key | None, prediction: Speed | None, store: MeasurementStore | None = None
) -> Speed | None:
    """The speed for a table row: measured on this machine when a measurement of `key` exists
    (source "measured"), else `prediction` (None: no key, e.g. a simulated machine)."""
    if key is not None:
        store = store or MeasurementStore.load()
        found = store.lookup(key)
        if found is not None:
            return measured_speed(found, prediction)
    return prediction


def key_for(
    inventory: Inventory, output: str, model: str, quant: str, *, ctx: int | None, mode: str
) -> Key | None:
    """The measurement key of a table row on this machine (None when simulated)."""
    machine = machine_key(inventory)
    if machine is None:
        return None
    return Key(machine[0], output, model_identity(model), quant.upper(), ctx, mode)


# --- this host for the prediction ----------------------------------------------------------------


def host_cpu_spec(inventory: Inventory, *, measure: bool = True) -> CpuSpec:
    """The CPU and RAM bandwidth the prediction uses: LLAMA_WIZARD_RAM_GBS when set, else the
    bandwidth measured once on this machine (~0.2 s, cached in the state directory), else (a
    simulated machine, or `measure` False with nothing cached) the assumed figure, said so."""
    from llama_wizard.models.speed import cpu_spec, ram_bandwidth_cached
    from llama_wizard.tui.plan import state_dir

    override = os.environ.get(RAM_GBS_ENV)
    if override:
        with contextlib.suppress(ValueError):
            gbs = float(override)
            if gbs > 0:
                return cpu_spec(inventory.cpu, gbs, f"RAM {gbs:.0f} GB/s from {RAM_GBS_ENV}")
    machine = machine_key(inventory)
    if machine is None:
        return cpu_spec(inventory.cpu)
    gbs = ram_bandwidth_cached(state_dir() / RAM_FILE_NAME, machine[0], measure=measure)
    if gbs is None:
        return cpu_spec(inventory.cpu)
    return cpu_spec(
        inventory.cpu, gbs, f"RAM {gbs:.0f} GB/s measured on this machine (one-thread copy)"
    )


# --- a fit row's speed ---------------------------------------------------------------------------


def quant_speed(
    report: FitReport,
    index: int,
    inventory: Inventory,
    *,
    gpus: list[Gpu],
    output: str,
    backend: str | None = None,
    cpu: CpuSpec | None = None,
    store: MeasurementStore | None = None,
) -> Speed | None:
    """The speed of quant `index` of a fit report in its run mode on `gpus` (the chosen GPUs, in
    the order of report.devices) with `output`'s backend: measured on this machine when there is
    a measurement of it, else predicted (models/speed.py). For `fit --json` rows' "speed" key
    (Speed.to_json) and the wizard's tables. None when the row has no estimate."""
    from llama_wizard.models.params import model_params
    from llama_wizard.models.speed import (
        backend_of,
        gpu_spec,
        predict_speed,
        token_cost,
    )

    if index >= len(report.quants):
        return None
    estimate = report.quants[index]
    candidate = report.source.candidates[index]
    arch = candidate.arch
    chosen_backend = backend_of(backend, gpus)
    on_host = estimate.mode == "cpu" or chosen_backend == "cpu" or not gpus
    n_gpus = 0 if on_host else len(gpus)
    ngl = estimate.n_gpu_layers
    # llama.cpp's -ngl counts the output layer as one of N: N <= n_layer puts N - 1 repeating
    # layers on the GPUs and the output layer in RAM (see models/estimate.py).
    repeating = None if ngl is None or ngl > arch.n_layer else max(0, ngl - 1)
    split = estimate.tensor_split
    fractions = [t / sum(split) for t in split] if split and len(split) == n_gpus else None
    cost = token_cost(
        arch,
        candidate.layout,
        n_gpus=n_gpus,
        n_gpu_layers=repeating,
        n_cpu_moe=estimate.n_cpu_moe or 0,
        fractions=fractions,
        params=model_params(report.source),
    )
    specs = [gpu_spec(g) for g in gpus] if n_gpus else []
    prediction = predict_speed(
        cost, specs, cpu or host_cpu_spec(inventory), "cpu" if on_host else chosen_backend
    )
    source = report.source
    key = key_for(inventory, output, source.repo or source.spec, estimate.quant,
                  ctx=report.ctx, mode=estimate.mode)  # fmt: skip
    return measured_or_predicted(key, prediction, store)
