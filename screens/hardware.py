"""Step 1, hardware: the GPUs, CPU and RAM, warnings with their fixes, and which GPUs to use.

Detection runs in a worker and the screen fills in as each source answers (sysfs at once,
rocminfo or nvidia-smi when they are done)."""

from __future__ import annotations

from textual import on, work
from textual.binding import Binding
from textual.widgets import SelectionList, Static
from textual.widgets.selection_list import Selection

from llama_wizard.detect.model import Gpu, Inventory
from llama_wizard.screens.base import WizardStep
from llama_wizard.tui.format import gpu_architecture, gpu_memory, human_bytes, short_bus_id

SOURCES = ("sysfs", "rocminfo", "nvidia-smi", "host")


def gpu_label(gpu: Gpu) -> str:
    name = gpu.name + (" (iGPU)" if gpu.integrated else "")
    return (
        f"{gpu.index}  {name}  ·  {gpu_architecture(gpu)}  ·  {gpu_memory(gpu)}  ·  "
        f"{gpu.driver or 'no driver'}  ·  {short_bus_id(gpu.pci_bus_id)}"
    )


class HardwareScreen(WizardStep):
    STEP = "hardware"
    BINDINGS = [Binding("r", "redetect", "Detect again")]  # noqa: RUF012

    def compose(self):  # type: ignore[override]
        yield from self.compose_header()
        yield Static("Detecting GPUs…", id="status")
        # The GPU list is mounted when the first source answers: the first paint stays light.
        yield Static("", id="host")
        yield Static("", id="warnings")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        if self.state.inventory is None:
            # After the first paint: the screen is usable at once, detection fills it in.
            self.call_after_refresh(self.run_detection)
        else:
            self.show_inventory(self.state.inventory)

    def action_redetect(self) -> None:
        self.query_one("#status", Static).update("Detecting GPUs…")
        self.run_detection()

    @work(thread=True, exclusive=True, group="detect")
    def run_detection(self) -> None:
        from llama_wizard.detect.inventory import merge, run_sources

        state = self.state
        so_far: list = []

        def on_result(result) -> None:
            # Each answer is shown at once: sysfs lists the GPUs before a slow tool has spoken.
            so_far.append(result)
            partial = merge(state.machine.root, list(so_far))
            names = [r.name for r in so_far]
            self.app.call_from_thread(self.show_partial, partial, names)

        results = run_sources(
            state.machine.root, timeout=state.timeout, env=state.machine.env, on_result=on_result
        )
        inventory = merge(state.machine.root, results)
        inventory.simulated = state.simulated
        state.inventory = inventory
        state.plan = None  # the hardware may have changed: plan again
        self.app.call_from_thread(self.show_inventory, inventory)

    def show_partial(self, inventory: Inventory, answered: list[str]) -> None:
        if self.state.inventory is not None:
            return  # the final answer is already shown
        marks = "  ".join(f"{name} {'✓' if name in answered else '…'}" for name in SOURCES)
        self._fill(inventory)
        self.query_one("#status", Static).update(f"Detecting: {marks}")

    def show_inventory(self, inventory: Inventory) -> None:
        count = len(inventory.gpus)
        self._fill(inventory)
        if count:
            status = (
                f"{count} GPU{'s' if count != 1 else ''} found. Space toggles a GPU; "
                "the recommended ones are selected."
            )
        else:
            status = "No GPU found: llama.cpp will run on the CPU."
        self.query_one("#status", Static).update(status)
        selection = self._selection()
        self._remember(list(selection.selected))
        if count:
            selection.focus()

    def _selection(self) -> SelectionList[int]:
        found = self.query("#gpus")
        if found:
            return found.first(SelectionList)
        selection: SelectionList[int] = SelectionList(id="gpus")
        self.mount(selection, before=self.query_one("#host"))
        return selection

    def _fill(self, inventory: Inventory) -> None:
        from llama_wizard.nix.recommend import default_gpus

        state = self.state
        recommended = {g.index for g in default_gpus(inventory)[0]}
        saved = state.gpus if state.gpus is not None else state.settings.gpus
        valid = {g.index for g in inventory.gpus}
        wanted = set(saved) if saved and set(saved) <= valid else recommended
        selection = self._selection()
        selection.clear_options()
        selection.add_options(
            [Selection(gpu_label(g), g.index, g.index in wanted) for g in inventory.gpus]
        )
        cpu = inventory.cpu
        self.query_one("#host", Static).update(
            f"CPU  {cpu.model} ({cpu.arch}), {cpu.cores} cores / {cpu.threads} threads\n"
            f"RAM  {human_bytes(inventory.memory_available_bytes)} available of "
            f"{human_bytes(inventory.memory_total_bytes)}"
        )
        self.query_one("#warnings", Static).update(
            "\n".join(f"⚠ {w.message}\n  Fix: {w.fix}" for w in inventory.warnings)
        )

    @on(SelectionList.SelectedChanged, "#gpus")
    def gpus_changed(self, event: SelectionList.SelectedChanged) -> None:
        self._remember(list(event.selection_list.selected))

    def _remember(self, selected: list[int]) -> None:
        state = self.state
        if state.inventory is None:
            return
        recommended = sorted(g.index for g in state.recommended_gpus())
        chosen = sorted(selected)
        new = None if chosen == recommended else chosen
        if new != state.gpus:
            state.gpus = new
            state.plan = None
        state.settings.gpus = new

    def can_leave(self) -> str | None:
        if self.state.inventory is None:
            return "Detection is still running."
        return None
