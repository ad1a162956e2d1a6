"""Option parsing shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from llama_wizard.tui import validate
from llama_wizard.tui.validate import argparse_type

if TYPE_CHECKING:
    from llama_wizard.tui.session import Overrides, WizardSession


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
# models/estimate.py MODE_CHOICES, spelled out so that registering the subcommands stays fast
# (tests/test_run_modes.py checks they agree).
RUN_MODES = ("auto", "gpu", "moe-offload", "hybrid", "cpu")
MODE_HELP = (
    "run mode: gpu (every layer on the GPUs), moe-offload (the MoE experts of the first layers "
    "in RAM: --n-cpu-moe N), hybrid (the first layers in RAM: -ngl N), cpu (all in RAM); "
    "default auto: the best mode each quant runs in"
)


def add_mode_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, **more: object
) -> None:
    """--mode auto|gpu|moe-offload|hybrid|cpu."""
    parser.add_argument(
        "--mode",
        choices=RUN_MODES,
        metavar="|".join(RUN_MODES),
        help=MODE_HELP,
        **more,  # type: ignore[arg-type]
    )


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
    add_mode_option(parser, default=None)
    add_memory_option(parser)


def add_memory_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--memory auto|total|free (detect/memory.py's rule)."""
    from llama_wizard.detect.memory import MEMORY_CHOICES

    parser.add_argument(
        "--memory",
        choices=MEMORY_CHOICES,
        default=None,
        metavar="auto|total|free",
        help="what a GPU other processes use is planned on: auto (default) its free memory when "
        "they hold more than 2 GiB and 5 %% of it, else all of it; total: all of it (as after "
        "stopping them); free: what is free now",
    )


def add_nix_setup_option(parser: argparse.ArgumentParser) -> None:
    """--nix-without-build-users: get round a missing nixbld group as root (the wizard's Build
    step offers the same and remembers the answer)."""
    parser.add_argument(
        "--nix-without-build-users",
        action="store_true",
        help="run nix with `build-users-group =`, so that builds run as root without Nix's "
        "build users: for root on a machine whose Nix has no nixbld group and no daemon "
        "(Debian's nix-bin alone), where every build fails otherwise",
    )


def print_error(message: object, fix: str | None = None) -> None:
    """An error of a subcommand on stderr, as `llama-wizard: MESSAGE` and its fix on the next
    line; `code` spans become quotes (tui.format.plain_text), as everywhere text is plain."""
    from llama_wizard.tui.format import plain_text

    text = f"llama-wizard: {message}" + (f"\n{fix}" if fix else "")
    print(plain_text(text), file=sys.stderr)


def positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def overrides_from(args: argparse.Namespace, **given: Any) -> Overrides:
    """What a command line chose, for the session (tui.session.Overrides): one mapping from
    options to choices for the wizard and every subcommand, so that an option added to a
    parser reaches all of them. `given` replaces a field (fit's MODEL is its own)."""
    from llama_wizard.tui.session import Overrides

    fields: dict[str, Any] = {
        "flake": getattr(args, "flake", None),
        "output": getattr(args, "output", None),
        "gpus": getattr(args, "gpu", None),
        "model": getattr(args, "model", None),
        "quant": getattr(args, "quant", None),
        "ctx": getattr(args, "ctx", None),
        "flash_attn": getattr(args, "flash_attn", None),
        "n_parallel": getattr(args, "parallel", None),
        "mode": getattr(args, "mode", None),
        "memory": getattr(args, "memory", None),
        "nix_without_build_users": bool(getattr(args, "nix_without_build_users", False)),
    }
    return Overrides(**{**fields, **given})


@contextlib.contextmanager
def command_session(args: argparse.Namespace) -> Iterator[WizardSession]:
    """The flow core for a subcommand: the machine it names, what the command line chose, and
    no saved choices (subcommands do what they are told, nothing remembered)."""
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.session import WizardSession

    overrides = overrides_from(args)
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
