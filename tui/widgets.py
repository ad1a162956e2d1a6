"""Small pieces of UI the screens share.

Selection is shown by a glyph as well as by colour (`[x]`/`[ ]`, `(•)`/`( )`): with NO_COLOR
Textual turns every colour into a grey, and a ticked box must still read as ticked."""

from __future__ import annotations

from math import ceil
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import OptionList, RadioButton, SelectionList
from textual.widgets.option_list import OptionDoesNotExist
from textual.widgets.selection_list import Selection

if TYPE_CHECKING:  # the first screen imports this module: not the estimate (and numpy)
    from llama_wizard.models.estimate import Estimate

BAR_WIDTH = 24
VERDICT_STYLES = {"fits": "bold green", "tight": "bold yellow", "no": "bold red"}
OVER = ("!", "bold red")
FREE = ("░", "dim")


def memory_bar(estimate: Estimate, width: int = BAR_WIDTH) -> Text:
    """Weights | KV | compute+overhead | free, always exactly `width` cells. When the estimate
    needs more than the GPUs' memory, the bar is drawn to the scale of what it needs and the
    cells past the memory are `!` (red): it never grows past its column. Each part is a
    different glyph too, for NO_COLOR."""
    parts = [
        (estimate.weights_bytes, "█", "blue"),
        (estimate.kv_bytes, "▓", "magenta"),
        (estimate.compute_bytes + estimate.overhead_bytes, "▒", "yellow"),
    ]
    memory = max(estimate.memory_bytes, 1)
    needed = sum(size for size, _, _ in parts)
    scale = max(memory, needed)
    # The cells the memory spans; at least one cell shows "over" when it does not fit.
    capacity = width if needed <= memory else min(round(memory / scale * width), width - 1)
    cells: list[tuple[str, str]] = []
    for size, glyph, style in parts:
        cells += [(glyph, style)] * round(size / scale * width)
    cells = cells[:width]
    cells += [FREE] * max(capacity - len(cells), 0)
    cells = [cell if i < capacity else OVER for i, cell in enumerate(cells)]
    cells += [OVER] * (width - len(cells))
    bar = Text()
    for glyph, style in cells:
        bar.append(glyph, style=style)
    return bar


def verdict_badge(verdict: str) -> Text:
    label = {"fits": " fits ", "tight": " tight ", "no": " no "}.get(verdict, verdict)
    return Text(label, style=VERDICT_STYLES.get(verdict, "") + " reverse")


LEGEND = Text.assemble(
    ("█", "blue"), " weights  ", ("▓", "magenta"), " KV cache  ", ("▒", "yellow"),
    " compute + overhead  ", ("░", "dim"), " free  ", ("!", "bold red"), " over",
)  # fmt: skip


# --- selection that reads without colour -----------------------------------------------------


class LinesSelection(Selection[Any]):
    """A Selection whose prompt keeps all its lines (Textual's keeps the first only)."""

    def __init__(self, prompt: str, value: Any, initial_state: bool = False) -> None:
        super().__init__(Content(prompt), value, initial_state)
        self._set_prompt(Content(prompt))


class GlyphSelectionList(SelectionList[Any]):
    """A SelectionList whose boxes read `[x]` / `[ ]` (Textual's draws `▐X▌` for both, told
    apart only by colour). `marks` may give a value another inner glyph (e.g. `-` for a GPU
    that is ticked but that the build leaves out)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks: dict[Any, str] = {}

    def render_line(self, y: int) -> Strip:
        # OptionList's line, not SelectionList's: that one takes each line for an option of its
        # own, which a prompt of two lines is not.
        line = OptionList.render_line(self, y)
        try:
            index, line_offset = self._lines[self.scroll_offset.y + y]
            selection = self.get_option_at_index(index)
        except (IndexError, OptionDoesNotExist):
            return line
        underlying = next(iter(line)).style or self.rich_style
        if line_offset:
            return Strip([Segment("    ", underlying), *line])
        value = selection.value
        selected = value in self.selected
        component = "selection-list--button" + ("-selected" if selected else "")
        if self.highlighted == index:
            component += "-highlighted"
        meta = Style(meta={"option": index})
        button = self.get_component_rich_style(component) + meta
        side = Style.from_color(button.bgcolor, underlying.bgcolor) + meta
        inner = self.marks.get(value) or ("x" if selected else " ")
        return Strip(
            [
                Segment("[", side),
                Segment(inner, button),
                Segment("]", side),
                Segment(" ", underlying),
                *line,
            ]
        )


class GlyphRadioButton(RadioButton):
    """A RadioButton that reads `(•)` when pressed and `( )` when not, whatever the colours."""

    BUTTON_LEFT = "("
    BUTTON_RIGHT = ")"

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = "•" if self.value else " "
        return super()._button


# --- commands wrapped at their words -----------------------------------------------------------


def shell_words(line: str) -> list[str]:
    """A shell command line split at the spaces outside quotes, each word exactly as written
    (quotes and escapes kept), so the words joined by spaces are the same command."""
    words: list[str] = []
    current = ""
    quote: str | None = None
    escaped = False
    for char in line:
        if escaped:
            current += char
            escaped = False
        elif char == "\\" and quote != "'":
            current += char
            escaped = True
        elif quote is not None:
            current += char
            if char == quote:
                quote = None
        elif char in "'\"":
            current += char
            quote = char
        elif char.isspace():
            if current:
                words.append(current)
            current = ""
        else:
            current += char
    if current:
        words.append(current)
    return words


def wrap_command(text: str, width: int, language: str = "sh") -> list[str]:
    """A shell command's lines wrapped between words (never inside one, unless a word alone is
    wider than `width`): each continued line ends in ` \\` and the next is indented, so the
    wrapped text is still the same command. Other text (a Nix snippet, comments) is kept."""
    lines: list[str] = []
    for line in text.splitlines() or [""]:
        stripped = line.lstrip()
        if language != "sh" or not stripped or stripped.startswith("#") or len(line) <= width:
            lines.append(line)
            continue
        lead = line[: len(line) - len(stripped)]
        indent = lead + "    "
        current = lead
        for word in shell_words(stripped):
            if current.strip() and cell_len(current) + 1 + cell_len(word) + 2 > width:
                lines.append(current + " \\")
                current = indent + word
            else:
                current = f"{current} {word}" if current.strip() else current + word
        lines.append(current)
    return lines


class CommandText(Widget):
    """A command shown for reading: wrapped between its words at the widget's width."""

    DEFAULT_CSS = """
    CommandText {
        height: auto;
    }
    """

    text: reactive[str] = reactive("", layout=True)

    def __init__(self, text: str = "", language: str = "sh", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.language = language
        self.set_reactive(CommandText.text, text)

    def show(self, text: str, language: str) -> None:
        self.language = language
        self.text = text
        self.refresh(layout=True)

    def _lines(self, width: int) -> list[str]:
        return wrap_command(self.text, max(width, 20), self.language)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        width = max(width, 1)
        return sum(max(1, ceil(cell_len(line) / width)) for line in self._lines(width))

    def render(self) -> Text:
        return Text("\n".join(self._lines(self.content_size.width)), overflow="fold")
