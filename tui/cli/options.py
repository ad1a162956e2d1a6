"""Option parsing shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from llama_wizard.tui import validate
from llama_wizard.tui.validate import argparse_type

if TYPE_CHECKING:
    from llama_wizard.tui.session import WizardSession


# The command line's checks are the wizard's own (tui/validate.py): one rule per value, whether
# it comes from an option, a saved setting or a field of the wizard.
gpu_list = argparse_type(validate.check_gpus)
context_size = argparse_type(validate.check_ctx)
quant_name = argparse_type(validate.check_quant)
tcp_port = argparse_type(validate.check_port)
token_count = argparse_type(validate.check_n_predict)
host_address = argparse_type(validate.check_host)
flash_attn_mode = argparse_type(validate.check_flash_attn)
server_slots = argparse_type(validate.check_parallel)


def add_estimate_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """-fa and -np, as llama.cpp spells them: what the memory estimate assumes."""
    parser.add_argument(
        "-fa",
        "--flash-attn",
        type=flash_attn_mode,
        default=None,
        metavar="on|off|auto",
        help="flash attention, as llama.cpp's -fa (default: auto, which llama.cpp turns on for "
        "the CPU, CUDA, ROCm, Metal and Vulkan backends when they support the model's head size); "
        "off makes the compute buffer grow with the context",
    )
    parser.add_argument(
        "-np",
        "--parallel",
        type=server_slots,
        default=None,
        metavar="N",
        help="estimate for llama-server with N slots, as its -np N (each slot gets ctx/N tokens "
        "of its own KV cache; default: llama-completion, one sequence)",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


@contextlib.contextmanager
def command_session(args: argparse.Namespace) -> Iterator[WizardSession]:
    """The flow core for a subcommand: the machine it names, what the command line chose, and
    no saved choices (subcommands do what they are told, nothing remembered)."""
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.session import Overrides, WizardSession

    overrides = Overrides(
        flake=getattr(args, "flake", None),
        output=getattr(args, "output", None),
        gpus=getattr(args, "gpu", None),
        model=getattr(args, "model", None),
        quant=getattr(args, "quant", None),
        ctx=getattr(args, "ctx", None),
        flash_attn=getattr(args, "flash_attn", None),
        n_parallel=getattr(args, "parallel", None),
    )
    with open_machine(args.root, args.simulate) as machine:
        yield WizardSession(machine, None, overrides, timeout=args.timeout)


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
