"""Step 3, model: the ranked list (the catalogue and the GGUF files already on this machine,
best for this machine first: the session's model_rows, sorted by score, speed, size or name with
`s`), each with its fit badge, best quant, run mode and generation speed; or a Hub repo or a
local GGUF typed in; a quant table with a memory bar, a fit badge, the run mode and tokens/s per
quant; a context size applied with Enter (or doubled and halved with + and -).

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
from llama_wizard.screens.base import WizardStep, error_text, message_markup
from llama_wizard.tui.format import human_bytes
from llama_wizard.tui.ranking import BADGE_LEGEND, SORT_KEYS, SPEED_LEGEND
from llama_wizard.tui.session import DoesNotFit, ModelRow, describe_choice
from llama_wizard.tui.validate import MAX_CTX, MIN_CTX, InvalidValue, check_ctx
from llama_wizard.tui.widgets import LEGEND, memory_bar, verdict_badge

if TYPE_CHECKING:
    from llama_wizard.models.choose import FitReport, ModelChoice
    from llama_wizard.models.source import ModelSource
    from llama_wizard.tui.session import QuantRow


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
    """The ranked list at a context, in one sort order."""

    ctx: int
    sort: str
    rows: list[ModelRow]


@dataclass
class Verified(Message):
    """llama.cpp's own answer (llama-fit-params) for a choice, as a line to show."""

    quant: str
    ctx: int
    text: str
    disagree: bool = False


# -- the columns: each table's columns are defined here, once -----------------------------------
#
# Where the terminal is too narrow for every column, the columns with a `drop` rank go first
# (lowest first), then the run mode gives up its detail (`short`: "hybrid" for "hybrid 30/49"):
# the model's name and the fit never give.


@dataclass(frozen=True)
class CatalogueColumn:
    title: str
    cell: Callable[[ModelRow, bool], Text]  # the row; whether it is fitted yet
    drop: int = 0  # 0: always shown
    short: Callable[[ModelRow, bool], Text] | None = None  # a narrower cell


@dataclass(frozen=True)
class QuantColumn:
    title: str
    cell: Callable[[QuantRow, int], Text | str]  # the row, the memory bar's width
    drop: int = 0
    short: Callable[[QuantRow, int], Text | str] | None = None


# The run modes in one word, for the narrow tables (tui/ranking.py's labels carry the split).
MODE_WORDS = {"gpu": "GPU", "moe-offload": "MoE→RAM", "hybrid": "hybrid", "cpu": "CPU"}
BADGE_STYLES = {
    "fits": "bold green",
    "tight": "bold yellow",
    "ram": "bold cyan",
    "cpu": "bold magenta",
    "no": "bold red",
}


def _pending(fitted: bool, text: str | None, style: str = "") -> Text:
    if not fitted:
        return Text("…")
    return Text(text or "-", style=style)


def _model_badge(row: ModelRow, fitted: bool) -> Text:
    """The model's fit badge (its best quant's verdict and where it runs), reversed as the
    quants' badges are; readable without colour."""
    if not fitted:
        return Text("")
    return Text(f" {row.badge_text} ", style=BADGE_STYLES.get(row.badge, "") + " reverse")


def _model_name(row: ModelRow) -> Text:
    """The name whole; a GGUF file found on this machine says so (the size column that would
    say "local file" is the first to go in a narrow terminal)."""
    name = Text(row.name)
    if row.kind == "local":
        name.append(" (local)", style="dim")
    return name


def _speed(text: str, source: str | None) -> Text:
    return Text(text, style="bold" if source == "measured" else "")


CATALOGUE_COLUMNS = [
    CatalogueColumn("Model", lambda row, fitted: _model_name(row)),
    CatalogueColumn("Size", lambda row, fitted: Text(row.size_class), drop=1),
    CatalogueColumn("Quant", lambda row, fitted: _pending(fitted, row.best_quant, "bold")),
    CatalogueColumn("Fit", _model_badge),
    CatalogueColumn(
        "Mode",
        lambda row, fitted: _pending(fitted, row.mode_label),
        short=lambda row, fitted: _pending(fitted, MODE_WORDS.get(row.mode or "")),
    ),
    CatalogueColumn(
        "tok/s",
        lambda row, fitted: (
            _pending(fitted, None)
            if not fitted
            else _speed(row.speed_text, row.speed.source if row.speed else None)
        ),
    ),
]


def _quant_speed(row: QuantRow, bar: int) -> Text:
    if row.estimate.verdict == "no":
        return Text("-")  # nothing to run: no speed to compare
    return _speed(row.speed_text, row.speed.source if row.speed else None)


