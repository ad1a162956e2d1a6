"""Step 3, model: a model from the catalogue (each with its best quant on the chosen memory), a
Hub repo or a local GGUF; a quant table with a memory bar and a fit badge per quant; a context
size applied with Enter (or doubled and halved with + and -).

The current choice is preselected while it fits, else the best quant that fits (the session's
rule). Highlighting a quant that fits takes it; one that does NOT fit is taken only when the
person confirms it on leaving the step. Reading and fitting a model run in workers, which post
what they found; the handlers change the session on the UI thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from llama_wizard.detect.errors import ActionableError
from llama_wizard.screens.base import WizardStep, error_text
from llama_wizard.tui.format import human_bytes
from llama_wizard.tui.session import DoesNotFit, describe_choice
from llama_wizard.tui.validate import MAX_CTX, MIN_CTX, InvalidValue, check_ctx
from llama_wizard.tui.widgets import LEGEND, VERDICT_STYLES, memory_bar, verdict_badge

if TYPE_CHECKING:
    from llama_wizard.models.choose import FitReport, ModelChoice
    from llama_wizard.models.source import ModelSource
    from llama_wizard.tui.session import ModelRow


@dataclass
class Fitted(Message):
    """A model read and fitted at a context (or why it could not be)."""

    generation: int
    source: ModelSource | None = None
    report: FitReport | None = None
    quant: str | None = None
    error: ActionableError | None = None


@dataclass
class RowsReady(Message):
    """The catalogue's models with their best quant at a context."""

    ctx: int
    rows: list[ModelRow]


@dataclass
class LocalModelsFound(Message):
    paths: list[str]


@dataclass
class Verified(Message):
    """llama.cpp's own answer (llama-fit-params) for a choice, as a line to show."""

    quant: str
    ctx: int
    text: str
    disagree: bool = False


