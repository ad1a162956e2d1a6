"""Option parsing shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import sys


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


def positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def add_machine_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # A subcommand's copy must not overwrite a value given before the subcommand's name, so
    # only the top-level parser has defaults.
    default: object = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group("machine")
    group.add_argument(
        "--root",
        default=default,
        metavar="DIR",
        help="read /sys, /dev and /proc under DIR instead of / (also LLAMA_WIZARD_ROOT)",
    )
    group.add_argument(
        "--simulate",
        default=default,
        metavar="PROFILE",
        help="run on a bundled hardware profile instead of this machine ('list' names them)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=10.0 if top_level else argparse.SUPPRESS,
        metavar="S",
        help="seconds each GPU tool (rocminfo, nvidia-smi) may take (default: 10)",
    )


DUMB_TERMS = ("", "dumb", "unknown")


def is_dumb_terminal(environ: dict[str, str] | None = None) -> bool:
    term = (environ if environ is not None else os.environ).get("TERM", "")
    return term.lower() in DUMB_TERMS


def wants_plain(environ: dict[str, str] | None = None) -> bool:
    """Whether bare `llama-wizard` should run plain mode instead of the full-screen one: a dumb
    terminal (TERM=dumb/unknown/unset), or stdin or stdout not being a terminal."""
    return is_dumb_terminal(environ) or not (sys.stdin.isatty() and sys.stdout.isatty())
