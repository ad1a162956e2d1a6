"""Speed for every table row, and the ranked list: which model to run on the chosen GPUs.

`SpeedContext` is what a row's speed depends on beyond the row (the machine, the chosen GPUs,
the flake output and its backend, this host's CPU and RAM bandwidth, the measurements on
disk): built once per table by the session (WizardSession.speed_context), it answers each row
with the measurement of it when there is one (tui/measurements.py), else the prediction
(models/speed.py).

`rank` fits every model of the catalogue and every GGUF file already on this machine (llama.cpp's
and the Hugging Face cache) and orders them by a score: the models that run fully on the GPUs
(or, without a GPU, fully in RAM) first, then those with part in RAM, then CPU only, then those
that do not run; within each, the bigger model (parameters), then the higher quant (bits per
weight), then the faster. The score is that order as one number:

    score = 1000 x tier + parameters in billions (0.1 steps, up to 999.9)
            + bits per weight / 1000 (0.01 steps) + generation tokens/s / 1e8 (up to 999)

tier: 3 all on the GPUs (fits or tight), 2 part in RAM (moe-offload, hybrid), 1 CPU only on a
machine with GPUs, 0 nothing runs. So 3008.20485042 is "all on the GPU, 8.2 B parameters, 4.85
bits per weight, 42 tokens/s".

No Textual, no printing: the faces show the rows."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_wizard.detect.errors import ActionableError
from llama_wizard.models.params import model_params
from llama_wizard.models.speed import Speed

if TYPE_CHECKING:
    from llama_wizard.detect.model import Gpu, Inventory
    from llama_wizard.models.choose import FitReport
    from llama_wizard.models.estimate import Estimate
    from llama_wizard.models.source import ModelSource
    from llama_wizard.models.speed import CpuSpec
    from llama_wizard.tui.measurements import MeasurementStore

SORT_KEYS = ("score", "speed", "size", "name")

# Fit badges per model: its best quant's verdict and where it runs.
BADGES = ("fits", "tight", "ram", "cpu", "no")
BADGE_TEXT = {
    "fits": "fits",
    "tight": "tight",
    "ram": "GPU+RAM",
    "cpu": "CPU only",
    "no": "no",
}
BADGE_LEGEND = (
    "fits/tight: all on the GPUs (without a GPU: all in RAM), tight = under 20 % free; "
    "GPU+RAM: part of it in system RAM (MoE experts or layers); CPU only: runs, but not on the "
    "GPUs; no: nothing of it runs"
)
SPEED_LEGEND = "tok/s: generation tokens per second, ~ predicted, m measured on this machine"



# --- speed ---------------------------------------------------------------------------------------


@dataclass
class SpeedContext:
    """What the speed of a fit row depends on beside the row. `inventory` None: the memory was
    given as sizes (--vram), with no GPU the speed table could know."""

    inventory: Inventory | None
    gpus: list[Gpu]  # the GPUs the build uses
    output: str
    backend: str | None
    cpu: CpuSpec | None = None
    store: MeasurementStore | None = None
    simulated: str | None = None

    def speed(self, report: FitReport, index: int, aliases: Iterable[str] = ()) -> Speed | None:
        """Quant `index` of `report` in its run mode: measured on this machine when there is a
        measurement of it (under the model's own name, or one of `aliases`: the same file by
        another name), else predicted. A simulated machine gets the prediction for its
        hardware, said so, never a measurement of this one."""
        from llama_wizard.tui.measurements import key_for, measured_or_predicted, quant_speed

        if self.inventory is None:
            return Speed(None, None, "predicted", "no speed: --vram gives sizes, not GPUs")
        gpus = self.gpus_of(report)
        found = quant_speed(report, index, self.inventory, gpus=gpus, output=self.output,
                            backend=self.backend, cpu=self.cpu, store=self.store)  # fmt: skip
        if found is None:
            return None
        if found.source == "predicted":
            estimate = report.quants[index]
            for alias in aliases:
                key = key_for(self.inventory, self.output, alias, estimate.quant, ctx=report.ctx,
                              mode=estimate.mode)  # fmt: skip
                measured = measured_or_predicted(key, found, self.store)
                if measured is not None and measured.source == "measured":
                    return measured
        if found.source == "predicted" and report.quants[index].verdict == "no":
            # A prediction for a placement that cannot load says nothing useful.
            return Speed(None, None, "predicted", "no speed: it does not run on this memory")
        if self.simulated and found.source == "predicted":
            found = replace(
                found,
                basis=f"{found.basis}; simulated {self.simulated}: predicted for its hardware",
            )
        return found

    def speeds(self, report: FitReport) -> list[Speed | None]:
        return [self.speed(report, i) for i in range(len(report.quants))]

    def gpus_of(self, report: FitReport) -> list[Gpu]:
        """The GPUs of the report's devices, in their order (none for the CPU build)."""
        by_index = {g.index: g for g in self.gpus}
        return [by_index[d.index] for d in report.devices if not d.host and d.index in by_index]