class ModelScreen(WizardStep):
    STEP = "model"
    CSS_PATH = "model.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("plus,equals_sign", "context(2)", "Context ×2"),
        Binding("minus", "context(0.5)", "Context ÷2"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.ctx: int | None = None  # the context applied (the field may hold unsent keys)
        self.source: ModelSource | None = None
        self.report: FitReport | None = None
        self.choice: ModelChoice | None = None  # the highlighted quant, taken or pending
        self.generation = 0
        self.labels: dict[str, str] = {}  # catalogue repo -> its label without the fit

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
                    yield Input(id="ctx", type="integer", placeholder="tokens; Enter applies")
                yield Static("", id="fit-status", markup=False)
                yield DataTable(id="quants", cursor_type="row", zebra_stripes=True)
                yield Static(LEGEND, id="legend")
                yield Static("", id="choice", markup=False)
                yield Static("", id="llamacpp-fit", markup=False)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        from llama_wizard.models.catalogue import load_catalogue

        plan = self.session.plan
        if plan is None:
            self._status("There is no plan yet: go back to the Build step.")
            return
        table = self.query_one("#quants", DataTable)
        table.add_columns("Quant", "File", "Total", "Free", "Fit", "Max ctx", "Memory")
        catalogue = load_catalogue()
        models = self.query_one("#models", OptionList)
        # Wide: the name, and below it the size and (once computed) the best quant; narrow
        # (the list spans the screen): all on one line.
        gap = "  " if self.app.size.width < 100 else "\n  "
        for model in catalogue.models:
            self.labels[model.repo] = f"{model.name}{gap}{model.size_class} ·"
        models.add_options([Option(f"{label} …", id=repo) for repo, label in self.labels.items()])
        current = plan.model
        self.ctx = self.session.default_ctx()
        self._show_ctx()
        spec = current.repo if current else (self.session.choices.model or catalogue.recommended[0])
        if catalogue.find(spec) is not None:
            models.highlighted = models.get_option_index(spec)
        else:
            self.query_one("#spec", Input).value = spec
        # A quant named on the command line stays chosen even when it does not fit (the
        # person sees its verdict and confirms it on Next); otherwise the session preselects.
        named = self.session.overrides.quant
        self.load_model(spec, named if current and current.quant == named else None)
        self.list_local_models()
        self.compute_rows(self.ctx)
        # The table has the keys: stray letters and digits never land in the Context field.
        table.focus()

    # -- workers: they compute, the handlers below change the session ---------------------------

    def load_model(self, spec: str, quant: str | None = None) -> None:
        self.generation += 1
        self._status(f"Reading {spec}…")
        self._read_and_fit(self.generation, spec, None, self.ctx, quant)

    def refit(self) -> None:
        if self.source is None:
            return
        self.generation += 1
        self._status(f"Fitting at {self.ctx} tokens…")
        self._read_and_fit(self.generation, None, self.source, self.ctx, None)

    @work(thread=True, exclusive=True, group="fit")
    def _read_and_fit(
        self,
        generation: int,
        spec: str | None,
        source: ModelSource | None,
        ctx: int | None,
        quant: str | None,
    ) -> None:
        session = self.session
        try:
            if source is None:
                assert spec is not None
                source = session.resolve(spec)
            report = session.fit(source, ctx)
        except ActionableError as error:
            self.post_message(Fitted(generation, error=error))
            return
        self.post_message(Fitted(generation, source, report, quant))

    @work(thread=True, exclusive=True, group="model-rows")
    def compute_rows(self, ctx: int | None) -> None:
        try:
            rows = self.session.model_rows(ctx)
        except ActionableError:
            return  # the list stays without its fit column; the table says what is wrong
        self.post_message(RowsReady(ctx or self.session.default_ctx(), rows))

    @work(thread=True, group="local-models")
    def list_local_models(self) -> None:
        """GGUF files already on this machine (llama.cpp's and Hugging Face's caches)."""
        from llama_wizard.models.local import find_local_models

        found = find_local_models()
        if found:
            self.post_message(LocalModelsFound([str(local.path) for local in found]))

    def on_local_models_found(self, message: LocalModelsFound) -> None:
        models = self.query_one("#models", OptionList)
        for path in message.paths:
            name = path.rsplit("/", 1)[-1]
            models.add_option(Option(f"Local: {name}", id=path))

    def on_rows_ready(self, message: RowsReady) -> None:
        if message.ctx != self.ctx:
            return  # computed for a context since changed
        models = self.query_one("#models", OptionList)
        for row in message.rows:
            if row.repo not in self.labels:
                continue
            label = Text(self.labels[row.repo] + " ")
            if row.best_quant is None:
                label.append("nothing fits", style=VERDICT_STYLES["no"])
            else:
                label.append(f"{row.best_quant} ", style="bold")
                label.append(
                    "fits" if row.verdict == "fits" else "tight",
                    style=VERDICT_STYLES.get(row.verdict, ""),
                )
            models.replace_option_prompt(row.repo, label)

    def on_fitted(self, message: Fitted) -> None:
        if message.generation != self.generation:
            return  # an answer to an older question (another model or context since)
        if message.report is None:
            assert message.error is not None
            self._status(error_text(message.error))
            return
        self.source = message.source
        self.show_report(message.report, message.quant)
        self.host.show_notes()

    # -- showing and choosing -------------------------------------------------------------------

    def _status(self, text: str) -> None:
        self.query_one("#fit-status", Static).update(text)

    def _show_ctx(self) -> None:
        field = self.query_one("#ctx", Input)
        with field.prevent(Input.Changed):
            field.value = str(self.ctx) if self.ctx else ""

    def show_report(self, report: FitReport, quant: str | None) -> None:
        session = self.session
        self.report = report
        self.ctx = report.ctx
        self._show_ctx()
        index = session.preselect(report, quant)
        table = self.query_one("#quants", DataTable)
        table.clear()
        narrow = self.app.size.width < 100
        for row in session.quant_rows(report, index):
            estimate = row.estimate
            table.add_row(
                row.quant + (" *" if row.recommended else ""),
                human_bytes(estimate.file_bytes),
                human_bytes(estimate.total_bytes),
                human_bytes(estimate.free_bytes) if estimate.free_bytes >= 0 else "-",
                verdict_badge(estimate.verdict),
                str(estimate.max_ctx or "-"),
                memory_bar(estimate, width=12 if narrow else 24),
                key=row.quant,
            )
        quants = len(report.quants)
        status = (
            f"{report.source.name}: {quants} quant{'s' if quants != 1 else ''} on "
            f"{human_bytes(report.memory_bytes)} at {report.ctx} tokens (* the best that fits)"
        )
        if report.notes:
            status += f"\n{report.notes[0]}"
        self._status(status)
        self.choice = None
        if index is None:
            current = session.plan.model if session.plan is not None else None
            quants = [c.quant for c in report.source.candidates]
            repo = report.source.repo or report.source.spec
            if (
                current is not None
                and (current.repo, current.ctx) == (repo, report.ctx)
                and current.quant in quants
            ):  # taken before (confirmed): the cursor shows it, and Next asks again
                self.choice = current
                table.move_cursor(row=quants.index(current.quant))
            kept = f" Still chosen: {_describe(current)}." if current is not None else ""
            self.query_one("#choice", Static).update(
                f"No quant of {report.source.name} fits at {report.ctx} tokens.{kept}"
            )
            return
        table.move_cursor(row=index)
        self._choose(index)

    def _choose(self, index: int) -> None:
        """The quant at `index` is highlighted: take it when it fits; one that does not is
        taken only when confirmed (on Next)."""
        if self.report is None or not 0 <= index < len(self.report.quants):
            return
        choice = self.session.choice_at(self.report, index)
        self.choice = choice
        self.query_one("#llamacpp-fit", Static).display = False
        if choice.verdict == "no":
            self.query_one("#choice", Static).update(
                f"Highlighted: {_describe(choice)}. ctrl+n asks before taking it."
            )
            return
        self.session.accept_model(choice)
        self.query_one("#choice", Static).update(f"Chosen: {_describe(choice)}")
        self.ask_llamacpp(choice)

    @work(thread=True, exclusive=True, group="verify")
    def ask_llamacpp(self, choice: ModelChoice) -> None:
        """When this output is built already (a second run), llama.cpp's own fit for the choice
        beside the estimate; nothing before the build (its llama-fit-params is not there)."""
        from llama_wizard.tui.verify import VerifyError

        session = self.session
        if session.simulated:
            return
        try:
            if session.build_status().state != "built":
                return
            verdict, agreement = session.verify(choice)
        except VerifyError as error:
            self.post_message(
                Verified(choice.quant, choice.ctx, f"llama.cpp not asked: {error.message}")
            )
            return
        text = verdict.summary()
        if not agreement.agree:
            text += f"\nllama.cpp and the estimate disagree: {agreement.explanation}"
        self.post_message(Verified(choice.quant, choice.ctx, text, not agreement.agree))

    def on_verified(self, message: Verified) -> None:
        choice = self.choice
        if choice is None or (choice.quant, choice.ctx) != (message.quant, message.ctx):
            return  # an answer for a choice no longer highlighted
        line = self.query_one("#llamacpp-fit", Static)
        line.update(message.text)
        line.set_class(message.disagree, "disagree")
        line.display = True

    @on(DataTable.RowHighlighted, "#quants")
    def quant_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # The table's cursor now, not the event's row: filling the table posts older rows.
        row = event.data_table.cursor_row
        if self.choice is not None and self.report is not None:
            quants = [c.quant for c in self.report.source.candidates]
            if 0 <= row < len(quants) and quants[row] == self.choice.quant:
                return
        self._choose(row)

    @on(OptionList.OptionSelected, "#models")
    def model_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.load_model(event.option.id)

    @on(Input.Submitted, "#spec")
    def spec_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.load_model(event.value.strip())

    # -- the context ----------------------------------------------------------------------------

    @on(Input.Submitted, "#ctx")
    def ctx_submitted(self, event: Input.Submitted) -> None:
        try:
            ctx = check_ctx(event.value)
        except InvalidValue as error:
            self.notify(f"{error.message} {error.fix}", severity="warning", markup=False)
            return
        self._set_ctx(ctx)

    @on(Input.Blurred, "#ctx")
    def ctx_left(self) -> None:
        self._show_ctx()  # keys typed without Enter are not applied: show what is

    def action_context(self, factor: float) -> None:
        if self.ctx is None:
            return
        self._set_ctx(max(MIN_CTX, min(MAX_CTX, int(self.ctx * factor))))

    def _set_ctx(self, ctx: int) -> None:
        if ctx == self.ctx and self.report is not None and self.report.ctx == ctx:
            self._show_ctx()
            return
        self.ctx = ctx
        self._show_ctx()
        self.refit()
        self.compute_rows(ctx)

    # -- leaving --------------------------------------------------------------------------------

    def leave(self, go_on: Callable[[], None]) -> None:
        session = self.session
        plan = session.plan
        if plan is None:
            self.notify("There is no plan yet: go back to the Build step.", severity="warning")
            return
        choice = self.choice or plan.model
        if choice is None:
            self.notify("Choose a model and quant first.", severity="warning")
            return
        try:
            session.accept_model(choice)
        except DoesNotFit as error:
            from llama_wizard.screens.dialogs import ConfirmScreen

            def answered(confirmed: bool | None) -> None:
                if confirmed:
                    session.accept_model(choice, confirmed=True)
                    go_on()

            self.app.push_screen(
                ConfirmScreen(
                    f"**{choice.name} {choice.quant} does NOT fit.**\n\n{error.message}\n\n"
                    f"{error.fix}",
                    yes="Use it anyway",
                    no="Choose again",
                ),
                answered,
            )
            return
        go_on()


def _describe(choice: ModelChoice) -> str:
    return (
        f"{choice.name} {choice.quant} at {choice.ctx} tokens: {describe_choice(choice)} "
        f"({human_bytes(choice.total_bytes)} of {human_bytes(choice.memory_bytes)})"
    )
