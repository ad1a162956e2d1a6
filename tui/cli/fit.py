"""`llama-wizard fit MODEL`: will this model fit these GPUs, for each quant, and by how much.

Only argparse, contextlib, json and sys are imported at module level, so registering the
subcommand keeps `llama-wizard --help` fast; models/, detect/ and Rich load when the command
runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from llama_wizard.tui.cli.options import add_estimate_options, context_size, gpu_list, quant_name
from llama_wizard.tui.cli.verified import VERIFY_HELP

EXIT_USAGE = 2
# tui/ranking.py SORT_KEYS, spelled out so that registering the subcommand stays fast.
SORT_KEYS = ("score", "speed", "size", "name")
MODE_NAMES = {"gpu": "GPU", "moe-offload": "MoE→RAM", "hybrid": "hybrid", "cpu": "CPU"}
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
        "--ram",
        metavar="SIZE",
        help="plan for this much available system RAM (what moe-offload, hybrid and cpu modes "
        "put in RAM; default: what this machine, or the --simulate profile, has available)",
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
        "--list",
        action="store_true",
        help="rank the catalogue's models and the GGUF files already on this machine for the "
        "chosen GPUs: each with its best mode and quant, speed, fit badge and score, best first",
    )
    parser.add_argument(
        "--sort",
        choices=SORT_KEYS,
        metavar="KEY",
        help="with --list: order by score (default: all on the GPUs first, then the bigger "
        "model, the higher quant, the faster), speed (generation tokens/s), size (parameters) "
        "or name",
    )
    parser.add_argument(
        "--output",
        metavar="NAME",
        help="the flake output whose measured speeds to show (default: the one the plan "
        "recommends for these GPUs)",
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
    from llama_wizard.tui.cli.options import print_error

    print_error(message, fix)
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
        from llama_wizard.tui.cli.options import print_error

        print_error(error)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    if args.local:
        return _list_local(args)
    if args.sort and not args.list:
        return _fail("--sort orders the ranked list.", "Use it with --list.", EXIT_USAGE)
    if not args.model and not args.list:
        return _fail(
            "fit needs a MODEL.",
            "Give a .gguf path, an https:// URL or owner/repo[:QUANT]; `llama-wizard fit --list` "
            "ranks the catalogue for these GPUs.",
            EXIT_USAGE,
        )
    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.models.choose import fit_model
    from llama_wizard.models.estimate import EstimateOptions
    from llama_wizard.models.source import resolve_model

    options = EstimateOptions(cache_type_k=args.cache_type_k, cache_type_v=args.cache_type_v)
    try:
        with _machine(args) as machine:
            if args.list:
                return _ranked(args, machine, options)
            source = resolve_model(args.model, args.quant)
            settings = machine.settings
            if not settings.options(source).flash_attn and args.cache_type_v not in (
                "f16",
                "f32",
                "bf16",
            ):
                return _fail(
                    f"A quantized V cache ({args.cache_type_v}) needs flash attention, and it is "
                    "off.",
                    "Use -fa on (or auto), or -ctv f16.",
                    EXIT_USAGE,
                )
            report = fit_model(source, machine.devices, args.ctx, options, machine.host_memory,
                               settings=settings)  # fmt: skip
            if machine.session is not None:
                report.notes.extend(machine.session.memory_notes())
            speeds = machine.speed_context().speeds(report)
    except ActionableError as error:
        return _fail(error.message, error.fix)
    verified = _verify(args, report, machine.inventory) if args.verify else None
    if args.json:
        document = report.to_json([None if s is None else s.to_json() for s in speeds])
        if machine.simulated:
            document["simulated"] = machine.simulated
        document["verify"] = None if verified is None else verified.to_json()
        _write_json(document)
    else:
        _print_report(report, machine.simulated, speeds)
        if verified is not None:
            from llama_wizard.tui.cli.verified import print_verified

            print_verified(verified, _asked_line(verified))
    return 0


class _Machine:
    """The memory `fit` fits into and what the speeds need: the session (None with --vram)."""

    def __init__(
        self,
        *,
        devices: list[Any],
        host_memory: int | None,
        simulated: str | None,
        settings: Any,
        inventory: Any,
        session: Any,
    ) -> None:
        self.devices, self.host_memory, self.simulated = devices, host_memory, simulated
        self.settings, self.inventory, self.session = settings, inventory, session

    def speed_context(self) -> Any:
        from llama_wizard.tui.ranking import SpeedContext

        if self.session is None:
            return SpeedContext(None, [], "", None)
        return self.session.speed_context()


@contextlib.contextmanager
def _machine(args: argparse.Namespace) -> Iterator[_Machine]:
    """The devices, RAM, launch settings and the flow core's session for the machine `fit`
    plans for, open while the command runs (a simulated profile lives in a directory that goes
    when it is closed)."""
    from llama_wizard.models.choose import LaunchSettings
    from llama_wizard.models.estimate import Device
    from llama_wizard.models.sizes import parse_size
    from llama_wizard.tui.cli.options import overrides_from
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.session import WizardSession

    ram = parse_size(args.ram) if args.ram else None
    simulate = getattr(args, "simulate", None)
    if args.vram:
        sizes = [parse_size(part) for part in args.vram.split(",") if part.strip()]
        if not sizes:
            parse_size("")
        names = [f"--vram #{i + 1}" if len(sizes) > 1 else "--vram" for i in range(len(sizes))]
        devices = [Device(name, size) for name, size in zip(names, sizes, strict=True)]
        if ram is None:
            from llama_wizard.detect.host import read_memory

            with open_machine(getattr(args, "root", None), simulate) as machine:
                ram = read_memory(machine.root)[1] or None
        mode = args.mode or "auto"
        settings = LaunchSettings(args.flash_attn or "auto", args.parallel, None, mode)
        yield _Machine(devices=devices, host_memory=ram, simulated=simulate, settings=settings,
                       inventory=None, session=None)  # fmt: skip
        return
    # fit's MODEL, quant and context are its own question, not the session's choices.
    overrides = overrides_from(args, model=None, quant=None, ctx=None)
    timeout = getattr(args, "timeout", None) or 10.0
    with open_machine(getattr(args, "root", None), simulate) as machine:
        session = WizardSession(machine, None, overrides, timeout=timeout)
        inventory = session.detect()
        devices = session.devices()
        settings = session.launch_settings()
        host_memory = ram if ram is not None else session.host_memory()
        if ram is not None and devices and all(d.host for d in devices):
            devices = [Device(devices[0].name, ram, None, None, host=True)]
        if not devices:
            from llama_wizard.detect.errors import ActionableError

            raise ActionableError(
                "No GPU with known memory was detected, and the available system RAM is not "
                "known, so there is nothing to fit a model into.",
                "Check `llama-wizard detect`, or say what to plan for: --vram 24GiB, --ram 32GiB.",
            )
        yield _Machine(devices=devices, host_memory=host_memory, simulated=simulate,
                       settings=settings, inventory=inventory, session=session)  # fmt: skip


# --- the ranked list (--list) -------------------------------------------------------------------


def _ranked(args: argparse.Namespace, machine: _Machine, options: Any) -> int:
    """The catalogue and the cached GGUF files, ranked for the machine's memory (tui/ranking.py,
    as the wizard's Model step and plain mode rank them)."""
    from llama_wizard.models.choose import fit_model
    from llama_wizard.tui.ranking import catalogue_entries, local_entries, rank_entries

    entries = catalogue_entries()
    notes: list[str] = []
    entries += local_entries(entries, notes)

    def fit(source: Any) -> Any:
        return fit_model(source, machine.devices, args.ctx, options, machine.host_memory,
                         settings=machine.settings)  # fmt: skip

    sort = args.sort or "score"
    rows = rank_entries(entries, fit, machine.speed_context(), sort=sort)
    if machine.session is not None:
        notes += machine.session.take_notes()
    if args.json:
        document: dict[str, Any] = {
            "sort": sort,
            "ctx": args.ctx,
            "mode": machine.settings.mode,
            "devices": [
                {"index": d.index, "name": d.name, "memory_bytes": d.memory_bytes}
                for d in machine.devices
            ],
            "host_memory_bytes": machine.host_memory,
            "models": [row.to_json(rank) for rank, row in enumerate(rows, start=1)],
            "notes": notes,
        }
        if machine.simulated:
            document["simulated"] = machine.simulated
        _write_json(document)
        return 0
    _print_ranked(rows, machine, args.ctx, sort, notes)
    return 0


