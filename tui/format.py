"""Plain-text formatting of sizes, GPU facts and messages, shared by the CLI, the screens and
plain mode. No Rich and no Textual here: the first screen imports it, and it must stay light.

Messages (errors, fixes, warnings, reasons, notes) mark commands, options and file names as
`code` spans, in backticks, and keep them so in JSON output. The one rule of how a face shows
them (`code_spans` splits a message, once, for all of them):

- a face that can style text shows the span without its backticks, in bold (the CLI's Rich
  output: tui/render.py `rich_message`; Textual notifications: screens/base.py
  `message_markup`);
- plain text (plain mode, the CLI's stderr lines, text a screen shows as it is) shows it in
  quotes (`plain_text`): 'llama-wizard fit MODEL', which still tells where a command ends.

Items (bullets, "note:", "fix:") wrap with a hanging indent: continuation lines start under
the text, not under the bullet (`item`)."""

from __future__ import annotations

import re
import shutil
import textwrap

from llama_wizard.detect.model import Gpu

# One formatter of sizes for every face; imported from here by the screens and the CLI.
from llama_wizard.models.sizes import human_bytes

__all__ = [
    "code_spans",
    "gpu_architecture",
    "gpu_free",
    "gpu_memory",
    "human_bytes",
    "item",
    "plain_text",
    "short_bus_id",
]

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
BULLET = "  • "


def code_spans(message: str) -> list[tuple[str, bool]]:
    """A message as (text, is_code) pieces, in order, without the backticks; an unpaired
    backtick stays as it is."""
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in _CODE_SPAN.finditer(message):
        if match.start() > position:
            pieces.append((message[position : match.start()], False))
        pieces.append((match.group(1), True))
        position = match.end()
    if position < len(message):
        pieces.append((message[position:], False))
    return pieces


def plain_text(message: str) -> str:
    """A message for a face that cannot style text: each `code` span in quotes (double quotes
    when the span holds a single quote)."""
    return "".join(
        (f'"{text}"' if "'" in text else f"'{text}'") if code else text
        for text, code in code_spans(message)
    )


def terminal_width(default: int = 80) -> int:
    return shutil.get_terminal_size((default, 24)).columns


def item(message: str, prefix: str = BULLET, width: int | None = None) -> str:
    """A bullet (or "note: ", "fix: " ...) as plain text, wrapped to `width` columns with its
    continuation lines under the text; no wrapping when width is None or 0 (output that is not
    a terminal: the reader's own program wraps it)."""
    text = plain_text(message)
    indent = " " * len(prefix)
    if not width:
        return prefix + text.replace("\n", "\n" + indent)
    lines: list[str] = []
    for number, line in enumerate(text.split("\n")):  # a line break in the message stays
        lines += textwrap.wrap(
            line,
            max(width - 1, len(prefix) + 20),
            initial_indent=prefix if number == 0 else indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        ) or [(prefix if number == 0 else "").rstrip()]
    return "\n".join(lines)


def gpu_architecture(gpu: Gpu) -> str:
    if gpu.gfx_target:
        return gpu.gfx_target
    if gpu.compute_capability:
        return f"CC {gpu.compute_capability}"
    return "-"


def gpu_memory(gpu: Gpu) -> str:
    """Total memory llama.cpp can use on the device; an APU's counts its GTT too."""
    if gpu.integrated and gpu.gtt_total_bytes and gpu.memory_usable_bytes:
        return f"{human_bytes(gpu.memory_usable_bytes)} (+GTT)"
    return human_bytes(gpu.memory_usable_bytes or gpu.vram_total_bytes)


def gpu_free(gpu: Gpu) -> str:
    return human_bytes(gpu.memory_free_bytes) if gpu.memory_free_bytes is not None else "?"


def short_bus_id(bus_id: str | None) -> str:
    """03:00.0 for the usual PCI domain 0; the full address otherwise."""
    if not bus_id:
        return "-"
    return bus_id[5:] if bus_id.startswith("0000:") else bus_id
