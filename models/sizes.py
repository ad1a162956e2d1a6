"""Memory sizes: parse what a person types (`24GiB`, `24GB`, `32000MiB`) and print sizes back."""

from __future__ import annotations

import re

from llama_wizard.models.errors import SizeError

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

_UNITS = {
    "": 1,
    "B": 1,
    "K": KIB,
    "KB": 1000,
    "KIB": KIB,
    "M": MIB,
    "MB": 1000**2,
    "MIB": MIB,
    # A bare G (and T) is binary: that is how `free -g`, llama.cpp's logs and most GPU tools
    # mean it. GB is decimal, as on a disk or on Hugging Face.
    "G": GIB,
    "GB": 1000**3,
    "GIB": GIB,
    "T": 1 << 40,
    "TB": 1000**4,
    "TIB": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes in `text`: a number with an optional unit (B, K/KiB, KB, M/MiB, MB, G/GiB, GB, ...).
    A number without a unit is taken as bytes unless it is small enough to be GiB."""
    match = _SIZE.match(text or "")
    if not match:
        raise SizeError(
            f"{text!r} is not a memory size.",
            "Write a number and a unit, such as 24GiB, 24GB, 24G or 32000MiB "
            "(GiB/MiB and a bare G/M are binary; GB/MB are decimal).",
        )
    number, unit = float(match.group(1)), match.group(2).upper()
    if unit not in _UNITS:
        raise SizeError(
            f"{text!r}: unknown unit {match.group(2)!r}.",
            "Use one of B, KiB, MiB, GiB, TiB (binary), KB, MB, GB, TB (decimal), or K, M, G, T.",
        )
    if not unit and number < 4096:
        # `--vram 24` means 24 GiB, not 24 bytes.
        unit = "GIB"
    value = int(number * _UNITS[unit])
    if value <= 0:
        raise SizeError(
            f"{text!r} is not a positive size.", "Give the memory of the GPU, e.g. 24GiB."
        )
    return value


def human_bytes(value: int | None) -> str:
    """1.5 GiB, 609.8 MiB, 12 KiB, 512 B: binary units, one decimal from MiB up (the model table
    tells 609.8 MiB from 610.4 MiB); "?" for an unknown size. The one formatter of sizes for the
    CLI, the screens and plain mode (tui/format.py re-exports it)."""
    if value is None:
        return "?"
    sign = "-" if value < 0 else ""
    size = float(abs(value))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            if unit in ("B", "KiB"):
                return f"{sign}{size:.0f} {unit}"
            return f"{sign}{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover
