"""What the wizard knows and what the person chose, shared by every screen.

Screens read and change it; the slow parts (detection, asking the flake, fitting a Hub model)
run in workers that call these methods, never on the UI thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llama_wizard.detect.model import Gpu, Inventory
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.settings import Settings

if TYPE_CHECKING:
    # Loaded when a step needs them (models/ brings llama.cpp's gguf package and numpy), so
    # the first screen comes up nearly as fast as a bare Textual app.
    from llama_wizard.models.choose import FitReport, ModelChoice
    from llama_wizard.models.source import ModelSource
    from llama_wizard.nix.build import BuildRecord
    from llama_wizard.tui.plan import Plan


@dataclass
class WizardState:
    machine: Machine
    timeout: float = 10.0
    settings: Settings = field(default_factory=Settings)
    inventory: Inventory | None = None
    gpus: list[int] | None = None  # None: the recommendation
    plan: Plan | None = None
    model_source: ModelSource | None = None
    fit: FitReport | None = None
    build_record: BuildRecord | None = None
    build_running: bool = False
    launch_running: bool = False

    @property
    def simulated(self) -> str | None:
        return self.machine.simulated

    def detect(self) -> Inventory:
        self.inventory = self.machine.detect(self.timeout)
        return self.inventory

    def recommended_gpus(self) -> list[Gpu]:
        from llama_wizard.nix.recommend import default_gpus

        assert self.inventory is not None
        return default_gpus(self.inventory)[0]

    def chosen_gpus(self) -> list[Gpu]:
        assert self.inventory is not None
        if self.gpus is None:
            return self.recommended_gpus()
        return [g for g in self.inventory.gpus if g.index in self.gpus]

    def make_plan(self) -> Plan:
        """Raises ActionableError subclasses (flake unreadable, bad choice, model unreadable)."""
        from llama_wizard.tui.plan import make_plan

        assert self.inventory is not None
        settings = self.settings
        self.plan = make_plan(
            self.machine,
            self.inventory,
            flake_ref=settings.flake,
            output=settings.output,
            gpu_indices=self.gpus,
            model=settings.model,
            quant=settings.quant,
            ctx=settings.ctx,
        )
        return self.plan

    def plan_gpus(self) -> list[Gpu]:
        assert self.inventory is not None and self.plan is not None
        return [g for g in self.inventory.gpus if g.index in self.plan.build.gpus]

    def load_model(self, spec: str, quant: str | None = None) -> ModelSource:
        from llama_wizard.models.source import resolve_model

        self.model_source = resolve_model(spec, quant)
        return self.model_source

    def fit_model(self, ctx: int | None) -> FitReport:
        from llama_wizard.models.choose import devices_for, fit_model

        assert self.model_source is not None and self.inventory is not None
        devices = devices_for(self.plan_gpus(), self.inventory)
        self.fit = fit_model(
            self.model_source,
            devices,
            ctx,
            host_memory_bytes=self.inventory.memory_available_bytes or None,
        )
        return self.fit

    def choose_model(self, choice: ModelChoice) -> None:
        assert self.plan is not None
        self.plan.model = choice
        self.settings.model, self.settings.quant, self.settings.ctx = (
            choice.repo,
            choice.quant,
            choice.ctx,
        )
