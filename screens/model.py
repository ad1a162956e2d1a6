"""Step 3, model: a model from the catalogue (or a Hub repo / a local GGUF), a quant table with
a memory bar and a fit badge per quant, and a context size whose effect shows at once. The
plan's recommendation is preselected."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from llama_wizard.detect.errors import ActionableError
from llama_wizard.models.catalogue import load_catalogue
from llama_wizard.models.choose import FitReport, choice_from_report
from llama_wizard.screens.base import WizardStep
from llama_wizard.tui.format import human_bytes
from llama_wizard.tui.widgets import LEGEND, memory_bar, verdict_badge

MIN_CTX, MAX_CTX = 512, 1 << 20


class ModelScreen(WizardStep):
    STEP = "model"
    CSS_PATH = "model.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("plus,equals_sign", "context(2)", "Context ×2"),
        Binding("minus", "context(0.5)", "Context ÷2"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.ctx: int | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with Horizontal(id="model-body"):
            with Vertical(id="model-left"):
                yield Label("Catalogue", classes="section")
                yield OptionList(id="models")
                yield Label("Or a Hub repo / GGUF path", classes="section")
                yield Input(placeholder="owner/repo[:QUANT] or /path/model.gguf", id="spec")
            with Vertical(id="model-right"):
                with Horizontal(classes="form-row"):
                    yield Label("Context", classes="form-label")
                    yield Input(id="ctx", type="integer", placeholder="32768")
                yield Static("", id="fit-status")
                yield DataTable(id="quants", cursor_type="row", zebra_stripes=True)
                yield Static(LEGEND, id="legend")
                yield Static("", id="choice")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#quants", DataTable)
        table.add_columns("Quant", "File", "Total", "Free", "Fit", "Max ctx", "Memory")
        catalogue = load_catalogue()
        models = self.query_one("#models", OptionList)
        models.add_options(
            [Option(f"{m.name}  ({m.size_class})", id=m.repo) for m in catalogue.models]
        )
        plan = self.state.plan
        current = plan.model if plan else None
        self.ctx = current.ctx if current else self.state.settings.ctx
        if self.ctx:
            self.query_one("#ctx", Input).value = str(self.ctx)
        spec = current.repo if current else (self.state.settings.model or catalogue.recommended[0])
        if catalogue.find(spec) is not None:
            models.highlighted = models.get_option_index(spec)
        else:
            self.query_one("#spec", Input).value = spec
        self.load_model(spec, current.quant if current else None)
        self.list_local_models()

    @work(thread=True, group="local-models")
    def list_local_models(self) -> None:
        """GGUF files already on this machine (llama.cpp's and Hugging Face's caches)."""
        from llama_wizard.models.local import find_local_models

        found = find_local_models()
        if found:
            self.app.call_from_thread(self._add_local, found)

    def _add_local(self, found: list) -> None:
        models = self.query_one("#models", OptionList)
        for local in found:
            label = f"Local: {local.path.name}"
            models.add_option(Option(label, id=str(local.path)))

    @work(thread=True, exclusive=True, group="fit")
    def load_model(self, spec: str, preselect: str | None = None) -> None:
        self.app.call_from_thread(self._status, f"Reading {spec}…")
        try:
            self.state.load_model(spec)
            report = self.state.fit_model(self.ctx)
        except ActionableError as error:
            self.app.call_from_thread(self._status, f"⚠ {error.message}\nFix: {error.fix}")
            return
        self.app.call_from_thread(self.show_report, report, preselect)

    @work(thread=True, exclusive=True, group="fit")
    def refit(self) -> None:
        try:
            report = self.state.fit_model(self.ctx)
        except ActionableError as error:
            self.app.call_from_thread(self._status, f"⚠ {error.message}\nFix: {error.fix}")
            return
        chosen = self.state.plan.model.quant if self.state.plan and self.state.plan.model else None
        self.app.call_from_thread(self.show_report, report, chosen)

    def _status(self, text: str) -> None:
        self.query_one("#fit-status", Static).update(text)

    def show_report(self, report: FitReport, preselect: str | None) -> None:
        self.ctx = report.ctx
        ctx_input = self.query_one("#ctx", Input)
        with ctx_input.prevent(Input.Changed):
            ctx_input.value = str(report.ctx)
        table = self.query_one("#quants", DataTable)
        table.clear()
        for estimate, candidate in zip(report.quants, report.source.candidates, strict=True):
            table.add_row(
                candidate.quant,
                human_bytes(estimate.file_bytes),
                human_bytes(estimate.total_bytes),
                human_bytes(estimate.free_bytes) if estimate.free_bytes >= 0 else "-",
                verdict_badge(estimate.verdict),
                str(estimate.max_ctx or "-"),
                memory_bar(estimate, width=12 if self.app.size.width < 100 else 24),
                key=candidate.quant,
            )
        quants = [c.quant for c in report.source.candidates]
        index = quants.index(preselect) if preselect in quants else self._best_index(report)
        if index is not None:
            table.move_cursor(row=index)
            self._choose(report, index)
        self._status(
            f"{report.source.name}: {len(quants)} quant{'s' if len(quants) != 1 else ''} on "
            f"{human_bytes(report.memory_bytes)} "
            f"at {report.ctx} tokens" + ("" if not report.notes else f"\n{report.notes[0]}")
        )

    @staticmethod
    def _best_index(report: FitReport) -> int | None:
        for wanted in ("fits", "tight"):
            matching = [i for i, e in enumerate(report.quants) if e.verdict == wanted]
            if matching:
                return max(matching, key=lambda i: report.quants[i].file_bytes)
        return None

    def _choose(self, report: FitReport, index: int) -> None:
        choice = choice_from_report(report, index)
        self.state.choose_model(choice)
        badge = {"fits": "fits", "tight": "fits, tightly", "no": "does NOT fit"}[choice.verdict]
        self.query_one("#choice", Static).update(
            f"Chosen: {choice.name} {choice.quant} at {choice.ctx} tokens: {badge} "
            f"({human_bytes(choice.total_bytes)} of {human_bytes(choice.memory_bytes)})"
        )

    @on(DataTable.RowHighlighted, "#quants")
    def quant_highlighted(self, event: DataTable.RowHighlighted) -> None:
        report = self.state.fit
        if report is not None and event.cursor_row < len(report.quants):
            self._choose(report, event.cursor_row)

    @on(OptionList.OptionSelected, "#models")
    def model_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.load_model(event.option.id)

    @on(Input.Submitted, "#spec")
    def spec_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.load_model(event.value.strip())

    @on(Input.Submitted, "#ctx")
    def ctx_submitted(self, event: Input.Submitted) -> None:
        try:
            value = int(event.value)
        except ValueError:
            self.notify("The context is a number of tokens, such as 32768.", severity="warning")
            return
        self._set_ctx(value)

    def action_context(self, factor: float) -> None:
        self._set_ctx(int((self.ctx or 32768) * factor))

    def _set_ctx(self, value: int) -> None:
        self.ctx = max(MIN_CTX, min(MAX_CTX, value))
        if self.state.model_source is not None:
            self.refit()

    def can_leave(self) -> str | None:
        plan = self.state.plan
        if plan is None or plan.model is None:
            return "Choose a model and quant first."
        return None
