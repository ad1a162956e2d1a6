"""Option parsing shared by the subcommands."""

from __future__ import annotations

import argparse


def gpu_list(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of GPU indices such as 0 or 0,1"
        ) from None
    if not indices or any(i < 0 for i in indices):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of GPU indices such as 0 or 0,1")
    return indices