def _print_ranked(
    rows: list[Any], machine: _Machine, ctx: int | None, sort: str, notes: list[str]
) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from llama_wizard.tui.ranking import BADGE_LEGEND, BADGE_TEXT, SPEED_LEGEND, path_text

    console = Console()
    where = _devices_text(machine.devices, machine.host_memory)
    context = f"{ctx} tokens" if ctx else "each model's default context (32768 or less)"
    console.print(
        Text(f"Best for {where}, at {context}", style="bold")
        + Text(f"  [simulated: {machine.simulated}]" if machine.simulated else "")
    )
    styles = {"fits": "green", "tight": "yellow", "ram": "cyan", "cpu": "magenta", "no": "red"}
    cells = [
        [
            path_text(row.model),
            row.quant if row.best is not None else "-",
            row.estimate.mode_label if row.best is not None else "-",
            BADGE_TEXT[row.badge],
            _speed_cell(row.speed) if row.best is not None else "-",
        ]
        for row in rows
    ]
    titles = ["Model", "Quant", "Mode", "Fit", "tok/s"]
    catalogue = [len(r.model) for r in rows if r.entry.kind == "catalogue"]
    # The repo id is what `fit` and --model take: never cut or wrapped (a longer local path
    # folds); the other columns wrap at their spaces when 80 columns are not enough.
    widths = _column_widths(titles, cells, console.width, fixed={0: max(catalogue, default=5)})
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        show_edge=False,
        title=f"Sorted by {sort}",
        title_justify="left",
    )
    for title, width in zip(titles, widths, strict=True):
        table.add_column(title, width=width, overflow="fold",
                         justify="right" if title == "tok/s" else "left")  # fmt: skip
    for row, row_cells in zip(rows, cells, strict=True):
        styled: list[Any] = list(row_cells)
        styled[3] = Text(row_cells[3], style=styles.get(row.badge, ""))
        table.add_row(*styled)
    console.print(table)
    console.print(
        f"Fit: {BADGE_LEGEND}. {SPEED_LEGEND}"
        + (" (predicted for the simulated hardware)" if machine.simulated else "")
        + ". Order: all on the GPUs first, then the bigger model, the higher quant, the "
        "faster (--sort speed|size|name; --json has the score). llama-wizard fit MODEL "
        "shows every quant of one.",
        style="dim",
    )
    for note in notes:
        console.print(f"Note: {note}", style="dim")