def speed_json(speed: Speed | None) -> dict[str, Any] | None:
    return None if speed is None else speed.to_json()


def speed_text(speed: Speed | None) -> str:
    """A table cell: "~42" predicted, "42 m" measured, "-" unknown (readable without colour)."""
    if speed is None or speed.generation_tps is None:
        return "-"
    rate = speed.generation_tps
    number = f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"
    return f"{number} m" if speed.source == "measured" else f"~{number}"


def speed_words(speed: Speed | None) -> str | None:
    """A speed in a sentence ("about 104 tokens/s generated, 812 prompt (predicted: ...)"), or
    None when nothing is known."""
    if speed is None or speed.generation_tps is None:
        return None
    about = "" if speed.source == "measured" else "about "
    prompt = f", {speed.prompt_tps:.0f} prompt" if speed.prompt_tps else ""
    return f"{about}{speed.generation_tps:.1f} tokens/s generated{prompt} ({speed.basis})"


# --- the ranked list -----------------------------------------------------------------------------


@dataclass
class Entry:
    """A model to rank: a catalogue model or a GGUF file on this machine."""

    model: str  # what fit/plan/--model take: the repo id, or the file's path
    name: str
    size_class: str
    kind: str  # catalogue, local
    source: ModelSource
    # Quant -> other names of that same file (a cached file's path for a catalogue quant, the
    # Hub repo of a file in the Hugging Face cache), under which a measurement may be recorded.
    aliases: dict[str, list[str]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


@dataclass
class RankedModel:
    """One row of the ranked list: the model with its best quant (the one shown: the smallest
    when nothing runs), the quant's speed, the model's fit badge and its score."""

    entry: Entry
    report: FitReport
    best: int | None  # the best quant that runs; None: none does
    shown: int
    speed: Speed | None
    badge: str
    tier: int
    params_b: float
    bits: float
    score: float

    @property
    def model(self) -> str:
        return self.entry.model

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def estimate(self) -> Estimate:
        return self.report.quants[self.shown]

    @property
    def quant(self) -> str:
        return self.estimate.quant

    @property
    def cached(self) -> bool:
        """The shown quant's file is on this machine already."""
        return self.entry.kind == "local" or self.quant.upper() in self.entry.aliases

    def to_json(self, rank: int) -> dict[str, Any]:
        """A `fit --json` quant row (FitReport.quant_json) plus the model and its rank."""
        return {
            "rank": rank,
            "model": self.model,
            "name": self.name,
            "kind": self.entry.kind,
            "size_class": self.entry.size_class,
            "score": self.score,
            "badge": self.badge,
            "params_b": round(self.params_b, 2),
            "bits_per_weight": round(self.bits, 2),
            "ctx": self.report.ctx,
            "cached": self.cached,
            "flags": self.entry.flags,
            **self.report.quant_json(self.shown, speed_json(self.speed)),
        }


def catalogue_entries() -> list[Entry]:
    from llama_wizard.models.catalogue import load_catalogue
    from llama_wizard.models.source import from_catalogue

    return [
        Entry(
            m.repo,
            m.name,
            m.size_class,
            "catalogue",
            from_catalogue(m, m.repo, None),
            flags=list(m.flags),
        )
        for m in load_catalogue().models
    ]


# Headers read from cached files, by (path, size, mtime): a list shown again reads nothing.
_LOCAL_SOURCES: dict[tuple[str, int, float], ModelSource] = {}


def local_entries(entries: list[Entry], notes: list[str] | None = None) -> list[Entry]:
    """GGUF files in llama.cpp's and the Hugging Face cache: a file of a catalogue model's quant
    becomes an alias of that quant in `entries` (changed in place: the catalogue row finds its
    measurements under the path too); any other file an entry of its own, by path."""
    from llama_wizard.models.local import find_local_models
    from llama_wizard.models.quant import normalize_quant
    from llama_wizard.models.source import resolve_model

    by_repo = {e.model.lower(): e for e in entries if e.kind == "catalogue"}
    added: list[Entry] = []
    for local in find_local_models():
        path = str(local.path)
        catalogue = by_repo.get((local.repo or "").lower())
        quant = normalize_quant(local.quant) if local.quant else None
        if catalogue is not None and quant is not None:
            known = {c.quant.upper() for c in catalogue.source.candidates}
            if quant.upper() in known:
                catalogue.aliases.setdefault(quant.upper(), []).append(path)
                continue
        try:
            stat = local.path.stat()
            cache_key = (path, stat.st_size, stat.st_mtime)
            source = _LOCAL_SOURCES.get(cache_key)
            if source is None:
                source = resolve_model(path)
                _LOCAL_SOURCES[cache_key] = source
        except (ActionableError, OSError, ValueError) as error:
            if notes is not None:
                notes.append(f"{path} was left out of the list: it could not be read ({error}).")
            continue
        aliases = {}
        if local.repo and source.candidates:
            aliases[source.candidates[0].quant.upper()] = [local.repo]
        added.append(
            Entry(path, source.name, "local file", "local", source, aliases, list(source.flags))
        )
    return added


def badge_of(estimate: Estimate | None, gpu_machine: bool) -> str:
    if estimate is None or estimate.verdict == "no":
        return "no"
    if estimate.mode in ("moe-offload", "hybrid"):
        return "ram"
    if estimate.mode == "cpu" and gpu_machine:
        return "cpu"
    return estimate.verdict


TIERS = {"fits": 3, "tight": 3, "ram": 2, "cpu": 1, "no": 0}


def score_of(tier: int, params_b: float, bits: float, speed: Speed | None) -> float:
    """The ranking as one number (see the module's docstring)."""
    tps = speed.generation_tps if speed is not None and speed.generation_tps else 0.0
    value = (
        1000 * tier
        + min(round(params_b, 1), 999.9)
        + min(round(bits, 2), 49.99) / 1000
        + min(round(tps), 999) / 1e8
    )
    return round(value, 8)


def rank_entries(
    entries: list[Entry],
    fit: Callable[[ModelSource], FitReport],
    speeds: SpeedContext,
    *,
    sort: str = "score",
) -> list[RankedModel]:
    """Every entry fitted (`fit`: the chosen memory, context and launch settings), with its best
    quant, speed, badge and score, in the order `sort` asks (SORT_KEYS)."""
    from llama_wizard.models.choose import best_quant_index

    if sort not in SORT_KEYS:
        raise ValueError(f"sort is one of {', '.join(SORT_KEYS)}, not {sort!r}")
    rows = []
    for entry in entries:
        report = fit(entry.source)
        if not report.quants:
            continue
        best = best_quant_index(report)
        shown = best
        if shown is None:
            shown = min(range(len(report.quants)), key=lambda i: report.quants[i].file_bytes)
        estimate = report.quants[shown]
        gpu_machine = any(not d.host for d in report.devices)
        badge = badge_of(None if best is None else estimate, gpu_machine)
        tier = TIERS[badge]
        speed = (
            None
            if best is None
            else speeds.speed(report, shown, entry.aliases.get(estimate.quant.upper(), []))
        )
        params = model_params(entry.source)
        bits = estimate.file_bytes * 8 / params if params else 0.0
        params_b = params / 1e9
        score = score_of(tier, params_b, bits, speed)
        rows.append(
            RankedModel(entry, report, best, shown, speed, badge, tier, params_b, bits, score)
        )
    return sort_rows(rows, sort)


def sort_rows(rows: list[RankedModel], sort: str = "score") -> list[RankedModel]:
    def name(row: RankedModel) -> tuple[str, str]:
        return row.name.casefold(), row.model

    def tps(row: RankedModel) -> float:
        speed = row.speed
        return speed.generation_tps if speed is not None and speed.generation_tps else 0.0

    if sort == "name":
        return sorted(rows, key=name)
    if sort == "speed":
        # Only what runs has a speed to compare; what does not goes last whatever its figure.
        return sorted(rows, key=lambda r: (r.best is None, -tps(r), -r.score, name(r)))
    if sort == "size":
        return sorted(rows, key=lambda r: (-round(r.params_b, 1), -r.bits, -r.score, name(r)))
    return sorted(rows, key=lambda r: (-r.score, name(r)))


def path_text(model: str) -> str:
    """A local path shortened with ~ for the home directory (a catalogue repo id as it is)."""
    path = Path(model)
    if not path.is_absolute():
        return model
    with contextlib.suppress(ValueError, RuntimeError):
        return "~/" + str(path.relative_to(Path.home()))
    return model
