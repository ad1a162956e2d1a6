"""Small pieces of UI the screens share."""

from __future__ import annotations

from rich.text import Text

from llama_wizard.models.estimate import Estimate

BAR_WIDTH = 24
VERDICT_STYLES = {"fits": "bold green", "tight": "bold yellow", "no": "bold red"}


def memory_bar(estimate: Estimate, width: int = BAR_WIDTH) -> Text:
    """Weights | KV | compute+overhead | free, drawn to the scale of the GPUs' memory; what does
    not fit spills past the end in red. Each part is a different glyph too, for NO_COLOR."""
    memory = max(estimate.memory_bytes, 1)
    parts = [
        (estimate.weights_bytes, "█", "blue"),
        (estimate.kv_bytes, "▓", "magenta"),
        (estimate.compute_bytes + estimate.overhead_bytes, "▒", "yellow"),
    ]
    bar = Text()
    used_cells = 0
    for size, glyph, style in parts:
        cells = round(size / memory * width)
        room = max(width - used_cells, 0)
        inside = min(cells, room)
        bar.append(glyph * inside, style=style)
        if cells > inside:
            bar.append("!" * min(cells - inside, 4), style="bold red")
        used_cells += cells
    if used_cells < width:
        bar.append("░" * (width - used_cells), style="dim")
    return bar


def verdict_badge(verdict: str) -> Text:
    label = {"fits": " fits ", "tight": " tight ", "no": " no "}.get(verdict, verdict)
    return Text(label, style=VERDICT_STYLES.get(verdict, "") + " reverse")


LEGEND = Text.assemble(
    ("█", "blue"), " weights  ", ("▓", "magenta"), " KV cache  ", ("▒", "yellow"),
    " compute + overhead  ", ("░", "dim"), " free  ", ("!", "bold red"), " over",
)  # fmt: skip
