"""Rich renderings of detection results and plans for the terminal (`llama-wizard detect`,
`plan`, plain mode): messages with their `code` spans in bold (tui/format.py says the rule),
bullets with a hanging indent."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from llama_wizard.detect.model import DetectionWarning, Gpu, Inventory
from llama_wizard.tui.format import (
    BULLET,
    code_spans,
    gpu_architecture,
    gpu_free,
    gpu_memory,
    human_bytes,
    plain_text,
    short_bus_id,
)

if TYPE_CHECKING:
    from llama_wizard.nix.recommend import PlanWarning
    from llama_wizard.tui.plan import Plan


class Message:
    """A message whose `code` spans show as the output allows: in bold on a terminal, in
    quotes where there is no styling (a file, a pipe): tui/format.py's rule, decided when it is
    drawn. `lead` goes first (a styled label such as "Fix: ")."""

    def __init__(self, message: str, lead: Text | str = "", code_style: str = "bold") -> None:
        self.message, self.lead, self.code_style = message, lead, code_style

    def text(self, styled: bool = True) -> Text:
        text = Text()
        text.append(self.lead if isinstance(self.lead, Text) else Text(self.lead))
        if not styled:
            text.append(plain_text(self.message))
            return text
        for piece, code in code_spans(self.message):
            text.append(piece, style=self.code_style if code else "")
        return text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.text(styled=options.is_terminal)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.text(styled=options.is_terminal))


def rich_message(message: str, lead: Text | str = "") -> Message:
    return Message(message, lead)


def bullets(items: Sequence[RenderableType | str], bullet: str = BULLET) -> Table:
    """A bulleted list whose wrapped lines start under the text, not under the bullet."""
    grid = Table.grid(padding=0)
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    for entry in items:
        grid.add_row(bullet, Message(entry) if isinstance(entry, str) else entry)
    return grid


def warning_panel(warning: DetectionWarning | PlanWarning) -> Panel:
    """Something to know, and the fix, as a yellow box."""
    return Panel(
        Group(Message(warning.message), Message(warning.fix, Text("Fix: ", style="bold"))),
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
    parts.append(bullets([*build.reasons, *(model.reasons if model is not None else [])]))
    if build.costs:
        parts.append(Text("What this choice costs", style="bold red"))
        parts.append(bullets(list(build.costs)))
    if build.alternatives:
        parts.append(Text("Alternatives", style="bold"))
        parts.append(
            bullets(
                [
                    Message(alt.why_not, Text.assemble((alt.output, "bold"), ": "))
                    for alt in build.alternatives
                ]
            )
        )
    for warning in [*plan.warnings, *build.warnings, *plan.inventory.warnings]:
        parts.append(warning_panel(warning))
    return Group(*parts)


def print_plan(plan: Plan, console: Console | None = None) -> None:
    (console or Console()).print(plan_renderable(plan))


def print_inventory(inventory: Inventory, console: Console | None = None) -> None:
    console = console or Console()
    console.print(inventory_renderable(inventory, width=console.width))