def _column_widths(
    titles: list[str], cells: list[list[str]], total: int, fixed: dict[int, int]
) -> list[int]:
    """Each column as wide as its widest cell; when the table (two spaces between columns)
    is wider than `total`, the widest of the columns not `fixed` gives up a character at a
    time, down to its longest word."""
    columns = list(zip(titles, *cells, strict=True)) if cells else [(t,) for t in titles]
    widths = [max(len(text) for text in column) for column in columns]
    floors = [
        max(len(word) for text in column for word in text.split() or [""]) for column in columns
    ]
    for index, width in fixed.items():
        widths[index] = floors[index] = max(width, len(titles[index]))
    gaps = 2 * (len(titles) - 1)
    while sum(widths) + gaps > total:
        shrinkable = [i for i in range(len(widths)) if i not in fixed and widths[i] > floors[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i] - floors[i])
        widths[widest] -= 1
    return widths


def _speed_cell(speed: Any) -> str:
    from llama_wizard.tui.ranking import speed_text

    return speed_text(speed)


def _devices_text(devices: list[Any], host_memory: int | None) -> str:
    text = ", ".join(
        f"{d.name} ({_gib(d.memory_bytes)})"
        if d.index is None
        else f"GPU {d.index} {d.name} ({_gib(d.memory_bytes)})"
        for d in devices
    )
    if host_memory and not all(d.host for d in devices):
        text += f", system RAM ({_gib(host_memory)} available)"
    return text


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
    from llama_wizard.tui.cli.options import overrides_from
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.session import WizardSession
    from llama_wizard.tui.verify import (
        FIT_PARAMS,
        FitParamsMissing,
        binary_of,
        has_fit_params,
        plan_environment,
    )

    with open_machine(getattr(args, "root", None), None) as machine:
        overrides = overrides_from(args, model=None, quant=None, ctx=None)
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


