"""Step 1, hardware: what detection found, filled in by a worker so the screen is usable at once.

For now this is the wizard's only screen; the later steps (build, model, run) are still to come.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from detect.inventory import detect
from detect.model import Inventory
from tui.machine import Machine
from tui.render import gpu_architecture, gpu_free, gpu_memory, human_bytes, short_bus_id


class HardwareScreen(Screen[None]):
    BINDINGS = [  # noqa: RUF012 - Textual's declared class attribute
        Binding("r", "redetect", "Detect again"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, machine: Machine, timeout: float) -> None:
        super().__init__()
        self.machine = machine
        self.timeout = timeout
        self.inventory: Inventory | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        if self.machine.simulated:
            yield Static(f"SIMULATED: {self.machine.simulated}", id="simulated")
        yield Static("Detecting GPUs…", id="status")
        table: DataTable[str] = DataTable(id="gpus", cursor_type="row", zebra_stripes=True)
        table.add_columns("#", "GPU", "Arch", "Memory", "Free", "Driver", "PCI")
        yield table
        yield Static("", id="host")
        yield Static("", id="warnings")
        yield Static(
            "Next steps (build, model, run) are not in this version yet; "
            "`llama-wizard detect --json` gives the full inventory.",
            id="next",
        )
        yield Footer()

    def on_mount(self) -> None:
        self.title = "llama-wizard"
        self.sub_title = "Hardware"
        self.run_detection()

    def action_redetect(self) -> None:
        self.query_one("#status", Static).update("Detecting GPUs…")
        self.run_detection()

    @work(thread=True, exclusive=True, group="detect")
    def run_detection(self) -> None:
        inventory = detect(self.machine.root, timeout=self.timeout, env=self.machine.env)
        inventory.simulated = self.machine.simulated
        self.app.call_from_thread(self.show_inventory, inventory)

    def show_inventory(self, inventory: Inventory) -> None:
        self.inventory = inventory
        table = self.query_one("#gpus", DataTable)
        table.clear()
        for gpu in inventory.gpus:
            name = gpu.name + (" (iGPU)" if gpu.integrated else "")
            table.add_row(
                str(gpu.index),
                name,
                gpu_architecture(gpu),
                gpu_memory(gpu),
                gpu_free(gpu),
                gpu.driver or "none",
                short_bus_id(gpu.pci_bus_id),
            )
        count = len(inventory.gpus)
        status = (
            f"{count} GPU{'s' if count != 1 else ''} found"
            if count
            else ("No GPU found: llama.cpp will run on the CPU.")
        )
        self.query_one("#status", Static).update(status)
        cpu = inventory.cpu
        self.query_one("#host", Static).update(
            f"CPU  {cpu.model} ({cpu.arch}), {cpu.cores} cores / {cpu.threads} threads\n"
            f"RAM  {human_bytes(inventory.memory_available_bytes)} available of "
            f"{human_bytes(inventory.memory_total_bytes)}"
        )
        self.query_one("#warnings", Static).update(
            "\n".join(f"! {w.message}\n  Fix: {w.fix}" for w in inventory.warnings)
        )
