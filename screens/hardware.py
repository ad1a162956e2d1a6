"""Step 1, hardware: the GPUs, CPU and RAM, warnings with their fixes, and which GPUs to use.

Detection runs in a worker and the screen fills in as each source answers (sysfs at once,
rocminfo or nvidia-smi when they are done); the final inventory is handed to the session on
the UI thread."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.binding import Binding
from textual.message import Message
from textual.widgets import SelectionList, Static

from llama_wizard.detect.errors import ActionableError
from llama_wizard.detect.memory import users_text
from llama_wizard.detect.model import Gpu, Inventory
from llama_wizard.screens.base import WizardStep, error_text, message_markup
from llama_wizard.tui.format import gpu_architecture, gpu_memory, human_bytes, plain_text
from llama_wizard.tui.widgets import GlyphSelectionList, LinesSelection

SOURCES = ("sysfs", "rocminfo", "nvidia-smi", "host")


MASKED = "masked: the build leaves it out"


def gpu_label(gpu: Gpu, masked: bool = False) -> str:
    """Two lines, so that nothing is cut at 80 columns: the name, then the architecture,
    memory, driver and full PCI address (and whether the build leaves the GPU out)."""
    name = gpu.name + (" (iGPU)" if gpu.integrated else "")
    details = [gpu_architecture(gpu), gpu_memory(gpu), gpu.driver or "no driver",
               f"PCI {gpu.pci_bus_id or '?'}"]  # fmt: skip
    lines = [f"{gpu.index}  {name}", "   " + "  ·  ".join(details)]
    users = users_text(gpu)
    if users:
        lines.append(f"   in use by {users}")
    return "\n".join([*lines, *([f"   {MASKED}"] if masked else [])])


@dataclass
class PartialInventory(Message):
    """What is known while detection goes on, and the sources that have answered."""

    inventory: Inventory
    answered: list[str]


@dataclass
class Detected(Message):
    inventory: Inventory


class HardwareScreen(WizardStep):
    STEP = "hardware"
    BINDINGS = [  # noqa: RUF012
        Binding("r", "redetect", "Detect again"),
        Binding("a", "add_servers", "Add servers"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.detecting = False

    def compose(self):  # type: ignore[override]
        yield from self.compose_header()
        yield Static("Detecting GPUs…", id="status", markup=False)
        # The GPU list is mounted when the first source answers: the first paint stays light.
        yield Static("", id="host", markup=False)
        yield Static("", id="warnings", markup=False)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        inventory = self.session.inventory
        if inventory is None:
            # After the first paint: the screen is usable at once, detection fills it in.
            self.detecting = True
            self.call_after_refresh(self.run_detection)
        else:
            self.show_inventory(inventory)

    def action_redetect(self) -> None:
        if self.detecting:
            return
        self.detecting = True
        self.query_one("#status", Static).update("Detecting GPUs…")
        self.run_detection()

    def action_add_servers(self) -> None:
        # One model across this machine and others (llama.cpp RPC): a screen over this step.
        from llama_wizard.screens.cluster import ClusterScreen

        self.app.push_screen(ClusterScreen())

    @work(thread=True, exclusive=True, group="detect")
    def run_detection(self) -> None:
        # Computes only: the session is changed by the handler of Detected, on the UI thread.
        inventory = self.session.detect_inventory(
            on_partial=lambda partial, answered: self.post_message(
                PartialInventory(partial, answered)
            )
        )
        self.post_message(Detected(inventory))

    def on_partial_inventory(self, message: PartialInventory) -> None:
        if not self.detecting:
            return  # the final answer is already shown
        from llama_wizard.detect.selection import default_gpus

        marks = "  ".join(f"{name} {'✓' if name in message.answered else '…'}" for name in SOURCES)
        recommended = [g.index for g in default_gpus(message.inventory)[0]]
        self._fill(message.inventory, recommended, [])
        self.query_one("#status", Static).update(f"Detecting: {marks}")

    def on_detected(self, message: Detected) -> None:
        self.detecting = False
        problem = None
        try:
            self.session.set_inventory(message.inventory)
        except ActionableError as error:  # a GPU named on the command line is not there
            problem = error
        self.host.show_notes()
        self.show_inventory(message.inventory)
        if problem is not None:
            self.query_one("#status", Static).update(error_text(problem))

    def show_inventory(self, inventory: Inventory) -> None:
        count = len(inventory.gpus)
        self._fill(inventory, self.session.chosen_gpus(), self.session.masked_gpus())
        if count:
            status = (
                f"{count} GPU{'s' if count != 1 else ''} found. Space toggles a GPU "
                "([x] used, [-] ticked but left out by the build); the recommended ones are "
                "ticked."
            )
        else:
            status = "No GPU found: llama.cpp will run on the CPU."
        self.query_one("#status", Static).update(status)
        if count:
            self._selection().focus()

    def _selection(self) -> GlyphSelectionList:
        found = self.query("#gpus")
        if found:
            return found.first(GlyphSelectionList)
        selection = GlyphSelectionList(id="gpus")
        self.mount(selection, before=self.query_one("#host"))
        return selection

    def _fill(self, inventory: Inventory, selected: list[int], masked: list[int]) -> None:
        wanted = set(selected)
        selection = self._selection()
        highlighted = selection.highlighted
        selection.marks = dict.fromkeys(masked, "-")
        with selection.prevent(SelectionList.SelectedChanged):
            selection.clear_options()
            selection.add_options(
                [
                    LinesSelection(gpu_label(g, g.index in masked), g.index, g.index in wanted)
                    for g in inventory.gpus
                ]
            )
            if highlighted is not None and highlighted < selection.option_count:
                selection.highlighted = highlighted
        cpu = inventory.cpu
        self.query_one("#host", Static).update(
            f"CPU  {cpu.model} ({cpu.arch}), {cpu.cores} cores / {cpu.threads} threads\n"
            f"RAM  {human_bytes(inventory.memory_available_bytes)} available of "
            f"{human_bytes(inventory.memory_total_bytes)}"
        )
        self.query_one("#warnings", Static).update(
            plain_text("\n".join(f"⚠ {w.message}\n  Fix: {w.fix}" for w in inventory.warnings))
        )

    @on(SelectionList.SelectedChanged, "#gpus")
    def gpus_changed(self, event: SelectionList.SelectedChanged) -> None:
        if self.detecting or self.session.inventory is None:
            return  # a partial answer: nothing is chosen until detection is done
        try:
            self.session.choose_gpus(list(event.selection_list.selected))
        except ActionableError as error:
            self.notify(message_markup(f"{error.message} {error.fix}"), severity="warning")
            return
        # What the build will use may change with the choice (an iGPU ticked next to a card).
        self.show_inventory(self.session.inventory)

    def can_leave(self) -> str | None:
        if self.session.inventory is None or self.detecting:
            return "Detection is still running."
        return None