QUANT_COLUMNS = [
    QuantColumn("Quant", lambda row, bar: row.quant + (" *" if row.recommended else "")),
    QuantColumn("File", lambda row, bar: human_bytes(row.estimate.file_bytes), drop=1),
    QuantColumn("Total", lambda row, bar: human_bytes(row.estimate.total_bytes)),
    QuantColumn(
        "Free",
        lambda row, bar: (
            human_bytes(row.estimate.free_bytes) if row.estimate.free_bytes >= 0 else "-"
        ),
        drop=2,
    ),
    QuantColumn("Fit", lambda row, bar: verdict_badge(row.estimate.verdict)),
    QuantColumn(
        "Mode",
        lambda row, bar: row.mode_label,
        short=lambda row, bar: MODE_WORDS.get(row.mode, row.mode),
    ),
    QuantColumn("tok/s", _quant_speed),
    QuantColumn("Max ctx", lambda row, bar: str(row.estimate.max_ctx or "-"), drop=3),
    QuantColumn("Memory", lambda row, bar: memory_bar(row.estimate, width=bar)),
]

# The legend under the quant table in a narrow terminal: the memory bar's glyphs and the speed's
# marks on one line (a wide one shows LEGEND, SPEED_LEGEND and BADGE_LEGEND whole).
SHORT_LEGEND = Text.assemble(
    ("█", "blue"), " weights ", ("▓", "magenta"), " KV ", ("▒", "yellow"), " compute ",
    ("░", "dim"), " free ", ("!", "bold red"), " over │ tok/s: ~ predicted, m measured",
)  # fmt: skip
WIDE = 100  # columns from which the tables and the legend show everything


def _cell_len(cell: Text | str) -> int:
    return cell.cell_len if isinstance(cell, Text) else Text(cell).cell_len


def fit_columns(
    titles: list[str],
    full: list[list[Text | str]],
    short: list[list[Text | str] | None],
    drops: list[int],
    *,
    width: int,
    gap: int,
) -> tuple[list[int], list[list[Text | str]]]:
    """Which columns to show in `width` cells and with which cells: every column as it is when
    they all fit; else the columns dropped by rank until they fit, then the short forms (what
    never drops stays, however wide). `full[c]`/`short[c]`: column c's cells."""
    columns = [list(cells) for cells in full]

    def needed(shown: list[int]) -> int:
        widths = [max(_cell_len(c) for c in [titles[i], *columns[i]]) for i in shown]
        return sum(widths) + gap * (len(shown) - 1)

    shown = list(range(len(titles)))
    for rank in sorted({d for d in drops if d}):
        if needed(shown) <= width:
            return shown, columns
        shown = [i for i in shown if drops[i] != rank]
    if needed(shown) > width:
        columns = [
            list(cells) if shorter is None else list(shorter)
            for cells, shorter in zip(full, short, strict=True)
        ]
    return shown, columns


