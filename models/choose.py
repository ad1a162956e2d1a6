"""The `fit` report for one model, and the model/quant/context the plan recommends."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_wizard.detect.model import Gpu, Inventory
from llama_wizard.models.catalogue import load_catalogue
from llama_wizard.models.errors import ModelError
from llama_wizard.models.estimate import DEFAULT_CTX, Device, Estimate, EstimateOptions, estimate
from llama_wizard.models.source import ModelSource, from_catalogue, resolve_model


def gpu_memory(gpu: Gpu) -> int:
    """What a GPU offers a model: memory_usable_bytes, what llama.cpp can allocate there (for an
    APU the carve-out plus GTT), not what happens to be free now. The wizard plans what to run on
    the machine; a process holding memory now (an old llama-server, a desktop) is reported, not
    planned around."""
    return gpu.memory_usable_bytes or gpu.vram_total_bytes or 0


def devices_from_gpus(gpus: list[Gpu]) -> list[Device]:
    return [
        Device(gpu.name, gpu_memory(gpu), gpu.index, gpu.memory_free_bytes)
        for gpu in gpus
        if gpu_memory(gpu) > 0
    ]


def devices_for(gpus: list[Gpu], inventory: Inventory) -> list[Device]:
    """The GPUs' memory, or, with no GPU, the system RAM llama.cpp's CPU build runs in."""
    devices = devices_from_gpus(gpus)
    if devices or not inventory.memory_available_bytes:
        return devices
    return [Device("system RAM (CPU)", inventory.memory_available_bytes, None, None)]


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
    opts = EstimateOptions(**{**opts.__dict__, "ctx": context})
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


_RANK = {"fits": 2, "tight": 1, "no": 0}


def _best(report: FitReport) -> tuple[int, Estimate] | None:
    """The largest quant that fits (not tight); failing that, the largest tight one."""
    for wanted in ("fits", "tight"):
        matching = [(i, e) for i, e in enumerate(report.quants) if e.verdict == wanted]
        if matching:
            return max(matching, key=lambda pair: pair[1].file_bytes)
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
        sources = [
            from_catalogue(m, m.repo, quant if quant and m.quant(quant) else None)
            for repo in catalogue.recommended
            if (m := catalogue.find(repo)) is not None
        ]
    # Without a context asked for: 32768 tokens, then smaller ones before giving up.
    contexts = [ctx] if ctx else [None, 8192, 4096]
    found = None
    for context in contexts:
        for source in sources:
            report = fit_model(source, devices, context, host_memory_bytes=host_memory_bytes)
            best = _best(report)
            if best is not None:
                found = (source, report, best)
                break
        if found:
            break
    if found is None:
        return None
    source, report, best = found
    index, chosen = best
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


def recommend_for_inventory(
    inventory: Inventory,
    gpus: list[Gpu] | None = None,
    model: str | None = None,
    quant: str | None = None,
    ctx: int | None = None,
) -> ModelChoice | None:
    """`recommend` for detected hardware: the given GPUs (the plan's choice), else the default
    ones (discrete GPUs of one vendor, as the build choice picks them)."""
    if gpus is None:
        from llama_wizard.nix.recommend import default_gpus

        gpus, _ = default_gpus(inventory)
    return recommend(
        devices_for(gpus, inventory),
        model=model,
        quant=quant,
        ctx=ctx,
        host_memory_bytes=inventory.memory_available_bytes or None,
    )