def _hint(estimate: Any, report: Any) -> str:
    """The llama.cpp flags of a quant's mode beyond -ngl 99 (the tensor split over GPUs too)."""
    if estimate.verdict == "no":
        return ""
    flags = []
    if estimate.mode == "moe-offload":
        flags += ["--n-cpu-moe", str(estimate.n_cpu_moe)]
    elif estimate.mode == "hybrid":
        flags += ["-ngl", str(estimate.n_gpu_layers)]
    elif estimate.mode == "cpu" and any(not d.host for d in report.devices):
        flags += ["-ngl", "0"]
    if estimate.tensor_split and estimate.mode != "cpu":
        flags += ["-ts", ",".join(map(str, estimate.tensor_split))]
    return " ".join(flags)


def _print_report(report: Any, simulated: str | None, speeds: list[Any] | None = None) -> None:
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
    if report.host_memory_bytes and not all(d.host for d in report.devices):
        devices += f", system RAM ({_gib(report.host_memory_bytes)} available)"
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

    # Two spaces between columns (one of padding, the box's own) so that they fit 80 columns.
    table = Table(
        title_justify="left",
        expand=False,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )
    table.title = "Sizes in GiB"
    cpu_only = all(d.host for d in report.devices)
    for name, justify in (
        ("Quant", "left"),
        ("File", "right"),
        ("Weights", "right"),
        ("KV", "right"),
        ("Total", "right"),
        ("Free", "right"),
        ("RAM", "right"),
        ("Mode", "left"),
        ("Fit", "left"),
        ("Max ctx", "right"),
        ("tok/s", "right"),
    ):
        if name == "RAM" and cpu_only:
            continue  # the device is the RAM: Total is what it needs
        # The Max ctx heading may wrap (at 80 columns); the figures never do.
        table.add_column(name, justify=justify, no_wrap=name != "Max ctx", overflow="fold")
    styles = {"fits": "green", "tight": "yellow", "no": "red"}
    from llama_wizard.tui.ranking import SPEED_LEGEND, speed_text

    speeds = speeds or [None] * len(report.quants)
    for estimate, speed in zip(report.quants, speeds, strict=True):
        cells: list[Any] = [
            estimate.quant,
            _num(estimate.file_bytes),
            _num(estimate.weights_bytes),
            _num(estimate.kv_bytes),
            _num(estimate.total_bytes),
            _num(estimate.free_bytes),
        ]
        if not cpu_only:
            cells.append(_num(estimate.host_bytes or 0))
        cells += [
            # The mode's name: its N is in the line of flags under the table (80 columns).
            MODE_NAMES.get(estimate.mode, estimate.mode),
            Text(estimate.verdict, style=styles.get(estimate.verdict, "")),
            str(estimate.max_ctx) if estimate.max_ctx else "-",
            speed_text(speed) if estimate.verdict != "no" else "-",
        ]
        table.add_row(*cells)
    console.print(table)
    from llama_wizard.models.choose import best_quant_index

    best = best_quant_index(report)
    chosen = speeds[best] if best is not None else None
    if chosen is not None and chosen.generation_tps is not None:
        prompt = f"{chosen.prompt_tps:.0f} prompt, " if chosen.prompt_tps else ""
        console.print(
            f"Speed of {report.quants[best].quant} ({chosen.source}): {prompt}"
            f"{chosen.generation_tps:.1f} generated tokens/s; {chosen.basis}.",
            style="dim",
        )
    for estimate in report.quants:
        hint = _hint(estimate, report)
        if hint:
            console.print(f"{estimate.quant}: {estimate.mode_label} with {hint}")
    where = "system RAM" if cpu_only else "GPU memory"
    console.print(
        f"Weights, KV, Total and Free are in {where}"
        + ("" if cpu_only else "; RAM = the system RAM the mode needs")
        + ". Total - Weights - KV = compute buffers"
        + ("" if cpu_only else " + 576 MiB per GPU for driver and runtime")
        + " (without flash attention the compute buffer grows with the context). "
        "Mode: GPU (all on the GPUs), MoE→RAM N (--n-cpu-moe N), hybrid N/M (-ngl N), CPU. "
        "tight = fits with under 20 % (or 1 GiB) free; 2 GiB or 10 % of the RAM stays free. "
        f"{SPEED_LEGEND}" + (" (predicted for the simulated hardware)" if simulated else "") + ".",
        style="dim",
    )
    if source.flags:
        console.print(f"Flags this model needs: {' '.join(source.flags)}")
    for note in [*source.notes, *report.notes]:
        console.print(f"Note: {note}", style="dim")


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
