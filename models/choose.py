"""The `fit` report for one model, and the model/quant/context the plan recommends."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llama_wizard.detect.model import Gpu, Inventory
from llama_wizard.models.catalogue import load_catalogue
from llama_wizard.models.errors import ModelError
from llama_wizard.models.estimate import (
    DEFAULT_CTX,
    MODE_CHOICES,
    MODES,
    Device,
    Estimate,
    EstimateOptions,
    estimate,
    flash_attn_enabled,
    launch_options,
)
from llama_wizard.models.source import ModelSource, from_catalogue, resolve_model

# The llama.cpp backend a GPU vendor's build uses (what `-fa auto` does depends on it).
VENDOR_BACKENDS = {"amd": "rocm", "nvidia": "cuda", "apple": "metal", "intel": "vulkan"}


@dataclass(frozen=True)
class LaunchSettings:
    """What the launch does that the estimate depends on: flash attention (`-fa`) and, for
    llama-server, its slots (`-np`)."""

    flash_attn: str = "auto"  # -fa on|off|auto
    n_parallel: int | None = None  # llama-server -np N; None: llama-completion, one sequence
    # The build's backend (cpu, cuda, rocm, vulkan, metal): what `-fa auto` turns into. None: not
    # known (a --vram figure), judged by CUDA's rules.
    backend: str | None = None
    # The run mode (models/estimate.py MODES), or auto: the best one each quant runs in.
    mode: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODE_CHOICES:
            raise ModelError(
                f"There is no run mode {self.mode!r}.",
                f"Choose one of: {', '.join(MODE_CHOICES)}.",
            )

    def options(self, source: ModelSource, base: EstimateOptions | None = None) -> EstimateOptions:
        """`base` (cache types, ubatch) with this flash attention and these slots."""
        chosen = launch_options(
            flash_attn=flash_attn_enabled(self.flash_attn, source.arch, self.backend),
            n_parallel=self.n_parallel,
        )
        if base is None:
            return chosen
        return replace(
            base,
            flash_attn=chosen.flash_attn,
            n_seq=chosen.n_seq,
            kv_unified=chosen.kv_unified,
            server=chosen.server,
        )

    def launch_args(self) -> list[str]:
        """-fa as asked (nothing for auto, llama.cpp's default)."""
        return [] if self.flash_attn == "auto" else ["-fa", self.flash_attn]

    def server_args(self) -> list[str]:
        """-np for llama-server only: llama-completion would split its context into N."""
        return [] if self.n_parallel is None else ["-np", str(self.n_parallel)]


def backend_for(gpus: list[Gpu]) -> str | None:
    """The backend the GPUs' build would use: rocm for AMD, cuda for NVIDIA... (None: mixed or
    unknown); cpu without a GPU."""
    if not gpus:
        return "cpu"
    backends = {VENDOR_BACKENDS.get(str(g.vendor)) for g in gpus}
    return backends.pop() if len(backends) == 1 else None


def devices_from_gpus(gpus: list[Gpu], memory: str = "auto") -> list[Device]:
    """The GPUs' memory to plan on (for an APU its carve-out plus GTT: Gpu.usable_bytes; on a
    GPU other processes use, what is free now, as `memory` says: detect/memory.py); an
    integrated GPU's memory beyond the carve-out is system RAM, which the RAM check counts."""
    from llama_wizard.detect.memory import planned_bytes

    return [
        Device(
            gpu.name,
            planned_bytes(gpu, memory),
            gpu.index,
            gpu.memory_free_bytes,
            unified=gpu.integrated,
            dedicated_bytes=(gpu.vram_total_bytes or 0) if gpu.integrated else 0,
        )
        for gpu in gpus
        if gpu.usable_bytes > 0
    ]


def devices_for(gpus: list[Gpu], inventory: Inventory, memory: str = "auto") -> list[Device]:
    """The GPUs' memory, or, with no GPU, the system RAM llama.cpp's CPU build runs in."""
    devices = devices_from_gpus(gpus, memory)
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
    settings: LaunchSettings = field(default_factory=LaunchSettings)

    @property
    def memory_bytes(self) -> int:
        return sum(d.memory_bytes for d in self.devices)

    @property
    def memory_free_now_bytes(self) -> int | None:
        values = [d.free_bytes for d in self.devices]
        return None if any(v is None for v in values) else sum(values)  # type: ignore[misc]

    def quant_json(self, index: int, speed: dict[str, Any] | None = None) -> dict[str, Any]:
        """One quant row of `fit --json` (the one place it is built): the estimate, its mode
        (mode, n_gpu_layers, n_cpu_moe, host_bytes), the files, and its `speed` (Speed.to_json:
        prompt and generation tokens/s, predicted or measured), which the caller works out:
        a measurement is this machine's state (tui/measurements.py), not the model's."""
        estimate, candidate = self.quants[index], self.source.candidates[index]
        return {
            **estimate.to_json(),
            "files": candidate.files,
            "bytes_precision": candidate.bytes_precision,
            "sources": candidate.sources,
            "speed": speed,
        }

    def to_json(self, speeds: list[dict[str, Any] | None] | None = None) -> dict[str, Any]:
        """The `fit --json` document; `speeds` (one per quant, aligned with `quants`) fill the
        rows' speed (None: not known)."""
        source = self.source
        if speeds is not None and len(speeds) != len(self.quants):
            raise ValueError("one speed per quant")
        return {
            "model": source.repo or source.name,
            "source": source.to_json(),
            "ctx": self.ctx,
            "cache_type_k": self.options.cache_type_k,
            "cache_type_v": self.options.cache_type_v,
            "n_ubatch": self.options.n_ubatch,
            "flash_attn": self.settings.flash_attn,
            "flash_attn_enabled": self.options.flash_attn,
            "n_parallel": self.settings.n_parallel,
            "program": "llama-server" if self.options.server else "llama-completion",
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
            "mode": self.settings.mode,
            "quants": [
                self.quant_json(i, None if speeds is None else speeds[i])
                for i in range(len(self.quants))
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
    *,
    settings: LaunchSettings | None = None,
) -> FitReport:
    """Every quant of `source` on `devices` at ctx. With `settings`, flash attention and the
    server slots are theirs (`-fa auto` resolved for their backend, or the CPU's when every
    device is host memory); without, `options` say it all."""
    if not devices:
        raise ModelError(
            "There is no memory to fit a model into (no GPU, and the system RAM is not known).",
            "Choose GPUs with --gpu, or say how much memory to plan for with --vram 24GiB.",
        )
    context = default_context(source, ctx)
    opts = options or EstimateOptions()
    cpu = all(d.host for d in devices)
    if settings is not None:
        if settings.backend is None and cpu:
            settings = replace(settings, backend="cpu")
        opts = settings.options(source, opts)
    opts = replace(opts, ctx=context)
    if cpu:
        # The CPU build's memory is the RAM itself: no per-GPU runtime overhead to add.
        opts = replace(opts, overhead_bytes=0)
    mode = settings.mode if settings is not None else "auto"
    estimates = [
        estimate(
            c.arch, c.layout, c.quant, opts, devices, host_memory_bytes=host_memory_bytes, mode=mode
        )
        for c in source.candidates
    ]
    report = FitReport(
        source,
        context,
        devices,
        estimates,
        host_memory_bytes,
        opts,
        settings=settings or _settings_of(opts),
    )
    if opts.server and opts.n_seq > 1 and not opts.kv_unified:
        report.notes.append(
            f"llama-server -np {opts.n_seq}: each of the {opts.n_seq} slots gets "
            f"{opts.n_ctx_seq} tokens of its own KV cache ({context} in all)."
        )
    if not opts.flash_attn and context > 8192:
        report.notes.append(
            "Without flash attention the compute buffer holds an f32 score matrix of n_head x "
            f"context x {opts.n_tokens} values: it grows with the context (-fa on avoids it)."
        )
    if source.arch.context_length and context > source.arch.context_length:
        report.notes.append(
            f"{context} is beyond the model's training context ({source.arch.context_length}); "
            "llama.cpp needs RoPE scaling for that and quality may drop."
        )
    # Memory other processes hold: detect/memory.py's rule, whose notes the flow core adds
    # (WizardSession.memory_notes): the devices here no longer know whose memory it is.
    return report


def _settings_of(opts: EstimateOptions) -> LaunchSettings:
    """The launch settings that options given directly stand for."""
    slots = opts.n_seq if opts.server and not opts.kv_unified else None
    return LaunchSettings("on" if opts.flash_attn else "off", slots)


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
    # -fa as asked (auto: llama.cpp's default) and what the estimate took it to mean.
    flash_attn: str = "auto"
    flash_attn_enabled: bool = True
    # llama-server's slots (-np N) the estimate is for; None: llama-completion.
    n_parallel: int | None = None
    # The run mode (models/estimate.py MODES) and its -ngl (hybrid: llama.cpp's count, the
    # output layer included) and the RAM it needs.
    mode: str = "gpu"
    n_gpu_layers: int | None = None
    host_bytes: int | None = None
    mode_label: str = "GPU"
    # The fit report and quant it was taken from (None: made by hand), so that its speed can be
    # worked out without reading the model again; never compared, shown or saved.
    report: FitReport | None = field(default=None, repr=False, compare=False)
    index: int | None = field(default=None, repr=False, compare=False)

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

    def placement_args(self) -> list[str]:
        """-ngl for the mode: 99 (every layer; moe-offload adds --n-cpu-moe), N for hybrid
        (llama.cpp's count: the output layer and the last N - 1 layers), 0 for cpu."""
        if self.mode == "hybrid" and self.n_gpu_layers is not None:
            return ["-ngl", str(self.n_gpu_layers)]
        if self.mode == "cpu":
            return ["-ngl", "0"]
        return ["-ngl", "99"]

    def launch_args(self) -> list[str]:
        args = [*self.source_args(), "-c", str(self.ctx), *self.placement_args()]
        args += [*LaunchSettings(self.flash_attn).launch_args(), *self.flags]
        if self.n_cpu_moe:
            args += ["--n-cpu-moe", str(self.n_cpu_moe)]
        if self.tensor_split:
            args += ["-ts", ",".join(str(t) for t in self.tensor_split)]
        return args

    def server_args(self) -> list[str]:
        """What llama-server (only) takes beside launch_args: `-np N` when the estimate is for N
        slots (llama-completion would split its context into N sequences)."""
        return LaunchSettings(n_parallel=self.n_parallel).server_args()

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
            "mode": self.mode,
            "mode_label": self.mode_label,
            "n_gpu_layers": self.n_gpu_layers,
            "host_bytes": self.host_bytes,
            "tensor_split": self.tensor_split,
            "launch_args": self.launch_args(),
            "server_args": self.server_args(),
            "flash_attn": self.flash_attn,
            "flash_attn_enabled": self.flash_attn_enabled,
            "n_parallel": self.n_parallel,
            "reasons": self.reasons,
        }


def best_quant_index(report: FitReport, modes: tuple[str, ...] = MODES) -> int | None:
    """The quant to take from a report: the best mode first (all on the GPUs before any part
    in RAM), then within it the largest quant that fits with room to spare, else the largest
    tight one; None when none runs (in `modes`)."""
    for mode in modes:
        for wanted in ("fits", "tight"):
            matching = [
                i for i, e in enumerate(report.quants) if e.verdict == wanted and e.mode == mode
            ]
            if matching:
                return max(matching, key=lambda i: report.quants[i].file_bytes)
    return None


def recommend(
    devices: list[Device],
    model: str | None = None,
    quant: str | None = None,
    ctx: int | None = None,
    host_memory_bytes: int | None = None,
    *,
    settings: LaunchSettings | None = None,
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
    # Without a context asked for: 32768 tokens, then smaller ones before giving up. A model
    # that runs all on the GPUs (at any of these contexts) before one that needs RAM.
    contexts = [ctx] if ctx else [None, 8192, 4096]
    reports: dict[tuple[int, int | None], FitReport] = {}
    found = None
    for mode in MODES:
        for context in contexts:
            for number, source in enumerate(sources):
                key = (number, context)
                if key not in reports:
                    reports[key] = fit_model(
                        source,
                        devices,
                        context,
                        host_memory_bytes=host_memory_bytes,
                        settings=settings,
                    )
                report = reports[key]
                best = best_quant_index(report, (mode,))
                if best is not None:
                    found = (source, report, best)
                    break
            if found:
                break
        if found:
            break
    if found is None:
        return None
    source, report, index = found
    chosen = report.quants[index]
    candidate = source.candidates[index]
    if chosen.mode == "gpu":
        where = f"{chosen.memory_bytes / (1 << 30):.1f} GiB"
    elif chosen.mode == "cpu" and all(d.host for d in report.devices):
        where = "the system RAM"
    else:
        where = f"{_mode_words(chosen)}"
    reasons = [
        f"{candidate.quant} ({chosen.file_bytes / (1 << 30):.1f} GiB) is the largest quant of "
        f"{source.name} that {'fits' if chosen.verdict == 'fits' else 'just fits'} "
        f"{where} at a {report.ctx}-token context"
        + (
            f", leaving {chosen.free_bytes / (1 << 30):.1f} GiB free."
            if chosen.mode == "gpu"
            else "."
        )
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
    *,
    settings: LaunchSettings | None = None,
) -> ModelPlan:
    """The model, quant and context for these devices. A quant or context that was named but
    does not fit is kept, with its verdict "no", so the person sees it and decides; a quant
    that does not exist raises ModelError listing those that do."""
    recommendation = recommend(devices, host_memory_bytes=host_memory_bytes, settings=settings)
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
        devices,
        model=model,
        quant=quant,
        ctx=ctx,
        host_memory_bytes=host_memory_bytes,
        settings=settings,
    )
    if choice is None and model and devices:
        # Nothing of it fits: keep what was named (its smallest quant when none was), marked
        # "no", rather than silently running something else.
        report = fit_model(
            resolve_model(model, quant),
            devices,
            ctx,
            host_memory_bytes=host_memory_bytes,
            settings=settings,
        )
        smallest = min(range(len(report.quants)), key=lambda i: report.quants[i].file_bytes)
        choice = choice_from_report(report, smallest)
    return ModelPlan(choice, recommendation)


def _mode_words(chosen: Estimate) -> str:
    ram = f"{(chosen.host_bytes or 0) / (1 << 30):.1f} GiB of system RAM"
    if chosen.mode == "moe-offload":
        return f"the GPUs with the experts of {chosen.n_cpu_moe} layers in {ram}"
    if chosen.mode == "hybrid":
        return f"the GPUs with -ngl {chosen.n_gpu_layers} and the rest in {ram}"
    return f"the CPU in {ram}"


def choice_from_report(
    report: FitReport, index: int, reasons: list[str] | None = None
) -> ModelChoice:
    """The choice of quant `index` of a fit report (the person picked it, or `recommend` did)."""
    source = report.source
    candidate = source.candidates[index]
    chosen = report.quants[index]
    reasons = list(
        reasons
        or [f"{candidate.quant} chosen by hand: {chosen.verdict} at a {report.ctx}-token context."]
    )
    reasons += estimate_reasons(report)
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
        mode=chosen.mode,
        n_gpu_layers=chosen.n_gpu_layers,
        host_bytes=chosen.host_bytes,
        mode_label=chosen.mode_label,
        flash_attn=report.settings.flash_attn,
        flash_attn_enabled=report.options.flash_attn,
        n_parallel=report.settings.n_parallel,
        reasons=reasons,
        report=report,
        index=index,
    )


def estimate_reasons(report: FitReport) -> list[str]:
    """What the estimate assumed of the launch, when it is not the default."""
    settings, opts = report.settings, report.options
    said = []
    if not opts.flash_attn:
        if settings.flash_attn == "off":
            why = "as asked (-fa off)"
        else:
            backend = settings.backend or "GPU"
            why = f"-fa auto on the {backend} backend has no kernel for this model's head size"
        said.append(
            f"Flash attention off, {why}: the compute buffer grows with the context "
            "(estimated with it)."
        )
    if settings.n_parallel is not None:
        said.append(
            f"Estimated for llama-server -np {settings.n_parallel}: each slot gets "
            f"{opts.n_ctx_seq} tokens of its own KV cache."
        )
    return said