class ModelScreen(WizardStep):
    STEP = "model"
    CSS_PATH = "model.tcss"
    BINDINGS = [  # noqa: RUF012
        # Short words: the footer has room for every key at 80 columns.
        Binding("plus,equals_sign", "context(2)", "Ctx ×2"),
        Binding("minus", "context(0.5)", "Ctx ÷2"),
        Binding("s", "sort", "Sort"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.ctx: int | None = None  # the context applied (the field may hold unsent keys)
        self.source: ModelSource | None = None
        self.report: FitReport | None = None
        self.choice: ModelChoice | None = None  # the highlighted quant, taken or pending
        self.generation = 0
        self.sort = SORT_KEYS[0]  # the ranked list's order (tui/ranking.py SORT_KEYS)
        # The list as shown: the ranked rows once fitted; until then the catalogue unfitted.
        self.rows: list[ModelRow] = []
        self.fitted = False

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        # The catalogue above the quant table, both the full width: every column whole.
        with Vertical(id="model-body"):
            yield Static("", id="models-header")
            yield OptionList(id="models")
            with Horizontal(classes="form-row"):
                yield Label("Other", classes="form-label")
                yield Input(placeholder="Hub owner/repo[:QUANT] or /path/model.gguf", id="spec")
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
        catalogue = load_catalogue()
        models = self.query_one("#models", OptionList)
        self.rows = [ModelRow(m.repo, m.name, m.size_class, None, "no") for m in catalogue.models]
        self._show_catalogue()
        self._show_legend()
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
        """The ranked list (the session's order: the screen never sorts), with the GGUF files
        already on this machine."""
        sort = self.sort
        try:
            rows = self.session.model_rows(ctx, sort)
        except ActionableError:
            return  # the list stays without its fit column; the table says what is wrong
        self.post_message(RowsReady(ctx or self.session.default_ctx(), sort, rows))

    def on_rows_ready(self, message: RowsReady) -> None:
        if message.ctx != self.ctx or message.sort != self.sort:
            return  # computed for a context or an order since changed
        self.rows = message.rows
        self.fitted = True
        self._show_catalogue()
        self.host.show_notes()  # a cached file that could not be read is said

    def action_sort(self) -> None:
        """The next order of SORT_KEYS (score, speed, size, name): the session sorts."""
        self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        self.query_one("#models-header", Static).update(
            Text(f"Sorting by {self.sort}", style="bold")
        )
        self.compute_rows(self.ctx)

    def _show_catalogue(self) -> None:
        """The list (CATALOGUE_COLUMNS) as aligned columns in the order of `self.rows`, each
        column as wide as its widest cell: no name is cut; in a narrow terminal the mode gives
        its detail and the size column goes (fit_columns) before anything else would."""
        models = self.query_one("#models", OptionList)
        fitted = self.fitted
        columns = CATALOGUE_COLUMNS
        titles = [c.title for c in columns]
        titles[0] = f"Model (by {self.sort})" if fitted else "Model"
        full = [[c.cell(row, fitted) for row in self.rows] for c in columns]
        short = [
            None if c.short is None else [c.short(row, fitted) for row in self.rows]
            for c in columns
        ]
        # The list's padding and its scroll bar take 4 cells.
        width = max(self.app.size.width - 4, 20)
        shown, cells = fit_columns(
            titles, full, short, [c.drop for c in columns], width=width, gap=2
        )
        widths = {i: max(_cell_len(c) for c in [titles[i], *cells[i]]) for i in shown}
        header = Text("  ".join(titles[i].ljust(widths[i]) for i in shown), style="bold")
        self.query_one("#models-header", Static).update(header)
        highlighted = models.highlighted_option
        keep = highlighted.id if highlighted is not None else None
        if keep is None and self.session.plan is not None and self.session.plan.model:
            keep = self.session.plan.model.repo  # a local file chosen before: shown highlighted
        options = []
        for number, row in enumerate(self.rows):
            prompt = Text()
            for position, i in enumerate(shown):
                cell = cells[i][number]
                cell = cell if isinstance(cell, Text) else Text(cell)
                if position:
                    prompt.append("  ")
                prompt.append_text(cell)
                prompt.append(" " * (widths[i] - cell.cell_len))
            options.append(Option(prompt, id=row.repo))
        models.clear_options()
        models.add_options(options)
        if keep is not None and any(row.repo == keep for row in self.rows):
            models.highlighted = models.get_option_index(keep)

    def _show_legend(self) -> None:
        legend = self.query_one("#legend", Static)
        if self.app.size.width < WIDE:
            legend.update(SHORT_LEGEND)
        else:
            legend.update(Text.assemble(LEGEND, "\n", SPEED_LEGEND, "\n", BADGE_LEGEND))

    def on_resize(self) -> None:
        super().on_resize()
        if self.rows:
            self._show_catalogue()
            self._show_legend()
            if self.report is not None:
                cursor = self.query_one("#quants", DataTable).cursor_row
                self._fill_quants(self.report, None, cursor)

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
        table = self._fill_quants(report, index)
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

    def _fill_quants(self, report: FitReport, index: int | None, cursor: int = -1) -> DataTable:
        """The quant table (QUANT_COLUMNS), its columns fitted to the terminal's width as the
        list's are; the cursor goes back to `cursor` (a redraw), else the caller places it."""
        table = self.query_one("#quants", DataTable)
        bar = 12 if self.app.size.width < WIDE else 24
        rows = self.session.quant_rows(report, index)
        columns = QUANT_COLUMNS
        titles = [c.title for c in columns]
        full = [[c.cell(row, bar) for row in rows] for c in columns]
        short = [None if c.short is None else [c.short(row, bar) for row in rows] for c in columns]
        # Each cell is padded by 1 on both sides (2 between columns, 1 at each edge); the
        # table's own padding and its scroll bar take 4 cells more.
        width = max(self.app.size.width - 6, 20)
        shown, cells = fit_columns(
            titles, full, short, [c.drop for c in columns], width=width, gap=2
        )
        table.clear(columns=True)
        table.add_columns(*(titles[i] for i in shown))
        for number, row in enumerate(rows):
            table.add_row(*(cells[i][number] for i in shown), key=row.quant)
        if 0 <= cursor < len(rows):
            table.move_cursor(row=cursor, animate=False)
        return table

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
            self.notify(message_markup(f"{error.message} {error.fix}"), severity="warning")
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
