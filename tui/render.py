"""Rich renderings of detection results for the terminal (`llama-wizard detect`)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from llama_wizard.detect.model import DetectionWarning, Gpu, Inventory
from llama_wizard.tui.format import (
    gpu_architecture,
    gpu_free,
    gpu_memory,
    human_bytes,
    short_bus_id,
)

if TYPE_CHECKING:
    from llama_wizard.nix.recommend import PlanWarning
    from llama_wizard.tui.plan import Plan


def warning_panel(warning: DetectionWarning | PlanWarning) -> Panel:
    """Something to know, and the fix, as a yellow box."""
    return Panel(
        Text.assemble((warning.message, ""), "\n", ("Fix: ", "bold"), warning.fix),
        title=f"warning: {warning.code}",
        title_align="left",
        border_style="yellow",
    )


def gpu_table(inventory: Inventory, wide: bool = True) -> Table:
    table = Table(title="GPUs", title_justify="left", expand=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("GPU", ratio=1, min_width=18)
    table.add_column("Arch", no_wrap=True)
    table.add_column("Memory", justify="right", no_wrap=True)
    table.add_column("Free", justify="right", no_wrap=True)
    if wide:
        # At 80 columns a driver problem shows as a warning below the table instead.
        table.add_column("Driver", no_wrap=True)
    table.add_column("PCI", no_wrap=True)
    if wide:
        table.add_column("Seen by")
    for gpu in inventory.gpus:
        name = Text(gpu.name)
        if gpu.integrated:
            name.append(" (iGPU)", style="dim")
        row = [
            str(gpu.index),
            name,
            gpu_architecture(gpu),
            gpu_memory(gpu),
            gpu_free(gpu),
        ]
        if wide:
            row.append(gpu.driver or Text("none", style="bold red"))
        row.append(short_bus_id(gpu.pci_bus_id) if not wide else gpu.pci_bus_id or "-")
        if wide:
            row.append(", ".join(gpu.sources))
        table.add_row(*row)
    return table


def inventory_renderable(inventory: Inventory, width: int = 120) -> Group:
    parts: list = []
    if inventory.simulated:
        parts.append(Text(f"SIMULATED machine: {inventory.simulated}", style="bold reverse"))
    if inventory.gpus:
        parts.append(gpu_table(inventory, wide=width >= 110))
    else:
        parts.append(Text("No GPU found: llama.cpp will run on the CPU.", style="bold"))
    cpu = inventory.cpu
    flags = ", ".join(cpu.flags) if cpu.flags else "none of note"
    parts.append(
        Text.assemble(
            ("CPU  ", "bold"),
            f"{cpu.model} ({cpu.arch}), {cpu.cores} cores / {cpu.threads} threads; {flags}\n",
            ("RAM  ", "bold"),
            f"{human_bytes(inventory.memory_available_bytes)} available of "
            f"{human_bytes(inventory.memory_total_bytes)}",
        )
    )
    for warning in inventory.warnings:
        parts.append(warning_panel(warning))
    return Group(*parts)


def _gpu_summary(chosen: list[Gpu]) -> str:
    if not chosen:
        return "none (CPU)"
    names = {gpu.name for gpu in chosen}
    if len(chosen) > 1 and len(names) == 1:
        indices = ", ".join(str(gpu.index) for gpu in chosen)
        return f"{len(chosen)}x {chosen[0].name} (GPU {indices})"
    return ", ".join(f"{gpu.index} {gpu.name}" for gpu in chosen)


def plan_renderable(plan: Plan, banner: bool = True) -> Group:
    """The plan for a person to read; `banner=False` where the screen already says "simulated"."""
    build = plan.build
    parts: list = []
    if banner and plan.inventory.simulated:
        parts.append(Text(f"SIMULATED machine: {plan.inventory.simulated}", style="bold reverse"))
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column()
    what = build.output
    if build.rocm_targets:
        what += f" restricted to {';'.join(build.rocm_targets)}"
    summary.add_row("Build", Text(what, style="bold green"))
    summary.add_row("Flake", f"{build.flake} ({build.system})")
    gpus = {g.index: g for g in plan.inventory.gpus}
    summary.add_row("GPUs", _gpu_summary([gpus[i] for i in build.gpus if i in gpus]))
    summary.add_row("Command", Text(shlex.join(build.build_argv), style="cyan"))
    summary.add_row("Result", build.out_link)
    env_lines = [f"{key}={value}" for key, value in build.env.items()]
    if build.unset_env:
        env_lines.append("unset " + " ".join(build.unset_env))
    summary.add_row("Env", "\n".join(env_lines) or "-")
    model = plan.model
    if model is not None:
        summary.add_row(
            "Model",
            Text.assemble(
                (f"{model.name} {model.quant}", "bold green"),
                f", {model.ctx}-token context: {model.verdict} "
                f"({human_bytes(model.total_bytes)} of {human_bytes(model.memory_bytes)})",
            ),
        )
        summary.add_row("Launch", Text(shlex.join(plan.launch_args()), style="cyan"))
    parts.append(summary)
    parts.append(Text("Why", style="bold"))
    parts.extend(Text(f"  • {reason}") for reason in build.reasons)
    if model is not None:
        parts.extend(Text(f"  • {reason}") for reason in model.reasons)
    if build.costs:
        parts.append(Text("What this choice costs", style="bold red"))
        parts.extend(Text(f"  • {cost}") for cost in build.costs)
    if build.alternatives:
        parts.append(Text("Alternatives", style="bold"))
        parts.extend(
            Text.assemble("  • ", (alt.output, "bold"), f": {alt.why_not}")
            for alt in build.alternatives
        )
    for warning in [*plan.warnings, *build.warnings, *plan.inventory.warnings]:
        parts.append(warning_panel(warning))
    return Group(*parts)


def print_plan(plan: Plan, console: Console | None = None) -> None:
    (console or Console()).print(plan_renderable(plan))


def print_inventory(inventory: Inventory, console: Console | None = None) -> None:
    console = console or Console()
    console.print(inventory_renderable(inventory, width=console.width))
