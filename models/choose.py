"""The `fit` report for one model, and the model/quant/context the plan recommends."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llama_wizard.detect.model import Gpu, Inventory
from llama_wizard.models.catalogue import load_catalogue
from llama_wizard.models.errors import ModelError
from llama_wizard.models.estimate import DEFAULT_CTX, Device, Estimate, EstimateOptions, estimate
from llama_wizard.models.source import ModelSource, from_catalogue, resolve_model


def devices_from_gpus(gpus: list[Gpu]) -> list[Device]:
    return [
        Device(gpu.name, gpu.usable_bytes, gpu.index, gpu.memory_free_bytes)
        for gpu in gpus
        if gpu.usable_bytes > 0
    ]


def devices_for(gpus: list[Gpu], inventory: Inventory) -> list[Device]:
    """The GPUs' memory, or, with no GPU, the system RAM llama.cpp's CPU build runs in."""
    devices = devices_from_gpus(gpus)
    if devices or not inventory.memory_available_bytes:
        return devices
    return [Device("system RAM (CPU)", inventory.memory_available_bytes, None, None, host=True)]


def default_context(source: ModelSource, ctx: int | None) -> int:
    if ctx:
        return ctx
    limit = source.arch.context_length
    return min(DEFAULT_CTX, limit) if limit else DEFAULT_CTX


@dataclass
class FitReport:
    source: ModelSource
    ctx: int
    devices: list[Device]
    quants: list[Estimate]
    host_memory_bytes: int | None = None
    options: EstimateOptions = field(default_factory=EstimateOptions)
    notes: list[str] = field(default_factory=list)

    @property
    def memory_bytes(self) -> int:
        return sum(d.memory_bytes for d in self.devices)

    @property
    def memory_free_now_bytes(self) -> int | None:
        values = [d.free_bytes for d in self.devices]
        return None if any(v is None for v in values) else sum(values)  # type: ignore[misc]

    def to_json(self) -> dict[str, Any]:
        source = self.source
        return {
            "model": source.repo or source.name,
            "source": source.to_json(),
            "ctx": self.ctx,
            "cache_type_k": self.options.cache_type_k,
            "cache_type_v": self.options.cache_type_v,
            "n_ubatch": self.options.n_ubatch,
            "memory_bytes": self.memory_bytes,
            "memory_free_now_bytes": self.memory_free_now_bytes,
            "host_memory_bytes": self.host_memory_bytes,
            "devices": [
                {
                    "index": d.index,
                    "name": d.name,
                    "memory_bytes": d.memory_bytes,
                    "free_now_bytes": d.free_bytes,
                }
                for d in self.devices
            ],
            "quants": [
                {
                    **e.to_json(),
                    "files": c.files,
                    "bytes_precision": c.bytes_precision,
                    "sources": c.sources,
                }
                for e, c in zip(self.quants, source.candidates, strict=True)
            ],
            "flags": source.flags,
            "notes": [*source.notes, *self.notes],
            "fetch": None
            if source.fetch is None
            else {"requests": source.fetch.requests, "bytes": source.fetch.bytes_received},
        }


def fit_model(
    source: ModelSource,
    devices: list[Device],
    ctx: int | None = None,
    options: EstimateOptions | None = None,
    host_memory_bytes: int | None = None,
) -> FitReport:
    if not devices:
        raise ModelError(
            "There is no GPU memory to fit a model into (no GPU detected or chosen).",
            "Choose GPUs with --gpu, or say how much memory to plan for with --vram 24GiB.",
        )
    context = default_context(source, ctx)
    opts = options or EstimateOptions()
    opts = replace(opts, ctx=context)
    if all(d.host for d in devices):
        # The CPU build's memory is the RAM itself: no per-GPU runtime overhead to add.
        opts = replace(opts, overhead_bytes=0)
    estimates = [
        estimate(c.arch, c.layout, c.quant, opts, devices, host_memory_bytes=host_memory_bytes)
        for c in source.candidates
    ]
    report = FitReport(source, context, devices, estimates, host_memory_bytes, opts)
    if source.arch.context_length and context > source.arch.context_length:
        report.notes.append(
            f"{context} is beyond the model's training context ({source.arch.context_length}); "
            "llama.cpp needs RoPE scaling for that and quality may drop."
        )
    free_now = report.memory_free_now_bytes
    if free_now is not None:
        busy = report.memory_bytes - free_now
        best = next((e for e in estimates if e.verdict != "no"), None)
        if best and busy > best.free_bytes:
            report.notes.append(
                f"Other processes hold {busy / (1 << 30):.1f} GiB of this GPU memory now; with "
                "them running, even the quants marked as fitting may not load."
            )
    return report


# --- the recommendation for `plan` ---------------------------------------------------------------


@dataclass
class ModelChoice:
    repo: str
    name: str
    quant: str
    files: list[str]
    ctx: int
    max_ctx: int | None
    verdict: str
    file_bytes: int
    total_bytes: int
    memory_bytes: int
    flags: list[str]
    n_cpu_moe: int | None = None
    tensor_split: list[int] | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def hf_arg(self) -> str:
        """What llama-server/llama-completion take for -hf."""
        return f"{self.repo}:{self.quant}"

    def source_args(self) -> list[str]:
        """How llama.cpp is told the model: -hf repo:QUANT for a Hub repo, -m for a local file,
        -mu for a URL."""
        first = self.files[0] if self.files else self.repo
        if self.repo.startswith(("http://", "https://")):
            return ["-mu", first if first.startswith(("http://", "https://")) else self.repo]
        local = Path(first).expanduser()
        if self.repo.lower().endswith(".gguf") or (local.is_absolute() and local.exists()):
            return ["-m", str(local.resolve() if local.exists() else local)]
        return ["-hf", self.hf_arg]

    def launch_args(self) -> list[str]:
        args = [*self.source_args(), "-c", str(self.ctx), "-ngl", "99", *self.flags]
        if self.n_cpu_moe:
            args += ["--n-cpu-moe", str(self.n_cpu_moe)]
        if self.tensor_split:
            args += ["-ts", ",".join(str(t) for t in self.tensor_split)]
        return args

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.repo,
            "name": self.name,
            "quant": self.quant,
            "hf": self.hf_arg,
            "files": self.files,
            "ctx": self.ctx,
            "max_ctx": self.max_ctx,
            "verdict": self.verdict,
            "file_bytes": self.file_bytes,
            "total_bytes": self.total_bytes,
            "memory_bytes": self.memory_bytes,
            "flags": self.flags,
            "n_cpu_moe": self.n_cpu_moe,
            "tensor_split": self.tensor_split,
            "launch_args": self.launch_args(),
            "reasons": self.reasons,
        }


def best_quant_index(report: FitReport) -> int | None:
    """The quant to take from a report: the largest that fits with room to spare, else the
    largest tight one; None when none fits."""
    for wanted in ("fits", "tight"):
        matching = [i for i, e in enumerate(report.quants) if e.verdict == wanted]
        if matching:
            return max(matching, key=lambda i: report.quants[i].file_bytes)
    return None


def recommend(
    devices: list[Device],
    model: str | None = None,
    quant: str | None = None,
    ctx: int | None = None,
    host_memory_bytes: int | None = None,
) -> ModelChoice | None:
    """The model, quant and context to run on these devices: the named model (any spec
    resolve_model takes), else the first model of the catalogue's `recommended` list with a quant
    that fits; the largest quant that fits with room to spare (else a tight one); the context
    asked for, else 32768 (or the training context if smaller). None when nothing fits."""
    if not devices:
        return None
    catalogue = load_catalogue()
    if model:
        sources = [resolve_model(model, quant)]
    else:
        # A quant asked for without a model: only the models that have it, with just it.
        sources = [
            from_catalogue(m, m.repo, quant)
            for repo in catalogue.recommended
            if (m := catalogue.find(repo)) is not None and (not quant or m.quant(quant))
        ]
    # Without a context asked for: 32768 tokens, then smaller ones before giving up.
    contexts = [ctx] if ctx else [None, 8192, 4096]
    found = None
    for context in contexts:
        for source in sources:
            report = fit_model(source, devices, context, host_memory_bytes=host_memory_bytes)
            best = best_quant_index(report)
            if best is not None:
                found = (source, report, best)
                break
        if found:
            break
    if found is None:
        return None
    source, report, index = found
    chosen = report.quants[index]
    candidate = source.candidates[index]
    reasons = [
        f"{candidate.quant} ({chosen.file_bytes / 1e9:.1f} GB) is the largest quant of "
        f"{source.name} that {'fits' if chosen.verdict == 'fits' else 'just fits'} "
        f"{chosen.memory_bytes / (1 << 30):.1f} GiB at a {report.ctx}-token context, "
        f"leaving {chosen.free_bytes / (1 << 30):.1f} GiB free."
    ]
    if chosen.max_ctx:
        reasons.append(f"The largest context that fits with it is {chosen.max_ctx} tokens.")
    return choice_from_report(report, index, reasons)


@dataclass
class ModelPlan:
    """The model the plan runs (`choice`) and the one it would recommend without any choice
    (`recommendation`): a choice equal to it is saved as "the recommendation"."""

    choice: ModelChoice | None
    recommendation: ModelChoice | None


def plan_model(
    devices: list[Device],
    model: str | None = None,
    quant: str | None = None,
    ctx: int | None = None,
    host_memory_bytes: int | None = None,
) -> ModelPlan:
    """The model, quant and context for these devices. A quant or context that was named but
    does not fit is kept, with its verdict "no", so the person sees it and decides; a quant
    that does not exist raises ModelError listing those that do."""
    recommendation = recommend(devices, host_memory_bytes=host_memory_bytes)
    if not (model or quant or ctx):
        return ModelPlan(recommendation, recommendation)
    if quant and not model:
        catalogue = load_catalogue()
        known = sorted({q.quant for m in catalogue.models for q in m.quants})
        wanted = quant.upper()
        if wanted not in {k.upper() for k in known}:
            raise ModelError(
                f"No model of the catalogue has a quant called {quant}.",
                f"Choose one of: {', '.join(known)}; or name a model with --model.",
            )
    choice = recommend(
        devices, model=model, quant=quant, ctx=ctx, host_memory_bytes=host_memory_bytes
    )
    if choice is None and model and devices:
        # Nothing of it fits: keep what was named (its smallest quant when none was), marked
        # "no", rather than silently running something else.
        report = fit_model(
            resolve_model(model, quant), devices, ctx, host_memory_bytes=host_memory_bytes
        )
        smallest = min(range(len(report.quants)), key=lambda i: report.quants[i].file_bytes)
        choice = choice_from_report(report, smallest)
    return ModelPlan(choice, recommendation)


def choice_from_report(
    report: FitReport, index: int, reasons: list[str] | None = None
) -> ModelChoice:
    """The choice of quant `index` of a fit report (the person picked it, or `recommend` did)."""
    source = report.source
    candidate = source.candidates[index]
    chosen = report.quants[index]
    return ModelChoice(
        repo=source.repo or source.spec,
        name=source.name,
        quant=candidate.quant,
        files=candidate.files,
        ctx=report.ctx,
        max_ctx=chosen.max_ctx,
        verdict=chosen.verdict,
        file_bytes=chosen.file_bytes,
        total_bytes=chosen.total_bytes,
        memory_bytes=chosen.memory_bytes,
        flags=source.flags,
        n_cpu_moe=chosen.n_cpu_moe,
        tensor_split=chosen.tensor_split,
        reasons=reasons
        or [f"{candidate.quant} chosen by hand: {chosen.verdict} at a {report.ctx}-token context."],
    )
