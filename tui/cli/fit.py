"""`llama-wizard fit MODEL`: will this model fit these GPUs, for each quant, and by how much.

Only argparse, json and sys are imported at module level, so registering the subcommand keeps
`llama-wizard --help` fast; models/, detect/ and Rich load when the command runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llama_wizard.tui.cli.options import add_estimate_options, context_size, gpu_list, quant_name
from llama_wizard.tui.cli.verified import VERIFY_HELP

EXIT_USAGE = 2
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `fit` on the top-level parser's subcommands."""
    parser = subparsers.add_parser(
        "fit",
        help="memory estimate for a GGUF file, URL or Hugging Face repo[:quant]",
        description=(
            "Estimate the GPU memory llama.cpp needs for each quant of a model (weights + KV "
            "cache + compute buffers + per-GPU overhead), whether it fits the chosen GPUs, and "
            "the largest context that does. MODEL is a .gguf path, an https:// URL to one, or "
            "owner/repo[:QUANT] (the built-in catalogue first, then the Hugging Face Hub)."
        ),
    )
    parser.add_argument("model", nargs="?", metavar="MODEL", help="path, URL or owner/repo[:QUANT]")
    parser.add_argument(
        "--quant", type=quant_name, metavar="Q", help="only this quant (e.g. Q4_K_M)"
    )
    parser.add_argument(
        "--ctx",
        type=context_size,
        metavar="N",
        help="context size in tokens (default: 32768, or the model's training context if smaller)",
    )
    parser.add_argument(
        "--gpu",
        type=gpu_list,
        metavar="N[,N]",
        help="use these GPUs (indices from `detect`; default: the discrete GPUs the build uses)",
    )
    parser.add_argument(
        "--vram",
        metavar="SIZE[,SIZE]",
        help="plan for GPUs of this size instead of the detected ones (24GiB, 24GB, 32000MiB; "
        "one size per GPU)",
    )
    parser.add_argument(
        "-ctk",
        "--cache-type-k",
        default="f16",
        choices=CACHE_TYPES,
        metavar="TYPE",
        help="KV cache type for K, as llama.cpp's -ctk (default: f16)",
    )
    parser.add_argument(
        "-ctv",
        "--cache-type-v",
        default="f16",
        choices=CACHE_TYPES,
        metavar="TYPE",
        help="KV cache type for V, as llama.cpp's -ctv (default: f16; quantized V needs -fa on)",
    )
    add_estimate_options(parser)
    parser.add_argument(
        "--list", action="store_true", help="list the catalogue's models and quants, then exit"
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="list the GGUF files in llama.cpp's and Hugging Face's caches, then exit",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help=VERIFY_HELP + ", for the quant the table picks (or --quant) at its context",
    )
    parser.add_argument(
        "--llamacpp",
        metavar="BIN_DIR",
        help="with --verify: the llama.cpp bin directory (or llama-fit-params itself) to ask "
        "(default: the planned build's, once built, else llama-fit-params on PATH)",
    )
    parser.add_argument(
        "--flake",
        metavar="REF",
        help="with --verify: the llama.cpp flake whose planned build to ask (as for `plan`)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def _fail(message: str, fix: str, code: int = 1) -> int:
    print(f"llama-wizard: {message}\n{fix}", file=sys.stderr)
    return code


def _write_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def run(args: argparse.Namespace) -> int:
    from llama_wizard.detect.errors import ProfileError
    from llama_wizard.models.errors import ModelError

    try:
        return _run(args)
    except ModelError as error:
        return _fail(error.message, error.fix)
    except ProfileError as error:
        print(f"llama-wizard: {error}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    if args.list:
        return _list_catalogue(args)
    if args.local:
        return _list_local(args)
    if not args.model:
        return _fail(
            "fit needs a MODEL.",
            "Give a .gguf path, an https:// URL or owner/repo[:QUANT]; `llama-wizard fit --list` "
            "shows the catalogue.",
            EXIT_USAGE,
        )
    from llama_wizard.models.choose import LaunchSettings, fit_model
    from llama_wizard.models.estimate import EstimateOptions
    from llama_wizard.models.source import resolve_model

    devices, host_memory, simulated, backend, inventory = _devices(args)
    if devices is None:
        return 1
    source = resolve_model(args.model, args.quant)
    options = EstimateOptions(cache_type_k=args.cache_type_k, cache_type_v=args.cache_type_v)
    settings = LaunchSettings(args.flash_attn or "auto", args.parallel, backend)
    if not settings.options(source).flash_attn and args.cache_type_v not in ("f16", "f32", "bf16"):
        return _fail(
            f"A quantized V cache ({args.cache_type_v}) needs flash attention, and it is off.",
            "Use -fa on (or auto), or -ctv f16.",
            EXIT_USAGE,
        )
    report = fit_model(source, devices, args.ctx, options, host_memory, settings=settings)
    verified = _verify(args, report, inventory) if args.verify else None
    if args.json:
        document = report.to_json()
        if simulated:
            document["simulated"] = simulated
        document["verify"] = None if verified is None else verified.to_json()
        _write_json(document)
    else:
        _print_report(report, simulated)
        if verified is not None:
            from llama_wizard.tui.cli.verified import print_verified

            print_verified(verified, _asked_line(verified))
    return 0


def _devices(
    args: argparse.Namespace,
) -> tuple[list[Any] | None, int | None, str | None, str | None, Any]:
    """(devices, host memory, simulated profile, backend: what -fa auto is judged by, the
    inventory detected or None)."""
    from llama_wizard.models.choose import backend_for, devices_for, devices_from_gpus
    from llama_wizard.models.estimate import Device
    from llama_wizard.models.sizes import parse_size

    if args.vram:
        sizes = [parse_size(part) for part in args.vram.split(",") if part.strip()]
        if not sizes:
            parse_size("")
        names = [f"--vram #{i + 1}" if len(sizes) > 1 else "--vram" for i in range(len(sizes))]
        devices = [Device(name, size) for name, size in zip(names, sizes, strict=True)]
        return devices, None, None, None, None
    from llama_wizard.detect.selection import default_gpus
    from llama_wizard.tui.machine import open_machine

    timeout = getattr(args, "timeout", None) or 10.0
    with open_machine(getattr(args, "root", None), getattr(args, "simulate", None)) as machine:
        inventory = machine.detect(timeout)
        simulated = machine.simulated
    if args.gpu:
        by_index = {g.index: g for g in inventory.gpus}
        unknown = [i for i in args.gpu if i not in by_index]
        if unknown:
            known = ", ".join(str(i) for i in sorted(by_index)) or "none"
            _fail(
                f"There is no GPU {', '.join(map(str, unknown))} here (GPUs: {known}).",
                "Run `llama-wizard detect` to see the GPU indices.",
            )
            return None, None, simulated, None, inventory
        gpus = [by_index[i] for i in args.gpu]
    else:
        gpus, _ = default_gpus(inventory)
    devices = devices_from_gpus(gpus)
    if not devices and args.verify and not gpus and not simulated:
        # llama.cpp is asked on this machine: without a GPU its CPU build fits the model into
        # system RAM, and so does the estimate (as `plan` and the wizard do).
        devices = devices_for(gpus, inventory)
    if not devices:
        _fail(
            "No GPU with known memory was detected, so there is nothing to fit a model into.",
            "Check `llama-wizard detect`, or plan for a GPU that is not here with --vram 24GiB.",
        )
        return None, None, simulated, None, inventory
    host_memory = inventory.memory_available_bytes or None
    return devices, host_memory, simulated, backend_for(gpus), inventory


# --- llama.cpp's own word (--verify) ----------------------------------------------------------


def _verify(args: argparse.Namespace, report: Any, inventory: Any) -> Any:
    """llama.cpp's llama-fit-params on the quant the report picks (or --quant) at its context,
    with the -fa/-np/-ctk/-ctv asked: a Verified (its error when it cannot be asked)."""
    from llama_wizard.models.choose import best_quant_index, choice_from_report
    from llama_wizard.tui.cli.verified import Verified
    from llama_wizard.tui.verify import (
        SimulatedMachine,
        VerifyError,
        compare,
        memory_args,
        verify_fit,
    )

    if getattr(args, "simulate", None):
        return Verified.refused(SimulatedMachine())
    if args.vram:
        return Verified.refused(
            VerifyError(
                "llama.cpp cannot check --vram sizes: it sees this machine's own memory.",
                "Leave out --vram to have llama.cpp check the fit on this machine's GPUs.",
            )
        )
    index = best_quant_index(report)
    if index is None:  # nothing fits by the estimate: ask about the smallest quant
        index = min(range(len(report.quants)), key=lambda i: report.quants[i].file_bytes)
    choice = choice_from_report(report, index)
    extra = list(report.settings.launch_args())  # -fa on|off as asked (auto: llama.cpp's own)
    if report.settings.n_parallel is not None:
        extra += ["-np", str(report.settings.n_parallel)]
    if args.cache_type_k != "f16":
        extra += ["-ctk", args.cache_type_k]
    if args.cache_type_v != "f16":
        extra += ["-ctv", args.cache_type_v]
    extra += memory_args(choice.flags)

    def question() -> Any:
        binary, env = _fit_params(args, inventory)
        verdict = verify_fit(binary, choice, env=env, extra_args=extra)
        return verdict, compare(choice, verdict)

    verified = Verified.ask(question)
    verified.quant = choice.quant
    verified.ctx = choice.ctx
    return verified


def _fit_params(args: argparse.Namespace, inventory: Any) -> tuple[Any, dict[str, str]]:
    """The llama-fit-params to ask and the environment to run it in: --llamacpp, else the
    planned build's bin/ once built, else the one on PATH. The environment is the planned
    launch's (the same GPUs visible, HSA_OVERRIDE_GFX_VERSION, ...) when planning works.
    Raises FitParamsMissing, saying how to get one."""
    import shutil
    from pathlib import Path

    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.session import Overrides, WizardSession
    from llama_wizard.tui.verify import (
        FIT_PARAMS,
        FitParamsMissing,
        binary_of,
        has_fit_params,
        plan_environment,
    )

    with open_machine(getattr(args, "root", None), None) as machine:
        overrides = Overrides(
            flake=args.flake,
            gpus=args.gpu,
            flash_attn=args.flash_attn,
            n_parallel=args.parallel,
        )
        session = WizardSession(machine, None, overrides, timeout=getattr(args, "timeout", 10.0))
        plan = None
        planned = "there is no planned build"
        try:
            if inventory is not None:
                session.set_inventory(inventory)
            plan = session.make_plan()
        except ActionableError as error:
            planned = f"the build could not be planned ({error.message})"
        env = plan_environment(plan, machine.env) if plan is not None else dict(machine.env)
        if args.llamacpp:
            return binary_of(Path(args.llamacpp).expanduser()), env
        if plan is not None:
            bin_dir = Path(plan.build.out_link).absolute() / "bin"
            built = session.build_status().state == "built"
            if built and has_fit_params(bin_dir):
                return bin_dir / FIT_PARAMS, env
            planned = (
                f"the planned build ({plan.build.output}) has none"
                if built
                else f"the planned build ({plan.build.output} of {plan.build.flake}) is not "
                "built yet"
            )
        found = shutil.which(FIT_PARAMS, path=env.get("PATH", ""))
        if found:
            return Path(found), env
    flake = f" --flake {args.flake}" if args.flake else ""
    raise FitParamsMissing(
        f"There is no {FIT_PARAMS} to ask: no --llamacpp was given, {planned}, and there is "
        "none on PATH.",
        f"Build the planned output first (`llama-wizard build{flake}`), or point --llamacpp "
        f"at a llama.cpp bin directory that has {FIT_PARAMS} (llama.cpp from December 2025 "
        "on). Until then the estimate is all there is.",
    )


def _asked_line(verified: Any) -> str | None:
    """Which binary was asked about which quant, above its answer."""
    if verified.verdict is None:
        return None
    binary = verified.verdict.argv[0] if verified.verdict.argv else "llama-fit-params"
    return f"Asked {binary} about {verified.quant} at {verified.ctx} tokens:"


# --- output -------------------------------------------------------------------------------------


def _gib(value: int | None) -> str:
    from llama_wizard.models.sizes import human_bytes

    return human_bytes(value)


def _num(value: int) -> str:
    """GiB with one decimal, for the table (its heading says GiB)."""
    return f"{value / (1 << 30):.1f}"


def _hint(estimate: Any) -> str:
    if estimate.verdict != "no":
        return f"-ts {','.join(map(str, estimate.tensor_split))}" if estimate.tensor_split else ""
    if estimate.n_cpu_moe:
        return f"--n-cpu-moe {estimate.n_cpu_moe}"
    if estimate.n_gpu_layers:
        return f"-ngl {estimate.n_gpu_layers}"
    return ""


def _print_report(report: Any, simulated: str | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    source = report.source
    arch = source.arch
    devices = ", ".join(
        f"{d.name} ({_gib(d.memory_bytes)})"
        if d.index is None
        else f"GPU {d.index} {d.name} ({_gib(d.memory_bytes)})"
        for d in report.devices
    )
    title = source.repo or source.name
    console.print(
        Text(
            f"{title}  ·  {arch.arch}, {arch.n_layer} layers, trained for "
            f"{arch.context_length} tokens",
            style="bold",
        )
    )
    options, settings = report.options, report.settings
    flash = "on" if options.flash_attn else "off"
    if settings.flash_attn == "auto":
        flash += " (-fa auto)"
    program = (
        f"llama-server -np {settings.n_parallel}"
        if settings.n_parallel is not None
        else ("llama-server" if options.server else "llama-completion")
    )
    console.print(
        f"Context {report.ctx} tokens, KV {options.cache_type_k}/{options.cache_type_v}, "
        f"flash attention {flash}, {program}, on {devices}"
        + (f"  [simulated: {simulated}]" if simulated else "")
    )
    from rich import box

    table = Table(title_justify="left", expand=False, box=box.SIMPLE_HEAD, pad_edge=False)
    table.title = "Sizes in GiB"
    for name, justify in (
        ("Quant", "left"),
        ("File", "right"),
        ("Weights", "right"),
        ("KV", "right"),
        ("Other", "right"),
        ("Total", "right"),
        ("Free", "right"),
        ("Fits?", "left"),
        ("Max ctx", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)
    styles = {"fits": "green", "tight": "yellow", "no": "red"}
    for estimate in report.quants:
        table.add_row(
            estimate.quant,
            _num(estimate.file_bytes),
            _num(estimate.weights_bytes),
            _num(estimate.kv_bytes),
            _num(estimate.compute_bytes + estimate.overhead_bytes),
            _num(estimate.total_bytes),
            _num(estimate.free_bytes),
            Text(estimate.verdict, style=styles.get(estimate.verdict, "")),
            str(estimate.max_ctx) if estimate.max_ctx else "-",
        )
    console.print(table)
    for estimate in report.quants:
        hint = _hint(estimate)
        if hint and estimate.verdict == "no":
            console.print(f"{estimate.quant}: does not fit; try {hint}")
        elif hint:
            console.print(f"{estimate.quant}: split over the GPUs with {hint}")
    console.print(
        "Other = compute buffers + 576 MiB per GPU for driver and runtime (without flash "
        "attention the compute buffer grows with the context). "
        "tight = fits with under 20 % (or 1 GiB) free.",
        style="dim",
    )
    if source.flags:
        console.print(f"Flags this model needs: {' '.join(source.flags)}")
    for note in [*source.notes, *report.notes]:
        console.print(f"Note: {note}", style="dim")


def _list_catalogue(args: argparse.Namespace) -> int:
    from llama_wizard.models.catalogue import load_catalogue

    catalogue = load_catalogue()
    if args.json:
        _write_json(
            {
                "models": [
                    {
                        "repo": m.repo,
                        "name": m.name,
                        "size_class": m.size_class,
                        "context_length": m.architecture["context_length"],
                        "flags": m.flags,
                        "quants": [{"quant": q.quant, "bytes": q.bytes} for q in m.quants],
                    }
                    for m in catalogue.models
                ]
            }
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Catalogue", title_justify="left")
    table.add_column("Model")
    table.add_column("Class")
    table.add_column("Quants (GB)")
    for m in catalogue.models:
        quants = ", ".join(f"{q.quant} {q.bytes / 1e9:.1f}" for q in m.quants)
        table.add_row(m.repo, m.size_class, quants)
    Console().print(table)
    return 0


def _list_local(args: argparse.Namespace) -> int:
    from llama_wizard.models.local import find_local_models

    found = find_local_models()
    if args.json:
        _write_json({"models": [m.to_json() for m in found]})
        return 0
    if not found:
        print("No GGUF files in llama.cpp's or Hugging Face's cache.")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Local GGUF files", title_justify="left")
    table.add_column("File")
    table.add_column("Quant")
    table.add_column("Size", justify="right")
    for m in found:
        table.add_row(str(m.path), m.quant or "?", _gib(m.bytes))
    Console().print(table)
    return 0
